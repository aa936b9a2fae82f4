//! `run`: create, start and wait in the foreground. Signals sent to us are forwarded to the
//! container; its exit code becomes ours (128+N when a signal N killed it); the container is
//! deleted afterwards.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Container, CreateOptions};
use crate::error::{Context, Result};
use crate::state::StateRoot;

impl Container {
    /// Runs a container to completion and returns its exit code.
    pub fn run(root: &StateRoot, opts: &CreateOptions) -> Result<i32> {
        // Block every signal before the fork so none is lost; the init restores the old mask
        // before exec, and we collect them with sigwait below.
        let all = SigSet::all();
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old)).context(|| "block signals".into())?;
        let container = Container::create(root, opts, old)?;
        let code = container.start().and_then(|()| wait_forwarding(Pid::from_raw(container.pid()), &all));
        let deleted = container.delete(true);
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        let code = code?;
        deleted?;
        Ok(code)
    }
}

/// Waits for our child `pid` to exit, forwarding every other signal in `set` (blocked by the
/// caller) to it. Returns its exit code, 128+N if signal N killed it.
pub(super) fn wait_forwarding(pid: Pid, set: &SigSet) -> Result<i32> {
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let signal = set.wait().context(|| "wait for signals".into())?;
        if signal != Signal::SIGCHLD {
            let _ = kill(pid, signal);
        }
    }
}

/// The exit code of `pid` if it has exited, without blocking.
fn reap(pid: Pid) -> Result<Option<i32>> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)).context(|| format!("wait for {pid}"))? {
        WaitStatus::Exited(_, code) => Ok(Some(code)),
        WaitStatus::Signaled(_, signal, _) => Ok(Some(128 + signal as i32)),
        _ => Ok(None),
    }
}
