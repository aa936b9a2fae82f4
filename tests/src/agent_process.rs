//! A `sched-agent` process for end-to-end tests on one host, and the polling helper those tests
//! share.
//!
//! [`AgentProcess`] runs the agent without task networking (`--no-network`), with its own data
//! dir under the cluster's dir, its own cgroup parent at the hierarchy roots, its agent API on
//! a free loopback port (tests run in parallel) and a 1 s stop grace. Dropping it kills the
//! agent, force-deletes every container its runtime root still knows, unmounts what is left
//! under its data dir and removes its cgroups: tests clean up also when they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bundle::{mounts_under, remove_cgroup_parent, runtime_binary, unique_name};
use crate::cluster::{Cluster, sched_binary};

/// A running `sched-agent` of a test.
pub struct AgentProcess {
    child: Child,
    name: String,
    data_dir: PathBuf,
    cgroup_parent: String,
    /// More flags (like `--cpu 500`), kept for a restart.
    extra_args: Vec<String>,
    /// The `--server` list it was started with (`None`: every server of the cluster).
    servers: Option<String>,
}

impl AgentProcess {
    /// Starts agent `name` against every server of `cluster`.
    pub fn start(cluster: &Cluster, name: &str) -> AgentProcess {
        Self::start_with(cluster, name, &[])
    }

    /// Starts an agent with more flags than the usual ones.
    pub fn start_with(cluster: &Cluster, name: &str, extra_args: &[&str]) -> AgentProcess {
        Self::start_against(cluster, None, name, extra_args)
    }

    /// Starts an agent that knows only the servers `servers` (`HOST:PORT,...`), or every
    /// server of `cluster` when `None`.
    pub fn start_against(cluster: &Cluster, servers: Option<&str>, name: &str, extra_args: &[&str]) -> AgentProcess {
        let data_dir = cluster.dir().join(format!("agent-{name}"));
        let cgroup_parent = format!("/sched-test-{}", unique_name());
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let servers = servers.map(str::to_string);
        let child = spawn(cluster, servers.as_deref(), name, &data_dir, &cgroup_parent, &extra_args);
        AgentProcess { child, name: name.to_owned(), data_dir, cgroup_parent, extra_args, servers }
    }

    /// Kills the agent (SIGKILL; its tasks keep running under their shims) and starts it again
    /// with the same name, data dir, cgroup parent and flags.
    pub fn restart(&mut self, cluster: &Cluster) {
        self.kill();
        self.child = spawn(cluster, self.servers.as_deref(), &self.name, &self.data_dir, &self.cgroup_parent, &self.extra_args);
    }

    /// SIGKILL to the agent alone, reaped; its tasks keep running.
    pub fn kill(&mut self) {
        kill_agent(&mut self.child);
    }

    /// The agent's data dir (its runtime root is `runtime/` in it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cgroup its tasks' cgroups are made under.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The containers the node's runtime knows: `(id, status)`.
    pub fn containers(&self) -> Vec<(String, String)> {
        node_containers(&runtime_binary(), &self.data_dir)
    }

    /// The ids of the containers the node's runtime knows.
    pub fn container_ids(&self) -> Vec<String> {
        self.containers().into_iter().map(|(id, _)| id).collect()
    }
}

/// Starts a `sched-agent` without task networking, as [`AgentProcess`] does, but owned by the
/// caller (to start one beside another on purpose).
pub fn spawn(cluster: &Cluster, servers: Option<&str>, name: &str, data_dir: &Path, cgroup_parent: &str, extra_args: &[String]) -> Child {
    let launch = AgentLaunch { servers, name, data_dir, cgroup_parent, runtime: &runtime_binary(), network_args: &["--no-network".into()] };
    launch.spawn(cluster, extra_args)
}

/// A pool of host ids of its own (`--userns-ids FIRST:COUNT`, 64 ranges) for an agent or a
/// `sched dev` of the tests: the agents of one test process run side by side on one kernel,
/// and an agent refuses a pool that overlaps a live agent's. Kept per data dir, so a restarted
/// agent gets its pool back; below the default pool (from 2^31), so that an agent on the
/// default runs beside them.
pub fn userns_ids_for(data_dir: &Path) -> String {
    let ids = userns_pool_for(data_dir);
    format!("{}:{}", ids.start, ids.end - ids.start)
}

/// The host ids of [`userns_ids_for`]'s pool.
pub fn userns_pool_for(data_dir: &Path) -> std::ops::Range<u64> {
    static POOLS: std::sync::Mutex<BTreeMap<PathBuf, u64>> = std::sync::Mutex::new(BTreeMap::new());
    const POOL: u64 = 64 * 65_536;
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let next = pools.len() as u64;
    let slot = *pools.entry(data_dir.to_path_buf()).or_insert(next);
    let first = (1u64 << 30) + (slot % 256) * POOL;
    first..first + POOL
}

/// How the tests and benchmarks start a `sched-agent`; [`AgentLaunch::spawn`] adds what every
/// one of them has.
pub(crate) struct AgentLaunch<'a> {
    /// The servers to join (`None`: all of the cluster's).
    pub servers: Option<&'a str>,
    pub name: &'a str,
    pub data_dir: &'a Path,
    pub cgroup_parent: &'a str,
    pub runtime: &'a Path,
    /// How it networks its tasks (`--no-network`, or a lab's bridge, subnet and netns dir).
    pub network_args: &'a [String],
}

impl AgentLaunch<'_> {
    /// Starts it joined to `cluster` with a 1 s stop grace, its API on a free loopback port
    /// unless `extra_args` picks one, appending to `agent-NAME.log` in the cluster dir.
    pub(crate) fn spawn(&self, cluster: &Cluster, extra_args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.dir().join(format!("agent-{}.log", self.name)))
            .expect("open the agent log");
        let agent = sched_binary().with_file_name("sched-agent");
        assert!(agent.exists(), "{} is missing: cargo build -p agent", agent.display());
        let addresses = cluster.addresses();
        Command::new(agent)
            .args(["--server", self.servers.unwrap_or(&addresses), "--name", self.name, "--stop-grace", "1"])
            .args(cluster.join_args(self.data_dir))
            .args(self.network_args)
            .args(if extra_args.iter().any(|a| a == "--api-listen") { &[][..] } else { &["--api-listen", "127.0.0.1:0"][..] })
            .arg("--data-dir")
            .arg(self.data_dir)
            .args(["--cgroup-parent", self.cgroup_parent])
            .args(if extra_args.iter().any(|a| a == "--userns-ids") {
                vec![]
            } else {
                vec!["--userns-ids".to_string(), userns_ids_for(self.data_dir)]
            })
            .arg("--runtime")
            .arg(self.runtime)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start sched-agent")
    }
}

/// While a test fails (the thread panics), prints the last lines of the log of the agent whose
/// data dir is `data_dir` (`agent-NAME.log` beside it), as the cluster does for its servers: an
/// agent that never registered says why there.
pub(crate) fn print_log_when_failing(data_dir: &Path, name: &str) {
    if !std::thread::panicking() {
        return;
    }
    let path = data_dir.with_file_name(format!("agent-{name}.log"));
    let log = std::fs::read_to_string(&path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!("--- agent {name} log (last lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        print_log_when_failing(&self.data_dir, &self.name);
        self.kill();
        remove_node_leftovers(&runtime_binary(), &self.data_dir, &self.cgroup_parent);
    }
}

/// The containers `runtime` knows under an agent's data dir: `(id, status)`.
pub fn node_containers(runtime: &Path, data_dir: &Path) -> Vec<(String, String)> {
    let out = Command::new(runtime)
        .arg("--root")
        .arg(data_dir.join("runtime"))
        .args(["list", "--format", "json"])
        .output()
        .expect("sched-runtime list");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
    list.as_array()
        .map(|a| a.iter().map(|c| (c["id"].as_str().unwrap_or("").to_string(), c["status"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// What a stopped agent of a test may have left: every container (force-deleted), the mounts
/// under its data dir, its cgroup parent.
pub fn remove_node_leftovers(runtime: &Path, data_dir: &Path, cgroup_parent: &str) {
    for (id, _) in node_containers(runtime, data_dir) {
        let _ = Command::new(runtime).arg("--root").arg(data_dir.join("runtime")).args(["delete", "--force", &id]).output();
    }
    std::thread::sleep(Duration::from_millis(200));
    for m in mounts_under(data_dir).iter().rev() {
        let _ = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH);
    }
    remove_cgroup_parent(cgroup_parent);
}

/// SIGKILL to an agent (or `sched dev`), reaped, and the claim files it held removed.
pub fn kill_agent(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    remove_claims_of(child.id());
}

/// Removes the claim files (see `agent::node::claims`) that process `pid` stamped: a killed
/// agent's locks are gone with it, its files stay until removed.
pub fn remove_claims_of(pid: u32) {
    let Ok(entries) = std::fs::read_dir(agent::node::claims::CLAIMS_DIR) else { return };
    for entry in entries.flatten() {
        if std::fs::read_to_string(entry.path()).is_ok_and(|stamp| stamp.trim() == pid.to_string()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

pub use crate::wait::wait_until;
