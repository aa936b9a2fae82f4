//! A container's cgroup, through youki's `libcgroups`: created when the init process is added,
//! limited from `linux.resources`, removed on delete. Works on pure cgroup v2, v1 and hybrid
//! hosts (libcgroups picks the manager from what is mounted).

use std::path::{Path, PathBuf};

use libcgroups::common::{
    AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager,
};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Spec};

use crate::error::{Error, Result};

/// The parent under which containers without a `linux.cgroupsPath` get their cgroup.
pub const DEFAULT_PARENT: &str = "/sched-runtime";

/// The cgroup of one container.
pub struct ContainerCgroup {
    path: PathBuf,
    manager: AnyCgroupManager,
}

/// The cgroup path a container uses: the spec's `linux.cgroupsPath`, else
/// `/sched-runtime/<id>`. Relative paths are taken from each hierarchy's root.
pub fn cgroup_path(spec: &Spec, id: &str) -> PathBuf {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| Path::new(DEFAULT_PARENT).join(id))
}

impl ContainerCgroup {
    /// Opens (without creating) the cgroup at `path`.
    pub fn open(path: &Path, id: &str) -> Result<ContainerCgroup> {
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: path.to_path_buf(),
            systemd_cgroup: false,
            container_name: id.to_string(),
        })
        .map_err(|e| Error::Cgroup { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(ContainerCgroup { path: path.to_path_buf(), manager })
    }

    /// Moves `pid` into the cgroup (creating it) and applies the spec's limits.
    pub fn enter_and_limit(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
        let pid = Pid::from_raw(pid);
        self.manager.add_task(pid).map_err(|e| self.error(e))?;
        let default = LinuxResources::default();
        let resources = resources.unwrap_or(&default);
        let opts = ControllerOpt {
            resources,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager.apply(&opts).map_err(|e| self.error(e))
    }

    /// Kills whatever still runs in the cgroup and removes it.
    pub fn remove(&self) -> Result<()> {
        self.manager.remove().map_err(|e| self.error(e))
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Cgroup { path: self.path.clone(), reason: e.to_string() }
    }
}
