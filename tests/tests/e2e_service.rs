//! The product's loop end to end, with real processes: a `sched server`, a `sched-agent` and a
//! loopback registry. `sched apply` makes tasks that the leader places on the agent's node, the
//! agent pulls the image and runs them under shims, and reports them running; `scale` and
//! `delete` stop and remove them again, leaving no container behind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sched_tests::bundle::{runtime_binary, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, sched_binary};
use sched_tests::registry::Registry;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A `sched-agent` process with its own data dir and cgroup parent; killed, its tasks deleted
/// and its cgroups removed on drop.
struct Agent {
    child: Child,
    data_dir: std::path::PathBuf,
    cgroup_parent: String,
}

impl Agent {
    fn start(cluster: &Cluster, name: &str) -> Agent {
        let data_dir = cluster.dir().join(format!("agent-{name}"));
        let cgroup_parent = format!("/sched-test-{}", unique_name());
        let child = Self::spawn(cluster, name, &data_dir, &cgroup_parent);
        Agent { child, data_dir, cgroup_parent }
    }

    /// Starts the agent again with the same name, data dir and cgroup parent.
    fn restart(&mut self, cluster: &Cluster, name: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(cluster, name, &self.data_dir, &self.cgroup_parent);
    }

    fn spawn(cluster: &Cluster, name: &str, data_dir: &std::path::Path, cgroup_parent: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.dir().join(format!("agent-{name}.log")))
            .unwrap();
        let agent = sched_binary().with_file_name("sched-agent");
        assert!(agent.exists(), "{} is missing: cargo build -p agent", agent.display());
        Command::new(agent)
            .args(["--server", &cluster.addresses(), "--name", name, "--no-network", "--stop-grace", "1"])
            // Tests run in parallel: each agent API on its own free port.
            .args(["--api-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--cgroup-parent", cgroup_parent])
            .arg("--runtime")
            .arg(runtime_binary())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sched-agent")
    }

    /// Containers the node's runtime knows, by status.
    fn containers(&self) -> Vec<(String, String)> {
        let out = Command::new(runtime_binary())
            .arg("--root")
            .arg(self.data_dir.join("runtime"))
            .args(["list", "--format", "json"])
            .output()
            .expect("sched-runtime list");
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
        list.as_array()
            .map(|a| a.iter().map(|c| (c["id"].as_str().unwrap_or("").to_string(), c["status"].as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (id, _) in self.containers() {
            let _ = Command::new(runtime_binary()).arg("--root").arg(self.data_dir.join("runtime")).args(["delete", "--force", &id]).output();
        }
        std::thread::sleep(Duration::from_millis(200));
        for m in sched_tests::bundle::mounts_under(&self.data_dir).iter().rev() {
            let _ = nix::mount::umount2(std::path::Path::new(m), nix::mount::MntFlags::MNT_DETACH);
        }
        sched_tests::bundle::remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Polls `check` until it returns true; panics with `what` and `context()` after the timeout.
#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
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
    let agent = Agent::start(&cluster, "node1");
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
    let agent = Agent::start(&cluster, "node1");
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
        .arg(agent.data_dir.join("runtime"))
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
    let mut agent = Agent::start(&cluster, "node1");
    let file = cluster.dir().join("steady.toml");
    std::fs::write(&file, format!("name = \"steady\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncount = 2\n")).unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#?}", tasks(&cluster));
    wait_until("2 containers run", || agent.containers().iter().filter(|(_, s)| s == "running").count() == 2, context);
    let before = agent.containers();

    // kill -9 the agent: its tasks keep running under their shims.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.containers(), before, "the tasks run on without their agent");

    // The restarted agent (same name, same data dir) adopts them instead of starting new ones.
    agent.restart(&cluster, "node1");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.containers(), before, "nothing was started twice or stopped");
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
    let agent = Agent::start(&cluster, "node1");
    let file = cluster.dir().join("busy.toml");
    // A busy loop under a 200m limit uses all of it: about 1.0 of its limit.
    std::fs::write(&file, format!("name = \"busy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"while :; do :; done\"]\ncpu = 200\nmemory = 64\ncount = 1\n")).unwrap();
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
