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
    /// Another agent on this host manages a resource this one would manage too.
    #[error("{0}")]
    Claimed(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The node has no usable certificate (no join token, a refused join, a certificate of
    /// another node).
    #[error("node credentials: {0}")]
    Credentials(String),
    /// The agent's connections could not be set up (its security).
    #[error("connections: {0}")]
    Transport(transport::TransportError),
    /// A `--server` address is not HOST:PORT.
    #[error("bad server address {server:?}: {source}")]
    ServerAddress { server: String, source: transport::TransportError },
    /// No connection to a server could be made.
    #[error("connect to {server}: {source}")]
    Connect { server: String, source: transport::TransportError },
    /// A call to a server, or one of its streams, failed.
    #[error("{call}: {message}")]
    Rpc { call: String, code: tonic::Code, message: String },
    /// The server answered a heartbeat with "unknown node" (e.g. it lost its state).
    #[error("the server does not know this node any more; registering again")]
    UnknownNode,
    /// An assignment's image could not be pinned to the digest the servers resolved.
    #[error("image {image:?} pinned to {digest:?}: {source}")]
    ImageDigest { image: String, digest: String, source: Box<registry::RegistryError> },
}

impl AgentError {
    /// An I/O error with what was being done.
    pub fn io(what: String, source: std::io::Error) -> AgentError {
        AgentError::Io { what, source }
    }

    /// A failed call (or stream) named `call`, with what the server said.
    pub fn rpc(call: impl Into<String>, status: &tonic::Status) -> AgentError {
        AgentError::Rpc { call: call.into(), code: status.code(), message: status.message().to_owned() }
    }
}

/// The agent library's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
