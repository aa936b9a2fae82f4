//! A real cluster of `sched server` processes on 127.0.0.1 for the `cluster_*` tests.
//!
//! Each server is a separate process of the `sched` binary built next to the test executable
//! (`target/debug/sched`: run `cargo build -p sched` first; `scripts/test.sh` does). Servers
//! get free ports and their own data directories under one temp dir, short Raft ticks (20 ms,
//! so elections take 200-400 ms) and small snapshot intervals when asked. Drop kills every
//! process (SIGKILL, also stopped ones) and removes the data.
//!
//! The servers share one CA made with `sched ca create` (an initial cluster of several needs
//! one) and each writes an admin credentials file in its data dir; `sched` is run with
//! `SCHED_CONFIG` pointing at one of them, agents join with tokens ([`Cluster::join_token`]).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Raft tick of test servers, in ms.
pub const TEST_TICK_MS: u64 = 20;

/// A registry address where nothing listens (port 1 on loopback): servers resolving an image
/// tag there are refused at once, so tests that are not about images never reach a registry
/// another test started, nor any address off this machine. Their applies are accepted with
/// the tag alone (see docs/control-plane.md).
pub const CLOSED_REGISTRY: &str = "127.0.0.1:1";

/// Options for the servers of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub servers: u64,
    /// `--snapshot-every`.
    pub snapshot_every: u64,
    /// `--keep-entries`.
    pub keep_entries: u64,
    /// `--tick-ms`.
    pub tick_ms: u64,
    /// More flags for every server (e.g. `--node-certificate-ttl 6s`).
    pub server_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        // The server's own defaults (`sched server --help`).
        ClusterOptions { servers: 3, snapshot_every: 100_000, keep_entries: 5_000, tick_ms: TEST_TICK_MS, server_args: Vec::new() }
    }
}

/// One server of the cluster.
pub struct Server {
    pub id: u64,
    pub address: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// Each start appends to this log, for diagnosis and for facts the tests check.
    pub log: PathBuf,
}

/// A running cluster; dropped = every process killed and every file removed.
pub struct Cluster {
    dir: tempfile::TempDir,
    options: ClusterOptions,
    pub servers: BTreeMap<u64, Server>,
}

/// The `sched` binary of the same build profile as the running test or benchmark.
pub fn sched_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    // Tests live in target/<profile>/deps/, benchmark programs in target/<profile>/.
    let mut profile_dir = exe.parent().expect("the executable's directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target/<profile>");
    }
    let sched = profile_dir.join("sched");
    assert!(sched.exists(), "{} is missing: build it first with `cargo build -p sched` (scripts/test.sh does)", sched.display());
    sched
}

/// A port that was free a moment ago on 127.0.0.1, for a server to bind next.
///
/// Picked below Linux's ephemeral range (32768+), walking up from a per-process start: ports
/// from `bind(0)` come out of the ephemeral range, where the servers' own outgoing connections
/// could take the port between this check and the server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(0, 20_000 + (std::process::id() * 101) % 10_000, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(20_000 + (port - 20_000) % 12_000).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `options.servers` servers as one new cluster and waits for a leader.
    pub fn start(options: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new().prefix("sched-cluster-").tempdir().expect("temp dir");
        let mut servers = BTreeMap::new();
        for id in 1..=options.servers {
            let address = format!("127.0.0.1:{}", free_port());
            let data_dir = dir.path().join(format!("server-{id}"));
            let log = dir.path().join(format!("server-{id}.log"));
            servers.insert(id, Server { id, address, data_dir, child: None, log });
        }
        let ca = dir.path().join("ca");
        let made = Command::new(sched_binary()).args(["ca", "create"]).arg(&ca).output().expect("run sched ca create");
        assert!(made.status.success(), "sched ca create: {}", String::from_utf8_lossy(&made.stderr));
        let mut cluster = Cluster { dir, options, servers };
        let initial = cluster.initial_cluster();
        for id in 1..=cluster.options.servers {
            cluster.spawn(id, &["--initial-cluster", &initial]);
        }
        cluster.wait_for_leader(Duration::from_secs(10));
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.servers.values().map(|s| format!("{}={}", s.id, s.address)).collect::<Vec<_>>().join(",")
    }

    /// Where the cluster's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, id: u64, extra: &[&str]) {
        let options = self.options.clone();
        let server = self.servers.get_mut(&id).expect("known server");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&server.log).expect("server log");
        let child = Command::new(sched_binary())
            .arg("server")
            .args(["--id", &id.to_string(), "--listen", &server.address])
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["--tick-ms", &options.tick_ms.to_string()])
            .args(["--snapshot-every", &options.snapshot_every.to_string()])
            .args(["--keep-entries", &options.keep_entries.to_string()])
            .arg("--ca-dir")
            .arg(self.dir.path().join("ca"))
            .arg("--admin-credentials")
            .arg(server.data_dir.join("admin.toml"))
            .args(&options.server_args)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sched server");
        server.child = Some(child);
        wait_for_port(&server.address, Duration::from_secs(10));
    }

    /// Restarts a killed server from its data directory (same flags as at first start).
    pub fn restart(&mut self, id: u64) {
        assert!(self.servers[&id].child.is_none(), "server {id} still runs");
        let initial = self.initial_cluster();
        self.spawn(id, &["--initial-cluster", &initial]);
    }

    /// Adds a new server process that starts empty (`--join`); it is not a member until
    /// `sched cluster join` adds it. Replaces any earlier server with this id (data wiped).
    pub fn spawn_joining(&mut self, id: u64) -> String {
        if let Some(old) = self.servers.get(&id) {
            assert!(old.child.is_none(), "server {id} still runs");
            let _ = std::fs::remove_dir_all(&old.data_dir);
        }
        let address = format!("127.0.0.1:{}", free_port());
        let data_dir = self.dir.path().join(format!("server-{id}-joined"));
        let log = self.dir.path().join(format!("server-{id}-joined.log"));
        let token = self.join_token("server");
        let servers = self.addresses();
        self.servers.insert(id, Server { id, address: address.clone(), data_dir, child: None, log });
        self.spawn(id, &["--join", &token, "--server", &servers]);
        address
    }

    /// The process id of server `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.servers.get(&id).and_then(|s| s.child.as_ref()).map(Child::id)
    }

    /// SIGKILLs a server.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.servers.get_mut(&id).and_then(|s| s.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs (`true`) or SIGCONTs (`false`) a server: a partition it cannot notice.
    pub fn pause(&self, id: u64, paused: bool) {
        let child = self.servers[&id].child.as_ref().expect("server runs");
        let signal = if paused { Signal::SIGSTOP } else { Signal::SIGCONT };
        // The pid of a child this fixture spawned and has not reaped: it cannot be reused.
        kill(Pid::from_raw(child.id() as i32), signal).unwrap_or_else(|e| panic!("kill({}, {signal}) failed: {e}", child.id()));
    }

    /// Every running server's address, comma-separated (for `--server`).
    pub fn addresses(&self) -> String {
        self.servers.values().filter(|s| s.child.is_some()).map(|s| s.address.clone()).collect::<Vec<_>>().join(",")
    }

    /// Runs `sched --server <all running servers> ARGS`.
    pub fn sched(&self, args: &[&str]) -> Output {
        self.sched_at(&self.addresses(), args)
    }

    /// Runs `sched --server SERVERS ARGS` as the admin.
    pub fn sched_at(&self, servers: &str, args: &[&str]) -> Output {
        Command::new(sched_binary())
            .args(["--server", servers])
            .args(args)
            .env_remove("SCHED_SERVER")
            .env("SCHED_CONFIG", self.admin_credentials())
            .output()
            .expect("run sched")
    }

    /// An admin credentials file a server wrote (the first server's that exists).
    pub fn admin_credentials(&self) -> PathBuf {
        let files = self.servers.values().map(|s| s.data_dir.join("admin.toml"));
        files.clone().find(|f| f.exists()).unwrap_or_else(|| files.into_iter().next().expect("a server"))
    }

    /// A new join token for `role` (agent, server, reader, admin), valid for an hour.
    pub fn join_token(&self, role: &str) -> String {
        self.sched_ok(&["token", "create", "--role", role, "--ttl", "1h"]).trim().to_string()
    }

    /// How to run `sched` against this cluster from elsewhere (another thread, a helper).
    pub fn cli(&self) -> SchedCli {
        SchedCli { servers: self.addresses(), config: self.admin_credentials() }
    }

    /// `--join TOKEN` for an agent's first start (a new agent token); nothing once the agent's
    /// data dir holds its certificate (a restart needs no token, nor a cluster able to make one).
    pub fn join_args(&self, agent_data_dir: &Path) -> Vec<String> {
        if agent_data_dir.join("pki").join(transport::CERTIFICATE_FILE).exists() {
            return Vec::new();
        }
        vec!["--join".into(), self.join_token("agent")]
    }

    /// The admin's TLS credentials, for tests that call the API themselves.
    pub fn admin_transport(&self) -> transport::Transport {
        admin_transport(&self.admin_credentials())
    }

    /// Server `id`'s own credentials (what it calls its peers and the agents with).
    pub fn server_transport(&self, id: u64) -> transport::Transport {
        let dir = self.servers[&id].data_dir.join("pki").join("server");
        let credentials = transport::Credentials::load(&dir).expect("read the server's credentials").expect("the server has credentials");
        transport::Transport::new(transport::Security::MutualTls(credentials)).expect("usable server credentials")
    }

    /// Credentials of an agent named `name`, joined with a fresh agent token as `sched-agent`
    /// joins (for tests that speak the agent protocol themselves).
    pub async fn agent_transport(&self, name: &str) -> transport::Transport {
        let token = self.join_token("agent");
        let servers: Vec<String> = self.addresses().split(',').map(str::to_string).collect();
        let issued = transport::join::join_with_token(&servers, &token, name, &[]).await.expect("join as an agent");
        transport::Transport::new(transport::Security::MutualTls(issued.credentials)).expect("usable agent credentials")
    }

    /// `sched ARGS` that must succeed; returns stdout.
    pub fn sched_ok(&self, args: &[&str]) -> String {
        let out = self.sched(args);
        assert!(out.status.success(), "sched {args:?} failed ({}): {}{}", out.status, stdout(&out), stderr(&out));
        stdout(&out)
    }

    /// `sched ARGS -o json` parsed.
    pub fn sched_json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.sched_ok(&args)).expect("sched printed JSON")
    }

    /// The leader's id as the running servers agree, once they do.
    #[track_caller]
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let members = || {
            let out = self.sched(&["cluster", "members", "-o", "json"]);
            out.status.success().then(|| serde_json::from_str(&stdout(&out)).expect("members JSON"))
        };
        let runs = |id: u64| self.servers.get(&id).is_some_and(|s| s.child.is_some());
        crate::wait::wait_for_leader(timeout, members, runs, self.dir.path())
    }

    /// The text a server logged so far.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.servers[&id].log).unwrap_or_default()
    }

    /// The README's example service (examples/quotes/service.toml) with its image moved to
    /// [`CLOSED_REGISTRY`], written into the cluster dir.
    pub fn example_service_file(&self) -> PathBuf {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quotes/service.toml");
        let text = std::fs::read_to_string(example).expect("examples/quotes/service.toml");
        assert!(text.contains("\"127.0.0.1:5000/quotes:1.0\""), "the example's image changed: update this fixture");
        let path = self.dir.path().join("example-quotes.toml");
        std::fs::write(&path, text.replace("127.0.0.1:5000/", &format!("{CLOSED_REGISTRY}/"))).unwrap();
        path
    }

    /// A service.toml for `name` with `count` tasks, written into the cluster dir.
    pub fn service_file(&self, name: &str, image: &str, count: u32) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("name = \"{name}\"\nimage = \"{image}\"\ncount = {count}\n")).unwrap();
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.servers.keys().copied().collect();
        for id in ids {
            if let Some(child) = self.servers.get(&id).and_then(|s| s.child.as_ref()) {
                // SIGCONT to our own unreaped child so a stopped server can die.
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            }
            self.kill(id);
        }
        if std::thread::panicking() {
            for server in self.servers.values() {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- server {} log (last lines) ---\n{}", server.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
    }
}

/// `sched` aimed at a cluster: its servers and the credentials file to call them with.
#[derive(Clone, Debug)]
pub struct SchedCli {
    pub servers: String,
    pub config: PathBuf,
}

impl SchedCli {
    /// `sched --server SERVERS` with `SCHED_CONFIG` set, for the caller to add arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(sched_binary());
        command.args(["--server", &self.servers]).env_remove("SCHED_SERVER").env("SCHED_CONFIG", &self.config);
        command
    }
}

/// A transport with the credentials in the file at `path` (a server's admin.toml).
pub fn admin_transport(path: &Path) -> transport::Transport {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file: toml::Value = toml::from_str(&text).expect("a credentials file");
    let field = |name: &str| file[name].as_str().unwrap_or_else(|| panic!("{name} in {}", path.display())).to_string();
    let credentials = transport::Credentials { ca_pem: field("ca"), certificate_pem: field("certificate"), key_pem: field("key") };
    transport::Transport::new(transport::Security::MutualTls(credentials)).expect("usable admin credentials")
}

/// Applies a minimal service `name` over gRPC (with `transport`) through the first of
/// `addresses` that answers, retrying for up to 10 s. True once acknowledged.
pub async fn apply_anywhere(transport: &transport::Transport, addresses: &[String], name: &str) -> bool {
    use proto::sched::v1 as pb;
    let image = format!("{CLOSED_REGISTRY}/busybox:1.36");
    let spec = pb::ServiceSpec { name: name.into(), image, cpu_millis: 100, memory_mib: 64, count: 1, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for address in addresses {
            let Ok(channel) = transport.connect(address, transport::Profile::CLI_CALL).await else { continue };
            let request = pb::ApplyRequest { spec: Some(spec.clone()) };
            if pb::service_api_client::ServiceApiClient::new(channel).apply(request).await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The names of the services a server reports (`--stale`: its own copy, no ReadIndex).
pub fn service_names(cluster: &Cluster, server: &str, stale: bool) -> Option<std::collections::BTreeSet<String>> {
    let mut args = vec!["get", "services", "-o", "json"];
    if stale {
        args.push("--stale");
    }
    let out = cluster.sched_at(server, &args);
    if !out.status.success() {
        return None;
    }
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(services.as_array()?.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect())
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_for_port(address: &str, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(start.elapsed() < timeout, "sched server did not listen on {address} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
