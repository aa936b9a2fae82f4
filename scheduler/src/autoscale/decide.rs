//! The behaviour around the recommendation (HPA's `horizontal.go`, ECS's cooldowns): when a
//! recommendation becomes a change of the desired count, and by how much.

use super::reading::{Reading, SHORT_WINDOW_MS};
use super::stabilization::Stabilization;
use crate::spec::{Autoscale, format_duration_ms};
use crate::state::AutoscaleStatus;

/// A change of the desired count, with the words for the service's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub to: u32,
    pub reason: String,
}

/// What one service's autoscaler knows in one round.
pub struct Round<'a> {
    pub bounds: &'a Autoscale,
    /// The desired count now.
    pub desired: u32,
    /// The replicated history: last scale-out, last scale-in, last change of the count.
    pub status: &'a AutoscaleStatus,
    pub reading: Reading,
    /// What the CPU asks for now ([`super::recommend::recommend`]).
    pub recommendation: Option<u32>,
    /// This leader's recent recommendations.
    pub window: &'a Stabilization,
    pub now_ms: u64,
}

/// When the next scale-out may happen (0: now).
pub fn next_scale_out_ms(bounds: &Autoscale, status: &AutoscaleStatus) -> u64 {
    if status.last_scale_out_ms == 0 { 0 } else { status.last_scale_out_ms + bounds.scale_out_cooldown_ms }
}

/// The earliest a scale-in may happen: a whole cooldown after the count was last set by an
/// apply, `sched scale` or a scale-out, and one short window after the last scale-in (so that
/// the reading shows the load the stopped tasks left behind).
pub fn earliest_scale_in_ms(bounds: &Autoscale, status: &AutoscaleStatus) -> u64 {
    (status.count_set_ms + bounds.scale_in_cooldown_ms).max(status.last_scale_in_ms + SHORT_WINDOW_MS)
}

/// The change to make now, if any:
/// - out, to the recommendation, as soon as it exceeds the count and the scale-out cooldown
///   has passed since the last scale-out (also during a rolling deploy);
/// - in, only when nothing is uncounted (no missing or stale metrics, no task starting), no
///   rolling deploy runs, [`earliest_scale_in_ms`] has passed, and every recommendation of the
///   last `scale_in_cooldown` was lower: to the highest of them, removing at most half of the
///   tasks (rounded up) per step, never below `min`.
pub fn decide(round: &Round) -> Option<Decision> {
    let recommendation = round.recommendation?;
    let average = round.reading.average()?;
    let (desired, bounds, now) = (round.desired, round.bounds, round.now_ms);
    let seen = format!(
        "CPU {:.0}% of the limit against a {}% target, over {} task(s) (last {})",
        average * 100.0,
        bounds.target_cpu_percent,
        round.reading.counted,
        format_duration_ms(SHORT_WINDOW_MS)
    );
    if recommendation > desired {
        if now < next_scale_out_ms(bounds, round.status) {
            return None;
        }
        return Some(Decision { to: recommendation, reason: format!("scaled out {desired} -> {recommendation}: {seen}") });
    }
    if recommendation >= desired
        || round.reading.deploying
        || round.reading.uncounted > 0
        || now < earliest_scale_in_ms(bounds, round.status)
    {
        return None;
    }
    let window_ms = bounds.scale_in_cooldown_ms;
    let stable = round.window.highest_since(now.saturating_sub(window_ms))?;
    if stable >= desired {
        return None;
    }
    let step_floor = desired - desired.div_ceil(2);
    let to = stable.max(step_floor).max(bounds.min);
    if to >= desired {
        return None;
    }
    let bounded = if to > stable.max(bounds.min) { "; a step removes at most half of the tasks" } else { "" };
    Some(Decision {
        to,
        reason: format!(
            "scaled in {desired} -> {to}: {seen}; no recommendation in the last {} asked for more than {stable}{bounded}",
            format_duration_ms(window_ms)
        ),
    })
}
