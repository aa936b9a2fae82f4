//! Bad input to the runtime CLI: a missing bundle, a malformed config.json, an unknown id, a
//! duplicate id, a missing rootfs, a missing executable. Each must fail with exit code 1 and one
//! line on stderr that names the problem, and leave nothing behind (no state entry, no cgroup, no
//! mount, no process).
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_bad_input`. runc fails `malformed_config_json_is_named`: its message only
//! quotes the JSON parser ("invalid character ..."), without naming config.json.

use std::fs;

use sched_tests::bundle::BusyboxBundle;

/// The error line mentions at least one of `words` (case-insensitive).
#[track_caller]
fn assert_mentions(line: &str, words: &[&str]) {
    let lower = line.to_lowercase();
    assert!(words.iter().any(|w| lower.contains(&w.to_lowercase())), "the error must name the problem ({words:?}): {line}");
}

#[test]
fn missing_bundle_is_named() {
    let bundle = BusyboxBundle::new();
    let missing = bundle.dir().join("no-such-bundle");
    for verb in ["create", "run"] {
        let outcome = bundle.cli(&[verb, "--bundle", &missing.to_string_lossy(), bundle.id()]);
        let line = outcome.assert_one_line_failure();
        assert_mentions(line, &[&missing.to_string_lossy()]);
        bundle.assert_nothing_left(None);
    }
}

#[test]
fn malformed_config_json_is_named() {
    let bundle = BusyboxBundle::new();
    fs::write(bundle.bundle_dir().join("config.json"), "{ \"ociVersion\": ").unwrap();
    let outcome = bundle.cli(&["create", "--bundle", &bundle.bundle_dir().to_string_lossy(), bundle.id()]);
    let line = outcome.assert_one_line_failure();
    assert_mentions(line, &["config.json"]);
    bundle.assert_nothing_left(None);
}

#[test]
fn unknown_id_is_reported_by_every_verb() {
    let bundle = BusyboxBundle::new();
    for args in [
        vec!["state", "no-such-container"],
        vec!["start", "no-such-container"],
        vec!["kill", "no-such-container", "KILL"],
        vec!["delete", "no-such-container"],
    ] {
        let outcome = bundle.cli(&args);
        let line = outcome.assert_one_line_failure();
        assert_mentions(line, &["does not exist", "not found", "no such container"]);
    }
}

#[test]
fn duplicate_id_is_refused_and_the_first_container_survives() {
    let first = BusyboxBundle::new().args(&["sleep", "1000"]);
    first.create().assert_success();
    let pid = first.state()["pid"].clone();

    let outcome = first.create();
    let line = outcome.assert_one_line_failure();
    assert_mentions(line, &["exists"]);

    let state = first.state();
    assert_eq!(state["status"], "created", "the first container is untouched: {state:#}");
    assert_eq!(state["pid"], pid);
    first.cli(&["delete", "--force", first.id()]).assert_success();
    first.assert_nothing_left(pid.as_i64().map(|p| p as i32));
}

#[test]
fn missing_rootfs_is_named() {
    let bundle = BusyboxBundle::new();
    fs::remove_dir_all(bundle.rootfs()).expect("remove the rootfs");
    for verb in ["create", "run"] {
        bundle.write_config();
        let outcome = bundle.cli(&[verb, "--bundle", &bundle.bundle_dir().to_string_lossy(), bundle.id()]);
        let line = outcome.assert_one_line_failure();
        assert_mentions(line, &["rootfs"]);
        bundle.assert_nothing_left(None);
    }
}

#[test]
fn missing_executable_is_named() {
    let bundle = BusyboxBundle::new().args(&["/bin/no-such-program"]);
    let outcome = bundle.run();
    let line = outcome.assert_one_line_failure();
    assert_mentions(line, &["/bin/no-such-program"]);
    bundle.assert_nothing_left(None);
}

#[test]
fn starting_a_started_container_is_refused() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    bundle.start().assert_one_line_failure();
    assert_eq!(bundle.status(), "running", "the container is untouched");
}

#[test]
fn deleting_a_running_container_needs_force() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    bundle.delete().assert_one_line_failure();
    assert_eq!(bundle.status(), "running", "the container is untouched");
}

#[test]
fn unknown_signal_is_refused() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    let line = bundle.kill("NOSUCHSIGNAL").assert_one_line_failure().to_owned();
    assert_mentions(&line, &["signal", "NOSUCHSIGNAL"]);
    assert_eq!(bundle.status(), "running", "the container is untouched");
}

#[test]
fn failures_are_logged_as_json_with_log_format_json() {
    let bundle = BusyboxBundle::new();
    let log = bundle.dir().join("runtime.log");
    let outcome = bundle.cli(&["--log", &log.to_string_lossy(), "--log-format", "json", "state", "no-such-container"]);
    outcome.assert_one_line_failure();
    let text = fs::read_to_string(&log).expect("--log creates the log file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r.to_string().to_lowercase().contains("does not exist") || r.to_string().to_lowercase().contains("not found")),
        "the error is in the log: {text}"
    );
}

/// A sysctl that no namespace of the container's own holds would be written to the host's
/// /proc/sys (issue 11 point 5): refused before anything runs, the key named, the host's value
/// unchanged. A namespaced key without its namespace is refused the same way.
#[test]
fn host_sysctls_are_refused_naming_the_key() {
    let core_pattern = || fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let before = core_pattern();
    let bundle = BusyboxBundle::new().args(&["true"]).sysctl("kernel.core_pattern", "|/tmp/sched-pwned");
    let line = bundle.create().assert_one_line_failure().to_string();
    assert_mentions(&line, &["kernel.core_pattern"]);
    assert_eq!(core_pattern(), before, "the host's core_pattern changed");
    bundle.assert_nothing_left(None);

    let bundle = BusyboxBundle::new().args(&["true"]).without_namespace("network").sysctl("net.ipv4.ip_forward", "1");
    let line = bundle.create().assert_one_line_failure().to_string();
    assert_mentions(&line, &["net.ipv4.ip_forward"]);
    bundle.assert_nothing_left(None);
}

#[test]
fn unknown_capability_is_refused_naming_it() {
    let bundle = BusyboxBundle::new().capabilities(&["CAP_KILL", "CAP_TELEPORT"]);
    let outcome = bundle.create();
    let line = outcome.assert_one_line_failure();
    assert_mentions(line, &["\"CAP_TELEPORT\""]);
    assert_mentions(line, &["process.capabilities."]);
    bundle.assert_nothing_left(None);
}
