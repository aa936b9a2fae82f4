//! The one error type of the image module: every failure of a pull, unpack, snapshot or spec
//! conversion, with a message that names what is wrong and what to do about it.
//!
//! The registry client's [`RegistryError`] is wrapped whole ([`ImageError::Registry`]), not
//! copied variant by variant: its messages reach users unchanged, and a fault the image module
//! finds itself (a digest or size mismatch, a bad manifest or config, a size limit) is raised
//! as the same `RegistryError` variant, so there is one place to match it.
use std::path::PathBuf;

use registry::RegistryError;

/// Everything that can go wrong with images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A reference, digest, manifest or image config is wrong, a registry refused or failed,
    /// or what it sent does not match its digest, size or limit: the registry crate's own
    /// error, shown as is. The image module raises these too when it finds the same faults
    /// locally (a layer whose content does not match its digest, a config it cannot use).
    #[error(transparent)]
    Registry(#[from] RegistryError),

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

    #[error("{reference} has no image for {wanted} (the index offers: {available})")]
    NoMatchingPlatform { reference: String, wanted: String, available: String },

    #[error("image {0} is not in the local store; pull it first (sched-runtime image pull {0})")]
    NotFound(String),

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
