//! The one error type of the image module: every failure of a pull, unpack, snapshot or spec
//! conversion, with a message that names what is wrong and what to do about it.
//!
//! The registry client's [`RegistryError`] converts into the variant of the same meaning, so
//! callers match one flat enum whichever layer (the registry or the local store) failed.
use std::path::PathBuf;

use registry::RegistryError;

/// Everything that can go wrong with images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("digest mismatch for {what}: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch { what: String, expected: String, actual: String },

    #[error("size mismatch for {what}: the manifest says {expected} bytes, the registry sent {actual}; nothing was stored")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    #[error("registry {registry} refused access to {scope}: {reason}")]
    Unauthorized { registry: String, scope: String, reason: String },

    /// The answer's body is kept for debugging but never shown (see [`registry::error`]).
    #[error("registry {registry}: {method} {url} answered {}", registry::error::status_line(*status, body))]
    Registry { registry: String, method: String, url: String, status: u16, body: String },

    #[error("request to {url} failed after {attempts} attempt(s): {reason}")]
    Transport { url: String, attempts: u32, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("refusing layer {layer}: entry {entry:?} {reason}; nothing outside the layer directory was written")]
    UnsafeLayerEntry { layer: String, entry: String, reason: String },

    #[error("layer {layer}: {reason}")]
    InvalidLayer { layer: String, reason: String },

    #[error("{what} is larger than the {limit} limit; refused")]
    TooLarge { what: String, limit: String },

    #[error("manifest {what}: {reason}")]
    InvalidManifest { what: String, reason: String },

    #[error("image config {what}: {reason}")]
    InvalidConfig { what: String, reason: String },

    #[error("{reference} has no image for {wanted} (the index offers: {available})")]
    NoMatchingPlatform { reference: String, wanted: String, available: String },

    #[error("image {0} is not in the local store; pull it first (sched-runtime image pull {0})")]
    NotFound(String),

    #[error("docker credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },

    #[error("cannot resolve user {user:?} in the image: {reason}")]
    UnknownUser { user: String, reason: String },

    #[error("mounting the overlay rootfs at {target} failed: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} is in use by container(s) {users}; remove them first")]
    InUse { what: String, users: String },
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidReference { reference, reason } => Self::InvalidReference { reference, reason },
            RegistryError::InvalidDigest(d) => Self::InvalidDigest(d),
            RegistryError::DigestMismatch { what, expected, actual } => Self::DigestMismatch { what, expected, actual },
            RegistryError::SizeMismatch { what, expected, actual } => Self::SizeMismatch { what, expected, actual },
            RegistryError::Unauthorized { registry, scope, reason } => Self::Unauthorized { registry, scope, reason },
            RegistryError::Status { registry, method, url, status, body } => Self::Registry { registry, method, url, status, body },
            RegistryError::Transport { url, attempts, reason } => Self::Transport { url, attempts, reason },
            RegistryError::TooLarge { what, limit } => Self::TooLarge { what, limit },
            RegistryError::InvalidManifest { what, reason } => Self::InvalidManifest { what, reason },
            RegistryError::InvalidConfig { what, reason } => Self::InvalidConfig { what, reason },
            RegistryError::Credentials { path, reason } => Self::Credentials { path, reason },
        }
    }
}

/// Shorthand for results of the image module.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| ImageError::Io { path: path.into(), source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| ImageError::Io { path: path.into(), source: e.into() })
    }
}
