//! The README's demo, run for real, and `sched dev` itself: a restart adopts the running tasks,
//! `--insecure-registry` reaches its server and its agent, and a taken port is refused.
//!
//! `scripts/demo.sh` runs with the debug binaries (`SCHED_BIN_DIR`) inside a network and mount
//! namespace of its own: its registry (127.0.0.1:5000) and `sched dev` (127.0.0.1:7700) keep
//! their default ports without meeting another test or a real sched on this machine, and the
//! node bridge, nft table and mounts it makes cannot touch the host's. Each task's answer must
//! be a line of examples/quotes/quotes.txt, and afterwards nothing the demo started may be
//! left: no process, no container, no cgroup, no work dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sched_tests::agent_process;
use sched_tests::bundle::{cgroup_hierarchies, mounts_under, remove_cgroup_parent, runtime_binary, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{free_port, sched_binary};
use sched_tests::node_holdings::Holdings;
use sched_tests::registry::Registry;
use serde_json::Value;

/// The demo's own waits are bounded (about 2.5 min at worst); this is the backstop.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// What one demo run may leave behind: processes that name its temp dir, and its cgroup
/// parent. Drop kills and removes them, so a failing run leaves nothing either.
struct Leftovers {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

impl Leftovers {
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Pids of processes whose command line names the demo's temp dir (sched dev, the registry,
    /// task shims).
    fn processes(&self) -> Vec<(i32, String)> {
        let needle = self.tmp().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// The cgroup directories of the demo's tasks (and their parent), in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        cgroup_hierarchies().into_iter().map(|h| h.join(self.cgroup_parent.trim_start_matches('/'))).filter(|d| d.exists()).collect()
    }

    /// Pids in the demo's cgroups (the tasks' processes).
    fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.cgroups() {
            for entry in walk(&dir) {
                let procs = std::fs::read_to_string(entry.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let pids: Vec<i32> = self.processes().into_iter().map(|(pid, _)| pid).chain(self.cgroup_pids()).collect();
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// `dir` and every directory below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let children: Vec<PathBuf> =
            std::fs::read_dir(&all[i]).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        all.extend(children);
        i += 1;
    }
    all
}

/// Waits for `child` at most `timeout`; SIGTERM then SIGKILL after it.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let grace = Instant::now() + Duration::from_secs(20);
    while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn the_demo_serves_a_quote_from_each_task_and_leaves_nothing_behind() {
    let leftovers = Leftovers {
        dir: tempfile::Builder::new().prefix("sched-demo-test-").tempdir().expect("temp dir"),
        cgroup_parent: format!("/{}", unique_name()),
    };
    std::fs::create_dir(leftovers.tmp()).unwrap();
    let log_path = leftovers.dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let bin_dir = sched_binary().parent().expect("target/<profile>").to_path_buf();
    assert!(bin_dir.join("sched-runtime").exists(), "{} has no sched-runtime: cargo build --workspace --bins", bin_dir.display());

    let mut demo = Command::new("unshare")
        .args(["--net", "--mount", "--", "bash", "-c", "ip link set lo up && exec scripts/demo.sh"])
        .current_dir(repo_root())
        .env("SCHED_BIN_DIR", &bin_dir)
        .env("TMPDIR", leftovers.tmp())
        .env("CGROUP_PARENT", &leftovers.cgroup_parent)
        .env("SCHED_ADMIN_CREDENTIALS", leftovers.tmp().join("admin.toml"))
        .env("WAIT_SECS", "120")
        .env_remove("KEEP")
        .env_remove("REGISTRY_PORT")
        .env_remove("SCHED_LISTEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("unshare runs (util-linux)");
    let status = wait_bounded(&mut demo, DEMO_TIMEOUT);
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "scripts/demo.sh failed ({status:?}):\n{output}");

    // "  127.0.0.1:PORT   QUOTE": one line per task, each quote from the image's list.
    let quotes = std::fs::read_to_string(repo_root().join("examples/quotes/quotes.txt")).unwrap();
    let quotes: Vec<&str> = quotes.lines().filter(|l| !l.trim().is_empty()).collect();
    let answers: Vec<(&str, &str)> = output
        .lines()
        .filter_map(|l| l.trim_start().split_once(char::is_whitespace))
        .filter(|(endpoint, _)| endpoint.starts_with("127.0.0.1:") && endpoint[10..].parse::<u16>().is_ok())
        .map(|(endpoint, quote)| (endpoint, quote.trim()))
        .collect();
    assert_eq!(answers.len(), 2, "one answer from each of the 2 tasks:\n{output}");
    assert_ne!(answers[0].0, answers[1].0, "two different endpoints:\n{output}");
    for (endpoint, quote) in &answers {
        assert!(quotes.contains(quote), "{endpoint} answered {quote:?}, not a line of examples/quotes/quotes.txt:\n{output}");
    }
    // "  ingress   QUOTE": four answers through sched dev's ingress, one address for both tasks.
    let through_ingress: Vec<&str> = output.lines().filter_map(|l| l.trim_start().strip_prefix("ingress ")).map(str::trim).collect();
    assert_eq!(through_ingress.len(), 4, "four answers through the ingress:\n{output}");
    for quote in &through_ingress {
        assert!(quotes.contains(quote), "the ingress answered {quote:?}, not a line of examples/quotes/quotes.txt:\n{output}");
    }

    // Nothing is left: processes (sched dev, registry, shims), task processes, cgroups, files.
    assert_eq!(leftovers.processes(), vec![], "processes left behind:\n{output}");
    assert_eq!(leftovers.cgroup_pids(), Vec::<i32>::new(), "task processes left behind:\n{output}");
    assert_eq!(leftovers.cgroups(), Vec::<PathBuf>::new(), "cgroups left behind:\n{output}");
    let files: Vec<_> = std::fs::read_dir(leftovers.tmp()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(files.is_empty(), "the demo left {files:?}:\n{output}");
    // The task network namespaces are pinned on the host's /run, outside the test's mount
    // namespace: their files must go too.
    let pins: Vec<_> = std::fs::read_dir("/run/sched/netns")
        .map(|d| {
            d.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("quotes-"))).collect()
        })
        .unwrap_or_default();
    assert_eq!(pins, Vec::<PathBuf>::new(), "task network namespaces left behind:\n{output}");
}

/// Runs `sched dev ARGS --no-network --data-dir DATA_DIR`, which must exit at once with status
/// 1; returns its stderr.
fn dev_refused(args: &[&str], data_dir: &Path) -> String {
    let mut child = Command::new(sched_binary())
        .arg("dev")
        .args(args)
        .args(["--no-network", "--userns-ids", &sched_tests::agent_process::userns_ids_for(data_dir), "--data-dir"])
        .arg(data_dir)
        .arg("--admin-credentials")
        .arg(data_dir.with_file_name("admin.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sched dev");
    let status = wait_bounded(&mut child, Duration::from_secs(20)).expect("sched dev must exit at once on bad input");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(status.code(), Some(1), "bad input is exit 1: {stderr}");
    stderr
}

#[test]
fn sched_dev_refuses_a_taken_port_before_it_creates_anything() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let stderr = dev_refused(&["--listen", &address, "--ingress-listen", "127.0.0.1:0"], &data_dir);
    assert!(stderr.contains(&address) && stderr.contains("already in use") && stderr.contains("--listen"), "{stderr}");
    assert!(!data_dir.exists(), "nothing is created before the port is ours");

    // The same for the ingress's address.
    let free = format!("127.0.0.1:{}", free_port());
    let stderr = dev_refused(&["--listen", &free, "--ingress-listen", &address], &data_dir);
    assert!(stderr.contains(&address) && stderr.contains("already in use") && stderr.contains("--ingress-listen"), "{stderr}");
    assert!(!data_dir.exists(), "nothing is created before the ingress port is ours");
}

#[test]
fn the_sched_binary_adds_dev_and_keeps_every_other_command() {
    let sched = |args: &[&str]| Command::new(sched_binary()).args(args).output().expect("run sched");
    let help = sched(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["server", "apply", "get", "describe", "scale", "delete", "history", "rollback", "cluster", "dev"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "sched --help lists {command}:\n{help}");
    }
    let dev_help = sched(&["dev", "--help"]);
    assert!(dev_help.status.success());
    let dev_help = String::from_utf8_lossy(&dev_help.stdout);
    for flag in ["--data-dir", "--listen", "--cpu", "--memory", "--no-network"] {
        assert!(dev_help.contains(flag), "sched dev --help shows {flag}:\n{dev_help}");
    }
    // Exit codes stay: bad input 1 (an unreachable cluster is 2: tests/tests/cluster_api.rs).
    assert_eq!(sched(&["no-such-command"]).status.code(), Some(1));
    let no_credentials = sched(&["--config", "/nonexistent/admin.toml", "get", "services"]);
    assert_eq!(no_credentials.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_credentials.stderr).contains("/nonexistent/admin.toml"));
}

/// A `sched dev` process on a free loopback port, without task networking (no bridge on the
/// host). Drop kills it, deletes its containers, unmounts their roots and removes the cgroups.
struct Dev {
    child: Option<Child>,
    dir: tempfile::TempDir,
    address: String,
    cgroup_parent: String,
    /// The agent crash point the next start arms (`SCHED_AGENT_CRASH_AT`), if any.
    crash_at: Option<String>,
}

impl Dev {
    fn new() -> Dev {
        Dev {
            child: None,
            dir: tempfile::Builder::new().prefix("sched-dev-test-").tempdir().unwrap(),
            address: format!("127.0.0.1:{}", free_port()),
            cgroup_parent: format!("/{}", unique_name()),
            crash_at: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("dev.log")).unwrap();
        let child = Command::new(sched_binary())
            .args([
                "dev",
                "--no-network",
                "--listen",
                &self.address,
                "--ingress-listen",
                "127.0.0.1:0",
                "--cgroup-parent",
                &self.cgroup_parent,
                "--userns-ids",
                &sched_tests::agent_process::userns_ids_for(&self.dir.path().join("data")),
                "--data-dir",
            ])
            .arg(self.dir.path().join("data"))
            .arg("--admin-credentials")
            .arg(self.admin_credentials())
            .envs(self.crash_at.iter().map(|point| ("SCHED_AGENT_CRASH_AT", point)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sched dev");
        self.child = Some(child);
    }

    /// SIGTERM, as Ctrl-C or systemd would; returns its exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        wait_bounded(&mut child, Duration::from_secs(15))
    }

    /// Where this `sched dev` writes the admin's credentials.
    fn admin_credentials(&self) -> PathBuf {
        self.dir.path().join("admin.toml")
    }

    fn sched(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(sched_binary());
        command.arg("--server").arg(&self.address).arg("--config").arg(self.admin_credentials());
        command.args(args).output().expect("run sched")
    }

    /// Whether the running `sched dev` has ended (reaped if so).
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// What its agent holds on the host (it runs without task networking).
    fn holdings(&self) -> Holdings {
        Holdings::without_network(&self.dir.path().join("data/agent"), &self.cgroup_parent)
    }

    fn tasks(&self) -> Vec<Value> {
        let out = self.sched(&["get", "tasks", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
    }

    fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("data/agent/runtime")
    }

    /// (container id, pid) of every running container of the node.
    fn containers(&self) -> Vec<(String, i64)> {
        let out =
            Command::new(runtime_binary()).arg("--root").arg(self.runtime_root()).args(["list", "--format", "json"]).output().unwrap();
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut found: Vec<(String, i64)> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "running")
            .map(|c| (c["id"].as_str().unwrap_or_default().to_string(), c["pid"].as_i64().unwrap_or_default()))
            .collect();
        found.sort();
        found
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("tasks: {:#?}\ncontainers: {:?}\nsched dev log:\n{}", self.tasks(), self.containers(), self.log())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            agent_process::kill_agent(&mut child);
        }
        for (id, _) in self.containers() {
            let _ = Command::new(runtime_binary()).arg("--root").arg(self.runtime_root()).args(["delete", "--force", &id]).output();
        }
        std::thread::sleep(Duration::from_millis(200));
        for m in mounts_under(self.dir.path()).iter().rev() {
            let _ = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH);
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Polls `check` for up to a minute.
#[track_caller]
fn wait_until(what: &str, check: impl FnMut() -> bool, context: impl Fn() -> String) {
    sched_tests::wait::wait_until(what, Duration::from_secs(60), check, context)
}

#[test]
fn a_restarted_sched_dev_adopts_the_tasks_it_left_running_and_serves_their_logs() {
    let registry = Registry::start();
    let mut dev = Dev::new();
    let image =
        push_busybox(dev.dir.path(), &registry.addr(), "sleepy:1", vec![], serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let file = dev.dir.path().join("sleepy.toml");
    std::fs::write(&file, format!("name = \"sleepy\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"echo started; exec sleep 1000\"]\ncpu = 100\nmemory = 32\ncount = 2\n")).unwrap();
    dev.start();
    wait_until("sched dev answers", || dev.sched(&["get", "nodes"]).status.success(), || dev.context());
    let applied = dev.sched(&["apply", &file.to_string_lossy()]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let running = |dev: &Dev| dev.tasks().iter().filter(|t| t["observed_state"] == "running").count();
    wait_until("2 tasks run", || running(&dev) == 2 && dev.containers().len() == 2, || dev.context());
    let before = dev.containers();
    // `sched logs` goes server -> the dev agent's log API (loopback, the port it registered).
    let logs = |dev: &Dev| String::from_utf8_lossy(&dev.sched(&["logs", "sleepy"]).stdout).into_owned();
    wait_until(
        "sched logs shows what both tasks printed",
        || logs(&dev).matches("started").count() == 2,
        || format!("{}\nsched logs:\n{}", dev.context(), logs(&dev)),
    );

    // Stopped: it exits 0 and its tasks run on under their shims.
    let status = dev.stop();
    assert!(status.is_some_and(|s| s.success()), "sched dev stops cleanly on SIGTERM ({status:?}):\n{}", dev.log());
    assert_eq!(dev.containers(), before, "the tasks outlive sched dev");

    // Started again on the same data dir: once its agent heartbeats again, the same tasks, the
    // same processes, nothing new.
    let restarted_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    dev.start();
    let heartbeat_ms = |dev: &Dev| {
        let out = dev.sched(&["get", "nodes", "-o", "json"]);
        let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        nodes[0]["last_heartbeat_unix_ms"].as_u64().unwrap_or(0)
    };
    wait_until("the agent heartbeats again", || heartbeat_ms(&dev) > restarted_ms, || dev.context());
    // Over 3 s: six passes of the leader's reconciler, six local checks of the agent.
    sched_tests::wait::holds_for(
        "both tasks reported running, adopted (not restarted), no replacement tasks",
        Duration::from_secs(3),
        || running(&dev) == 2 && dev.containers() == before && dev.tasks().len() == 2,
        || dev.context(),
    );

    let deleted = dev.sched(&["delete", "sleepy"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    wait_until("no container is left", || dev.containers().is_empty(), || dev.context());
}

/// `sched dev` killed (the agent's crash point takes its server down with it) at a step of a
/// task's start — between its bundle and its shim, and after its shim started — then started
/// again: the task runs exactly once, and the node holds exactly it (containers, shims, cgroups,
/// rootfs mounts, task dirs); deleted, nothing.
#[test]
fn a_sched_dev_killed_mid_start_runs_the_task_once_and_leaves_nothing_else() {
    for point in ["start:after-bundle", "start:after-shim"] {
        let registry = Registry::start();
        let mut dev = Dev::new();
        let image =
            push_busybox(dev.dir.path(), &registry.addr(), "sleepy:1", vec![], serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
        let file = dev.dir.path().join("sleepy.toml");
        std::fs::write(
            &file,
            format!("name = \"sleepy\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncpu = 100\nmemory = 32\ncount = 1\n"),
        )
        .unwrap();
        dev.crash_at = Some(point.to_string());
        dev.start();
        wait_until("sched dev answers", || dev.sched(&["get", "nodes"]).status.success(), || dev.context());
        let applied = dev.sched(&["apply", &file.to_string_lossy()]);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        let log = dev.dir.path().join("dev.log");
        wait_until(&format!("sched dev dies at {point}"), || dev.exited(), || std::fs::read_to_string(&log).unwrap_or_default());

        dev.crash_at = None;
        dev.start();
        let settled = |dev: &Dev| {
            let tasks = dev.tasks();
            let ids: std::collections::BTreeSet<String> = tasks.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
            tasks.len() == 1 && tasks[0]["observed_state"] == "running" && dev.holdings().beyond(&ids).is_empty()
        };
        wait_until(
            &format!("after {point}: one task runs and the node holds exactly it"),
            || settled(&dev),
            || format!("{:#?}\n{}", dev.holdings(), dev.context()),
        );
        let deleted = dev.sched(&["delete", "sleepy"]);
        assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
        wait_until(
            "the node holds nothing",
            || dev.tasks().is_empty() && dev.holdings().beyond(&Default::default()).is_empty(),
            || format!("{:#?}\n{}", dev.holdings(), dev.context()),
        );
    }
}

/// `sched dev --insecure-registry` reaches both halves: the server pins the tag's digest and the
/// agent pulls over plain HTTP from a registry that is not on loopback. Inside a network
/// namespace of its own, where 10.99.0.1 is an address of `lo` (so nothing leaves it). Without
/// the flag both speak HTTPS and the task fails.
#[test]
fn sched_dev_passes_insecure_registries_to_its_server_and_agent() {
    let leftovers = Leftovers {
        dir: tempfile::Builder::new().prefix("sched-dev-insecure-").tempdir().expect("temp dir"),
        cgroup_parent: format!("/{}", unique_name()),
    };
    let work = leftovers.tmp();
    std::fs::create_dir(&work).unwrap();
    let bin = sched_binary().parent().expect("target/<profile>").to_path_buf();
    // Prints one line per run: "FLAG|STATE|DIGEST|MESSAGE".
    let script = r#"
set -u
B=$1; W=$2; CG=$3; IDS=$4
ip link set lo up && ip addr add 10.99.0.1/32 dev lo
printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/registry}}\nhttp: {addr: "10.99.0.1:5000", secret: x}\n' "$W" > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 & R=$!
for _ in $(seq 1 50); do curl -fsS http://10.99.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
INSECURE=1 scripts/build-quotes-image.sh 10.99.0.1:5000/quotes:1.0 >&2 || exit 1
sed 's|127.0.0.1:5000|10.99.0.1:5000|' examples/quotes/service.toml > "$W/service.toml"
for flag in none --insecure-registry=10.99.0.1:5000; do
  args=(); [ "$flag" = none ] || args=("$flag")
  "$B/sched" dev --data-dir "$W/$flag" --no-network --cgroup-parent "$CG" --userns-ids "$IDS" "${args[@]}" >> "$W/dev.log" 2>&1 & D=$!
  for _ in $(seq 1 50); do "$B/sched" get nodes >/dev/null 2>&1 && break; sleep 0.2; done
  "$B/sched" apply "$W/service.toml" >&2
  for _ in $(seq 1 60); do
    t=$("$B/sched" get tasks -o json | jq -r '[.[0].observed_state, .[0].message] | join("|")')
    case "$t" in running*|failed*) break ;; esac; sleep 0.5
  done
  digest=$("$B/sched" get services -o json | jq -r '.[0].current.image_digest // ""')
  echo "$flag|${t%%|*}|$digest|${t#*|}"
  "$B/sched" delete quotes >&2
  for _ in $(seq 1 150); do [ -z "$("$B/sched-runtime" --root "$W/$flag/agent/runtime" list -q)" ] && break; sleep 0.2; done
  kill -TERM $D; wait $D
done
kill $R; wait $R || true
"#;
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--", "bash", "-c", script, "insecure-test"])
        .arg(&bin)
        .arg(&work)
        .arg(&leftovers.cgroup_parent)
        .arg(sched_tests::agent_process::userns_ids_for(&work))
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs (util-linux)");
    let reader = {
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        })
    };
    let errors = {
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        })
    };
    let status = wait_bounded(&mut child, Duration::from_secs(180));
    let (out, err) = (reader.join().unwrap(), errors.join().unwrap());
    let context =
        format!("stdout:\n{out}\nstderr:\n{err}\nsched dev log:\n{}", std::fs::read_to_string(work.join("dev.log")).unwrap_or_default());
    assert!(status.is_some_and(|s| s.success()), "the script failed ({status:?}):\n{context}");
    let runs: Vec<Vec<&str>> = out.lines().map(|l| l.splitn(4, '|').collect()).collect();
    assert_eq!(runs.len(), 2, "{context}");
    assert_eq!(runs[0][..2], ["none", "failed"], "without the flag the agent speaks HTTPS and fails: {context}");
    assert!(runs[0][2].is_empty(), "without the flag the server cannot pin a digest: {context}");
    assert_eq!(runs[1][..2], ["--insecure-registry=10.99.0.1:5000", "running"], "{context}");
    assert!(runs[1][2].starts_with("sha256:"), "with the flag the server pins the digest: {context}");
    // The parent cgroups stay (a runtime removes only the leaf): the guard removes them.
    assert_eq!(leftovers.processes(), vec![], "{context}");
    assert_eq!(leftovers.cgroup_pids(), Vec::<i32>::new(), "{context}");
}
