//! cgroup limits from `linux.resources`, observed from the host: a process over its memory limit
//! is OOM-killed (`run` exits 137), a CPU-bound loop under a 20% quota gets about 20% of a core,
//! and a pids limit stops a fork loop.
//!
//! These machines have hybrid cgroups (v1 controllers, an empty cgroup2 at
//! /sys/fs/cgroup/unified), so the limits are read from the v1 files here and from the cgroup2
//! files on a pure v2 host; `cgroup_v2_vm.rs` proves them on pure cgroup v2 in a VM.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_limits`.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sched_tests::bundle::{BusyboxBundle, is_cgroup_v1};
use serde_json::json;

const MEMORY_LIMIT: u64 = 32 * 1024 * 1024;
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

#[track_caller]
fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_owned()
}

/// `key value` lines (memory.events, memory.oom_control, cpu.stat) -> the value of `key`.
#[track_caller]
fn keyed_value(path: &Path, key: &str) -> u64 {
    let text = read_trimmed(path);
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}: {text}", path.display()))
}

/// A busybox `tail` buffering an endless line: it grows until something stops it.
fn memory_eater() -> BusyboxBundle {
    BusyboxBundle::new().args(&["tail", "/dev/zero"]).resources(json!({ "memory": { "limit": MEMORY_LIMIT, "swap": MEMORY_LIMIT } }))
}

#[test]
fn process_over_memory_limit_is_oom_killed_and_run_exits_137() {
    let bundle = memory_eater();
    let started = Instant::now();
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 137, "SIGKILL by the OOM killer: {outcome:#?}");
    assert!(started.elapsed() < STATUS_TIMEOUT, "the limit stopped it early");
    bundle.assert_nothing_left(None);
}

#[test]
fn memory_limit_is_written_and_oom_kill_counted() {
    let bundle = memory_eater();
    bundle.create().assert_success();
    let memory = bundle.cgroup_dir("memory");
    let (limit_file, events_file) =
        if is_cgroup_v1("memory") { ("memory.limit_in_bytes", "memory.oom_control") } else { ("memory.max", "memory.events") };
    assert_eq!(read_trimmed(&memory.join(limit_file)), MEMORY_LIMIT.to_string());
    bundle.start().assert_success();
    bundle.wait_for_status("stopped", STATUS_TIMEOUT);
    let kills = keyed_value(&memory.join(events_file), "oom_kill");
    assert!(kills >= 1, "the OOM killer acted in the container's cgroup: {kills}");
}

/// Cumulative CPU time of the container's cgroup, in microseconds.
fn cpu_usage_micros(bundle: &BusyboxBundle) -> u64 {
    if is_cgroup_v1("cpuacct") {
        read_trimmed(&bundle.cgroup_dir("cpuacct").join("cpuacct.usage")).parse::<u64>().unwrap() / 1000
    } else {
        keyed_value(&bundle.cgroup_dir("cpu").join("cpu.stat"), "usage_usec")
    }
}

#[test]
fn cpu_bound_loop_under_20_percent_quota_gets_about_20_percent() {
    let bundle = BusyboxBundle::new()
        .shell("while :; do :; done")
        // High shares so that a busy machine (parallel tests, builds) cannot push the loop below
        // its quota: the quota alone must be what holds it at 20%.
        .resources(json!({ "cpu": { "quota": 20000, "period": 100000, "shares": 8192 } }));
    bundle.create().assert_success();
    bundle.start().assert_success();
    bundle.wait_for_status("running", STATUS_TIMEOUT);
    let cpu = bundle.cgroup_dir("cpu");
    if is_cgroup_v1("cpu") {
        assert_eq!(read_trimmed(&cpu.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read_trimmed(&cpu.join("cpu.cfs_period_us")), "100000");
    } else {
        assert_eq!(read_trimmed(&cpu.join("cpu.max")), "20000 100000");
    }
    // Let the loop settle into the quota, then measure usage over wall time.
    sleep(Duration::from_millis(300));
    let throttled_before = keyed_value(&cpu.join("cpu.stat"), "nr_throttled");
    let (usage_before, wall_before) = (cpu_usage_micros(&bundle), Instant::now());
    sleep(Duration::from_secs(2));
    let usage = cpu_usage_micros(&bundle) - usage_before;
    let wall = wall_before.elapsed().as_micros() as u64;
    let throttled = keyed_value(&cpu.join("cpu.stat"), "nr_throttled") - throttled_before;
    let share = usage as f64 / wall as f64;
    eprintln!("cpu share under a 20% quota: {:.1}%, {throttled} periods throttled", share * 100.0);
    assert!((0.12..=0.30).contains(&share), "the loop got {:.1}% of a core ({usage} us over {wall} us), expected about 20%", share * 100.0);
    assert!(throttled >= 10, "the quota throttled most periods: {throttled} in 2 s");
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let fork_loop = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo started $i";
    let limited = BusyboxBundle::new().shell(fork_loop).resources(json!({ "pids": { "limit": 10 } }));
    let outcome = limited.run();
    assert_ne!(outcome.code(), 0, "{outcome:#?}");
    assert!(!outcome.stdout.contains("started 40"), "{outcome:#?}");
    assert!(outcome.stderr.contains("can't fork"), "fork failed: {outcome:#?}");

    // The same loop without the limit completes: the limit, not the script, stopped it.
    let unlimited = BusyboxBundle::new().shell(fork_loop);
    let outcome = unlimited.run();
    assert_eq!(outcome.stdout, "started 40\n", "{outcome:#?}");
}

#[test]
fn pids_limit_is_written_to_the_cgroup() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]).resources(json!({ "pids": { "limit": 10 } }));
    bundle.create().assert_success();
    assert_eq!(read_trimmed(&bundle.cgroup_dir("pids").join("pids.max")), "10");
}

#[test]
fn cpu_shares_cpuset_and_swap_limit_are_written() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]).resources(json!({
        "cpu": { "shares": 512, "cpus": "0", "mems": "0" },
        "memory": { "limit": 64 * 1024 * 1024, "swap": 96 * 1024 * 1024 },
    }));
    bundle.create().assert_success();
    if is_cgroup_v1("cpu") {
        let shares = read_trimmed(&bundle.cgroup_dir("cpu").join("cpu.shares"));
        assert_eq!(shares, "512");
    } else {
        // runc < 1.3 converts shares linearly (512 -> 20); crun, runc >= 1.3 and libcgroups
        // use 10^((l^2 + 125 l) / 612 - 7/34), l = log2(shares) (1024 -> 100, 512 -> 59).
        let weight: u64 = read_trimmed(&bundle.cgroup_dir("cpu").join("cpu.weight")).parse().unwrap();
        let l = 512f64.log2();
        let quadratic = 10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0).ceil() as u64;
        assert!(weight == 1 + (512 - 2) * 9999 / 262142 || weight == quadratic, "{weight}");
    }
    let cpuset = bundle.cgroup_dir("cpuset");
    assert_eq!(read_trimmed(&cpuset.join("cpuset.cpus")), "0");
    assert_eq!(read_trimmed(&cpuset.join("cpuset.mems")), "0");
    let memory = bundle.cgroup_dir("memory");
    if is_cgroup_v1("memory") {
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        assert!(memsw.exists(), "swap accounting is on here: {}", memsw.display());
        assert_eq!(read_trimmed(&memsw), (96 * 1024 * 1024).to_string(), "memory+swap limit");
    } else {
        // cgroup v2 limits swap alone: swap.max = OCI swap (memory+swap) - memory.
        let swap = read_trimmed(&memory.join("memory.swap.max"));
        assert_eq!(swap, (32 * 1024 * 1024).to_string());
    }
}
