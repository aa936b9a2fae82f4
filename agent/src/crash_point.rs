//! Crash points, for the crash tests of issue 15: an agent armed with a point's name (the
//! hidden `sched-agent --crash-at NAME`, or `SCHED_AGENT_CRASH_AT=NAME` in the environment of any
//! process that runs the agent, `sched dev` included) kills itself with SIGKILL, as `kill -9`
//! would, when it reaches that point, so a test restarts it on exactly what that step left.
//! Unarmed (always, outside those tests) each point costs one comparison.
//!
//! The points, in the order a task goes through them:
//! - `start:after-network`: its network (pin, veth, address) is made;
//! - `start:after-pull`: its image is in the store;
//! - `start:after-bundle`: its rootfs is mounted and its bundle written;
//! - `start:after-shim`: its shim runs its container, before its ports are published;
//! - `stop:after-signal`: its stop signal is sent;
//! - `stop:after-exit`: it exited (the shim recorded it and deletes the container);
//! - `remove:after-rootfs`: its rootfs is gone, its task dir not yet;
//! - `remove:after-task-dir`: its task dir is gone, its network not yet.

use std::sync::OnceLock;

/// Every crash point, in the order a task passes them.
pub const POINTS: &[&str] = &[
    "start:after-network",
    "start:after-pull",
    "start:after-bundle",
    "start:after-shim",
    "stop:after-signal",
    "stop:after-exit",
    "remove:after-rootfs",
    "remove:after-task-dir",
];

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Arms the point `name` for this process (before the agent runs); the environment's
/// `SCHED_AGENT_CRASH_AT` is not read then.
pub fn arm(name: &str) -> Result<(), String> {
    if !POINTS.contains(&name) {
        return Err(format!("no crash point {name:?}; the points are {}", POINTS.join(", ")));
    }
    ARMED.set(Some(name.to_string())).map_err(|_| "a crash point was armed already".to_string())
}

/// Kills the agent here if it is armed with `name`.
pub fn reached(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("SCHED_AGENT_CRASH_AT").ok());
    if armed.as_deref() == Some(name) {
        tracing::warn!(point = name, "crash point reached: the agent kills itself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
