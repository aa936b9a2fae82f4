//! The agent library's error type.

/// What can go wrong on a node.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An image could not be pulled or prepared.
    #[error(transparent)]
    Image(#[from] runtime::image::ImageError),
    /// The node's or a task's network could not be set up.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The container runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    /// A task's OCI spec could not be built.
    #[error("task spec: {0}")]
    Spec(String),
    /// The task shim failed to start the task.
    #[error("task {task} did not start: {reason}")]
    Start { task: String, reason: String },
    /// No task has this id on this node.
    #[error("task {0} is not on this node")]
    UnknownTask(String),
    /// The agent's own API (task logs) could not be served.
    #[error("the agent API (--api-listen): {0}")]
    Api(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl AgentError {
    /// An I/O error with what was being done.
    pub fn io(what: String, source: std::io::Error) -> AgentError {
        AgentError::Io { what, source }
    }
}

/// The agent library's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
