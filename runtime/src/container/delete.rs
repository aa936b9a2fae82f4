//! `delete`: removes a stopped container (or, with force, kills it first): its cgroup and its
//! state directory. Mounts need no cleanup: they live in the container's mount namespace, which
//! goes away with its last process.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Container;
use crate::error::{Error, Result};
use crate::state::{Status, process_start_time};

/// How long `delete --force` waits for a killed init to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long delete retries removing a cgroup that dying processes still occupy.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Container {
    /// Deletes the container; `force` kills a created or running one first.
    pub fn delete(&self, force: bool) -> Result<()> {
        let status = self.status();
        if status != Status::Stopped {
            if !force {
                return Err(Error::WrongStatus {
                    id: self.id().into(),
                    status: status.to_string(),
                    what: "stop it first (kill) or use delete --force".into(),
                });
            }
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
            if status == Status::Paused {
                // A frozen process cannot act on SIGKILL until it is thawed.
                self.resume()?;
            }
            self.wait_gone(KILL_TIMEOUT)?;
        }
        // The directories recorded at create: removing them needs no cgroup discovery, which
        // keeps delete on the fast path of every container stop.
        if self.state.cgroup_dirs.is_empty() {
            // A state written by an older runtime, before the dirs were recorded.
            crate::cgroups::ContainerCgroup::open(&self.state.cgroup_path, self.id())?.remove()?;
        } else {
            crate::cgroups::remove_dirs(&self.state.cgroup_dirs, CGROUP_REMOVE_TIMEOUT)?;
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::Io { what: format!("remove {}", self.dir.display()), source: e })
    }

    /// Waits until the init process is gone or a zombie.
    pub(crate) fn wait_gone(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            match process_start_time(self.pid()) {
                Some((start, zombie)) if start == self.state.pid_start_time && !zombie => {}
                _ => return Ok(()),
            }
            if Instant::now() > deadline {
                return Err(Error::WrongStatus {
                    id: self.id().into(),
                    status: "running".into(),
                    what: format!("its init (pid {}) survived SIGKILL for {timeout:?}", self.pid()),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}
