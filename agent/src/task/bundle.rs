//! What is agent-specific in a task's OCI bundle. The bundle itself (the image's rootfs, the
//! spec from the image config, `config.json`) is made by the runtime's one image -> bundle
//! pipeline, [`ImageService::create_bundle`](runtime::image::ImageService::create_bundle), as
//! for `sched-runtime run --image`. The agent adds, on the base spec it hands in: the task's
//! command and env overrides, cpu and memory as cgroup limits, a pids limit, the task's cgroup
//! path, hostname, a writable root, the network namespace to join, the seccomp profile
//! (Docker's default unless the service opted out), and a user namespace of its own that maps
//! container ids 0-65535 onto the task's host id range (unless the service opted out). With that
//! namespace in the base spec, `create_bundle` mounts the rootfs overlay on idmapped snapshots.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Spec,
};
use runtime::image::ProcessOverrides;

use super::id_ranges::{IdRange, RANGE_SIZE};
use super::{Seccomp, TaskSpec};
use crate::error::{AgentError, Result};

/// The CFS period the CPU quota is expressed in (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// A task may not fork without bound.
const PIDS_LIMIT: i64 = 4096;

/// Overrides of the image's process from the task spec.
pub fn overrides(task: &TaskSpec) -> ProcessOverrides {
    ProcessOverrides {
        entrypoint: task.command.clone(),
        cmd: None,
        env: task.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: None,
        user: None,
    }
}

/// Adds what the image does not know to `spec`: limits, cgroup path, hostname, network
/// namespace, seccomp profile and, with `ids` (the task's host id range), a new user namespace
/// mapping container ids 0-65535 onto it. The driver applies it to the base spec before the image
/// config is, which sets none of these (only the process, `root.path` and annotations).
pub fn finish_spec(mut spec: Spec, task: &TaskSpec, cgroup_parent: &str, netns: Option<&Path>, ids: Option<IdRange>) -> Result<Spec> {
    spec.set_hostname(Some(short_hostname(&task.id)));
    // A task's root is writable (into its own overlay upper dir), as in docker and ECS.
    if let Some(root) = spec.root_mut().as_mut() {
        root.set_readonly(Some(false));
    }
    let mut resources = LinuxResourcesBuilder::default();
    if task.cpu_millis > 0 {
        let quota = i64::from(task.cpu_millis) * CPU_PERIOD_US as i64 / 1000;
        let shares = (u64::from(task.cpu_millis) * 1024 / 1000).max(2);
        resources =
            resources.cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).shares(shares).build().map_err(spec_error)?);
    }
    if task.memory_mib > 0 {
        let bytes = i64::from(task.memory_mib) * 1024 * 1024;
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).build().map_err(spec_error)?);
    }
    resources = resources.pids(LinuxPidsBuilder::default().limit(PIDS_LIMIT).build().map_err(spec_error)?);
    let resources = resources.build().map_err(spec_error)?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    linux.set_resources(Some(resources));
    linux.set_seccomp(match task.seccomp {
        Seccomp::Default => Some(runtime::default_seccomp::default_seccomp()),
        Seccomp::Unconfined => None,
    });
    linux.set_cgroups_path(Some(PathBuf::from(format!("{}/{}", cgroup_parent.trim_end_matches('/'), task.id))));
    if let Some(path) = netns {
        let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Network);
        ns.set_path(Some(path.to_path_buf()));
        namespaces.push(ns);
        linux.set_namespaces(Some(namespaces));
    }
    let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::User);
    match ids {
        Some(range) => {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(LinuxNamespaceType::User);
            namespaces.push(ns);
            let map =
                LinuxIdMappingBuilder::default().container_id(0u32).host_id(range.first).size(RANGE_SIZE).build().map_err(spec_error)?;
            linux.set_uid_mappings(Some(vec![map]));
            linux.set_gid_mappings(Some(vec![map]));
        }
        None => {
            linux.set_uid_mappings(None);
            linux.set_gid_mappings(None);
        }
    }
    linux.set_namespaces(Some(namespaces));
    Ok(spec)
}

/// A hostname from a task id (at most 63 characters, as DNS labels allow).
fn short_hostname(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63).collect()
}

fn spec_error(e: impl std::fmt::Display) -> AgentError {
    AgentError::Spec(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskSpec {
        TaskSpec {
            id: "quotes-7f3a".into(),
            image: "127.0.0.1:5000/quotes:1.0".into(),
            command: Some(vec!["/bin/httpd".into(), "-f".into()]),
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            cpu_millis: 250,
            memory_mib: 128,
            ports: vec![8080],
            health: None,
            seccomp: Seccomp::Default,
            userns: Default::default(),
        }
    }

    #[test]
    fn cpu_and_memory_become_cgroup_limits() {
        let spec = finish_spec(Spec::default(), &task(), "/sched", None, None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let r = linux.resources().as_ref().unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(25_000), "250 millicores = 25 ms per 100 ms");
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(128 * 1024 * 1024));
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/sched/quotes-7f3a")));
        assert_eq!(spec.hostname().as_deref(), Some("quotes-7f3a"));
    }

    #[test]
    fn tasks_get_the_default_seccomp_profile_unless_the_service_opted_out() {
        let spec = finish_spec(Spec::default(), &task(), "/sched", None, None).unwrap();
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().expect("a profile");
        assert_eq!(seccomp, &runtime::default_seccomp::default_seccomp());
        let unconfined = TaskSpec { seccomp: Seccomp::Unconfined, ..task() };
        let spec = finish_spec(Spec::default(), &unconfined, "/sched", None, None).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    }

    #[test]
    fn a_range_puts_the_task_in_a_new_user_namespace_mapping_65536_ids() {
        let base = runtime::spec_template::default_spec(&[]);
        let spec = finish_spec(base.clone(), &task(), "/sched", None, Some(IdRange { first: 3 << 30 })).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let users: Vec<_> = linux.namespaces().iter().flatten().filter(|n| n.typ() == LinuxNamespaceType::User).collect();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].path(), &None, "a new namespace, not a joined one");
        for map in [linux.uid_mappings(), linux.gid_mappings()] {
            let lines: Vec<_> = map.iter().flatten().map(|m| (m.container_id(), m.host_id(), m.size())).collect();
            assert_eq!(lines, [(0, 3 << 30, 65_536)]);
        }
        let mappings = runtime::idmap::Mappings::of_new_user_namespace(&spec).expect("the image service sees the mappings");
        assert_eq!(mappings.uid.to_host(0), Some(3 << 30));
        // The runtime's checks accept it.
        runtime::idmap::IdMap::from_spec(runtime::idmap::MapKind::Uid, linux.uid_mappings().as_deref().unwrap()).unwrap();

        let host = finish_spec(base, &task(), "/sched", None, None).unwrap();
        let linux = host.linux().as_ref().unwrap();
        assert!(!linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::User), "opted out: the host's");
        assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
    }

    #[test]
    fn a_network_namespace_path_replaces_the_new_one() {
        let spec = finish_spec(Spec::default(), &task(), "/sched", Some(Path::new("/run/sched/netns/t1")), None).unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        let net: Vec<_> = ns.iter().filter(|n| n.typ() == LinuxNamespaceType::Network).collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0].path().as_deref(), Some(Path::new("/run/sched/netns/t1")));
    }

    /// The driver applies the task's settings to the base spec, before the image config: the
    /// image's part must leave them as they are, so the spec is the one of the opposite order.
    #[test]
    fn the_task_settings_survive_the_image_config() {
        use runtime::image::{ImageConfig, config_to_spec};
        use runtime::spec_template::default_spec;
        let rootfs = tempfile::tempdir().unwrap();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/srv","StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}}}}"#;
        let config = ImageConfig::parse(config, "test").unwrap();
        let (task, netns) = (task(), Some(Path::new("/run/sched/netns/t1")));
        let ids = Some(IdRange { first: 1 << 31 });
        let base = finish_spec(default_spec(&[]), &task, "/sched", netns, ids).unwrap();
        let task_first = config_to_spec(&config, rootfs.path(), &overrides(&task), base).unwrap();
        let image = config_to_spec(&config, rootfs.path(), &overrides(&task), default_spec(&[])).unwrap();
        let image_first = finish_spec(image, &task, "/sched", netns, ids).unwrap();
        assert_eq!(task_first, image_first);
        assert_eq!(task_first.root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn the_command_replaces_entrypoint_and_env_overrides_are_listed() {
        let o = overrides(&task());
        assert_eq!(o.entrypoint, Some(vec!["/bin/httpd".to_string(), "-f".to_string()]));
        assert_eq!(o.env, vec!["GREETING=hi".to_string()]);
    }
}
