//! What a networked agent holds on its host, listed the way an operator would look (the runtime
//! root, the data dir, the cgroup parent in every hierarchy, the netns dir, the agent's state
//! files (addresses, ports, host id ranges), the nft table, the bridge's ports, the shim
//! processes in `/proc`), for tests that check a node holds exactly what its running tasks
//! need: nothing left over, nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use agent::network::NodeNetworkConfig;
use serde_json::Value;

use crate::bundle::{cgroup_hierarchies, mounts_under};

/// Where an agent keeps what it holds: enough to list its holdings, also while it is down.
#[derive(Debug, Clone)]
pub struct Holder {
    pub data_dir: PathBuf,
    pub cgroup_parent: String,
    pub network: NodeNetworkConfig,
}

impl Holder {
    /// What the agent holds now (call it inside the node's network namespace).
    pub fn holdings(&self) -> Holdings {
        Holdings::of(&self.data_dir, &self.cgroup_parent, &self.network)
    }
}

/// Everything of an agent's on its host, each by the task id it is named after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdings {
    /// Container dirs under the runtime root (with or without `state.json`).
    pub containers: BTreeSet<String>,
    pub task_dirs: BTreeSet<String>,
    pub rootfs_dirs: BTreeSet<String>,
    /// Mount points under the rootfs dir.
    pub rootfs_mounts: Vec<String>,
    /// Cgroups under the cgroup parent, in any hierarchy.
    pub cgroups: BTreeSet<String>,
    /// `userns/ranges.json`: the tasks that hold a host id range.
    pub id_ranges: BTreeSet<String>,
    pub netns_pins: BTreeSet<String>,
    /// `ipam.json`: task id -> address.
    pub allocations: BTreeMap<String, String>,
    /// `ports.json`: host port -> task address.
    pub published: BTreeMap<u16, String>,
    /// `dnat` rules in the nft table's `published` chain.
    pub dnat_rules: Vec<String>,
    /// Links attached to the bridge.
    pub bridge_ports: BTreeSet<String>,
    /// Shim processes under the runtime root: pid -> task id.
    pub shims: BTreeMap<i32, String>,
    /// Whether the agent runs tasks with networks (else none of the network fields is looked at).
    pub networked: bool,
}

impl Holdings {
    /// Lists what the agent with `data_dir` and `cgroup_parent` holds on the node of `net`
    /// (call it from inside the node's network namespace).
    pub fn of(data_dir: &Path, cgroup_parent: &str, net: &NodeNetworkConfig) -> Holdings {
        let ipam = read_json(&net.ipam_file());
        let ports = read_json(&net.ports_file());
        let nft = Command::new(&net.nft).args(["list", "chain", "ip", &net.nft_table, "published"]).output().expect("run nft");
        Holdings {
            netns_pins: names_in(&net.netns_dir),
            allocations: ipam["allocations"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                .unwrap_or_default(),
            published: ports["published"]
                .as_object()
                .map(|m| m.values().filter_map(|p| Some((p["host_port"].as_u64()? as u16, p["task_ip"].as_str()?.to_string()))).collect())
                .unwrap_or_default(),
            dnat_rules: String::from_utf8_lossy(&nft.stdout)
                .lines()
                .filter(|l| l.contains("dnat to"))
                .map(|l| l.trim().to_string())
                .collect(),
            bridge_ports: bridge_ports(&net.bridge),
            networked: true,
            ..Holdings::without_network(data_dir, cgroup_parent)
        }
    }

    /// Lists what an agent without task networking (`--no-network`) holds.
    pub fn without_network(data_dir: &Path, cgroup_parent: &str) -> Holdings {
        let state_root = data_dir.join("runtime");
        Holdings {
            containers: names_in(&state_root),
            task_dirs: names_in(&data_dir.join("tasks")),
            rootfs_dirs: names_in(&data_dir.join("rootfs")),
            rootfs_mounts: mounts_under(&data_dir.join("rootfs")),
            cgroups: cgroup_hierarchies().iter().flat_map(|h| dirs_in(&h.join(cgroup_parent.trim_start_matches('/')))).collect(),
            id_ranges: read_json(&data_dir.join("userns/ranges.json"))["allocations"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            shims: shims(&state_root),
            ..Default::default()
        }
    }

    /// How these holdings differ from exactly what `tasks` (running, each with its network and
    /// its published ports) need: empty when they match.
    pub fn beyond(&self, tasks: &BTreeSet<String>) -> Vec<String> {
        self.beyond_keeping(tasks, &BTreeSet::new())
    }

    /// Like [`Holdings::beyond`], but the exited tasks the servers still list, `exited`, may
    /// keep their task dirs (exit record and logs) and nothing else.
    pub fn beyond_keeping(&self, tasks: &BTreeSet<String>, exited: &BTreeSet<String>) -> Vec<String> {
        let mut wrong = Vec::new();
        let kept: BTreeSet<String> = self.task_dirs.difference(exited).cloned().collect();
        if kept != *tasks {
            wrong.push(format!("task dirs: {:?} (exited tasks may keep theirs: {exited:?})", self.task_dirs));
        }
        let mut check = |what: &str, found: &BTreeSet<String>| {
            if found != tasks {
                wrong.push(format!("{what}: {found:?}"));
            }
        };
        check("containers", &self.containers);
        check("rootfs dirs", &self.rootfs_dirs);
        check("cgroups", &self.cgroups);
        // Every task of these tests runs in a user namespace of its own.
        check("host id ranges", &self.id_ranges);
        if self.networked {
            check("netns pins", &self.netns_pins);
            check("address allocations", &self.allocations.keys().cloned().collect());
        }
        let shim_tasks: Vec<&String> = self.shims.values().collect();
        if shim_tasks.iter().copied().cloned().collect::<BTreeSet<_>>() != *tasks || shim_tasks.len() != tasks.len() {
            wrong.push(format!("shims: {:?}", self.shims));
        }
        let mounts_of = |id: &String| self.rootfs_mounts.iter().filter(|m| m.contains(&format!("/rootfs/{id}/"))).count();
        if self.rootfs_mounts.len() != tasks.len() || tasks.iter().any(|id| mounts_of(id) != 1) {
            wrong.push(format!("rootfs mounts: {:?}", self.rootfs_mounts));
        }
        let held: BTreeSet<&String> = tasks.iter().filter_map(|id| self.allocations.get(id)).collect();
        if self.published.values().any(|ip| !held.contains(ip)) {
            wrong.push(format!("published ports to addresses no task holds: {:?}", self.published));
        }
        if self.dnat_rules.len() != self.published.len() {
            wrong.push(format!("nft dnat rules {:?} for published ports {:?}", self.dnat_rules, self.published));
        }
        let veths: BTreeSet<String> = self
            .allocations
            .values()
            .filter_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .map(|ip| format!("veth{:08x}", u32::from(ip)))
            .collect();
        if self.bridge_ports != veths {
            wrong.push(format!("bridge ports {:?} for the veths of the allocations {veths:?}", self.bridge_ports));
        }
        wrong
    }
}

/// The names of the entries of `dir` (none if it does not exist).
pub fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

/// The subdirectories of `dir` (a cgroup's children; its control files are not cgroups).
pub fn dirs_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or(Value::Null)
}

/// The links attached to `bridge` in the caller's network namespace.
fn bridge_ports(bridge: &str) -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link", "show", "master", bridge]).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Live shim processes of runtime root `state_root` (`sched-runtime --root ROOT shim ... ID`).
fn shims(state_root: &Path) -> BTreeMap<i32, String> {
    let root: PathBuf = state_root.to_path_buf();
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.len() > 4 && args[1] == "--root" && Path::new(&args[2]) == root && args[3] == "shim" && crate::bundle::process_alive(pid) {
            found.insert(pid, args[args.len() - 1].clone());
        }
    }
    found
}
