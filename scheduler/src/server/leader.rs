//! The leader loop: while this server leads, gather a [`Snapshot`] (the applied state, heartbeat
//! ages, CPU samples, the clock), ask the [controllers](crate::controller) for commands, and
//! propose them through Raft. It decides nothing itself.
//!
//! It looks after every burst of applied entries (an apply, a scale, a task report: a new service
//! is placed within milliseconds, as a job registration triggers an evaluation in Nomad) and
//! every 500 ms otherwise (node timeouts, crash-loop backoffs, autoscaling). A burst ends when
//! entries pause for [`SETTLE`], or [`MAX_SETTLE`] after it began: under a steady stream of
//! writes the leader looks at most every [`MAX_SETTLE`], not after each write, since each look
//! reads the whole state. Where a look itself takes long (a large state), bursts wait longer, so
//! that looks take at most about one [`LOOK_SHARE`]th of the leader's time ([`longest_settle`]).
//! A burst of entries that changed nothing (scales to the current count) brings no look.
//!
//! A new leader waits until it has applied an entry of its own term, so that it decides from
//! everything earlier leaders committed. A round's commands are proposed pipelined
//! ([`propose_round`]), so they share fsyncs. The controllers run on a thread of their own at a
//! lower priority ([`LookThread`]), not on an async worker. Their memory (the autoscaler's
//! stabilization windows) starts afresh each time this server becomes leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::heartbeats::Heartbeats;
use super::look_thread::LookThread;
use super::now_ms;
use crate::controller::{Controller, Snapshot, leader_controllers};
use crate::raft::{Consensus, NodeStatus, Role};

/// How often the leader looks when nothing changes.
const PERIOD: Duration = Duration::from_millis(500);

/// The pause in applied changes that ends a burst.
const SETTLE: Duration = Duration::from_millis(5);

/// The longest a burst of applied changes delays a look, where looks are quick.
const MAX_SETTLE: Duration = Duration::from_millis(50);

/// Under a steady stream of writes, a look may take this fraction (1/N) of the leader's time.
const LOOK_SHARE: u32 = 50;

/// The longest a burst delays a look, given how long the last look took: [`MAX_SETTLE`], or
/// [`LOOK_SHARE`] times the last look where that is longer, and never beyond the [`PERIOD`] of
/// the timer's looks.
fn longest_settle(last_look: Duration) -> Duration {
    last_look.saturating_mul(LOOK_SHARE).clamp(MAX_SETTLE, PERIOD)
}

/// Runs the leader's duties forever (it idles while this server follows).
pub async fn run(consensus: Arc<Consensus>, heartbeats: Arc<Heartbeats>, node_timeout: Duration) {
    let look_thread = LookThread::start().expect("start the leader's look thread");
    let mut leading: Option<(Instant, Vec<Box<dyn Controller>>)> = None;
    let mut ticker = tokio::time::interval(PERIOD);
    let mut applied = consensus.raft().watch_status();
    // The state's change count at the last round of this leadership.
    let mut looked_at: Option<u64> = None;
    // How long the last round took to copy the state and run the controllers.
    let mut last_look = Duration::ZERO;
    loop {
        let burst = tokio::select! {
            _ = ticker.tick() => false,
            changed = applied.changed() => match changed {
                Ok(()) => {
                    settle(&mut applied, longest_settle(last_look)).await;
                    true
                }
                Err(_) => {
                    ticker.tick().await; // the Raft loop is gone: the timer only
                    false
                }
            },
        };
        let status = consensus.raft().status();
        if status.role != Some(Role::Leader) {
            leading = None;
            looked_at = None;
            continue;
        }
        if !status.leader_caught_up {
            // A new leader decides only once its state holds what earlier leaders committed
            // (its first entry is applied), or it would place again what they placed.
            continue;
        }
        let (since, controllers) = leading.get_or_insert_with(|| (Instant::now(), leader_controllers(node_timeout.as_millis() as u64)));
        let look = Instant::now();
        let state = {
            let applied = consensus.raft().state();
            // Entries that changed nothing (a scale to the current count, an apply of the same
            // file) leave the controllers nothing new to decide: the last round saw this state.
            // Time-driven decisions come with the ticker's rounds.
            if burst && looked_at == Some(applied.changes) {
                continue;
            }
            looked_at = Some(applied.changes);
            applied.state.clone()
        };
        let now = now_ms();
        let snapshot = Snapshot {
            state,
            now_ms: now,
            term: status.term,
            leading_for_ms: since.elapsed().as_millis() as u64,
            heartbeat_age_ms: heartbeats.ages_ms(),
            cpu: heartbeats.cpu_samples(now),
            ingress: heartbeats.ingress_reports(now),
        };
        let (back, commands) = look_thread.look(std::mem::take(controllers), snapshot).await;
        *controllers = back;
        last_look = look.elapsed();
        propose_round(&consensus, commands).await;
    }
}

/// Returns once applied changes have paused for [`SETTLE`], or `longest` after the call.
async fn settle(applied: &mut watch::Receiver<NodeStatus>, longest: Duration) {
    let latest = Instant::now() + longest;
    loop {
        let until = (Instant::now() + SETTLE).min(latest);
        match tokio::time::timeout_at(until.into(), applied.changed()).await {
            Ok(Ok(())) if Instant::now() < latest => continue,
            _ => return,
        }
    }
}

/// The most proposals of one round in flight at once.
const IN_FLIGHT: usize = 256;

/// Proposes a round's commands pipelined, in order: each is handed to the Raft loop without
/// waiting for the one before to commit, so the loop appends many of them per `Ready` and one
/// fsync covers them all (group commit), instead of one commit after another. The loop's queue
/// is first in, first out, so the log keeps the controllers' order. A rejected command is
/// logged and the rest still count; when one cannot be proposed at all (no longer the leader),
/// the others in flight meet the same fate and the next round starts afresh.
async fn propose_round(consensus: &Consensus, commands: Vec<crate::state::Command>) {
    for chunk in commands.chunks(IN_FLIGHT) {
        let mut failed = false;
        for written in consensus.write_pipelined(chunk.to_vec()).await {
            match written {
                Ok(Ok(_)) => {}
                Ok(Err(rejection)) => tracing::warn!("a controller's command was rejected: {}", rejection.message),
                Err(e) if !failed => {
                    tracing::warn!("the leader could not propose: {e}");
                    failed = true;
                }
                Err(_) => {}
            }
        }
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_waits_longer_only_where_looks_take_long() {
        for (last_look_ms, longest_ms) in [(0, 50), (1, 50), (2, 100), (5, 250), (10, 500), (400, 500)] {
            assert_eq!(
                longest_settle(Duration::from_millis(last_look_ms)),
                Duration::from_millis(longest_ms),
                "a look of {last_look_ms} ms"
            );
        }
    }
}
