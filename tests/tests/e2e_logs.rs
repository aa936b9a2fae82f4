//! `sched logs` end to end: a `sched server`, two `sched-agent`s (each serving its agent API on a
//! loopback port) and a loopback registry. A service whose tasks print known lines to stdout and
//! stderr, then a counter every 200 ms, is read through the server: every task's lines with the
//! stream kept, one task alone, the last N lines, following new lines, a node that cannot be
//! reached, and the exit codes for an unknown service and an unreachable cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::bundle::runtime_binary;
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, stderr, stdout};
use sched_tests::registry::Registry;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A `sched logs -f` process whose stdout lines arrive on a channel; killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(cluster: &Cluster, args: &[&str]) -> Follower {
        let mut child = cluster
            .cli()
            .command()
            .arg("logs")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sched logs -f");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The lines that arrive until `enough` says so; panics after `timeout`.
    fn read_until(&self, timeout: Duration, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !enough(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("sched logs -f stopped delivering; it printed: {seen:#?}"),
            }
        }
        seen
    }
}

impl Follower {
    /// The exit status, once the process has ended by itself within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds, for up to a minute.
#[track_caller]
fn wait_until(what: &str, check: impl FnMut() -> bool, context: impl Fn() -> String) {
    agent_process::wait_until(what, TIMEOUT, check, context)
}

fn running_tasks(cluster: &Cluster) -> Vec<Value> {
    let tasks = cluster.sched_json(&["get", "tasks"]);
    tasks.as_array().cloned().unwrap_or_default().into_iter().filter(|t| t["observed_state"] == "running").collect()
}

/// `(task_id, stream, text)` of each JSON line.
fn json_lines(out: &Output) -> Vec<(String, String, String)> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .map(|v| {
            (v["task_id"].as_str().unwrap_or("").into(), v["stream"].as_str().unwrap_or("").into(), v["text"].as_str().unwrap_or("").into())
        })
        .collect()
}

/// Tick numbers per line prefix (`SHORT | tick N`).
fn ticks_by_task(lines: &[String]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in lines {
        if let Some((prefix, text)) = line.split_once(" | ")
            && let Some(n) = text.strip_prefix("tick ").and_then(|n| n.parse().ok())
        {
            out.entry(prefix.to_string()).or_default().push(n);
        }
    }
    out
}

#[test]
fn logs_of_every_task_stream_from_their_nodes_through_the_server() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "ticker:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let node1 = AgentProcess::start(&cluster, "node1");
    let mut node2 = AgentProcess::start(&cluster, "node2");
    let nodes = || cluster.sched_json(&["get", "nodes"]).as_array().map_or(0, |n| n.iter().filter(|n| n["status"] == "ready").count());
    wait_until("both nodes are ready", || nodes() == 2, || format!("{:#?}", cluster.sched_json(&["get", "nodes"])));
    let file = cluster.dir().join("ticker.toml");
    let script = "echo hello-out; echo hello-err >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done";
    std::fs::write(
        &file,
        format!("name = \"ticker\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ncpu = 100\nmemory = 64\ncount = 2\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    wait_until("2 tasks run", || running_tasks(&cluster).len() == 2, || format!("{:#?}", cluster.sched_json(&["get", "tasks"])));
    let tasks: Vec<String> = running_tasks(&cluster).iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    let nodes: BTreeSet<u64> = running_tasks(&cluster).iter().map(|t| t["node_id"].as_u64().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "the service spreads over both nodes");
    let short = |id: &str| id.strip_prefix("ticker-").unwrap().to_string();

    // Every task's lines, prefixed with its short id; stdout lines on stdout, stderr on stderr.
    let deadline = Instant::now() + TIMEOUT;
    let out = loop {
        let out = cluster.sched(&["logs", "ticker"]);
        if tasks.iter().all(|t| stdout(&out).contains(&format!("{} | tick 2\n", short(t)))) {
            break out;
        }
        assert!(Instant::now() < deadline, "timed out waiting for two ticks of each task: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.status.success(), "{out:?}");
    for t in &tasks {
        assert!(stdout(&out).contains(&format!("{} | hello-out\n", short(t))), "{out:?}");
        assert!(stderr(&out).contains(&format!("{} | hello-err\n", short(t))), "{out:?}");
        assert!(!stdout(&out).contains("hello-err"), "stderr lines stay on stderr: {out:?}");
    }

    // JSON lines carry task, node and stream.
    let out = cluster.sched(&["logs", "ticker", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    for t in &tasks {
        assert!(lines.contains(&(t.clone(), "stdout".into(), "hello-out".into())), "{lines:?}");
        assert!(lines.contains(&(t.clone(), "stderr".into(), "hello-err".into())), "{lines:?}");
    }
    let node_names: BTreeSet<String> =
        stdout(&out).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["node"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(node_names, BTreeSet::from(["node1".to_string(), "node2".to_string()]));

    // One task alone (by full or short id), without prefixes; --tail cuts it to the last lines.
    let one = &tasks[0];
    let out = cluster.sched(&["logs", "ticker", "--task", one]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).starts_with("hello-out\ntick 1\n"), "{out:?}");
    assert_eq!(stderr(&out), "hello-err\n");
    let out = cluster.sched(&["logs", "ticker", "--task", &short(one), "-o", "json"]);
    let lines = json_lines(&out);
    assert!(lines.len() >= 3 && lines.iter().all(|(t, _, _)| t == one), "{lines:?}");
    let out = cluster.sched(&["logs", "ticker", "--task", one, "--tail", "2", "-o", "json"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The shim reads stdout and stderr from two pipes: "hello-err" may land among the first
    // ticks, but the newest line is always a tick.
    assert!(lines[1].1 == "stdout" && lines[1].2.starts_with("tick "), "{lines:?}");

    // -f keeps delivering new lines of every task.
    let started = Instant::now();
    let follower = Follower::start(&cluster, &["ticker", "-f", "--tail", "0"]);
    let seen = follower.read_until(Duration::from_secs(15), |seen| {
        let ticks = ticks_by_task(seen);
        ticks.len() == 2 && ticks.values().all(|n| n.len() >= 3)
    });
    let ticks = ticks_by_task(&seen);
    for (task, numbers) in &ticks {
        assert!(tasks.iter().any(|t| short(t) == *task), "{task} is one of the service's tasks: {seen:?}");
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "new ticks in order, none lost: {numbers:?}");
    }
    eprintln!("sched logs -f: 3 new lines from each of 2 tasks in {:?}", started.elapsed());
    drop(follower);

    // A node that cannot be reached: its task is named on stderr, the other task's lines
    // still come, exit code 1, and no hang.
    node2.kill();
    let started = Instant::now();
    let out = cluster.sched(&["logs", "ticker"]);
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("cannot reach node node2"), "{out:?}");
    assert_eq!(ticks_by_task(&stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()).len(), 1, "{out:?}");

    // Following one task ends when its container exits (as kubectl logs -f).
    let on_node1 = node1.container_ids().into_iter().find(|c| tasks.contains(c)).expect("a task runs on node1");
    let mut follower = Follower::start(&cluster, &["ticker", "--task", &on_node1, "-f", "--tail", "0"]);
    follower.read_until(Duration::from_secs(15), |seen| seen.iter().any(|l| l.starts_with("tick ")));
    let killed = Command::new(runtime_binary())
        .arg("--root")
        .arg(node1.data_dir().join("runtime"))
        .args(["kill", &on_node1, "KILL"])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let status = follower.wait_exit(Duration::from_secs(10)).expect("sched logs --task -f ends once the task has exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn unknown_services_and_tasks_exit_1_and_an_unreachable_cluster_exits_2() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    cluster.wait_for_leader(Duration::from_secs(10));
    let out = cluster.sched(&["logs", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("no service named \"nosuch\""), "{out:?}");

    let file = cluster.dir().join("idle.toml");
    std::fs::write(&file, "name = \"idle\"\nimage = \"127.0.0.1:1/idle:1\"\ncount = 0\n").unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let out = cluster.sched(&["logs", "idle", "--task", "idle-9"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("service idle has no task \"idle-9\""), "{out:?}");

    let out = cluster.sched_at("127.0.0.1:1", &["logs", "idle"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
