//! The product's loop end to end, with real processes: a `sched server`, a `sched-agent` and a
//! loopback registry. `sched apply` makes tasks that the leader places on the agent's node, the
//! agent pulls the image and runs them under shims, and reports them running; `scale` and
//! `delete` stop and remove them again, leaving no container behind.

use std::process::Command;
use std::time::Duration;

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::bundle::runtime_binary;
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::registry::Registry;
use sched_tests::wait::holds_for;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, for up to a minute.
#[track_caller]
fn wait_until(what: &str, check: impl FnMut() -> bool, context: impl Fn() -> String) {
    agent_process::wait_until(what, TIMEOUT, check, context)
}

fn tasks(cluster: &Cluster) -> Vec<Value> {
    cluster.sched_json(&["get", "tasks"]).as_array().cloned().unwrap_or_default()
}

fn count_state(cluster: &Cluster, state: &str) -> usize {
    tasks(cluster).iter().filter(|t| t["observed_state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(state))).count()
}

#[test]
fn apply_scale_and_delete_a_service_on_a_real_node() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "sleepy:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("sleepy.toml");
    std::fs::write(
        &file,
        format!("name = \"sleepy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"echo started; sleep 1000\"]\ncpu = 100\nmemory = 64\ncount = 2\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#?}\ncontainers: {:?}", tasks(&cluster), agent.containers());
    wait_until("2 tasks run", || count_state(&cluster, "running") == 2, context);
    wait_until("2 containers run on the node", || agent.containers().iter().filter(|(_, s)| s == "running").count() == 2, context);

    cluster.sched_ok(&["scale", "sleepy", "1"]);
    wait_until("1 container is left", || agent.containers().len() == 1, context);
    wait_until("1 task runs", || count_state(&cluster, "running") == 1, context);

    cluster.sched_ok(&["delete", "sleepy"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

#[test]
fn a_command_health_check_reports_healthy_then_unhealthy() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "checked:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("checked.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"checked\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"sleep 1; touch /tmp/healthy; sleep 1000\"]\n\
             count = 1\n[health]\nkind = \"cmd\"\ncommand = [\"test\", \"-f\", \"/tmp/healthy\"]\n\
             interval = \"500ms\"\ntimeout = \"500ms\"\nretries = 2\n"
        ),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let health = |cluster: &Cluster| tasks(cluster).first().and_then(|t| t["health"].as_str().map(str::to_string)).unwrap_or_default();
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    wait_until("the task is healthy", || health(&cluster) == "healthy", context);
    // Break it from inside the container: the check fails twice in a row.
    let id = tasks(&cluster)[0]["id"].as_str().unwrap().to_string();
    let out = Command::new(runtime_binary())
        .arg("--root")
        .arg(agent.data_dir().join("runtime"))
        .args(["exec", &id, "rm", "/tmp/healthy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_until("the task is unhealthy", || health(&cluster) == "unhealthy", context);
    cluster.sched_ok(&["delete", "checked"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

#[test]
fn tasks_outlive_an_agent_restart_and_nothing_runs_twice() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "steady:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let mut agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("steady.toml");
    std::fs::write(&file, format!("name = \"steady\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncount = 2\n")).unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    wait_until("2 containers run", || agent.containers().iter().filter(|(_, s)| s == "running").count() == 2, context);
    let before = agent.containers();

    // kill -9 the agent: its tasks keep running under their shims.
    // Over 2 s: the shims notice a dead parent at once if they ever tie their life to it.
    agent.kill();
    holds_for("the tasks run on without their agent", Duration::from_secs(2), || agent.containers() == before, context);

    // The restarted agent (same name, same data dir) adopts them instead of starting new ones:
    // once it heartbeats again, over 3 s (six passes of the leader's reconciler, six local
    // checks of the agent, three heartbeats).
    let heartbeat_ms = |cluster: &Cluster| cluster.sched_json(&["get", "nodes"])[0]["last_heartbeat_unix_ms"].as_u64().unwrap_or(0);
    let restarted_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    agent.restart(&cluster);
    wait_until("the restarted agent heartbeats again", || heartbeat_ms(&cluster) > restarted_ms, context);
    holds_for("nothing was started twice or stopped", Duration::from_secs(3), || agent.containers() == before, context);
    wait_until("both tasks still reported running", || count_state(&cluster, "running") == 2, context);
    assert_eq!(tasks(&cluster).len(), 2, "no replacement tasks were created: {}", context());

    cluster.sched_ok(&["delete", "steady"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

#[test]
fn cpu_use_is_reported_as_a_fraction_of_the_limit() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "busy:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("busy.toml");
    // A busy loop under a 200m limit uses all of it: about 1.0 of its limit.
    std::fs::write(
        &file,
        format!(
            "name = \"busy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"while :; do :; done\"]\ncpu = 200\nmemory = 64\ncount = 1\n"
        ),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    let cpu = |cluster: &Cluster| tasks(cluster).first().and_then(|t| t["cpu_fraction"].as_f64()).unwrap_or(0.0);
    wait_until("the task's CPU use is reported", || cpu(&cluster) > 0.5, context);
    let fraction = cpu(&cluster);
    assert!((0.5..=1.3).contains(&fraction), "a busy loop uses about all of its limit: {fraction}");
    let memory = tasks(&cluster)[0]["memory_bytes"].as_u64().unwrap_or(0);
    assert!(memory > 0, "memory use is reported too: {}", context());
    cluster.sched_ok(&["delete", "busy"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

/// Issue #5 item 3: a task that exits is reported with its exit code and replaced, each
/// replacement later than the one before (1 s doubling), and `describe` shows the crash loop.
#[test]
fn a_crash_loop_is_reported_and_backs_off() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "crashy:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("crashy.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"crashy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"sleep 0.2; exit 3\"]\ncpu = 100\nmemory = 64\ncount = 1\n"
        ),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    // Four tasks: the first and three replacements, after backoffs of 1 s, 2 s and 4 s.
    let exited = |cluster: &Cluster| {
        let mut exited: Vec<Value> = tasks(cluster).into_iter().filter(|t| t["observed_state"] == "exited").collect();
        exited.sort_by_key(|t| t["created_unix_ms"].as_u64());
        exited
    };
    wait_until("3 tasks exited and a 4th was made", || exited(&cluster).len() >= 3 && tasks(&cluster).len() >= 4, context);
    let all = {
        let mut all = tasks(&cluster);
        all.sort_by_key(|t| t["created_unix_ms"].as_u64());
        all
    };
    let ids: std::collections::BTreeSet<&str> = all.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids.len(), all.len(), "every replacement is a new task: {}", context());
    for t in &all[..3] {
        assert_eq!(t["observed_state"], "exited", "{}", context());
        assert_eq!(t["exit_code"], 3, "the exit code reaches the servers: {}", context());
        assert_eq!(t["desired_state"], "running", "nothing asked it to stop: {}", context());
    }
    let ms = |t: &Value, key: &str| t[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {t}"));
    // The k-th replacement is made no sooner than 2^(k-1) s after the death before it (the
    // reconciler's rule, on the servers' own clock); the leader looks every 0.5 s.
    let delays: Vec<u64> = (0..3).map(|k| ms(&all[k + 1], "created_unix_ms") - ms(&all[k], "updated_unix_ms")).collect();
    for (k, delay) in delays.iter().enumerate() {
        let backoff = 1000u64 << k;
        assert!(*delay >= backoff, "replacement {} came {delay} ms after the death, before its {backoff} ms backoff: {}", k + 1, context());
    }
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "the backoff grows: {delays:?}");
    // Starts spread further apart: the gap before the 3rd replacement is longer than the one
    // before the 2nd (the first task's image pull makes the first gap not comparable).
    let starts: Vec<u64> = all.iter().take(4).map(|t| ms(t, "created_unix_ms")).collect();
    let (gap2, gap3) = (starts[2] - starts[1], starts[3] - starts[2]);
    eprintln!("death-to-replacement delays {delays:?} ms; start gaps {:?} ms", starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>());
    assert!(gap3 > gap2, "starts {starts:?}: gaps {gap2} ms then {gap3} ms should grow (by about 2 s)");

    let described = cluster.sched_ok(&["describe", "service", "crashy"]);
    for t in &all[..3] {
        let id = t["id"].as_str().unwrap();
        assert!(described.contains(&format!("task {id} exited with code 3")), "describe names the exit of {id}:\n{described}");
    }
    for backoff in ["backoff of 1s", "backoff of 2s", "backoff of 4s"] {
        assert!(described.contains(backoff), "describe shows the {backoff}:\n{described}");
    }

    cluster.sched_ok(&["delete", "crashy"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

/// Issue #5 item 7: a task that fits on no node stays pending, and `describe` says what is
/// missing; a spec that fits is then placed and runs.
#[test]
fn a_task_that_fits_nowhere_stays_pending_with_the_reason() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "hungry:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start_with(&cluster, "small", &["--cpu", "500", "--memory", "256"]);
    wait_until("the node registered", || cluster.sched_json(&["get", "nodes"]).as_array().is_some_and(|n| n.len() == 1), String::new);
    let node_id = cluster.sched_json(&["get", "nodes"])[0]["id"].as_u64().unwrap();
    let file = cluster.dir().join("hungry.toml");
    let apply = |cpu: u32, memory: u32| {
        std::fs::write(
            &file,
            format!("name = \"hungry\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncpu = {cpu}\nmemory = {memory}\ncount = 1\n"),
        )
        .unwrap();
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    };
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    let pending_reason = |cluster: &Cluster| {
        let live: Vec<Value> = tasks(cluster).into_iter().filter(|t| t["desired_state"] == "running").collect();
        match live.as_slice() {
            [t] if t["observed_state"] == "pending" && t["node_id"] == 0 => t["message"].as_str().map(str::to_string),
            _ => None,
        }
    };

    // Too much CPU for the only node.
    apply(1000, 64);
    wait_until("the task is pending for CPU", || pending_reason(&cluster).is_some_and(|r| r.contains("CPU")), context);
    let reason = pending_reason(&cluster).unwrap();
    assert!(reason.contains(&format!("1 lack 1000m CPU (most free: 500m, on node {node_id})")), "{reason}");
    // Over 2 s, four passes of the leader's placement.
    holds_for("it stays pending", Duration::from_secs(2), || pending_reason(&cluster).as_deref() == Some(reason.as_str()), context);
    let described = cluster.sched_ok(&["describe", "service", "hungry"]);
    assert!(described.contains("pending") && described.contains(&reason), "describe shows the pending task and why:\n{described}");

    // Too much memory.
    apply(100, 512);
    wait_until("the task is pending for memory", || pending_reason(&cluster).is_some_and(|r| r.contains("memory")), context);
    let reason = pending_reason(&cluster).unwrap();
    assert!(reason.contains(&format!("1 lack 512 MiB memory (most free: 256 MiB, on node {node_id})")), "{reason}");
    let described = cluster.sched_ok(&["describe", "service", "hungry"]);
    assert!(described.contains(&reason), "describe shows why:\n{described}");
    assert!(agent.containers().is_empty(), "nothing ran on the node: {:?}", agent.containers());

    // A spec that fits runs.
    apply(100, 64);
    wait_until("the task runs", || count_state(&cluster, "running") == 1, context);
    wait_until("its container runs on the node", || agent.containers().iter().filter(|(_, s)| s == "running").count() == 1, context);

    cluster.sched_ok(&["delete", "hungry"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}

/// Issue #5 item 7: `constraints` in service.toml put a service's tasks only on nodes with
/// those labels (`sched-agent --labels`), and a service no node qualifies for stays pending
/// with the missing label as the reason.
#[test]
fn constraints_place_tasks_on_nodes_with_the_labels() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "zoned:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let in_a = AgentProcess::start_with(&cluster, "in-a", &["--labels", "zone=a"]);
    let in_b = AgentProcess::start_with(&cluster, "in-b", &["--labels", "zone=b,disk=ssd"]);
    wait_until("both nodes registered", || cluster.sched_json(&["get", "nodes"]).as_array().is_some_and(|n| n.len() == 2), String::new);
    let nodes = cluster.sched_json(&["get", "nodes"]);
    let node_in = |zone: &str| {
        nodes.as_array().unwrap().iter().find(|n| n["labels"]["zone"] == zone).and_then(|n| n["id"].as_u64()).expect("a node of the zone")
    };
    let (node_a, node_b) = (node_in("a"), node_in("b"));
    let file = cluster.dir().join("zoned.toml");
    let apply = |zone: &str| {
        std::fs::write(
            &file,
            format!(
                "name = \"zoned\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncount = 2\nconstraints = {{ zone = \"{zone}\" }}\n"
            ),
        )
        .unwrap();
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    };
    let live = |cluster: &Cluster| -> Vec<Value> { tasks(cluster).into_iter().filter(|t| t["desired_state"] == "running").collect() };
    let context =
        || format!("nodes: {nodes:#?}\ntasks: {:#?}\nin-a: {:?}\nin-b: {:?}", tasks(&cluster), in_a.containers(), in_b.containers());

    // Both tasks on the zone=b node, though spreading would otherwise put one on each.
    apply("b");
    wait_until("2 tasks run", || count_state(&cluster, "running") == 2, context);
    let placed: Vec<u64> = live(&cluster).iter().map(|t| t["node_id"].as_u64().unwrap()).collect();
    assert_eq!(placed, [node_b, node_b], "{}", context());
    wait_until("2 containers run on the zone=b node", || in_b.containers().iter().filter(|(_, s)| s == "running").count() == 2, context);
    assert!(in_a.containers().is_empty(), "nothing runs on the zone=a node (node {node_a}): {}", context());
    let services = cluster.sched_json(&["get", "services"]);
    assert_eq!(services[0]["current"]["spec"]["constraints"], json!({"zone": "b"}), "get services -o json: {services:#}");
    let described = cluster.sched_ok(&["describe", "service", "zoned"]);
    assert!(described.contains("Constraints: zone=b"), "describe shows the constraints:\n{described}");

    // No node has zone=c: the new revision's tasks wait, naming the missing label, and the old
    // ones keep serving (a rolling deploy stops them only once new tasks are healthy).
    apply("c");
    let pending_reasons = |cluster: &Cluster| -> Vec<String> {
        live(cluster)
            .iter()
            .filter(|t| t["observed_state"] == "pending" && t["node_id"] == 0 && t["revision"] == 2)
            .filter_map(|t| t["message"].as_str().map(str::to_string))
            .collect()
    };
    wait_until("2 tasks are pending for the label", || pending_reasons(&cluster).len() == 2, context);
    for reason in pending_reasons(&cluster) {
        assert!(reason.contains("2 without the required labels zone=c"), "{reason}");
    }
    let described = cluster.sched_ok(&["describe", "service", "zoned"]);
    assert!(described.contains("without the required labels zone=c"), "describe shows why:\n{described}");
    // Over 2 s, four passes of the leader's placement and reconciler.
    holds_for(
        "the old revision keeps running on zone=b and nothing runs on zone=a while the new one cannot be placed",
        Duration::from_secs(2),
        || in_b.containers().iter().filter(|(_, s)| s == "running").count() == 2 && in_a.containers().is_empty(),
        context,
    );

    cluster.sched_ok(&["delete", "zoned"]);
    wait_until("no task is left running", || live(&cluster).is_empty(), context);
}

#[test]
fn a_new_revision_rolls_out_and_a_broken_one_leaves_the_running_tasks_alone() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "rolling:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let agent = AgentProcess::start(&cluster, "node1");
    let file = cluster.dir().join("rolling.toml");
    let apply = |image: &str, version: &str| {
        std::fs::write(
            &file,
            format!(
                "name = \"rolling\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"exec sleep 1000\"]\nenv = {{ VERSION = \"{version}\" }}\ncpu = 100\nmemory = 32\ncount = 2\n"
            ),
        )
        .unwrap();
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    };
    let running_of =
        |revision: u64| tasks(&cluster).iter().filter(|t| t["revision"] == revision && t["observed_state"] == "running").count();
    let context = || format!("tasks: {:#?}\ncontainers: {:?}", tasks(&cluster), agent.containers());

    apply(&image, "1");
    wait_until("revision 1 runs 2 tasks", || running_of(1) == 2, context);
    // Revision 2 rolls out: its tasks run, then revision 1's are stopped and removed.
    apply(&image, "2");
    wait_until("revision 2 runs 2 tasks", || running_of(2) == 2, context);
    wait_until("only revision 2's 2 containers are left", || agent.containers().len() == 2 && running_of(1) == 0, context);
    let serving = agent.containers();

    // Revision 3's image cannot be pulled: its tasks fail, and revision 2's keep running.
    apply("127.0.0.1:1/nowhere:1", "3");
    let failed_of_3 = || tasks(&cluster).iter().any(|t| t["revision"] == 3 && t["observed_state"] == "failed");
    wait_until("a revision 3 task failed", failed_of_3, context);
    // Over 2 s, four passes of the leader's deploy controller.
    holds_for(
        "revision 2 keeps serving from the same containers, untouched",
        Duration::from_secs(2),
        || running_of(2) == 2 && agent.containers() == serving,
        context,
    );

    cluster.sched_ok(&["delete", "rolling"]);
    wait_until("no container is left", || agent.containers().is_empty(), context);
}
