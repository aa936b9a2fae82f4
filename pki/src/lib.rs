//! The cluster's PKI, as pure functions over keys, certificates and tokens (no files, no
//! network): the groundwork of mutual TLS (issue 13).
//!
//! - [`ClusterCa`]: the cluster's certificate authority. The first server creates it; it signs
//!   every certificate the cluster's connections present. Its fingerprint (SHA-256 of the
//!   certificate's DER) is what a joining node pins before it trusts anything.
//! - [`Identity`]: who holds a certificate, a [`Role`] and a name, written into the
//!   certificate as the URI `sched://ROLE/NAME` (and the name as its common name). The servers
//!   read it back from a peer's certificate to decide what the peer may do; they never take it
//!   from what a request says about itself.
//! - [`JoinToken`]: Swarm-style join tokens, `SCHED1-ROLE-CAFINGERPRINT-SECRET`. The joiner
//!   checks the servers' CA against the fingerprint; the servers keep only a digest of the
//!   secret ([`TokenRecord`]) and [`check_token`] answers who may join, until when.
//!
//! Keys are ECDSA P-256 (rcgen's default, fast to make and to verify); randomness comes from
//! ring's `SystemRandom` (the kernel's).

mod ca;
mod error;
mod holder;
mod identity;
mod token;

pub use ca::{BACKDATE, ClusterCa, Fingerprint, Issued, key_and_request};
pub use error::{PkiError, TokenError};
pub use holder::CertificateHolder;
pub use identity::{Identity, MAX_NAME_LEN, Role};
pub use token::{JoinToken, TOKEN_PREFIX, TokenRecord, check_token};
