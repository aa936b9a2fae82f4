//! sched's OCI runtime.
//!
//! Two halves live here:
//!
//! - **Containers** ([`container`]): an OCI bundle (`config.json` + rootfs) becomes an isolated,
//!   limited process. [`container::Container`] carries one verb per file (`create`, `start`,
//!   `kill`, `delete`, `state`); the process that runs inside the new namespaces is set up by
//!   [`init`] (rootfs, mounts, devices, pivot_root, user, capabilities, rlimits); cgroups are
//!   applied through youki's `libcgroups` in [`cgroups`]. All `unsafe` code of the crate lives in
//!   [`sys`].
//! - **Images** (`image`): references, the registry client, the content store, layer unpack and
//!   overlay snapshots, and the image config -> OCI spec conversion.
//!
//! The `sched-runtime` binary is a thin runc-compatible CLI over this library.
pub mod image;

pub mod bundle;
pub mod cgroups;
pub mod container;
pub mod default_seccomp;
pub mod error;
pub mod hooks;
pub mod idmap;
mod init;
pub mod self_exe;
pub mod shim;
pub mod spec_template;
pub mod state;
mod sync;
mod sys;
pub mod sysctl;
pub mod time;

pub use error::{Error, Result};
/// The hidden `sched-runtime init` command: a container's init re-executed from a read-only
/// clone of the binary takes over here.
pub use init::{Handover as InitHandover, run_handed_over as run_init};
