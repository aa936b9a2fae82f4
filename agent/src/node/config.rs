//! How one agent runs: its servers, its identity and resources, and where it keeps things.
//!
//! [`AgentConfig::for_this_host`] gives the defaults both `sched-agent` and `sched dev` start
//! from (all of the host's CPU and memory, the hostname as the node name, `sched-runtime` beside
//! the running binary, task networking on); each binary then applies its own flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything an agent (`sched-agent`, or the one inside `sched dev`) is started with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server addresses (`HOST:PORT`), tried in turn; the agent moves on when one dies.
    pub servers: Vec<String>,
    /// The node's name (unique in the cluster; a restarted agent with the same name keeps its id).
    pub name: String,
    /// The address other nodes and the ingress reach this node's published ports on.
    pub address: String,
    /// Where the agent's own API (task logs, for `sched logs`) listens: HOST:PORT, port 0 for any
    /// free one; `None` is `address`:7071. Registered with the servers, with an unspecified IP
    /// replaced by `address`.
    pub api_listen: Option<String>,
    /// Log follows the agent API serves at once (one more is refused, naming the limit).
    pub max_log_follows: usize,
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
    /// The host ids from which each task in a user namespace of its own gets 65,536
    /// (`--userns-ids FIRST:COUNT`).
    pub userns_ids: crate::task::IdPool,
    /// How often the node heartbeats with its tasks' CPU and memory. The autoscaler averages
    /// the last 3 s, so 1 s gives it about three samples per task.
    pub heartbeat_interval: Duration,
    /// How often local tasks are checked for exits.
    pub check_interval: Duration,
    /// How long a stopped task gets between its stop signal and SIGKILL.
    pub stop_grace: Duration,
    /// How often the reaper matches what is on the host to the node's tasks and removes
    /// leftovers (it also runs once the first assignments arrive).
    pub reap_interval: Duration,
    /// Task networking (bridge, namespaces, published ports); `None` runs tasks in their own
    /// empty network namespace (loopback only).
    pub network: Option<crate::network::NodeNetworkConfig>,
    /// Registries (`host[:port]`) pulled from over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// The node's ingress; `None` runs none.
    pub ingress: Option<crate::ingress_node::IngressSettings>,
    /// The most bytes one image's layers may unpack to (a bigger image fails to pull).
    pub max_image_bytes: u64,
    /// When images no task uses are removed.
    pub image_gc: super::ImageGcPolicy,
    /// Where the node's certificate comes from (the agent's connections to the servers and its
    /// API are mutual TLS with it).
    pub credentials: super::NodeCredentials,
}

/// The cgroup task cgroups are made under, at each hierarchy's root.
pub const DEFAULT_CGROUP_PARENT: &str = "/sched";

impl AgentConfig {
    /// The defaults for an agent on this host talking to `servers` and keeping its data in
    /// `data_dir`: named after the hostname, offering all CPU and memory, publishing ports on
    /// 127.0.0.1, with task networking on the default bridge.
    pub fn for_this_host(servers: Vec<String>, data_dir: PathBuf) -> crate::Result<AgentConfig> {
        let (cpu_millis, memory_mib) = AgentConfig::host_capacity();
        let name = nix::unistd::gethostname()
            .map_err(|e| crate::AgentError::io("cannot read the hostname (pass a node name)".into(), e.into()))?
            .to_string_lossy()
            .into_owned();
        Ok(AgentConfig {
            servers,
            name,
            address: "127.0.0.1".into(),
            api_listen: None,
            max_log_follows: crate::logs::DEFAULT_MAX_FOLLOWS,
            labels: BTreeMap::new(),
            cpu_millis,
            memory_mib,
            network: Some(crate::network::NodeNetworkConfig::new(&data_dir)),
            insecure_registries: Vec::new(),
            ingress: None,
            max_image_bytes: runtime::image::DEFAULT_MAX_IMAGE_BYTES,
            image_gc: super::ImageGcPolicy::default(),
            credentials: super::NodeCredentials::Stored { join_token: None },
            data_dir,
            runtime_binary: AgentConfig::default_runtime_binary(),
            cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
            userns_ids: Default::default(),
            heartbeat_interval: Duration::from_secs(1),
            check_interval: Duration::from_millis(500),
            stop_grace: Duration::from_secs(10),
            reap_interval: Duration::from_secs(60),
        })
    }

    /// `sched-runtime` next to the running executable (how releases and `target/<profile>/`
    /// lay binaries out), else the one on `PATH`.
    pub fn default_runtime_binary() -> PathBuf {
        let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("sched-runtime")));
        beside.filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("sched-runtime"))
    }

    /// The node's CPU count in millicores and memory in MiB, read from the host.
    pub fn host_capacity() -> (u32, u32) {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(0);
        (cpus * 1000, (mem_kib / 1024) as u32)
    }
}
