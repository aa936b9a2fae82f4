//! Crash points (issue 15): a `sched-agent` with task networking (in a node network namespace
//! of the test's own, [`NodeLab`]) is killed with SIGKILL at one step of a task's start, stop or
//! removal (`--crash-at`, see agent/src/crash_point.rs), then started again. A task whose start
//! was cut ends running exactly once; one whose stop or removal was cut ends fully gone; and the
//! host holds exactly what the running tasks need — containers, shims, cgroups, rootfs mounts,
//! task dirs, netns pins, addresses, veths, published ports and their nft rules — each listed
//! ([`Holdings`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::cpu_service::{NetworkedAgent, running_endpoints, tasks_at};
use sched_tests::netlab::{NodeLab, http_get};
use sched_tests::node_holdings::Holder;
use sched_tests::registry::Registry;
use sched_tests::wait::wait_until;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const REAP_EVERY_SECOND: &[&str] = &["--reap-interval-secs", "1"];

/// The service's tasks as the servers list them.
fn tasks(cluster: &Cluster) -> Vec<Value> {
    tasks_at(&cluster.cli()).unwrap_or_default().into_iter().filter(|t| t["service"] == "crashy").collect()
}

/// What the servers list and the node holds, and the agent's last log lines, for a failed wait.
fn context(cluster: &Cluster, node: &Holder) -> String {
    let held = node.holdings();
    let log = std::fs::read_to_string(cluster.dir().join("agent-node1.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    format!(
        "tasks: {:?}\nholdings: {held:#?}\nagent log (last lines):\n{}",
        tasks(cluster),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Runs the scenario for crash point `point` in lab `tag`.
fn crash_at(point: &str, tag: u8) {
    let lab = NodeLab::new(tag);
    lab.run(|| async { scenario(&lab, point) });
}

fn scenario(lab: &NodeLab, point: &str) {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let starting = point.starts_with("start:");
    let armed = ["--crash-at", point, "--reap-interval-secs", "1"];
    let mut agent = NetworkedAgent::start_with(&cluster, lab, "node1", if starting { &armed } else { REAP_EVERY_SECOND });
    // Known before the agent dies, so a wait on its death can still list what it holds.
    let node = agent.holder(lab);
    let image = push_busybox(cluster.dir(), &registry.addr(), "crashy:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let file = cluster.dir().join("crashy.toml");
    let command = json!(["sh", "-c", "mkdir -p /www && echo crashy > /www/index.html && exec httpd -f -p 8080 -h /www"]);
    std::fs::write(
        &file,
        format!("name = \"crashy\"\nimage = \"{image}\"\ncommand = {command}\nports = [8080]\ncpu = 100\nmemory = 32\ncount = 1\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let running = |cluster: &Cluster| !running_endpoints(&tasks(cluster), "crashy").is_empty();
    if !starting {
        wait_until("the task runs", TIMEOUT, || running(&cluster), || context(&cluster, &node));
        agent.restart_with(&cluster, lab, &armed);
        cluster.sched_ok(&["delete", "crashy"]);
    }
    wait_until(&format!("the agent dies at {point}"), TIMEOUT, || agent.exited(), || context(&cluster, &node));
    let log_file = cluster.dir().join("agent-node1.log");
    let log_offset = std::fs::metadata(&log_file).map(|m| m.len() as usize).unwrap_or(0);
    agent.restart_with(&cluster, lab, REAP_EVERY_SECOND);

    let held = || node.holdings();
    if starting {
        // Running exactly once, holding exactly what it needs, reachable on its port.
        let settled = || {
            let list = tasks(&cluster);
            let ids: BTreeSet<String> = list.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
            list.len() == 1 && running(&cluster) && held().beyond(&ids).is_empty()
        };
        wait_until("the task runs once and the host holds exactly it", TIMEOUT, settled, || context(&cluster, &node));
        let endpoint: SocketAddr = running_endpoints(&tasks(&cluster), "crashy")[0].parse().unwrap();
        assert_eq!(http_get(endpoint, Duration::from_secs(5)).expect("the task serves on its published port"), "crashy\n");
        // The recovery that made it so, as the restarted agent logged it.
        let log = std::fs::read_to_string(&log_file).unwrap_or_default().get(log_offset..).unwrap_or_default().to_string();
        let recovery = match point {
            "start:after-network" | "start:after-pull" => Some("reaped network"),
            "start:after-shim" => Some("published the ports of a running task"),
            _ => None,
        };
        if let Some(line) = recovery {
            assert!(log.contains(line), "the restarted agent did not log {line:?}:\n{log}");
        }
        cluster.sched_ok(&["delete", "crashy"]);
    }
    wait_until(
        "the task is gone and the host holds nothing of it",
        TIMEOUT,
        || tasks(&cluster).is_empty() && held().beyond(&BTreeSet::new()).is_empty(),
        || context(&cluster, &node),
    );
}

#[test]
fn a_crash_after_the_network_is_made() {
    crash_at("start:after-network", 220);
}

#[test]
fn a_crash_after_the_pull() {
    crash_at("start:after-pull", 221);
}

#[test]
fn a_crash_after_the_bundle_is_made() {
    crash_at("start:after-bundle", 222);
}

#[test]
fn a_crash_after_the_shim_started() {
    crash_at("start:after-shim", 223);
}

#[test]
fn a_crash_after_the_stop_signal() {
    crash_at("stop:after-signal", 224);
}

#[test]
fn a_crash_after_the_task_exited() {
    crash_at("stop:after-exit", 225);
}

#[test]
fn a_crash_after_the_rootfs_is_removed() {
    crash_at("remove:after-rootfs", 226);
}

#[test]
fn a_crash_after_the_task_dir_is_removed() {
    crash_at("remove:after-task-dir", 227);
}
