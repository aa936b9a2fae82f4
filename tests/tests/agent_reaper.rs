//! The agent's reaper on a real node: one `sched server`, a `sched-agent` with task networking
//! in a node network namespace of the test's own ([`NodeLab`]), and an assigned task (busybox
//! httpd on a published port). Beside it the test plants one leftover of each kind the agent
//! owns on a host — a container under the agent's runtime root run by a shim whose task dir is
//! gone, the case of a process whose runtime state and task dir are both gone (only its
//! shim and its cgroup under the agent's parent are left), a container created without a shim,
//! a task dir of a start that never reached its shim, an overlay mount under the rootfs dir, a
//! netns pin, a task veth on the bridge, and (in the agent's state files, while it is down) an
//! address allocation of an unknown task, a host id range of an unknown task and a published
//! port to an address no task holds —
//! then restarts the agent. Every leftover goes, each with a log line that names it, while the
//! assigned task keeps its process, shim, network and published port. A leftover planted while
//! the agent runs goes at its next round.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent::network::netns;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sched_tests::bundle::{BusyboxBundle, process_alive, runtime_binary};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::cpu_service::{NetworkedAgent, running_endpoints, tasks_at};
use sched_tests::netlab::{NodeLab, http_get};
use sched_tests::registry::Registry;
use sched_tests::wait::wait_until;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The lab's tag: bridge `sbr235`, subnet 10.199.235.0/24, host ports 63500-63599.
const TAG: u8 = 235;
/// A task veth on the bridge that no allocation holds.
const STRAY_VETH: &str = "veth0ac7eb01";
/// A published port (in the agent's range) to an address no task holds.
const STRAY_PORT: u16 = 60999;

/// What the test planted: processes (killed on drop whatever happened: the agent's cleanup
/// knows containers under its runtime root, not a process whose state is gone) and the
/// bundles their containers run from (removed after).
#[derive(Default)]
struct Planted {
    pids: Vec<i32>,
    bundles: Vec<BusyboxBundle>,
}

impl Drop for Planted {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// A leftover container: `sleep 3600` from a busybox bundle, its cgroup under the agent's
/// parent, under the agent's runtime root.
fn orphan_bundle(agent: &NetworkedAgent) -> BusyboxBundle {
    let mut bundle = BusyboxBundle::new().args(&["sleep", "3600"]);
    let cgroup = format!("{}/{}", agent.cgroup_parent(), bundle.id());
    bundle.config_mut()["linux"]["cgroupsPath"] = json!(cgroup);
    bundle.write_config();
    bundle
}

/// `sched-runtime --root AGENT_ROOT ARGS` to success; its stdout. Output goes to files, not
/// pipes: a container created by the call inherits them and would hold a pipe open.
#[track_caller]
fn runtime_ok(agent: &NetworkedAgent, args: &[&str]) -> String {
    use std::io::{Read, Seek};
    let (mut stdout, mut stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let status = Command::new(runtime_binary())
        .arg("--root")
        .arg(agent.data_dir().join("runtime"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .status()
        .expect("run sched-runtime");
    let read = |file: &mut std::fs::File| {
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    };
    assert!(status.success(), "sched-runtime {args:?}: {}", read(&mut stderr));
    read(&mut stdout)
}

/// Runs a leftover container under its own shim, as the agent does, but with its task dir
/// outside the agent's tasks dir (as if it were gone). Returns its id; its shim and init pids
/// go to `planted`.
fn plant_shimmed(agent: &NetworkedAgent, planted: &mut Planted) -> String {
    let bundle = orphan_bundle(agent);
    let id = bundle.id().to_string();
    let task_dir = bundle.dir().join("task");
    let bundle_dir = bundle.bundle_dir().to_string_lossy().into_owned();
    let task_arg = task_dir.to_string_lossy().into_owned();
    let init = runtime_ok(agent, &["shim", "--bundle", &bundle_dir, "--task-dir", &task_arg, "--max-log-bytes", "100000", &id]);
    planted.pids.push(init.trim().parse().expect("the shim prints the container's pid"));
    let shim = std::fs::read_to_string(task_dir.join("shim.pid")).expect("shim.pid");
    planted.pids.push(shim.trim().parse().expect("a pid in shim.pid"));
    planted.bundles.push(bundle);
    id
}

/// Creates and starts a leftover container without a shim. Returns its id.
fn plant_bare(agent: &NetworkedAgent, planted: &mut Planted) -> String {
    let bundle = orphan_bundle(agent);
    let id = bundle.id().to_string();
    runtime_ok(agent, &["create", "--bundle", &bundle.bundle_dir().to_string_lossy(), &id]);
    runtime_ok(agent, &["start", &id]);
    let state: Value = serde_json::from_str(&runtime_ok(agent, &["state", &id])).expect("state JSON");
    planted.pids.push(state["pid"].as_i64().expect("a pid") as i32);
    planted.bundles.push(bundle);
    id
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or(Value::Null)
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).expect("write a state file");
}

/// `ip ARGS` in the caller's network namespace (the node's inside [`NodeLab::run`]).
fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// What the servers and the node's runtime say, for a failed wait.
fn context(cluster: &Cluster, agent: &NetworkedAgent) -> String {
    format!("tasks: {:?}\ncontainers: {:?}", tasks_at(&cluster.cli()), agent.containers())
}

/// The agent log from byte `from` on.
fn log_since(cluster: &Cluster, from: usize) -> String {
    let log = std::fs::read_to_string(cluster.dir().join("agent-node1.log")).unwrap_or_default();
    log.get(from..).unwrap_or_default().to_string()
}

/// Whether some line of `log` says it reaped something and names `what`.
fn reaped(log: &str, what: &str) -> bool {
    log.lines().any(|l| l.contains("reaped") && l.contains(what))
}

#[test]
fn the_reaper_removes_every_leftover_on_start_and_periodically_and_spares_the_assigned_task() {
    let lab = NodeLab::new(TAG);
    lab.run(|| async { scenario(&lab).await });
}

async fn scenario(lab: &NodeLab) {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    // No round during the planting: the first runs with the first assignments, the next in an hour.
    let mut agent = NetworkedAgent::start_with(&cluster, lab, "node1", &["--reap-interval-secs", "3600"]);
    let mut planted = Planted::default();
    let config = agent.network_config(lab);
    let data = agent.data_dir().to_path_buf();

    let image = push_busybox(cluster.dir(), &registry.addr(), "keeper:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let file = cluster.dir().join("keeper.toml");
    let command = json!(["sh", "-c", "mkdir -p /www && echo keeper > /www/index.html && exec httpd -f -p 8080 -h /www"]);
    std::fs::write(
        &file,
        format!("name = \"keeper\"\nimage = \"{image}\"\ncommand = {command}\nports = [8080]\ncpu = 100\nmemory = 32\ncount = 1\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let running = || !running_endpoints(&tasks_at(&cluster.cli()).unwrap_or_default(), "keeper").is_empty();
    wait_until("the keeper runs", TIMEOUT, running, || context(&cluster, &agent));
    let tasks = tasks_at(&cluster.cli()).unwrap();
    let keeper = tasks.iter().find(|t| t["service"] == "keeper").and_then(|t| t["id"].as_str()).unwrap().to_string();
    let endpoint: SocketAddr = running_endpoints(&tasks, "keeper")[0].parse().expect("an endpoint HOST:PORT");
    wait_until("the keeper serves", TIMEOUT, || http_get(endpoint, Duration::from_secs(1)).is_ok(), || context(&cluster, &agent));
    let keeper_state = read_json(&data.join("runtime").join(&keeper).join("state.json"));
    let keeper_pid = keeper_state["pid"].as_i64().expect("the keeper's pid") as i32;
    let keeper_shim: i32 = std::fs::read_to_string(data.join("tasks").join(&keeper).join("shim.pid")).unwrap().trim().parse().unwrap();
    let keeper_ip = read_json(&config.ipam_file())["allocations"][&keeper].as_str().expect("the keeper's address").to_string();
    let keeper_veth = format!("veth{:08x}", u32::from(keeper_ip.parse::<std::net::Ipv4Addr>().unwrap()));

    // One leftover of each kind.
    let shimmed = plant_shimmed(&agent, &mut planted);
    let stateless = plant_shimmed(&agent, &mut planted);
    std::fs::remove_dir_all(data.join("runtime").join(&stateless)).expect("wipe the runtime state of one");
    let bare = plant_bare(&agent, &mut planted);
    let stale_dir = data.join("tasks/stale-dir/bundle");
    std::fs::create_dir_all(&stale_dir).unwrap();
    std::fs::write(stale_dir.join("config.json"), "{}").unwrap();
    let overlay = data.join("rootfs/stale-rootfs");
    for sub in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(overlay.join(sub)).unwrap();
    }
    let options = format!("lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work", overlay.display());
    let mounted = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(overlay.join("merged")).status().unwrap();
    assert!(mounted.success(), "mount the stale overlay");
    netns::create(&config.netns_dir.join("stale-pin")).await.expect("pin a stale netns");
    for args in [
        &["link", "add", STRAY_VETH, "type", "veth", "peer", "name", "reaperpeer0"][..],
        &["link", "set", STRAY_VETH, "master", &config.bridge, "up"],
    ] {
        let out = ip(args);
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    for pid in &planted.pids {
        assert!(process_alive(*pid), "planted process {pid} runs");
    }

    // The agent dies; its state files gain an allocation of an unknown task and a port to an
    // address no task holds; it starts again, reaping every second.
    agent.kill();
    let mut ipam = read_json(&config.ipam_file());
    ipam["allocations"]["ghost"] = json!("10.199.235.201");
    write_json(&config.ipam_file(), &ipam);
    // ... and a host id range held by a task that does not exist.
    let ranges_file = data.join("userns/ranges.json");
    let mut ranges = read_json(&ranges_file);
    let keeper_range = ranges["allocations"][&keeper].clone();
    let pool = sched_tests::agent_process::userns_pool_for(agent.data_dir());
    assert!(
        keeper_range["first"].as_u64().is_some_and(|first| pool.contains(&first)),
        "the keeper holds an id range of its agent's pool: {ranges}"
    );
    ranges["allocations"]["ghost-ids"] = json!({"first": 4_000_000_000u64});
    write_json(&ranges_file, &ranges);
    let mut ports = read_json(&config.ports_file());
    ports["published"][STRAY_PORT.to_string()] = json!({"host_port": STRAY_PORT, "task_ip": "10.199.235.200", "container_port": 80});
    write_json(&config.ports_file(), &ports);
    let log_offset = std::fs::metadata(cluster.dir().join("agent-node1.log")).map(|m| m.len() as usize).unwrap_or(0);
    agent.restart_with(&cluster, lab, &["--reap-interval-secs", "1"]);

    let only_keeper = BTreeSet::from([keeper.clone()]);
    let holder = agent.holder(lab);
    let holdings = || holder.holdings();
    let leftovers = || {
        let mut left = holdings().beyond(&only_keeper);
        let alive: Vec<i32> = planted.pids.iter().copied().filter(|p| process_alive(*p)).collect();
        if !alive.is_empty() {
            left.push(format!("processes {alive:?}"));
        }
        if !read_json(&ranges_file)["allocations"]["ghost-ids"].is_null() {
            left.push("the id range of ghost-ids".into());
        }
        left
    };
    wait_until(
        "the restarted agent reaped every leftover",
        TIMEOUT,
        || leftovers().is_empty(),
        || format!("left: {:?}\nagent log since the restart:\n{}", leftovers(), log_since(&cluster, log_offset)),
    );

    let log = log_since(&cluster, log_offset);
    for what in
        [&shimmed, &stateless, &bare, "stale-dir", "stale-rootfs", "stale-pin", "ghost", "ghost-ids", STRAY_VETH, &STRAY_PORT.to_string()]
    {
        assert!(reaped(&log, what), "no log line says {what} was reaped:\n{log}");
    }
    assert!(!log.lines().any(|l| l.contains("reaped") && l.contains(&keeper)), "the keeper was reaped:\n{log}");
    // The assigned task kept everything: process, shim, network, published port.
    assert!(process_alive(keeper_pid) && process_alive(keeper_shim), "the keeper's process or shim died");
    assert_eq!(http_get(endpoint, Duration::from_secs(5)).expect("the keeper still serves on its port"), "keeper\n");
    assert!(ip(&["link", "show", &keeper_veth]).status.success(), "the keeper's veth {keeper_veth} is gone");
    assert_eq!(read_json(&ranges_file)["allocations"][&keeper], keeper_range, "the keeper keeps its id range");
    let rules = holdings().dnat_rules;
    assert!(rules.iter().any(|r| r.contains(&format!("tcp dport {}", endpoint.port()))), "the keeper's nft rule is gone: {rules:?}");

    // Periodically too: a pin made while the agent runs goes at its next round.
    netns::create(&config.netns_dir.join("late-pin")).await.expect("pin a netns");
    wait_until(
        "the running agent reaped a new leftover",
        TIMEOUT,
        || !config.netns_dir.join("late-pin").exists(),
        || log_since(&cluster, log_offset),
    );
    assert!(reaped(&log_since(&cluster, log_offset), "late-pin"));
    assert!(process_alive(keeper_pid), "the keeper survived the later rounds");

    cluster.sched_ok(&["delete", "keeper"]);
    wait_until("the keeper is gone", TIMEOUT, || agent.containers().is_empty(), || context(&cluster, &agent));
    drop(planted);
}
