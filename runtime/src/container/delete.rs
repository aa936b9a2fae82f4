//! `delete`: removes a stopped container (or, with force, a created, running or paused one).
//! In this order, so that a crash at any step leaves the state directory for a later `delete`
//! (or the agent's reaper) to find and finish:
//! 1. every process of the container dies: its init, and everything in its cgroup and the
//!    cgroups below it, in every hierarchy ([`kill_all`]). A stopped container too: without its
//!    own pid namespace (or with processes moved into its cgroup) its init's exit kills nothing.
//! 2. its cgroup directories are removed;
//! 3. its state directory is removed, last.
//!
//! Mounts need no cleanup: they live in the container's mount namespace, which goes away with
//! its last process.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Container;
use crate::cgroups::{ContainerCgroup, kill_all, remove_dirs};
use crate::error::{Error, Result};
use crate::hooks::Stage;
use crate::state::{STATE_FILE, Status, process_start_time};

/// How long delete waits for the killed processes to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long delete retries removing a cgroup that dying processes still occupy.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Container {
    /// Deletes the container and kills whatever of it still runs; without `force` only a
    /// stopped one (whose init has exited).
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
        }
        // The directories recorded at create: no cgroup discovery, which keeps delete on the
        // fast path of every container stop. A state written by an older runtime, before the
        // dirs were recorded, has its cgroup looked up in every hierarchy.
        let dirs = if self.state.cgroup_dirs.is_empty() { self.cgroup_dirs_found() } else { self.state.cgroup_dirs.clone() };
        // Thaws a paused container too: a frozen process cannot act on SIGKILL.
        kill_all(&dirs, KILL_TIMEOUT)?;
        if status != Status::Stopped {
            self.wait_gone(KILL_TIMEOUT)?;
        }
        if self.state.cgroup_dirs.is_empty() {
            ContainerCgroup::open(&self.state.cgroup_path, self.id())?.remove()?;
        } else {
            remove_dirs(&self.state.cgroup_dirs, CGROUP_REMOVE_TIMEOUT)?;
        }
        // As the spec says: a failing poststop hook is logged and the delete goes on.
        match self.spec() {
            Ok(spec) => {
                if let Err(err) = crate::hooks::run(Stage::Poststop, spec.hooks().as_ref(), &self.hook_state(Status::Stopped)) {
                    tracing::warn!("{err}");
                }
            }
            Err(err) => tracing::warn!("no poststop hooks run: {err}"),
        }
        self.remove_state_dir()
    }

    /// Removes the state directory, `state.json` last: until it goes the container can still be
    /// loaded and listed, so a delete cut short (a crash, a full stop of the node) is finished
    /// by the next one or found by the agent's reaper, instead of leaving a nameless dir.
    fn remove_state_dir(&self) -> Result<()> {
        let io = |what: &Path, e| Error::Io { what: format!("remove {}", what.display()), source: e };
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            if entry.file_name() == STATE_FILE {
                continue;
            }
            let path = entry.path();
            let removed =
                if entry.file_type().is_ok_and(|t| t.is_dir()) { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| io(&path, e))?;
        }
        let state = self.dir.join(STATE_FILE);
        std::fs::remove_file(&state).map_err(|e| io(&state, e))?;
        std::fs::remove_dir(&self.dir).map_err(|e| io(&self.dir, e))
    }

    /// The existing directories of the container's cgroup path in every hierarchy.
    fn cgroup_dirs_found(&self) -> Vec<std::path::PathBuf> {
        let relative = self.state.cgroup_path.strip_prefix("/").unwrap_or(&self.state.cgroup_path);
        crate::cgroups::host_hierarchies()
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.mount_point.join(relative))
            .filter(|d| d.is_dir())
            .collect()
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
