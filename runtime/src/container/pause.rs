//! `pause` and `resume`: freeze and thaw every process of a container through its cgroup
//! (the v1 freezer or cgroup v2's `cgroup.freeze`, via libcgroups).

use libcgroups::common::FreezerState;

use super::Container;
use crate::cgroups::ContainerCgroup;
use crate::error::{Error, Result};
use crate::state::Status;

impl Container {
    /// Freezes a running container.
    pub fn pause(&self) -> Result<()> {
        self.expect_status(Status::Running, "only a running container can be paused")?;
        ContainerCgroup::open(&self.state.cgroup_path, self.id())?.freeze(FreezerState::Frozen)
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        self.expect_status(Status::Paused, "only a paused container can be resumed")?;
        ContainerCgroup::open(&self.state.cgroup_path, self.id())?.freeze(FreezerState::Thawed)
    }

    fn expect_status(&self, wanted: Status, what: &str) -> Result<()> {
        let status = self.status();
        if status == wanted {
            Ok(())
        } else {
            Err(Error::WrongStatus { id: self.id().into(), status: status.to_string(), what: what.into() })
        }
    }
}
