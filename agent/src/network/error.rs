//! The one error type of task networking: every variant names what failed and what to do.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Why a node or task network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration cannot work (bad name, subnet or port range).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),

    /// A task id that cannot be used as a file name or netns name.
    #[error("invalid task id {task_id:?}: use 1-128 characters from [A-Za-z0-9_.-], not . or ..")]
    InvalidTaskId {
        /// The rejected id.
        task_id: String,
    },

    /// Every host address of the node subnet is handed out.
    #[error(
        "no free address left in subnet {subnet} ({allocated} tasks hold one): destroy \
         stopped tasks' networks or configure a larger subnet"
    )]
    SubnetExhausted {
        /// The node subnet, like `10.88.0.0/24`.
        subnet: String,
        /// How many addresses are allocated.
        allocated: usize,
    },

    /// Every host port of the publishing range is taken.
    #[error("no free host port left in {first}-{last}: unpublish ports or widen the host port range")]
    PortsExhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },

    /// The task already has a network on this node.
    #[error("task {task_id} already has a network on this node: destroy it before creating it again")]
    TaskExists {
        /// The task id.
        task_id: String,
    },

    /// A host port that is not published by this node.
    #[error("host port {host_port} is not published on this node")]
    NotPublished {
        /// The port asked for.
        host_port: u16,
    },

    /// An address that is not one of the node's task addresses.
    #[error("{ip} is not a task address of subnet {subnet}: publish only allocated task addresses")]
    NotATaskAddress {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The node subnet.
        subnet: String,
    },

    /// A state file was written for another subnet or cannot be parsed.
    #[error("network state file {path}: {problem}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        problem: String,
    },

    /// A netlink request failed.
    #[error("netlink: {action}: {source}")]
    Netlink {
        /// What was being done, like `create bridge sched0`.
        action: String,
        /// The kernel's or the library's error.
        #[source]
        source: rtnetlink::Error,
    },

    /// A file or system call failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, naming the path.
        action: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// `nft` rejected the rules or could not run.
    #[error("nft {table}: {problem}")]
    Nftables {
        /// The table being written or deleted.
        table: String,
        /// nft's own message, or why it could not run.
        problem: String,
    },

    /// Undoing a half-made change failed too; both errors are kept.
    #[error("{original} (and undoing the partial change failed: {cleanup})")]
    CleanupFailed {
        /// The error that made us undo.
        original: Box<NetworkError>,
        /// The error the undo hit.
        cleanup: Box<NetworkError>,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

impl NetworkError {
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io { action: action.into(), source }
    }

    pub(crate) fn errno(action: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::io(action, io::Error::from(errno))
    }

    pub(crate) fn netlink(action: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink { action: action.into(), source }
    }

    /// Keeps `cleanup`'s error beside `self` when an undo failed.
    pub(crate) fn with_cleanup(self, cleanup: Result<()>) -> Self {
        match cleanup {
            Ok(()) => self,
            Err(cleanup) => Self::CleanupFailed { original: Box::new(self), cleanup: Box::new(cleanup) },
        }
    }
}
