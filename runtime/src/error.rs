//! The runtime's error type: every failure names what is wrong and, where it helps, what to do.

use std::path::PathBuf;

/// Everything that can go wrong while managing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle directory does not exist or is not a directory.
    #[error("bundle {0} does not exist or is not a directory")]
    BundleMissing(PathBuf),
    /// `config.json` is missing from the bundle.
    #[error("bundle {0} has no config.json (create one with `runc spec` or by hand)")]
    ConfigMissing(PathBuf),
    /// `config.json` could not be parsed.
    #[error("malformed {path}: {reason}")]
    ConfigMalformed { path: PathBuf, reason: String },
    /// `config.json` parsed, but asks for something invalid or unsupported.
    #[error("invalid config.json: {0}")]
    ConfigInvalid(String),
    /// The spec's rootfs does not exist.
    #[error("rootfs {0} does not exist or is not a directory (check root.path in config.json)")]
    RootfsMissing(PathBuf),
    /// A container id is empty or has characters a path cannot safely hold.
    #[error("invalid container id {0:?}: use letters, digits, '.', '_', '-' and '+' (at most 1024)")]
    InvalidId(String),
    /// A container with this id already exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// No container has this id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The operation is not allowed in the container's current status.
    #[error("container {id} is {status}: {what}")]
    WrongStatus { id: String, status: String, what: String },
    /// A signal name or number could not be understood.
    #[error("unknown signal {0:?}: use a name like TERM, SIGKILL or a number like 9")]
    UnknownSignal(String),
    /// The container's init process failed while setting the container up.
    #[error("container init failed: {0}")]
    Init(String),
    /// A process to exec was asked for wrongly (a bad `exec` flag or `--process` file).
    #[error("{0}")]
    ExecRequest(String),
    /// A process to exec into a container failed to start.
    #[error("exec failed: {0}")]
    Exec(String),
    /// A cgroup could not be created, limited or removed.
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    /// A spec's user-namespace mappings are invalid, or applying them failed.
    #[error(transparent)]
    IdMap(#[from] crate::idmap::IdMapError),
    /// A hook is invalid, failed or ran out of time.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a description of the failed step to a system-call or I/O error.
pub trait Context<T> {
    /// Wraps the error with `what` (e.g. "mount proc on /proc").
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys { what: what(), source })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { what: what(), source })
    }
}
