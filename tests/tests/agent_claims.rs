//! Two agents on one host may not manage the same things: a second `sched-agent` given the
//! cgroup parent, the data dir or host ids (an overlapping `--userns-ids` pool) of a running one
//! is refused at start, before it reaps or opens anything, naming the resource, the running
//! agent's pid and the flag that gives it its own; and the first agent's tasks are untouched. A `kill -9` of the first frees its claims
//! (the kernel drops the locks), so it starts again on the same ones.

use std::process::Child;
use std::time::{Duration, Instant};

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::bundle::unique_name;
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::registry::Registry;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for a refused agent to exit; kills it and fails when it keeps running.
fn refused(mut child: Child, cluster: &Cluster, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent {name} beside a running one was not refused within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(cluster.dir().join(format!("agent-{name}.log"))).unwrap_or_default();
    assert!(!status.success(), "agent {name} exited with success: {log}");
    log
}

#[test]
fn a_second_agent_on_the_same_cgroup_parent_data_dir_or_host_ids_is_refused_and_the_first_keeps_its_task() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "claims:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let mut first = AgentProcess::start(&cluster, "first");
    let file = cluster.dir().join("keep.toml");
    std::fs::write(
        &file,
        format!("name = \"keep\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncpu = 100\nmemory = 16\ncount = 1\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let running =
        |agent: &AgentProcess| agent.containers().into_iter().filter(|(_, s)| s == "running").map(|(id, _)| id).collect::<Vec<_>>();
    agent_process::wait_until("the task runs", TIMEOUT, || running(&first).len() == 1, || format!("{:?}", first.containers()));
    let task = running(&first);

    // The same cgroup parent, its own data dir.
    let data = cluster.dir().join("agent-second");
    let child = agent_process::spawn(&cluster, None, "second", &data, first.cgroup_parent(), &[]);
    let log = refused(child, &cluster, "second");
    let parent = first.cgroup_parent().to_string();
    assert!(log.contains(&format!("the cgroup parent {parent} is managed by another sched agent on this host (pid ")), "{log}");
    assert!(log.contains("--cgroup-parent"), "the refusal names the flag: {log}");

    // The same data dir, its own cgroup parent (written another way: a trailing slash).
    let other_parent = format!("/sched-test-{}", unique_name());
    let same_data = format!("{}/", first.data_dir().display());
    let child = agent_process::spawn(&cluster, None, "third", std::path::Path::new(&same_data), &other_parent, &[]);
    let log = refused(child, &cluster, "third");
    assert!(log.contains("the data dir ") && log.contains("is managed by another sched agent") && log.contains("--data-dir"), "{log}");
    sched_tests::bundle::remove_cgroup_parent(&other_parent);

    // Its own data dir and cgroup parent, but host ids that overlap the first's pool (ids are
    // one space for the whole kernel): two tasks of two agents could run as the same host ids.
    let first_pool = agent_process::userns_pool_for(first.data_dir());
    let overlapping = format!("{}:{}", first_pool.start + 65_536, first_pool.end - first_pool.start);
    let fourth_parent = format!("/sched-test-{}", unique_name());
    let args = ["--userns-ids".to_string(), overlapping];
    let child = agent_process::spawn(&cluster, None, "fourth", &cluster.dir().join("agent-fourth"), &fourth_parent, &args);
    let log = refused(child, &cluster, "fourth");
    assert!(
        log.contains("the userns id pool host ids") && log.contains("the same host ids") && log.contains("--userns-ids"),
        "an overlapping id pool is refused, naming the flag: {log}"
    );
    sched_tests::bundle::remove_cgroup_parent(&fourth_parent);

    // The first agent's task is untouched, and its claims go with it: a kill -9 and a start
    // on the same ones works (the same task still runs, adopted).
    assert_eq!(running(&first), task, "the refused agents touched nothing");
    first.restart(&cluster);
    let adopted = || {
        let tasks = cluster.sched_json(&["get", "tasks"]);
        tasks.as_array().is_some_and(|t| t.len() == 1 && t[0]["observed_state"] == "running") && running(&first) == task
    };
    agent_process::wait_until("the restarted agent adopts its task", TIMEOUT, adopted, || {
        std::fs::read_to_string(cluster.dir().join("agent-first.log")).unwrap_or_default()
    });
    cluster.sched_ok(&["delete", "keep"]);
    agent_process::wait_until("no container is left", TIMEOUT, || first.containers().is_empty(), || format!("{:?}", first.containers()));
}
