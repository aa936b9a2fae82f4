//! The error of the registry client: what a registry, a reference, a digest or a manifest got
//! wrong, with a message that names it and what to do about it.
use std::path::PathBuf;

/// Everything that can go wrong talking to a registry or reading what it sent.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
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

    #[error("registry {registry}: {method} {url} answered HTTP {status}: {body}")]
    Status { registry: String, method: String, url: String, status: u16, body: String },

    #[error("request to {url} failed after {attempts} attempt(s): {reason}")]
    Transport { url: String, attempts: u32, reason: String },

    #[error("{what} is larger than the {limit} limit; refused")]
    TooLarge { what: String, limit: String },

    #[error("manifest {what}: {reason}")]
    InvalidManifest { what: String, reason: String },

    #[error("image config {what}: {reason}")]
    InvalidConfig { what: String, reason: String },

    #[error("docker credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
}
