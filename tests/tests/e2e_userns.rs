//! `[security] userns` end to end: a `sched server`, one `sched-agent` and a loopback registry.
//! A service that says nothing runs each task in a user namespace of its own, with 65,536 host
//! ids no other task of the node holds; one with `userns = "host"` runs them in the host's. The
//! key travels from the file through the replicated spec and the node's assignment to the task's
//! bundle, and the id ranges are given back when the tasks go.

use std::time::Duration;

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, stdout};
use sched_tests::registry::Registry;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The `(container id, host id, size)` line each task of `logs` printed (`cat /proc/self/uid_map`).
fn maps(logs: &str) -> Vec<(u64, u64, u64)> {
    logs.lines()
        .filter_map(|l| {
            let n: Vec<u64> = l.split_whitespace().rev().take(3).filter_map(|w| w.parse().ok()).collect();
            (n.len() == 3).then(|| (n[2], n[1], n[0]))
        })
        .collect()
}

#[test]
fn the_userns_key_reaches_the_tasks_of_each_service() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "userns:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let node = AgentProcess::start(&cluster, "node1");
    let script = "cat /proc/self/uid_map; sleep 1000";
    for (name, count, security) in [("own", 2, ""), ("host", 1, "[security]\nuserns = \"host\"\n")] {
        let file = cluster.dir().join(format!("{name}.toml"));
        let text = format!("name = \"{name}\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ncount = {count}\n{security}");
        std::fs::write(&file, text).unwrap();
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    }
    let logs = |name: &str, lines: usize| {
        let last = std::cell::RefCell::new(Vec::new());
        agent_process::wait_until(
            &format!("{name}'s tasks print their uid maps"),
            TIMEOUT,
            || {
                *last.borrow_mut() = maps(&stdout(&cluster.sched(&["logs", name])));
                last.borrow().len() == lines
            },
            || format!("{:?} {:#?}", last.borrow(), cluster.sched_json(&["get", "tasks"])),
        );
        last.into_inner()
    };
    let own = logs("own", 2);
    // The test's agent has a pool of its own (`--userns-ids`, beside other tests' agents).
    let pool = agent_process::userns_pool_for(node.data_dir());
    for (container, host, size) in &own {
        assert_eq!((*container, *size), (0, 65_536), "{own:?}");
        assert!(pool.contains(host), "from the agent's pool {pool:?}: {own:?}");
    }
    assert!(own[0].1 + 65_536 <= own[1].1 || own[1].1 + 65_536 <= own[0].1, "disjoint ranges: {own:?}");
    assert_eq!(logs("host", 1), [(0, 0, 4_294_967_295)], "the host's user namespace");

    let ranges = node.data_dir().join("userns/ranges.json");
    let held = || serde_json::from_slice::<serde_json::Value>(&std::fs::read(&ranges).unwrap()).unwrap()["allocations"].clone();
    assert_eq!(held().as_object().map(|o| o.len()), Some(2), "{}", held());
    cluster.sched_ok(&["delete", "own"]);
    agent_process::wait_until(
        "the deleted service's ranges are given back",
        TIMEOUT,
        || held().as_object().is_some_and(|o| o.is_empty()),
        || format!("{}", held()),
    );
}
