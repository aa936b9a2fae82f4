//! The agent's task driver on a real node: an image pulled from a loopback registry becomes a
//! running task under a `sched-runtime shim`; its output lands in the task log, its exit code in
//! exit.json (also for a driver that was restarted in between), stop escalates from the stop
//! signal to SIGKILL after the grace period, and remove leaves nothing behind. Tasks run under
//! Docker's default seccomp profile, and in a user namespace of their own with a range of host
//! ids no other task holds, unless their service opted out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::task::{DriverConfig, IdPool, Seccomp, TaskDriver, TaskSpec, TaskStatus, UserNamespace};
use runtime::image::{ImageService, ImageServiceOptions};
use sched_tests::bundle::{process_alive, runtime_binary, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::oci_image::Entry;
use sched_tests::registry::Registry;
use serde_json::json;

/// The host ids these tests' tasks get: 4 ranges from 3,000,000,000 (apart from the agents').
const ID_POOL: IdPool = IdPool { first: 3_000_000_000, ranges: 4 };

/// A node's worth of state in a temp dir, with its own cgroup parent; removed on drop.
struct Node {
    dir: tempfile::TempDir,
    cgroup_parent: String,
    image: String,
    registry: Registry,
}

impl Node {
    fn new() -> Node {
        let registry = Registry::start();
        let dir = tempfile::Builder::new().prefix("sched-agent-task-").tempdir().expect("temp dir");
        let image = push_busybox(dir.path(), &registry.addr(), "busybox:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
        Node { dir, cgroup_parent: format!("/sched-test-{}", unique_name()), image, registry }
    }

    /// Pushes another busybox image with `extra` entries as `repo_tag`; returns its reference.
    fn push(&self, repo_tag: &str, extra: Vec<Entry>) -> String {
        let work = self.dir.path().join(repo_tag.replace([':', '/'], "-"));
        std::fs::create_dir_all(&work).expect("image work dir");
        push_busybox(&work, &self.registry.addr(), repo_tag, extra, json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}))
    }

    fn driver(&self) -> TaskDriver {
        let images = ImageService::open(&self.dir.path().join("data"), ImageServiceOptions::default()).expect("image service");
        let config = DriverConfig {
            runtime_binary: runtime_binary(),
            state_root: self.dir.path().join("state"),
            tasks_dir: self.dir.path().join("data/tasks"),
            cgroup_parent: self.cgroup_parent.clone(),
            max_log_bytes: 1 << 20,
            id_pool: ID_POOL,
            id_ranges_file: self.dir.path().join("data/userns/ranges.json"),
        };
        TaskDriver::new(config, Arc::new(images)).expect("driver")
    }

    fn task(&self, id: &str, command: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            image: self.image.clone(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            cpu_millis: 500,
            memory_mib: 64,
            ports: vec![],
            health: None,
            seccomp: Seccomp::Default,
            userns: UserNamespace::Auto,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Kill and delete whatever a failed test left, then unmount rootfs overlays and cgroups.
        let state = self.dir.path().join("state");
        if let Ok(entries) = std::fs::read_dir(&state) {
            for e in entries.flatten() {
                let _ = std::process::Command::new(runtime_binary())
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
        for m in sched_tests::bundle::mounts_under(self.dir.path()).iter().rev() {
            let _ = nix::mount::umount2(PathBuf::from(m).as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        sched_tests::bundle::remove_cgroup_parent(&self.cgroup_parent);
    }
}

fn wait_for_exit(driver: &TaskDriver, id: &str) -> runtime::shim::ExitRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match driver.status(id).expect("status") {
            TaskStatus::Exited(exit) => return exit,
            other => assert!(Instant::now() < deadline, "task {id} still {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_logs_and_its_exit_code_survives_a_driver_restart() {
    let node = Node::new();
    let driver = node.driver();
    let pid = driver.start(&node.task("t-exit", &["sh", "-c", "echo $GREETING from $(hostname); exit 5"]), None).await.expect("start");
    assert!(pid > 0);
    drop(driver);
    // A new driver (an agent restart) finds the task and its exit code.
    let driver = node.driver();
    assert_eq!(driver.list().unwrap(), vec!["t-exit".to_string()]);
    let exit = wait_for_exit(&driver, "t-exit");
    assert_eq!(exit.code, 5);
    let logs: Vec<String> = driver.logs("t-exit").unwrap().into_iter().map(|r| r.line).collect();
    assert_eq!(logs, vec!["hello from t-exit".to_string()]);
    driver.remove("t-exit").unwrap();
    assert_eq!(driver.status("t-exit").unwrap(), TaskStatus::Missing);
    assert!(driver.list().unwrap().is_empty());
    assert!(sched_tests::bundle::mounts_under(node.dir.path()).is_empty(), "the rootfs overlay is unmounted");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    let node = Node::new();
    let driver = node.driver();
    // pid 1 without a TERM handler ignores SIGTERM: only SIGKILL ends it.
    driver.start(&node.task("t-stubborn", &["sleep", "1000"]), None).await.expect("start");
    assert!(matches!(driver.status("t-stubborn").unwrap(), TaskStatus::Running { pid } if pid > 0));
    let started = Instant::now();
    let exit = driver.stop("t-stubborn", Duration::from_millis(500)).await.expect("stop");
    assert_eq!(exit.code, 137, "{exit:?}");
    assert!(started.elapsed() >= Duration::from_millis(500), "the grace period was honoured");
    driver.remove("t-stubborn").unwrap();

    // A task that handles SIGTERM exits within its grace period.
    // Stopped only once the shell says its trap is set (a TERM before that would kill it).
    driver
        .start(&node.task("t-polite", &["sh", "-c", "trap 'exit 0' TERM; echo trapped; while true; do sleep 0.1; done"]), None)
        .await
        .expect("start");
    let lines = || driver.logs("t-polite").unwrap_or_default().into_iter().map(|r| r.line).collect::<Vec<_>>();
    sched_tests::wait::wait_until(
        "the shell set its trap",
        Duration::from_secs(20),
        || lines() == ["trapped"],
        || format!("logs: {:?}", lines()),
    );
    let exit = driver.stop("t-polite", Duration::from_secs(10)).await.expect("stop");
    assert_eq!(exit.code, 0, "{exit:?}");
    driver.remove("t-polite").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_and_cpu_limits_reach_the_cgroup() {
    let node = Node::new();
    let driver = node.driver();
    driver.start(&node.task("t-limits", &["sleep", "1000"]), None).await.expect("start");
    let memory = sched_tests::bundle::cgroup_dir_for("memory").join(node.cgroup_parent.trim_start_matches('/')).join("t-limits");
    let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(memory.join("memory.max")))
        .expect("memory limit file");
    assert_eq!(limit.trim(), (64u64 * 1024 * 1024).to_string());
    driver.stop("t-limits", Duration::from_millis(100)).await.unwrap();
    driver.remove("t-limits").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_cannot_start_leaves_nothing() {
    let node = Node::new();
    let driver = node.driver();
    let err = driver.start(&node.task("t-bad", &["/no/such/binary"]), None).await.expect_err("must fail");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    assert_eq!(driver.status("t-bad").unwrap(), TaskStatus::Missing);
    assert!(driver.list().unwrap().is_empty());
    assert!(sched_tests::bundle::mounts_under(node.dir.path()).is_empty());
}

/// Runs `script` in a task from an image with busybox's `unshare` and the syscall probe, under
/// `seccomp`, and returns its log lines.
async fn seccomp_outcome(seccomp: Seccomp, id: &str) -> Vec<String> {
    let node = Node::new();
    let probe = sched_tests::syscall_probe::build(node.dir.path());
    let image = node.push(
        "busybox-probe:1",
        vec![
            Entry::symlink("bin/unshare", "busybox"),
            Entry::File { path: "bin/probe".into(), content: probe, mode: 0o755, uid: 0, gid: 0 },
        ],
    );
    let driver = node.driver();
    let script = "grep Seccomp: /proc/self/status; unshare -U true; echo unshare=$?; probe";
    let task = TaskSpec { image, seccomp, ..node.task(id, &["sh", "-c", script]) };
    driver.start(&task, None).await.expect("start");
    let exit = wait_for_exit(&driver, id);
    let lines: Vec<String> = driver.logs(id).unwrap().into_iter().map(|r| r.line).collect();
    assert_eq!(exit.code, 0, "{lines:?}");
    driver.remove(id).unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_under_the_default_seccomp_profile() {
    let lines = seccomp_outcome(Seccomp::Default, "t-seccomp").await;
    let has = |want: &str| lines.iter().any(|l| l.contains(want));
    assert!(has("Seccomp:\t2"), "a filter is installed: {lines:?}");
    assert!(has("unshare=1") && has("Operation not permitted"), "unshare -U is refused: {lines:?}");
    assert!(has("keyctl errno=1"), "keyctl is refused with EPERM: {lines:?}");
    assert!(has("clone_newuser errno=1"), "clone(CLONE_NEWUSER) is refused with EPERM: {lines:?}");
    assert!(has("fork ok"), "plain fork works: {lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_opts_out_runs_unconfined() {
    let lines = seccomp_outcome(Seccomp::Unconfined, "t-unconfined").await;
    let has = |want: &str| lines.iter().any(|l| l.contains(want));
    assert!(has("Seccomp:\t0"), "no filter: {lines:?}");
    assert!(has("unshare=0"), "unshare -U works without the filter: {lines:?}");
    assert!(!has("keyctl errno=1") && has("keyctl "), "keyctl is not refused by seccomp: {lines:?}");
    assert!(has("clone_newuser ok") && has("fork ok"), "{lines:?}");
}

/// Pids in the task's cgroup that are alive (not zombies).
fn live_pids_in_task(driver: &TaskDriver, id: &str) -> Vec<i32> {
    let dir = driver.cgroup_dirs(id).into_iter().find(|d| d.join("cgroup.procs").exists()).expect("a cgroup dir of the task");
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("cgroup.procs");
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_command_probe_leaves_nothing_running_in_the_task() {
    use agent::health::{Probe, ProbeTarget, probe};
    let node = Node::new();
    let driver = node.driver();
    let pid = driver.start(&node.task("t-probe", &["sleep", "1000"]), None).await.expect("start");
    let target =
        ProbeTarget { task_id: "t-probe".into(), ip: None, runtime_binary: runtime_binary(), state_root: node.dir.path().join("state") };
    // The probe and a child it started in the background both outlive the timeout.
    let command = Probe::Cmd { command: ["sh", "-c", "sleep 1001 & sleep 1002"].map(String::from).to_vec() };
    let started = Instant::now();
    assert!(!probe(&command, &target, Duration::from_millis(500)).await, "a probe that never ends is a failure");
    assert!(started.elapsed() < Duration::from_secs(5), "the probe returned at its timeout, took {:?}", started.elapsed());
    sched_tests::wait::wait_until(
        "the probe's processes are gone from the task",
        Duration::from_secs(10),
        || live_pids_in_task(&driver, "t-probe") == [pid],
        || format!("still running: {:?} (init {pid})", live_pids_in_task(&driver, "t-probe")),
    );
    // A probe that finishes in time still counts.
    let ok = Probe::Cmd { command: vec!["true".into()] };
    assert!(probe(&ok, &target, Duration::from_secs(5)).await);
    driver.stop("t-probe", Duration::from_millis(100)).await.unwrap();
    driver.remove("t-probe").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_cut_short_before_its_shim_does_not_block_the_task() {
    let node = Node::new();
    let driver = node.driver();
    // What an agent that died between writing the bundle and starting the shim leaves: the
    // task's rootfs (mounted) and its dir with the bundle, but no shim, container or exit record.
    driver.ensure_image(&node.image).await.unwrap();
    let images = ImageService::open(&node.dir.path().join("data"), ImageServiceOptions::default()).expect("image service");
    let prepared = images.prepare_rootfs(&node.image, "t-crashed").expect("rootfs");
    let bundle = driver.task_dir("t-crashed").join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), "{}").unwrap();
    assert!(!sched_tests::bundle::mounts_under(node.dir.path()).is_empty(), "{:?} is mounted", prepared.path);
    assert_eq!(driver.status("t-crashed").unwrap(), TaskStatus::Missing);

    let task = node.task("t-crashed", &["sh", "-c", "echo second try"]);
    driver.start(&task, None).await.expect("the leftover is cleared and the task starts");
    assert_eq!(wait_for_exit(&driver, "t-crashed").code, 0);
    let logs: Vec<String> = driver.logs("t-crashed").unwrap().into_iter().map(|r| r.line).collect();
    assert_eq!(logs, ["second try"]);

    // A dir whose task ran (or runs) is never taken over.
    let err = driver.start(&task, None).await.expect_err("an exited task is not restarted under its id");
    assert!(err.to_string().contains("ran and exited"), "{err}");
    driver.start(&node.task("t-running", &["sleep", "1000"]), None).await.expect("start");
    let err = driver.start(&node.task("t-running", &["true"]), None).await.expect_err("a running task is not started twice");
    assert!(err.to_string().contains("container exists"), "{err}");
    assert!(matches!(driver.status("t-running").unwrap(), TaskStatus::Running { .. }));
    driver.stop("t-running", Duration::from_millis(100)).await.unwrap();
    for id in ["t-crashed", "t-running"] {
        driver.remove(id).unwrap();
    }
    assert!(sched_tests::bundle::mounts_under(node.dir.path()).is_empty(), "every rootfs is unmounted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_error_reaches_the_task_as_a_status_line_without_its_body() {
    let node = Node::new();
    let driver = node.driver();
    let missing = format!("{}/busybox:no-such-tag", node.registry.addr());
    let task = TaskSpec { image: missing, ..node.task("t-no-image", &["true"]) };
    let err = driver.start(&task, None).await.expect_err("the tag does not exist").to_string();
    assert!(err.contains("answered HTTP 404 Not Found (MANIFEST_UNKNOWN)"), "{err}");
    // The registry's body: {"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":...}]}
    assert!(!err.contains("errors") && !err.contains("detail") && !err.contains("manifest unknown"), "{err}");
    assert!(driver.list().unwrap().is_empty());
}

/// A host process moved into a cgroup below a task's (in every hierarchy): killed and removed on
/// drop, so a failed test leaves neither.
struct Intruder {
    process: std::process::Child,
    nested: Vec<PathBuf>,
}

impl Drop for Intruder {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        for dir in &self.nested {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_every_process_in_the_task_cgroup_not_only_its_init() {
    let node = Node::new();
    let driver = node.driver();
    driver.start(&node.task("t-crowded", &["sleep", "1000"]), None).await.expect("start");
    let dirs = driver.cgroup_dirs("t-crowded");
    assert!(!dirs.is_empty(), "a running task has cgroup dirs");
    // Outside the task's pid namespace, so its init's death does not take it along; in a cgroup
    // below the task's, as a nested container manager would put it.
    let process = std::process::Command::new("sleep").arg("1002").spawn().expect("spawn sleep");
    let intruder = Intruder { process, nested: dirs.iter().map(|d| d.join("nested")).collect() };
    let pid = intruder.process.id() as i32;
    for dir in &intruder.nested {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(dir.parent().expect("a parent").join(file)) {
                std::fs::write(dir.join(file), value.trim()).unwrap_or_else(|e| panic!("write {}: {e}", dir.join(file).display()));
            }
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap_or_else(|e| panic!("move the sleep into {}: {e}", dir.display()));
    }

    driver.stop("t-crowded", Duration::from_millis(100)).await.expect("stop");
    // The shim deletes the container after it recorded the exit: give it that moment.
    sched_tests::wait::wait_until(
        "the process in the task's cgroup is killed and the cgroups are gone",
        Duration::from_secs(20),
        || !process_alive(pid) && dirs.iter().all(|d| !d.exists()),
        || {
            format!(
                "sleep {pid} alive: {}; cgroup dirs left: {:?}",
                process_alive(pid),
                dirs.iter().filter(|d| d.exists()).collect::<Vec<_>>()
            )
        },
    );
    driver.remove("t-crowded").unwrap();
    drop(intruder);
}

/// The uid map of process `pid` as the host sees it: `(container id, host id, size)` lines.
fn uid_map(pid: i32) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    text.lines()
        .map(|l| {
            let n: Vec<u64> = l.split_whitespace().map(|w| w.parse().unwrap()).collect();
            (n[0], n[1], n[2])
        })
        .collect()
}

/// The real, effective, saved and filesystem uids of process `pid` on the host.
fn host_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    line.split_whitespace().skip(1).map(|w| w.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_in_a_task_is_an_unprivileged_host_id() {
    use std::os::unix::fs::MetadataExt;
    let node = Node::new();
    let driver = node.driver();
    let script = "touch /made-by-root && mkdir /data && echo ready; exec sleep 1000";
    let pid = driver.start(&node.task("t-userns", &["sh", "-c", script]), None).await.expect("start");
    let range = driver.id_range("t-userns").expect("the task holds a range");
    assert!(range.first >= ID_POOL.first, "{range:?} comes from the pool");
    let base = u64::from(range.first);
    assert_eq!(uid_map(pid), [(0, base, 65_536)], "container ids 0-65535 are host ids {base}-");
    assert_eq!(host_uids(pid), [range.first; 4], "the task's root (its sleep) runs as the mapped host id");
    let lines = || driver.logs("t-userns").unwrap_or_default().into_iter().map(|r| r.line).collect::<Vec<_>>();
    sched_tests::wait::wait_until(
        "the task wrote its files",
        Duration::from_secs(20),
        || lines() == ["ready"],
        || format!("{:?}", lines()),
    );

    // What root in the task writes lands in its upper dir, owned by the mapped id; the image's
    // files are not copied up (the layers are shared, seen through idmapped mounts).
    let upper = node.dir.path().join("data/rootfs/t-userns/upper");
    for (file, uid) in [("made-by-root", range.first), ("data", range.first)] {
        let meta = std::fs::metadata(upper.join(file)).unwrap_or_else(|e| panic!("{file} in the upper dir: {e}"));
        assert_eq!((meta.uid(), meta.gid()), (uid, uid), "{file}");
    }
    assert!(!upper.join("bin/busybox").exists(), "the image's files stay in the shared layers");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.dir.path().join("state/t-userns/state.json")).expect("the container's state")).unwrap();
    assert_eq!(state["rootfs_ids"], "idmapped-layers", "the runtime says the rootfs is an overlay of idmapped layers, nothing chowned");
    let in_task = std::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--", "/bin/busybox", "stat", "-c", "%u %n", "/bin/busybox", "/made-by-root"])
        .output()
        .expect("nsenter");
    assert_eq!(
        String::from_utf8_lossy(&in_task.stdout),
        format!("{base} /bin/busybox\n{base} /made-by-root\n"),
        "from the host, the image's root-owned files show as the mapped id: {in_task:?}"
    );

    // Host-only writes fail even with every capability of the task's user namespace: a
    // process that joins it (and only it, so the host's /proc is not read-only) is refused a
    // non-namespaced sysctl (its own value written back, harmless if it got through) and, on
    // kernels with sysrq (not this machine's), /proc/sysrq-trigger.
    let host_only = ["/proc/sys/vm/swappiness", "/proc/sysrq-trigger"];
    for path in host_only.iter().filter(|p| std::path::Path::new(p).exists()) {
        assert!(nix::unistd::access(*path, nix::unistd::AccessFlags::W_OK).is_ok(), "host root may write {path}");
        let value =
            if path.ends_with("sysrq-trigger") { "h".to_string() } else { std::fs::read_to_string(path).unwrap().trim().to_string() };
        let script = format!("id -u; echo {value} > {path} && echo WRITTEN");
        let write = std::process::Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--user", "--", "sh", "-c", &script])
            .output()
            .expect("nsenter");
        let (out, err) = (String::from_utf8_lossy(&write.stdout), String::from_utf8_lossy(&write.stderr));
        assert_eq!(out, "0\n", "root of the task's namespace, refused {path}: {err}");
        assert!(err.contains("Permission denied"), "{path}: {write:?}");
    }

    driver.stop("t-userns", Duration::from_millis(100)).await.unwrap();
    driver.release("t-userns").unwrap();
    assert_eq!(driver.id_range("t-userns"), None, "released with the rootfs");
    driver.remove("t-userns").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tasks_get_disjoint_ranges_that_outlive_a_driver_restart() {
    let node = Node::new();
    let driver = node.driver();
    let a = driver.start(&node.task("t-a", &["sleep", "1000"]), None).await.expect("start a");
    let b = driver.start(&node.task("t-b", &["sleep", "1000"]), None).await.expect("start b");
    let (map_a, map_b) = (uid_map(a), uid_map(b));
    let (first_a, first_b) = (map_a[0].1, map_b[0].1);
    assert!(first_a + 65_536 <= first_b || first_b + 65_536 <= first_a, "disjoint: {map_a:?} {map_b:?}");
    drop(driver);
    // A restarted agent knows which ranges are held: a new task gets a third one.
    let driver = node.driver();
    assert_eq!(driver.id_range_holders(), ["t-a", "t-b"]);
    let c = driver.start(&node.task("t-c", &["sleep", "1000"]), None).await.expect("start c");
    let first_c = uid_map(c)[0].1;
    assert!(![first_a, first_b].contains(&first_c), "{first_c} is held already");
    for id in ["t-a", "t-b", "t-c"] {
        driver.stop(id, Duration::from_millis(100)).await.unwrap();
        driver.remove(id).unwrap();
    }
    assert!(driver.id_range_holders().is_empty(), "every range is given back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_a_service_that_opted_out_shares_the_hosts_ids() {
    let node = Node::new();
    let driver = node.driver();
    let task = TaskSpec { userns: UserNamespace::Host, ..node.task("t-host", &["sleep", "1000"]) };
    let pid = driver.start(&task, None).await.expect("start");
    assert_eq!(uid_map(pid), [(0, 0, 4_294_967_295)], "the host's user namespace");
    assert_eq!(host_uids(pid), [0; 4], "root in the task is root on the host");
    assert!(driver.id_range_holders().is_empty(), "no range is held for it");
    driver.stop("t-host", Duration::from_millis(100)).await.unwrap();
    driver.remove("t-host").unwrap();
}
