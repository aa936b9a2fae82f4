//! Stop means stopped: `delete` kills every process of a container, found by its cgroup, not
//! only its init. Without its own pid namespace a container's init can die and leave children
//! running; a process can sit in a cgroup below the container's (as a nested container manager
//! puts them). Each test checks by pid and by the cgroup that nothing of the container runs
//! after `delete`, and that the runtime left nothing behind.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_delete`. runc 1.1.5 passes all but the frozen one: it exits 0 and leaves the
//! process frozen in the cgroup below alive.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sched_tests::bundle::{BusyboxBundle, process_alive};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The init starts a background child that would outlive it, writes the child's (host) pid to
/// /tmp/child.pid, then becomes `sleep 1000` (or exits, with `exit`).
fn with_background_child(then: &str) -> BusyboxBundle {
    BusyboxBundle::new().without_namespace("pid").shell(&format!("sleep 1001 & echo $! > /tmp/child.pid; {then}"))
}

/// The pid the container wrote to `path` (relative to its rootfs); waits for it.
#[track_caller]
fn pid_written(bundle: &BusyboxBundle, path: &str) -> i32 {
    let file = bundle.rootfs().join(path.trim_start_matches('/'));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(pid) = fs::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} holds no pid after {TIMEOUT:?}", file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every pid in the container's cgroups and the cgroups below them, in every hierarchy.
fn pids_in_cgroup(bundle: &BusyboxBundle) -> Vec<i32> {
    let mut todo = bundle.existing_cgroup_dirs();
    let mut pids = Vec::new();
    while let Some(dir) = todo.pop() {
        pids.extend(
            fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse::<i32>().ok()),
        );
        if let Ok(entries) = fs::read_dir(&dir) {
            todo.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Asserts every process of `pids` is gone (dead or a zombie) and nothing of the container is
/// left: no state, cgroup, mount or process rooted in the bundle.
#[track_caller]
fn assert_all_gone(bundle: &BusyboxBundle, pids: &[i32]) {
    let alive: Vec<_> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(alive.is_empty(), "processes of the deleted container still run: {alive:?}");
    bundle.assert_nothing_left(None);
}

/// Kills the given pids on drop if they are still rooted in the test's dir (not a reused pid):
/// the test's processes die even when an assertion fails, and even if they left the cgroup the
/// bundle's own cleanup kills by.
struct KillOnDrop(PathBuf, Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.1 {
            let ours = fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|root| root.starts_with(&self.0));
            if ours {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// A started container whose init runs on (`exec sleep 1000`) beside its background child:
/// the bundle, the init's and the child's pids, and what kills both if the test fails.
fn running_with_child() -> (BusyboxBundle, i32, i32, KillOnDrop) {
    let bundle = with_background_child("exec sleep 1000");
    bundle.create().assert_success();
    bundle.start().assert_success();
    let init = bundle.state()["pid"].as_i64().expect("pid") as i32;
    let child = pid_written(&bundle, "/tmp/child.pid");
    let cleanup = KillOnDrop(bundle.dir().to_path_buf(), vec![init, child]);
    (bundle, init, child, cleanup)
}

#[test]
fn delete_force_kills_background_children_without_a_pid_namespace() {
    let (bundle, init, child, _cleanup) = running_with_child();
    let in_cgroup = pids_in_cgroup(&bundle);
    assert!(in_cgroup.contains(&init) && in_cgroup.contains(&child), "init {init} and child {child} in the cgroup: {in_cgroup:?}");

    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    assert_all_gone(&bundle, &[init, child]);
}

#[test]
fn delete_of_a_stopped_container_kills_what_its_init_left_running() {
    let bundle = with_background_child("exit 0");
    bundle.create().assert_success();
    bundle.start().assert_success();
    let child = pid_written(&bundle, "/tmp/child.pid");
    let _cleanup = KillOnDrop(bundle.dir().to_path_buf(), vec![child]);
    bundle.wait_for_status("stopped", TIMEOUT);
    assert!(process_alive(child), "without a pid namespace the child {child} outlives the init");
    assert!(pids_in_cgroup(&bundle).contains(&child), "the child {child} is in the container's cgroup");

    bundle.delete().assert_success();
    assert_all_gone(&bundle, &[child]);
}

#[test]
fn delete_force_kills_processes_in_cgroups_below_the_container() {
    let (bundle, init, child, _cleanup) = running_with_child();
    // What a nested container manager (systemd, a runtime in the container) does: a cgroup
    // below the container's, in every hierarchy, and a process moved into it.
    let _nested = Nested::with(&bundle, child);

    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    assert_all_gone(&bundle, &[init, child]);
}

#[test]
fn delete_force_kills_a_paused_container_and_its_children() {
    let (bundle, init, child, _cleanup) = running_with_child();
    bundle.cli(&["pause", bundle.id()]).assert_success();
    assert_eq!(bundle.status(), "paused");

    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    assert_all_gone(&bundle, &[init, child]);
}

#[test]
fn delete_force_kills_a_process_frozen_in_a_cgroup_below_the_container() {
    let (bundle, init, child, _cleanup) = running_with_child();
    // The child frozen on its own, below the container: thawing the container's cgroup does not
    // thaw it (v1 freezer and cgroup v2 alike), and on v1 a frozen process cannot die.
    let nested = Nested::with(&bundle, child);
    nested.freeze();

    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    assert_all_gone(&bundle, &[init, child]);
    drop(nested);
}

/// A cgroup `nested` below the container's in every hierarchy, holding one process. Dropping
/// it thaws it, so that a failed test's cleanup can kill what it holds.
struct Nested(Vec<PathBuf>);

impl Nested {
    #[track_caller]
    fn with(bundle: &BusyboxBundle, pid: i32) -> Nested {
        let nested = Nested(bundle.existing_cgroup_dirs().iter().map(|d| d.join("nested")).collect());
        for dir in &nested.0 {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            // A v1 cpuset takes no process until it has cpus and mems: the parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = fs::read_to_string(dir.parent().expect("a parent").join(file)) {
                    fs::write(dir.join(file), value.trim()).unwrap_or_else(|e| panic!("write {file} of {}: {e}", dir.display()));
                }
            }
            fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
        }
        nested
    }

    /// Freezes it where the container's cgroup is frozen by `pause`: the v1 freezer, or
    /// `cgroup.freeze` on pure cgroup v2 (not the hybrid `unified` tree the container is not in).
    #[track_caller]
    fn freeze(&self) {
        let v1 = self.0.iter().map(|d| d.join("freezer.state")).find(|f| f.exists());
        let (file, value, settled, state) = match v1 {
            Some(file) => (file.clone(), "FROZEN", file, "FROZEN"),
            None => {
                let dir = self.0.first().expect("a nested cgroup");
                (dir.join("cgroup.freeze"), "1", dir.join("cgroup.events"), "frozen 1")
            }
        };
        fs::write(&file, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", file.display()));
        let deadline = Instant::now() + TIMEOUT;
        while !fs::read_to_string(&settled).is_ok_and(|s| s.lines().any(|l| l.trim() == state)) {
            assert!(Instant::now() < deadline, "{} did not reach {state}", settled.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
            let _ = fs::write(dir.join("cgroup.freeze"), "0");
        }
    }
}
