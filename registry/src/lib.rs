//! The OCI registry client side of sched, shared by the runtime (which pulls images) and the
//! scheduler (which pins a service's image tag to a digest at apply time).
//!
//! - [`reference`]: parse and normalise `busybox`, `ghcr.io/org/app@sha256:...`, ...
//! - [`digest`]: `sha256:<hex>` digests, and hashers that check a stream against one.
//! - [`manifest`]: OCI / Docker schema2 manifests, indexes and image configs; platform choice.
//! - [`auth`]: credentials (explicit or docker's `config.json`), `WWW-Authenticate` challenges.
//! - [`client`]: [`RegistryClient`], the distribution API over reqwest + rustls: manifests,
//!   blobs (resumable), digest resolution (`HEAD`), anonymous / basic / bearer-token auth,
//!   retries with backoff; plain HTTP only for insecure registries (loopback always).
//! - [`error`]: [`RegistryError`], every failure above with what to do about it.
//!
//! Nothing here touches the disk except reading a credentials file: storing and unpacking
//! what is fetched is the runtime's job.
pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod reference;

pub use auth::{CredentialStore, Credentials};
pub use client::{ClientOptions, FetchedManifest, RegistryClient};
pub use digest::Digest;
pub use error::RegistryError;
pub use manifest::{ImageConfig, Platform};
pub use reference::Reference;
