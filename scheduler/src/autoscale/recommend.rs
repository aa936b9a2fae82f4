//! The replica calculator (HPA's `replica_calculator`): how many tasks the service's CPU asks
//! for, with no memory of earlier rounds.

use super::reading::Reading;
use crate::spec::Autoscale;

/// No change while the average CPU is within this fraction of the target (HPA's default 0.1):
/// a 70% target holds between 63% and 77%.
pub const TOLERANCE: f64 = 0.1;

/// The task count the CPU asks for: `ceil(sum of the counted tasks' CPU / target)`, clamped to
/// `[min, max]`; the current `desired` count while the average is within [`TOLERANCE`] of the
/// target. `None` when no task could be counted (no metrics: no opinion).
pub fn recommend(reading: &Reading, bounds: &Autoscale, desired: u32) -> Option<u32> {
    let average = reading.average()?;
    let target = f64::from(bounds.target_cpu_percent.max(1)) / 100.0;
    if (average / target - 1.0).abs() <= TOLERANCE {
        return Some(desired.clamp(bounds.min, bounds.max));
    }
    // A hair under the next integer counts as that integer: 2.1 / 0.7 is 3.0000000000000004.
    let wanted = (reading.cpu_sum / target - 1e-9).ceil().max(0.0);
    let wanted = if wanted >= f64::from(bounds.max) { bounds.max } else { wanted as u32 };
    Some(wanted.clamp(bounds.min, bounds.max))
}
