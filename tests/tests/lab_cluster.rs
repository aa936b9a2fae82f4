//! Three hosts in the netns lab (see `sched_tests::lab`), each with a `sched server` and a
//! `sched-agent`, running a 6-task busybox httpd service pulled from the lab's registry:
//! - the tasks spread 2/2/2 and every endpoint answers HTTP from outside the hosts;
//! - a host cut off the network and killed: its tasks run on the other hosts within 15 s;
//! - an agent restarted (quickly, then after its tasks were moved away): no task runs twice;
//! - the leader server killed: no task is restarted;
//! - the service deleted: no container, mount, cgroup, veth or namespace of it is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sched_tests::lab::{Container, Lab, LabOptions, wait_until};
use sched_tests::wait::holds_for;
use serde_json::{Value, json};

const SERVICE: &str = "web";
const TASKS: usize = 6;
const PAGE: &str = "hello from the lab";
/// Generous: image pulls and container starts on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A lab running the 6-task httpd service, every task running.
fn lab_with_service() -> Lab {
    let lab = Lab::start(LabOptions::default());
    let image = lab.push_busybox("web:1", json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let file = lab.dir().join("web.toml");
    let script = format!("mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && echo serving && exec httpd -f -p 8080 -h /tmp/www");
    std::fs::write(
        &file,
        format!("name = \"{SERVICE}\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ncpu = 100\nmemory = 32\nports = [8080]\ncount = {TASKS}\n"),
    )
    .unwrap();
    lab.sched_ok(&["apply", &file.to_string_lossy()]);
    wait_until(
        "6 tasks run, each in one running container",
        START_TIMEOUT,
        || running(&lab).len() == TASKS && containers_match_tasks(&lab).is_ok(),
        || context(&lab),
    );
    lab
}

/// Tasks of the service that should run and do, by id.
fn running(lab: &Lab) -> BTreeMap<String, Value> {
    lab.tasks()
        .into_iter()
        .filter(|t| t["service"] == SERVICE && t["desired_state"] == "running" && t["observed_state"] == "running")
        .filter_map(|t| Some((t["id"].as_str()?.to_owned(), t)))
        .collect()
}

/// The running containers of every host.
fn running_containers(lab: &Lab) -> Vec<Container> {
    lab.containers().into_iter().filter(|c| c.status == "running").collect()
}

/// Checks that the running tasks and the running containers match one to one: every running
/// task has exactly one running container, on its own node, and no container runs that is not
/// a running task.
fn containers_match_tasks(lab: &Lab) -> Result<(), String> {
    let names = lab.node_names();
    let tasks: BTreeSet<(String, String)> = running(lab)
        .iter()
        .map(|(id, t)| (t["node_id"].as_u64().and_then(|n| names.get(&n).cloned()).unwrap_or_default(), id.clone()))
        .collect();
    let containers = running_containers(lab);
    let mut seen = BTreeSet::new();
    for c in &containers {
        if !seen.insert(c.id.clone()) {
            return Err(format!("task {} runs twice: {containers:?}", c.id));
        }
    }
    let on_hosts: BTreeSet<(String, String)> = containers.into_iter().map(|c| (c.host, c.id)).collect();
    if tasks != on_hosts {
        return Err(format!("running tasks {tasks:?} != running containers {on_hosts:?}"));
    }
    Ok(())
}

fn context(lab: &Lab) -> String {
    format!("tasks: {:#}\ncontainers: {:#?}\nmatch: {:?}", Value::Array(lab.tasks()), lab.containers(), containers_match_tasks(lab))
}

/// (host, task id, pid) of every running container: unchanged = nothing was restarted.
fn fingerprint(lab: &Lab) -> BTreeSet<(String, String, i64)> {
    running_containers(lab).into_iter().map(|c| (c.host, c.id, c.pid)).collect()
}

/// Asserts for `period` that the containers and the running tasks stay exactly as they were.
#[track_caller]
fn assert_unchanged_for(lab: &Lab, period: Duration, before: &BTreeSet<(String, String, i64)>) {
    let task_ids: BTreeSet<String> = before.iter().map(|(_, id, _)| id.clone()).collect();
    holds_for(
        "no container was started, stopped or replaced and the running tasks stayed the same",
        period,
        || &fingerprint(lab) == before && running(lab).into_keys().collect::<BTreeSet<String>>() == task_ids,
        || context(lab),
    );
}

#[test]
fn six_tasks_spread_two_per_host_and_every_endpoint_answers_http() {
    let lab = lab_with_service();
    let names = lab.node_names();
    let tasks = running(&lab);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks.values() {
        let node = task["node_id"].as_u64().and_then(|n| names.get(&n).cloned()).unwrap_or_default();
        let host = lab.hosts.iter().find(|h| h.name == node).unwrap_or_else(|| panic!("task on unknown node {node}: {}", context(&lab)));
        let endpoints = task["endpoints"].as_array().cloned().unwrap_or_default();
        assert_eq!(endpoints.len(), 1, "one published port: {task:#}");
        let endpoint = endpoints[0].as_str().unwrap();
        assert!(endpoint.starts_with(&format!("{}:", host.ip)), "endpoint {endpoint} is on its host {}", host.ip);
        *per_host.entry(node).or_default() += 1;
    }
    assert_eq!(per_host, lab.hosts.iter().map(|h| (h.name.clone(), 2)).collect(), "6 tasks spread 2/2/2: {}", context(&lab));
    // The servers reached the registry through the lab network and pinned the tag's digest.
    let services = lab.sched_json(&["get", "services"]).expect("get services");
    let digest = services[0]["current"]["image_digest"].as_str().unwrap_or_default().to_owned();
    assert!(digest.starts_with("sha256:"), "the image tag was pinned to a digest: {services:#}");

    // httpd may still be starting right after the container runs: give each a few seconds.
    for task in tasks.values() {
        let endpoint = task["endpoints"][0].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            match lab.http_get(endpoint) {
                Ok(body) => break body,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{endpoint} of task {} does not answer: {e}", task["id"]);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(body.trim(), PAGE, "{endpoint} serves the task's page");
    }

    // Every task's output is read from its host through the servers (`sched logs`).
    let logs = lab.sched_ok(&["logs", SERVICE]);
    assert_eq!(logs.lines().filter(|l| l.ends_with(" serving")).count(), TASKS, "each task's line, from every host: {logs}");
}

#[test]
fn a_cut_off_hosts_tasks_run_on_the_other_hosts_within_15_s() {
    let mut lab = lab_with_service();
    // Cut a host whose server follows, so that this measures node failure, not an election too.
    let leader = lab.wait_for_leader(Duration::from_secs(10));
    let victim = lab.hosts.iter().rposition(|h| h.id != leader).unwrap();
    let victim_name = lab.hosts[victim].name.clone();
    let before = fingerprint(&lab);
    let survivors: BTreeSet<_> = before.iter().filter(|(host, _, _)| *host != victim_name).cloned().collect();

    let cut_at = Instant::now();
    lab.cut(victim);
    let killed = lab.kill_host(victim);
    assert!(killed >= 2, "the victim's shims and containers were killed (found {killed})");
    let moved = || {
        let names = lab.node_names();
        let tasks = running(&lab);
        tasks.len() == TASKS
            && tasks.values().all(|t| t["node_id"].as_u64().and_then(|n| names.get(&n)).is_some_and(|n| *n != victim_name))
            && running_containers(&lab).iter().filter(|c| c.host != victim_name).count() == TASKS
    };
    wait_until("the victim's tasks run on the other hosts", Duration::from_secs(40), moved, || context(&lab));
    let took = cut_at.elapsed();
    eprintln!("lab: {TASKS} tasks ran again on the other hosts {:.1} s after the cut", took.as_secs_f64());
    assert!(took <= Duration::from_secs(15), "took {took:?} from the cut until every task ran elsewhere");

    // The survivors' tasks were not touched, and nothing runs twice.
    let after = fingerprint(&lab);
    assert!(survivors.is_subset(&after), "the other hosts' tasks were not restarted: before {survivors:?}, after {after:?}");
    assert!(lab.host_processes(victim).is_empty(), "nothing of the victim runs");
    let nodes = lab.nodes();
    for node in &nodes {
        let expected = if node["name"] == victim_name.as_str() { "down" } else { "ready" };
        assert_eq!(node["status"], expected, "only the victim is down (the agent that was connected to its server moved on): {nodes:#?}");
    }
    let live: Vec<Container> = running_containers(&lab).into_iter().filter(|c| c.host != victim_name).collect();
    let ids: BTreeSet<&str> = live.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), live.len(), "no task runs twice: {live:?}");

    // The host comes back (as after a reboot: its containers died with it): it rejoins and
    // starts none of its old tasks again.
    lab.heal(victim);
    lab.restart_server(victim);
    lab.restart_agent(victim);
    wait_until(
        "the victim is ready again",
        Duration::from_secs(30),
        || lab.nodes().iter().all(|n| n["status"] == "ready"),
        || context(&lab),
    );
    let settled = fingerprint(&lab);
    assert_eq!(settled, after, "the returning host changed nothing: {}", context(&lab));
    assert_unchanged_for(&lab, Duration::from_secs(3), &settled);
    // Its old tasks died unrecorded (their shims were killed too): it cleans up after them.
    let victim_left = || {
        let mut left = lab.task_leftovers(victim);
        left.extend(lab.containers().into_iter().filter(|c| c.host == victim_name).map(|c| format!("container {} ({})", c.id, c.status)));
        left
    };
    wait_until(
        "the victim cleaned up its dead tasks",
        Duration::from_secs(10),
        || victim_left().is_empty(),
        || format!("left: {:#?}", victim_left()),
    );
}

#[test]
fn a_restarted_agent_runs_no_task_twice() {
    let mut lab = lab_with_service();
    let before = fingerprint(&lab);

    // A quick restart: the agent adopts its tasks; nothing is started or stopped.
    // While it is down (shorter than the node timeout) nothing moves; once it heartbeats again,
    // nothing moves over 5 s (ten passes of the leader, five heartbeats).
    lab.kill_agent(0);
    assert_unchanged_for(&lab, Duration::from_secs(1), &before);
    let host = lab.hosts[0].name.clone();
    let heartbeat_ms = |lab: &Lab| {
        let nodes = lab.sched_json(&["get", "nodes"]).unwrap_or_default();
        let node = nodes.as_array().into_iter().flatten().find(|n| n["name"] == host.as_str()).cloned().unwrap_or_default();
        node["last_heartbeat_unix_ms"].as_u64().unwrap_or(0)
    };
    let restarted_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    lab.restart_agent(0);
    wait_until("the restarted agent heartbeats again", Duration::from_secs(20), || heartbeat_ms(&lab) > restarted_ms, || context(&lab));
    assert_unchanged_for(&lab, Duration::from_secs(5), &before);

    // Down for longer than the node timeout: its tasks are placed elsewhere meanwhile, and when
    // it comes back it stops its old copies instead of running them beside the new ones.
    lab.kill_agent(0);
    let moved = || {
        let names = lab.node_names();
        let tasks = running(&lab);
        tasks.len() == TASKS && tasks.values().all(|t| t["node_id"].as_u64().and_then(|n| names.get(&n)).is_some_and(|n| *n != host))
    };
    wait_until("the stopped agent's tasks run elsewhere", Duration::from_secs(40), moved, || context(&lab));
    lab.restart_agent(0);
    wait_until(
        "the old copies are stopped: running tasks and containers match one to one",
        Duration::from_secs(30),
        || containers_match_tasks(&lab).is_ok() && running(&lab).len() == TASKS,
        || context(&lab),
    );
    let settled = fingerprint(&lab);
    assert_unchanged_for(&lab, Duration::from_secs(3), &settled);
    // The old copies (still listed, as lost) hold nothing on the host any more: no mount, task
    // namespace, veth, published port or cgroup.
    assert!(settled.iter().all(|(h, _, _)| *h != host), "nothing runs on {host} now: {settled:?}");
    wait_until(
        "the old copies are released",
        Duration::from_secs(10),
        || lab.task_leftovers(0).is_empty(),
        || format!("left: {:#?}", lab.task_leftovers(0)),
    );
}

#[test]
fn killing_the_leader_restarts_no_task() {
    let mut lab = lab_with_service();
    let before = fingerprint(&lab);
    let leader = lab.wait_for_leader(Duration::from_secs(10));
    let index = lab.hosts.iter().position(|h| h.id == leader).unwrap();
    lab.kill_server(index);
    let new_leader = lab.wait_for_leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    // Past the new leader's node timeout, so a node whose heartbeats were lost would be down.
    assert_unchanged_for(&lab, Duration::from_millis(LabOptions::default().node_timeout_ms + 3_000), &before);
    assert!(lab.nodes().iter().all(|n| n["status"] == "ready"), "every node stayed ready: {:#}", Value::Array(lab.nodes()));
}

#[test]
fn a_deleted_service_leaves_nothing_behind() {
    let lab = lab_with_service();
    assert!(lab.hosts.iter().enumerate().all(|(i, _)| !lab.task_leftovers(i).is_empty()), "every host has task parts to clean up");
    let deleted_at = Instant::now();
    lab.sched_ok(&["delete", SERVICE]);
    let leftovers = || {
        let mut left: Vec<String> =
            lab.containers().into_iter().map(|c| format!("container {} on {} ({})", c.id, c.host, c.status)).collect();
        for (i, _) in lab.hosts.iter().enumerate() {
            left.extend(lab.task_leftovers(i));
        }
        left
    };
    wait_until(
        "nothing of the service is left on any host",
        Duration::from_secs(30),
        || leftovers().is_empty(),
        || format!("left: {:#?}", leftovers()),
    );
    eprintln!("lab: nothing of the service was left {:.1} s after the delete", deleted_at.elapsed().as_secs_f64());
    assert!(running(&lab).is_empty(), "no task of the service runs: {}", context(&lab));
    for (i, host) in lab.hosts.iter().enumerate() {
        let shims: Vec<_> = lab.host_process_names(i).into_iter().filter(|(_, name)| name.starts_with("sched-runtime")).collect();
        assert!(shims.is_empty(), "no shim is left on {}: {shims:?}", host.name);
    }
}
