//! How one agent runs: its servers, its identity and resources, and where it keeps things.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `sched-agent` is started with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server addresses (`HOST:PORT`), tried in turn; the agent moves on when one dies.
    pub servers: Vec<String>,
    /// The node's name (unique in the cluster; a restarted agent with the same name keeps its id).
    pub name: String,
    /// The address other nodes and the ingress reach this node's published ports on.
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// CPU capacity offered to tasks, in millicores.
    pub cpu_millis: u32,
    /// Memory offered to tasks, in MiB.
    pub memory_mib: u32,
    /// Images, task dirs and the runtime state live here.
    pub data_dir: PathBuf,
    /// The `sched-runtime` binary.
    pub runtime_binary: PathBuf,
    /// Where task cgroups are made (at each hierarchy's root).
    pub cgroup_parent: String,
    pub heartbeat_interval: Duration,
    /// How often local tasks are checked for exits.
    pub check_interval: Duration,
    /// How long a stopped task gets between its stop signal and SIGKILL.
    pub stop_grace: Duration,
    /// Task networking (bridge, namespaces, published ports); `None` runs tasks in their own
    /// empty network namespace (loopback only).
    pub network: Option<crate::network::NodeNetworkConfig>,
}

impl AgentConfig {
    /// The node's CPU count in millicores and memory in MiB, read from the host.
    pub fn host_capacity() -> (u32, u32) {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(0);
        (cpus * 1000, (mem_kib / 1024) as u32)
    }
}
