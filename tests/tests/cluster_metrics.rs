//! Task CPU reaches the leader fresh from an agent connected to a follower, and every server
//! shows it: a busy task's CPU, measured by its node, is at the leader less than 2 s after the
//! measurement (the autoscaler's budget), and a server with no agents of its own answers reads
//! with the leader's metrics (a `--stale` read shows only its own).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, stdout};
use sched_tests::registry::Registry;
use serde_json::{Value, json};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn json_at(cluster: &Cluster, server: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let out = cluster.sched_at(server, &args);
    assert!(out.status.success(), "sched {args:?} at {server}: {out:?}");
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_busy_tasks_cpu_is_at_the_leader_within_2_s_through_a_follower_and_every_server_shows_it() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 3, ..Default::default() });
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut others = cluster.servers.values().filter(|s| s.id != leader).map(|s| s.address.clone());
    let (follower, bystander) = (others.next().unwrap(), others.next().unwrap());
    let leader_address = cluster.servers[&leader].address.clone();
    let image = push_busybox(cluster.dir(), &registry.addr(), "busy:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    // The agent knows only the follower: its heartbeats reach the leader through it.
    let agent = AgentProcess::start_against(&cluster, Some(&follower), "node1", &[]);
    let file = cluster.dir().join("busy.toml");
    std::fs::write(
        &file,
        format!("name = \"busy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"while :; do :; done\"]\ncpu = 100\ncount = 1\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let task = |server: &str, extra: &[&str]| {
        let mut args = vec!["get", "tasks"];
        args.extend(extra);
        json_at(&cluster, server, &args).as_array().and_then(|a| a.first().cloned()).unwrap_or(Value::Null)
    };
    let context = || format!("tasks: {:#?}\ncontainers: {:?}", task(&leader_address, &[]), agent.containers());
    agent_process::wait_until(
        "the task runs and the leader has its CPU",
        Duration::from_secs(60),
        || task(&leader_address, &[])["metrics_unix_ms"].as_u64().unwrap_or(0) > 0,
        context,
    );

    // Ten reads at the leader: each shows a sample measured less than 2 s before.
    let mut ages = Vec::new();
    for _ in 0..10 {
        let before = now_ms();
        let t = task(&leader_address, &[]);
        let age = before.saturating_sub(t["metrics_unix_ms"].as_u64().unwrap());
        ages.push(age);
        let cpu = t["cpu_fraction"].as_f64().unwrap();
        assert!((0.6..=1.3).contains(&cpu), "a busy loop under a 100m limit uses about all of it, got {cpu}");
        std::thread::sleep(Duration::from_millis(300));
    }
    println!("age of the leader's newest sample at read time (ms): {ages:?}");
    assert!(ages.iter().all(|a| *a < 2_000), "samples older than 2 s at the leader: {ages:?}");

    // The server with no agent answers with the leader's metrics; its own stale copy has none.
    let forwarded = task(&bystander, &[]);
    assert!(forwarded["metrics_unix_ms"].as_u64().unwrap_or(0) > 0, "{forwarded:#?}");
    let local = task(&bystander, &["--stale"]);
    assert_eq!(local["metrics_unix_ms"], 0, "{local:#?}");
    let services = json_at(&cluster, &bystander, &["get", "services"]);
    let cpu = services[0]["cpu_percent"].as_f64().expect("the service's CPU through a server without agents");
    assert!((60.0..=130.0).contains(&cpu), "{services:#?}");

    cluster.sched_ok(&["delete", "busy"]);
    agent_process::wait_until("no container is left", Duration::from_secs(60), || agent.containers().is_empty(), context);
}
