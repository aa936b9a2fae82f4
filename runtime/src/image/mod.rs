//! Images: from a reference in a registry to a container rootfs and an OCI spec.
//!
//! - [`reference`], [`digest`], [`manifest`], [`client`] + [`auth`]: the OCI distribution
//!   client (manifests, indexes, blobs; basic and bearer-token auth; retries; resumable blob
//!   downloads). They live in the `registry` crate, which the scheduler shares, and are
//!   re-exported here; [`ImageError::Registry`] wraps their [`RegistryError`] whole.
//! - [`store`]: the content store, blobs by digest, written atomically after verification.
//! - [`budget`]: the cap on an image's uncompressed bytes (gzip bombs), counted while unpacking.
//! - [`unpack`]: safe layer extraction (nothing outside the target, ever).
//! - [`snapshot`]: one directory per layer chain, overlay rootfs mounts, copy fallback, GC.
//! - [`pull`]: the pull pipeline (parallel layers; download, hash and unpack in one pass).
//! - [`records`]: what each pulled reference resolved to (the GC roots).
//! - [`config_to_spec`]: image config + overrides -> OCI runtime spec.
//! - [`bundle`]: the one image -> spec -> bundle pipeline (rootfs + `config.json`) that
//!   `sched-runtime run --image`, `sched-runtime image bundle` and the agent share.
//! - [`service`]: [`ImageService`], the API the CLI and the agent use.
//!
//! Data dir layout (default `/var/lib/sched`): `blobs/sha256/<hex>`, `blobs/ingest/`,
//! `images/<sha256(name)>.json`, `snapshots/<chain id hex>/fs`, `rootfs/<container>/{merged,upper,work}`.
pub use registry::{RegistryError, auth, client, digest, manifest, reference};

pub mod budget;
pub mod bundle;
pub mod config_to_spec;
pub mod error;
pub mod pull;
pub mod records;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use auth::{CredentialStore, Credentials};
pub use budget::{DEFAULT_MAX_IMAGE_BYTES, parse_size};
pub use bundle::ImageBundle;
pub use client::{ClientOptions, RegistryClient};
pub use config_to_spec::{ProcessOverrides, config_to_spec};
pub use digest::Digest;
pub use error::ImageError;
pub use manifest::{ImageConfig, Platform};
pub use pull::{NoProgress, PullProgress};
pub use records::ImageRecord;
pub use reference::Reference;
pub use service::{DEFAULT_DATA_DIR, ImageService, ImageServiceOptions, PreparedRootfs, PruneReport, RootfsMode};
pub use snapshot::RootfsKind;
