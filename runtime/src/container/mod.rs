//! Containers and their verbs, one file per verb: [`create`](Container::create),
//! [`start`](Container::start), [`kill`](Container::kill), [`delete`](Container::delete),
//! [`state`](Container::state), and [`run`](Container::run) (create + start + wait in the
//! foreground).

mod create;
mod delete;
mod exec;
mod exec_process;
mod kill;
mod pause;
mod run;
mod start;
mod state;
pub(crate) mod userns;

use std::path::PathBuf;

pub use create::CreateOptions;
pub use exec::ExecOptions;
pub use exec_process::{ExecChanges, read_process};
pub use kill::parse_signal;
pub use state::OciState;
pub use userns::RootfsIds;

use crate::error::Result;
use crate::state::{PersistedState, StateRoot, Status};

/// A container known to the state root.
#[derive(Debug, Clone)]
pub struct Container {
    dir: PathBuf,
    state: PersistedState,
}

impl Container {
    /// Loads container `id` from the state root.
    pub fn load(root: &StateRoot, id: &str) -> Result<Container> {
        let state = root.load(id)?;
        Ok(Container { dir: root.container_dir(id)?, state })
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container's init process.
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    /// The container's status now.
    pub fn status(&self) -> Status {
        self.state.status(&self.dir)
    }

    /// The spec as `create` read it: its copy in the state directory (the bundle's config.json
    /// only for a container created by a runtime that kept no copy).
    pub fn spec(&self) -> Result<oci_spec::runtime::Spec> {
        let copy = self.dir.join(crate::state::CONFIG_FILE);
        let path = if copy.exists() { copy } else { self.state.bundle.join("config.json") };
        let text = std::fs::read(&path).map_err(|e| crate::Error::Io { what: format!("read {}", path.display()), source: e })?;
        serde_json::from_slice(&text).map_err(|e| crate::Error::ConfigMalformed { path, reason: e.to_string() })
    }

    /// The state JSON a hook gets, with `status`.
    fn hook_state(&self, status: Status) -> Vec<u8> {
        let mut state = self.state();
        state.status = status;
        state.pid = self.state.pid;
        serde_json::to_vec(&state).expect("the state serializes")
    }

    /// Every container under the state root, sorted by id.
    pub fn list(root: &StateRoot) -> Result<Vec<Container>> {
        root.ids()?
            .iter()
            .filter_map(|id| match Container::load(root, id) {
                Err(crate::Error::NotFound(_)) => None,
                other => Some(other),
            })
            .collect()
    }
}
