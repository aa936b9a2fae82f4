//! What the runtime remembers about a container between invocations: one directory per container
//! under the state root (`--root`, default `/run/sched-runtime`) with `state.json` and, while the
//! container is created but not started, the `exec.fifo` its init process waits on.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// The default state root, like runc's /run/runc.
pub const DEFAULT_ROOT: &str = "/run/sched-runtime";
/// The file that holds [`PersistedState`] in a container's directory.
pub(crate) const STATE_FILE: &str = "state.json";
/// The copy of the spec taken at `create`: start, exec and delete read this one, so later edits
/// of the bundle's config.json change nothing of a created container.
pub const CONFIG_FILE: &str = "config.json";
/// The FIFO the container's init blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being set up by `create` (only hooks see this).
    Creating,
    /// Set up and waiting for `start`.
    Created,
    /// The user's process runs.
    Running,
    /// Every process of the container is frozen (`pause`).
    Paused,
    /// The process has exited (or was never started successfully).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What is written to `state.json` when a container is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of that pid (clock ticks since boot, /proc/PID/stat field 22): tells our
    /// process apart from a later one that reuses the pid.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The cgroup path handed to libcgroups (relative to each hierarchy's root).
    pub cgroup_path: PathBuf,
    /// The container's cgroup directories in every hierarchy (what delete removes).
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// RFC 3339 creation time.
    pub created: String,
    pub annotations: std::collections::HashMap<String, String>,
    /// With a user namespace: how the rootfs was made usable by the mapped ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_ids: Option<crate::container::RootfsIds>,
}

/// The state root: where every container's directory lives.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// Uses `dir` as the state root, creating it (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<StateRoot> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).context(|| format!("create state root {}", dir.display()))?;
        Ok(StateRoot { dir: dir.to_path_buf() })
    }

    /// The directory of container `id` (it may not exist).
    pub fn container_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.dir.join(id))
    }

    /// Claims `id` by creating its directory; fails if it is taken.
    pub fn claim(&self, id: &str) -> Result<PathBuf> {
        let dir = self.container_dir(id)?;
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists(id.to_string())),
            Err(e) => Err(Error::Io { what: format!("create {}", dir.display()), source: e }),
        }
    }

    /// Loads the persisted state of `id`.
    pub fn load(&self, id: &str) -> Result<PersistedState> {
        let path = self.container_dir(id)?.join(STATE_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::Io { what: format!("read {}", path.display()), source: e }),
        };
        serde_json::from_slice(&text).map_err(|e| Error::ConfigMalformed { path, reason: e.to_string() })
    }

    /// Writes the state of a container atomically (temp file + rename).
    pub fn save(&self, state: &PersistedState) -> Result<()> {
        let dir = self.container_dir(&state.id)?;
        let tmp = dir.join(".state.json.tmp");
        let text = serde_json::to_vec(state).expect("state serializes");
        fs::write(&tmp, text).context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(STATE_FILE)).context(|| format!("rename {}", tmp.display()))
    }

    /// The ids of every container under this root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).context(|| format!("read {}", self.dir.display()))? {
            let entry = entry.context(|| format!("read {}", self.dir.display()))?;
            if entry.path().join(STATE_FILE).exists() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Checks that an id is usable as a single path component.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok { Ok(()) } else { Err(Error::InvalidId(id.to_string())) }
}

/// Reads a process's start time (field 22 of /proc/PID/stat) and whether it is a zombie.
/// `None` when the process does not exist.
pub fn process_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    // After the state (field 3), field 22 is the 19th remaining one.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

impl PersistedState {
    /// The container's status now: stopped when its init is gone (or a zombie, or the pid was
    /// reused), created while the exec FIFO still exists, paused while its cgroup is frozen, running
    /// otherwise.
    pub fn status(&self, container_dir: &Path) -> Status {
        match process_start_time(self.pid) {
            Some((start, zombie)) if start == self.pid_start_time && !zombie => {
                if container_dir.join(EXEC_FIFO).exists() {
                    Status::Created
                } else if crate::cgroups::is_frozen(&self.cgroup_dirs) {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_single_safe_path_components() {
        for good in ["a", "web-1", "x.y_z+1", "0123456789abcdef"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_has_a_start_time_and_is_not_a_zombie() {
        let (start, zombie) = process_start_time(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(!zombie);
        assert!(process_start_time(i32::MAX).is_none());
    }
}
