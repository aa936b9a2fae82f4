//! What can go wrong with keys, certificates and tokens, in words that say what to do.

/// A key, certificate or identity that cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make the key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a usable certificate: {0}")]
    Certificate(String),
    #[error("not a sched identity: {0}")]
    Identity(String),
    #[error("no randomness from the kernel")]
    Random,
}

/// Why a join token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a join token ({0}); tokens look like SCHED1-agent-<64 hex>-<64 hex>: copy the whole line `sched token create` printed")]
    Malformed(String),
    #[error("the token is for another cluster (its CA fingerprint is {token}, this cluster's is {ours})")]
    OtherCluster { token: String, ours: String },
    #[error("unknown token {id}: it was never created here or was removed; create one with `sched token create`")]
    Unknown { id: String },
    #[error("token {id} expired at {expired_ms} (unix ms); create a new one with `sched token create`")]
    Expired { id: String, expired_ms: u64 },
    #[error("token {id} is a {recorded} token but says {claimed}")]
    RoleMismatch { id: String, recorded: String, claimed: String },
}
