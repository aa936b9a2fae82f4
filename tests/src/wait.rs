//! Waiting for events: the one poll loop every test uses, the one check that a claim holds over
//! a window, and the one wait for a Raft leader.
//!
//! Tests wait on what they expect to happen, with a deadline that fails loudly and says what
//! was being waited for and what the system looked like, never on a fixed sleep.

use std::thread::sleep;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` every [`POLL`] until it is true; panics with `what` and `context()` at
/// `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}: {}", context());
        sleep(POLL);
    }
}

/// The leader's id once `sched cluster members -o json` (as `members` returns it, `None` while
/// the servers do not answer) names one that `runs`; panics at `timeout`, naming `logs`.
#[track_caller]
pub fn wait_for_leader(
    timeout: Duration,
    mut members: impl FnMut() -> Option<serde_json::Value>,
    runs: impl Fn(u64) -> bool,
    logs: &std::path::Path,
) -> u64 {
    let mut leader = 0;
    wait_until(
        "the servers agree on a leader",
        timeout,
        || {
            leader = members().and_then(|m| m["leader_id"].as_u64()).filter(|id| *id != 0 && runs(*id)).unwrap_or(0);
            leader != 0
        },
        || format!("logs in {}", logs.display()),
    );
    leader
}

/// Polls `check` every [`POLL`] for all of `window` and panics with `what` and `context()` the
/// first time it is false: for "nothing changes" claims. The window must cover the period of
/// the mechanism that would break the claim (the caller says which), so a bug that strikes late
/// in a period still shows; a single look after a sleep would miss a change that came and went.
#[track_caller]
pub fn holds_for(what: &str, window: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let end = Instant::now() + window;
    loop {
        assert!(check(), "{what} stopped holding within {window:?}: {}", context());
        if Instant::now() >= end {
            return;
        }
        sleep(POLL);
    }
}
