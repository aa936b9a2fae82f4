//! The netns lab: several "hosts" on one machine, each a network namespace with one cable to a
//! shared switch, running a real `sched server` and a real `sched-agent`.
//!
//! Layout (everything under one unique `/run/sched-test-…` dir and one temp dir):
//! - the **switch** namespace holds the Linux bridge `labbr` with `10.200.N.1/24`, the image
//!   registry (`docker-registry` on `10.200.N.1:5000`) and every client call the tests make
//!   (`sched` CLI, HTTP to endpoints). Keeping the bridge out of the host's own namespace means
//!   the host's firewall (e.g. a FORWARD policy of DROP with `br_netfilter`) never sees lab
//!   traffic, and nothing the lab does can route off the machine;
//! - host `hI` (I = 1..) is a namespace with `eth0` = `10.200.N.(I+1)/24`, a default route via
//!   the switch, its veth peer `hI` on the bridge. Its server listens on `10.200.N.(I+1):7701`;
//!   its agent publishes task ports on that address and has its own data dir, cgroup parent
//!   (`/sched-test-…-hI`) and task netns dir. The task bridge, subnet, nft table and port range
//!   are the agent's defaults: they live inside the host's namespace, so hosts cannot collide.
//!
//! Processes enter a namespace with `nsenter --net=FILE` (not `ip netns exec`, which remounts
//! /sys and hides the cgroup mounts). They share the machine's mount table and cgroup tree,
//! which is why every per-host path is distinct.
//!
//! Fault injection: [`Lab::cut`] takes a host's cable down, [`Lab::kill_host`] SIGKILLs every
//! process of a host (found by network namespace and cgroup, so shims and containers too).
//! Dropping the lab — also on panic — kills every process of every host, unmounts what the
//! agents mounted (overlay rootfs, task namespaces), removes the agents' cgroups bottom-up and
//! the namespaces (which takes the bridge, the veths and the agents' nft tables with them), and
//! the dirs.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent::network::netns;
use nix::sched::{CloneFlags, setns};
use serde_json::Value;

use crate::bundle::{cgroup_hierarchies, mounts_under, runtime_binary, unique_name};
use crate::cluster::sched_binary;

/// The port every lab server listens on (each in its own namespace).
pub const SERVER_PORT: u16 = 7701;
/// The registry's port on the switch.
pub const REGISTRY_PORT: u16 = 5000;
/// The bridge in the switch namespace.
const BRIDGE: &str = "labbr";

/// How the lab's servers and agents run.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Hosts, each with one server and one agent.
    pub hosts: usize,
    /// `sched server --node-timeout-ms`.
    pub node_timeout_ms: u64,
    /// The host (index) whose agent also runs the ingress on `IP:`[`INGRESS_PORT`]; its node
    /// gets the label `role=edge`, every other node `role=worker`.
    pub ingress_host: Option<usize>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { hosts: 3, node_timeout_ms: 10_000, ingress_host: None }
    }
}

/// The port the ingress host's agent serves the ingress on.
pub const INGRESS_PORT: u16 = 8080;

/// One host of the lab: a namespace, its server and its agent.
pub struct Host {
    /// `h1`, `h2`, …: also the agent's node name and the switch-side veth name.
    pub name: String,
    /// The server's Raft id (1-based, the host's number).
    pub id: u64,
    pub ip: Ipv4Addr,
    /// The pinned network namespace.
    pub netns: PathBuf,
    pub agent_data: PathBuf,
    pub cgroup_parent: String,
    /// Where the agent pins task namespaces.
    pub task_netns_dir: PathBuf,
    server_data: PathBuf,
    server: Option<Child>,
    agent: Option<Child>,
}

impl Host {
    /// `IP:7701`.
    pub fn server_address(&self) -> String {
        format!("{}:{SERVER_PORT}", self.ip)
    }

    pub fn server_runs(&self) -> bool {
        self.server.is_some()
    }
}

/// A container on a host as its runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub host: String,
    pub id: String,
    pub status: String,
    pub pid: i64,
}

/// A running lab; dropped = everything it made is gone.
pub struct Lab {
    /// `/run/sched-test-…`: namespace files (tmpfs, so bind mounts of nsfs work).
    root: PathBuf,
    /// Data dirs, logs, the registry's storage, image layouts.
    dir: tempfile::TempDir,
    /// `10.200.N`.
    net: String,
    switch: PathBuf,
    registry: Option<Child>,
    pub hosts: Vec<Host>,
    options: LabOptions,
}

pub use crate::wait::wait_until;

impl Lab {
    /// Builds the network, starts the registry, the servers (waiting for a leader) and the
    /// agents (waiting until every node is ready).
    pub fn start(options: LabOptions) -> Lab {
        assert!((1..=9).contains(&options.hosts), "1-9 hosts");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Only for telling labs apart in logs: each lab's network is private to its namespaces.
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed) * 37) % 250 + 1;
        let root = Path::new("/run").join(unique_name());
        fs::create_dir_all(&root).expect("create the lab dir under /run");
        let dir = tempfile::Builder::new().prefix("sched-lab-").tempdir().expect("temp dir");
        let mut lab =
            Lab { switch: root.join("switch"), root, dir, net: format!("10.200.{n}"), registry: None, hosts: Vec::new(), options };
        let tag = lab.root.file_name().unwrap().to_string_lossy().into_owned();
        for i in 1..=lab.options.hosts as u64 {
            let name = format!("h{i}");
            lab.hosts.push(Host {
                ip: format!("{}.{}", lab.net, i + 1).parse().unwrap(),
                netns: lab.root.join(&name),
                agent_data: lab.dir.path().join(format!("{name}-agent")),
                cgroup_parent: format!("/{tag}-{name}"),
                task_netns_dir: lab.root.join(format!("{name}-tasks")),
                server_data: lab.dir.path().join(format!("{name}-server")),
                server: None,
                agent: None,
                id: i,
                name,
            });
        }
        lab.build_network();
        lab.start_registry();
        // The servers of an initial cluster of several share a CA made beforehand.
        let made = Command::new(sched_binary()).args(["ca", "create"]).arg(lab.ca_dir()).output().expect("run sched ca create");
        assert!(made.status.success(), "sched ca create: {}", text(&made.stderr));
        for i in 0..lab.hosts.len() {
            lab.spawn_server(i);
        }
        for host in &lab.hosts {
            lab.wait_for_port(host.ip, SERVER_PORT, "sched server");
        }
        lab.wait_for_leader(Duration::from_secs(30));
        for i in 0..lab.hosts.len() {
            lab.spawn_agent(i);
        }
        let names: Vec<String> = lab.hosts.iter().map(|h| h.name.clone()).collect();
        wait_until(
            "every agent's node is ready",
            Duration::from_secs(30),
            || {
                let ready = lab
                    .nodes()
                    .into_iter()
                    .filter(|n| n["status"] == "ready")
                    .filter_map(|n| n["name"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>();
                names.iter().all(|n| ready.contains(n))
            },
            || format!("nodes: {:#}", Value::Array(lab.nodes())),
        );
        lab
    }

    fn build_network(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
        runtime.block_on(netns::create(&self.switch)).expect("create the switch namespace");
        let gateway = format!("{}.1/24", self.net);
        self.in_switch_ok(&["ip", "link", "set", "lo", "up"]);
        self.in_switch_ok(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        self.in_switch_ok(&["ip", "addr", "add", &gateway, "dev", BRIDGE]);
        self.in_switch_ok(&["ip", "link", "set", BRIDGE, "up"]);
        for host in &self.hosts {
            runtime.block_on(netns::create(&host.netns)).unwrap_or_else(|e| panic!("create namespace {}: {e}", host.name));
            let peer_ns = host.netns.to_string_lossy();
            self.in_switch_ok(&["ip", "link", "add", &host.name, "type", "veth", "peer", "name", "eth0", "netns", &peer_ns]);
            self.in_switch_ok(&["ip", "link", "set", &host.name, "master", BRIDGE, "up"]);
            let address = format!("{}/24", host.ip);
            let via = format!("{}.1", self.net);
            for args in [
                &["ip", "link", "set", "lo", "up"][..],
                &["ip", "addr", "add", &address, "dev", "eth0"],
                &["ip", "link", "set", "eth0", "up"],
                &["ip", "route", "add", "default", "via", &via],
            ] {
                ok(&nsenter(&host.netns, args), args);
            }
        }
    }

    fn start_registry(&mut self) {
        let storage = self.dir.path().join("registry");
        fs::create_dir_all(&storage).expect("registry storage dir");
        let config = self.dir.path().join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n\
                 http:\n  addr: {}\n  secret: sched-lab-secret\n",
                storage.display(),
                self.registry_addr()
            ),
        )
        .expect("write the registry config");
        let child = self.spawn_logged(&self.switch.clone(), "docker-registry", &["serve", &config.to_string_lossy()], "registry");
        self.registry = Some(child);
        self.wait_for_port(format!("{}.1", self.net).parse().unwrap(), REGISTRY_PORT, "docker-registry");
    }

    /// The lab's /24 (`10.200.N.0`), for a load generator's allow-list.
    pub fn subnet(&self) -> Ipv4Addr {
        format!("{}.0", self.net).parse().expect("the lab's network")
    }

    /// `10.200.N.1:5000`: where agents pull images from.
    pub fn registry_addr(&self) -> String {
        format!("{}.1:{REGISTRY_PORT}", self.net)
    }

    /// Where the lab keeps its files (logs, data dirs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self, what: &str) -> PathBuf {
        self.dir.path().join(format!("{what}.log"))
    }

    fn spawn_logged(&self, netns: &Path, program: &str, args: &[&str], log_name: &str) -> Child {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path(log_name)).expect("open a log file");
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SCHED_SERVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {}: {e}", netns.display()))
    }

    fn spawn_server(&mut self, index: usize) {
        let initial = self.hosts.iter().map(|h| format!("{}={}", h.id, h.server_address())).collect::<Vec<_>>().join(",");
        let host = &self.hosts[index];
        let sched = sched_binary().to_string_lossy().into_owned();
        let args = [
            "server",
            "--id",
            &host.id.to_string(),
            "--listen",
            &host.server_address(),
            "--data-dir",
            &host.server_data.to_string_lossy(),
            "--initial-cluster",
            &initial,
            "--node-timeout-ms",
            &self.options.node_timeout_ms.to_string(),
            "--insecure-registry",
            &self.registry_addr(),
            "--ca-dir",
            &self.ca_dir().to_string_lossy(),
            "--admin-credentials",
            &host.server_data.join("admin.toml").to_string_lossy(),
        ]
        .map(str::to_owned);
        let child =
            self.spawn_logged(&host.netns, &sched, &args.iter().map(String::as_str).collect::<Vec<_>>(), &format!("{}-server", host.name));
        self.hosts[index].server = Some(child);
    }

    fn spawn_agent(&mut self, index: usize) {
        let host = &self.hosts[index];
        // The next host's server first, then the others in turn: so every server has an agent
        // connected from another host, which must notice when that host is cut off or killed.
        let n = self.hosts.len();
        let servers = (0..n).map(|k| self.hosts[(index + k + 1) % n].server_address()).collect::<Vec<_>>().join(",");
        let agent = sched_binary().with_file_name("sched-agent");
        assert!(agent.exists(), "{} is missing: cargo build -p agent", agent.display());
        let userns_ids = crate::agent_process::userns_ids_for(&host.agent_data);
        let args = [
            "--server",
            &servers,
            "--name",
            &host.name,
            "--address",
            &host.ip.to_string(),
            "--data-dir",
            &host.agent_data.to_string_lossy(),
            "--cgroup-parent",
            &host.cgroup_parent,
            "--userns-ids",
            &userns_ids,
            "--netns-dir",
            &host.task_netns_dir.to_string_lossy(),
            "--insecure-registry",
            &self.registry_addr(),
            "--runtime",
            &runtime_binary().to_string_lossy(),
            "--stop-grace",
            "1",
            "--cpu",
            "4000",
            "--memory",
            "4096",
        ]
        .map(str::to_owned);
        let mut args = args.to_vec();
        // The first start joins with a token; a restart finds the node's certificate.
        if !host.agent_data.join("pki").join(transport::CERTIFICATE_FILE).exists() {
            let token = self.sched_ok(&["token", "create", "--role", "agent"]).trim().to_string();
            args.extend(["--join".to_owned(), token]);
        }
        let host = &self.hosts[index];
        if let Some(edge) = self.options.ingress_host {
            let role = if edge == index { "role=edge" } else { "role=worker" };
            args.extend(["--labels".to_owned(), role.to_owned()]);
            if edge == index {
                args.extend(["--ingress-listen".to_owned(), format!("{}:{INGRESS_PORT}", host.ip)]);
                let access_log = self.log_path("ingress-access");
                args.extend(["--ingress-access-log".to_owned(), access_log.to_string_lossy().into_owned()]);
            }
        }
        let child = self.spawn_logged(
            &host.netns,
            &agent.to_string_lossy(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &format!("{}-agent", host.name),
        );
        self.hosts[index].agent = Some(child);
    }

    /// Runs `work` on a thread inside the switch namespace (processes it starts are there too).
    pub fn in_switch<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let switch = fs::File::open(&self.switch).expect("open the switch namespace");
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                setns(&switch, CloneFlags::CLONE_NEWNET).expect("enter the switch namespace");
                work()
            });
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn in_switch_ok(&self, args: &[&str]) {
        ok(&nsenter(&self.switch, args), args);
    }

    #[track_caller]
    fn wait_for_port(&self, ip: Ipv4Addr, port: u16, what: &str) {
        let address = SocketAddr::from((ip, port));
        let up = self.in_switch(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
                    return true;
                }
                sleep(Duration::from_millis(20));
            }
            false
        });
        assert!(up, "{what} did not listen on {address} within 20 s; logs in {}", self.dir.path().display());
    }

    /// Pushes a busybox image (see [`crate::busybox_image::push_busybox`]) to the lab registry;
    /// returns the reference agents pull.
    pub fn push_busybox(&self, repo_tag: &str, process: Value) -> String {
        let work = self.dir.path().join(format!("image-{}", repo_tag.replace([':', '/'], "-")));
        fs::create_dir_all(&work).expect("image work dir");
        let registry = self.registry_addr();
        self.in_switch(|| crate::busybox_image::push_busybox(&work, &registry, repo_tag, Vec::new(), process))
    }

    /// Addresses of the servers that run, comma-separated.
    pub fn server_addresses(&self) -> String {
        self.hosts.iter().filter(|h| h.server.is_some()).map(Host::server_address).collect::<Vec<_>>().join(",")
    }

    /// Where the servers' shared CA was made.
    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// An admin credentials file a server wrote.
    pub fn admin_credentials(&self) -> PathBuf {
        let files = self.hosts.iter().map(|h| h.server_data.join("admin.toml"));
        files.clone().find(|f| f.exists()).unwrap_or_else(|| files.into_iter().next().expect("a host"))
    }

    /// `sched --server <running servers> ARGS` from the switch, as the admin.
    pub fn sched(&self, args: &[&str]) -> Output {
        let servers = self.server_addresses();
        let config = self.admin_credentials().to_string_lossy().into_owned();
        let mut all = vec![sched_binary().to_string_lossy().into_owned(), "--server".into(), servers, "--config".into(), config];
        all.extend(args.iter().map(|a| a.to_string()));
        nsenter(&self.switch, &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `sched ARGS` that must succeed; its stdout.
    #[track_caller]
    pub fn sched_ok(&self, args: &[&str]) -> String {
        let out = self.sched(args);
        assert!(out.status.success(), "sched {args:?} failed ({}): {}{}", out.status, text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// `sched ARGS -o json`, or `None` when the call failed (e.g. during an election).
    pub fn sched_json(&self, args: &[&str]) -> Option<Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.sched(&args);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The tasks, retried through elections for up to 10 s.
    #[track_caller]
    pub fn tasks(&self) -> Vec<Value> {
        self.retrying(&["get", "tasks"]).as_array().cloned().unwrap_or_default()
    }

    /// The nodes, retried through elections for up to 10 s.
    #[track_caller]
    pub fn nodes(&self) -> Vec<Value> {
        self.retrying(&["get", "nodes"]).as_array().cloned().unwrap_or_default()
    }

    #[track_caller]
    fn retrying(&self, args: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = self.sched_json(args) {
                return value;
            }
            if Instant::now() > deadline {
                let out = self.sched(args);
                panic!("sched {args:?} kept failing for 10 s: {}{}", text(&out.stdout), text(&out.stderr));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Node id -> host name.
    #[track_caller]
    pub fn node_names(&self) -> BTreeMap<u64, String> {
        self.nodes().iter().filter_map(|n| Some((n["id"].as_u64()?, n["name"].as_str()?.to_owned()))).collect()
    }

    /// The leader's server id once the running servers agree on one that runs.
    #[track_caller]
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let runs = |id: u64| self.hosts.iter().any(|h| h.id == id && h.server.is_some());
        crate::wait::wait_for_leader(timeout, || self.sched_json(&["cluster", "members"]), runs, self.dir.path())
    }

    /// Every container the hosts' runtimes know (running or not).
    pub fn containers(&self) -> Vec<Container> {
        let mut all = Vec::new();
        for host in &self.hosts {
            let out = Command::new(runtime_binary())
                .arg("--root")
                .arg(host.agent_data.join("runtime"))
                .args(["list", "--format", "json"])
                .output()
                .expect("run sched-runtime list");
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
            for c in list.as_array().into_iter().flatten() {
                all.push(Container {
                    host: host.name.clone(),
                    id: c["id"].as_str().unwrap_or_default().to_owned(),
                    status: c["status"].as_str().unwrap_or_default().to_owned(),
                    pid: c["pid"].as_i64().unwrap_or(0),
                });
            }
        }
        all.sort();
        all
    }

    /// `GET /index.html` from `endpoint` (`IP:PORT`) from the switch: the body, or why not.
    pub fn http_get(&self, endpoint: &str) -> Result<String, String> {
        let address: SocketAddr = endpoint.parse().map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        self.in_switch(|| crate::netlab::http_get(address, Duration::from_secs(2)))
    }

    /// Takes host `index`'s cable out of the switch (its veth down): nothing reaches it.
    pub fn cut(&self, index: usize) {
        self.in_switch_ok(&["ip", "link", "set", &self.hosts[index].name, "down"]);
    }

    /// Plugs host `index` back in.
    pub fn heal(&self, index: usize) {
        self.in_switch_ok(&["ip", "link", "set", &self.hosts[index].name, "up"]);
    }

    /// SIGKILLs host `index`'s server.
    pub fn kill_server(&mut self, index: usize) {
        kill_child(self.hosts[index].server.take());
    }

    /// Starts host `index`'s server again from its data dir.
    pub fn restart_server(&mut self, index: usize) {
        assert!(self.hosts[index].server.is_none(), "the server of {} still runs", self.hosts[index].name);
        self.spawn_server(index);
    }

    /// SIGKILLs host `index`'s agent (its tasks run on under their shims).
    pub fn kill_agent(&mut self, index: usize) {
        kill_child(self.hosts[index].agent.take());
    }

    /// Starts host `index`'s agent again (same name, data dir and cgroup parent).
    pub fn restart_agent(&mut self, index: usize) {
        assert!(self.hosts[index].agent.is_none(), "the agent of {} still runs", self.hosts[index].name);
        self.spawn_agent(index);
    }

    /// SIGKILLs every process of host `index`: server, agent, shims, containers. Returns how
    /// many there were.
    pub fn kill_host(&mut self, index: usize) -> usize {
        self.kill_server(index);
        self.kill_agent(index);
        kill_all(|| host_processes(&self.hosts[index]))
    }

    /// The pids of host `index`'s processes: those in its network namespace and those in its
    /// agent's cgroups (containers, which sit in task namespaces).
    pub fn host_processes(&self, index: usize) -> Vec<i32> {
        host_processes(&self.hosts[index])
    }

    /// `(pid, command name)` of host `index`'s processes.
    pub fn host_process_names(&self, index: usize) -> Vec<(i32, String)> {
        host_processes(&self.hosts[index])
            .into_iter()
            .map(|pid| (pid, fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()))
            .collect()
    }

    /// What is left of a host's tasks outside its runtime: cgroup dirs under the agent's
    /// parent, mounts under its data dir, task namespace files, published ports (DNAT rules),
    /// and links in its namespace other than `lo`, `eth0` and the task bridge.
    pub fn task_leftovers(&self, index: usize) -> Vec<String> {
        let host = &self.hosts[index];
        let mut left = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            let parent = hierarchy.join(host.cgroup_parent.trim_start_matches('/'));
            for dir in cgroup_dirs_below(&parent) {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        left.extend(mounts_under(&host.agent_data).into_iter().map(|m| format!("mount {m}")));
        if let Ok(entries) = fs::read_dir(&host.task_netns_dir) {
            left.extend(entries.flatten().map(|e| format!("task netns {}", e.path().display())));
        }
        let rules = nsenter(&host.netns, &["nft", "list", "table", "ip", agent::network::DEFAULT_NFT_TABLE]);
        left.extend(
            text(&rules.stdout)
                .lines()
                .filter(|l| l.contains(" dnat to "))
                .map(|l| format!("published port in {}: {}", host.name, l.trim())),
        );
        let links = nsenter(&host.netns, &["ip", "-br", "link"]);
        for line in text(&links.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default().split('@').next().unwrap_or_default();
            if !["lo", "eth0", agent::network::DEFAULT_BRIDGE].contains(&name) {
                left.push(format!("link {name} in {}", host.name));
            }
        }
        left
    }

    /// The last lines of every log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        names.sort();
        for path in names {
            let log = fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} ---\n{}\n", path.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        for host in &mut self.hosts {
            kill_child(host.server.take());
            kill_child(host.agent.take());
        }
        kill_child(self.registry.take());
        let hosts = &self.hosts;
        let left = kill_all(|| hosts.iter().flat_map(host_processes).collect());
        if left > 0 {
            eprintln!("lab cleanup: killed {left} leftover processes");
        }
        for host in &self.hosts {
            // Processes are gone: forget the containers (state dirs, cgroups the runtime knows).
            let root = host.agent_data.join("runtime");
            if let Ok(entries) = fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let _ =
                        Command::new(runtime_binary()).arg("--root").arg(&root).args(["delete", "--force"]).arg(entry.file_name()).output();
                }
            }
        }
        for path in [self.dir.path(), self.root.as_path()] {
            for mount in mounts_under(path).iter().rev() {
                if let Err(e) = nix::mount::umount2(Path::new(mount), nix::mount::MntFlags::MNT_DETACH) {
                    eprintln!("lab cleanup: unmount {mount}: {e}");
                }
            }
        }
        for host in &self.hosts {
            for hierarchy in cgroup_hierarchies() {
                let parent = hierarchy.join(host.cgroup_parent.trim_start_matches('/'));
                for dir in cgroup_dirs_below(&parent).into_iter().rev().chain(std::iter::once(parent.clone())) {
                    if let Err(e) = fs::remove_dir(&dir)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        eprintln!("lab cleanup: remove cgroup {}: {e}", dir.display());
                    }
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("lab cleanup: remove {}: {e}", self.root.display());
        }
    }
}

/// Every cgroup dir below `parent` (not `parent` itself), parents before children.
fn cgroup_dirs_below(parent: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![parent.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
                stack.push(entry.path());
            }
        }
    }
    found.sort_by_key(|p| p.components().count());
    found
}

/// Pids in `host`'s network namespace or in its agent's cgroups.
fn host_processes(host: &Host) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(meta) = fs::metadata(&host.netns) {
        let wanted = format!("net:[{}]", meta.ino());
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if fs::read_link(entry.path().join("ns/net")).is_ok_and(|l| l.to_string_lossy() == wanted) {
                pids.push(pid);
            }
        }
    }
    for hierarchy in cgroup_hierarchies() {
        let parent = hierarchy.join(host.cgroup_parent.trim_start_matches('/'));
        for dir in std::iter::once(parent.clone()).chain(cgroup_dirs_below(&parent)) {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|&p| p != std::process::id() as i32);
    pids
}

/// SIGKILLs what `census` finds until it finds nothing (at most 5 s); how many were killed.
fn kill_all(census: impl Fn() -> Vec<i32>) -> usize {
    let mut killed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = census().into_iter().filter(|&p| crate::bundle::process_alive(p)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("lab: processes survived SIGKILL for 5 s: {pids:?}");
            }
            return killed.len();
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            killed.insert(pid);
        }
        sleep(Duration::from_millis(50));
    }
}

fn kill_child(child: Option<Child>) {
    if let Some(mut child) = child {
        crate::agent_process::kill_agent(&mut child);
    }
}

/// `nsenter --net=NETNS ARGS...` to completion, output captured.
pub fn nsenter(netns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .env_remove("SCHED_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run nsenter {args:?}: {e}"))
}

#[track_caller]
fn ok(out: &Output, args: &[&str]) {
    assert!(out.status.success(), "{args:?} failed ({}): {}", out.status, text(&out.stderr));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
