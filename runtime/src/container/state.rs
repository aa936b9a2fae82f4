//! `state`: the OCI state of a container, as JSON.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::Container;
use crate::state::Status;

/// The OCI runtime state (plus runc's extra fields rootfs, created and owner).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl Container {
    /// The container's OCI state now.
    pub fn state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: "1.2.0".into(),
            id: self.state.id.clone(),
            pid: if status == Status::Stopped { 0 } else { self.state.pid },
            status,
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created.clone(),
            owner: String::new(),
            annotations: self.state.annotations.clone(),
        }
    }
}
