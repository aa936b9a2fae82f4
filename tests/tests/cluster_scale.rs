//! The control plane at a scale CI can afford (issue 17 point 4): 3 real servers, 200
//! simulated nodes speaking the agent protocol over mutual TLS, 20 services of 100 tasks.
//! It asserts the shape: every task placed and reported running, each service spread one task
//! a node, and a leader change marks no node down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions};
use sched_tests::sim_nodes::{SimNodes, SimOptions};
use sched_tests::wait::{holds_for, wait_until};
use serde_json::Value;

const NODES: usize = 200;
const SERVICES: usize = 20;
const TASKS_PER_SERVICE: usize = 100;
/// The servers' default: a node silent this long is marked down.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

fn nodes(cluster: &Cluster) -> Vec<Value> {
    cluster.sched_json(&["get", "nodes"]).as_array().cloned().unwrap_or_default()
}

fn ready_nodes(cluster: &Cluster) -> usize {
    nodes(cluster).iter().filter(|n| n["status"] == "ready").count()
}

fn tasks(cluster: &Cluster) -> Vec<Value> {
    cluster.sched_json(&["get", "tasks"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn two_hundred_nodes_run_two_thousand_tasks_spread_and_survive_a_leader_change() {
    // Production timing (100 ms ticks, 1 s election timeout): the tests' 20 ms ticks elect
    // again and again when 200 nodes and 3 servers share 2 cores.
    let mut cluster = Cluster::start(ClusterOptions { tick_ms: 100, ..Default::default() });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let servers: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let sim = runtime.block_on(async { SimNodes::start(&servers, &cluster.dir().join("ca"), NODES, SimOptions::default()) });
    let started = Instant::now();
    wait_until(
        "every simulated node is ready",
        Duration::from_secs(60),
        || ready_nodes(&cluster) == NODES,
        || format!("{} ready, {:?}", ready_nodes(&cluster), sim.stats),
    );
    eprintln!("{NODES} nodes ready in {:?}", started.elapsed());

    let applied = Instant::now();
    for s in 0..SERVICES {
        let file = cluster.service_file(&format!("svc-{s}"), &format!("{CLOSED_REGISTRY}/busybox:1.36"), TASKS_PER_SERVICE as u32);
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    }
    let total = SERVICES * TASKS_PER_SERVICE;
    let running = |tasks: &[Value]| tasks.iter().filter(|t| t["observed_state"] == "running").count();
    let last = std::cell::RefCell::new(Vec::new());
    wait_until(
        "every task is placed and reported running",
        Duration::from_secs(120),
        || {
            let now = tasks(&cluster);
            let done = now.len() == total && running(&now) == total;
            *last.borrow_mut() = now;
            done
        },
        || {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for task in last.borrow().iter() {
                *states.entry(format!("{}/{}", task["desired_state"], task["observed_state"])).or_default() += 1;
            }
            let members = cluster.sched(&["cluster", "members", "-o", "json"]);
            format!(
                "{} tasks by desired/observed state {states:?}; {:?}; members: {}",
                last.borrow().len(),
                sim.stats,
                String::from_utf8_lossy(&members.stdout)
            )
        },
    );
    let last = last.into_inner();
    eprintln!("{total} tasks running {:?} after the first apply", applied.elapsed());

    // Spread: no service has two tasks on one node while nodes outnumber its tasks.
    let mut per_service_node: BTreeMap<(String, String), usize> = BTreeMap::new();
    for task in &last {
        let key = (task["service"].as_str().unwrap_or("").to_string(), task["node_id"].to_string());
        *per_service_node.entry(key).or_default() += 1;
    }
    let crowded: Vec<_> = per_service_node.iter().filter(|(_, n)| **n > 1).collect();
    assert!(crowded.is_empty(), "a service has two tasks on one node: {crowded:?}");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for task in &last {
        *per_node.entry(task["node_id"].to_string()).or_default() += 1;
    }
    let (fewest, most) = (per_node.values().min().copied().unwrap_or(0), per_node.values().max().copied().unwrap_or(0));
    assert_eq!(per_node.len(), NODES, "every node runs tasks");
    assert!(most - fewest <= 2, "tasks per node range from {fewest} to {most}");

    // A leader change: a new leader within seconds, and no node marked down for longer than a
    // node timeout after it (the new leader must not count heartbeats it never saw).
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let placed: BTreeSet<String> = last.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
    let killed = Instant::now();
    cluster.kill(leader);
    let new = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(new, leader);
    eprintln!("new leader {new} {:?} after killing {leader}", killed.elapsed());
    holds_for(
        "no node is marked down",
        NODE_TIMEOUT + Duration::from_secs(3),
        || ready_nodes(&cluster) == NODES,
        || {
            let down: Vec<String> = nodes(&cluster).iter().filter(|n| n["status"] != "ready").map(|n| n.to_string()).collect();
            format!("not ready: {down:?}")
        },
    );
    let after: BTreeSet<String> = tasks(&cluster).iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
    let replaced = after.difference(&placed).count();
    assert_eq!(replaced, 0, "{replaced} tasks were placed again after the leader change");
    cluster.restart(leader);
    drop(sim);
}
