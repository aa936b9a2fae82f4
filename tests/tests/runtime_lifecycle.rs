//! The container lifecycle through the runc-compatible CLI: exit codes and signals propagate,
//! `state` moves created -> running -> stopped, and `kill` + `delete` leave no process, mount,
//! cgroup or state entry behind.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_lifecycle`.

use std::fs;
use std::process::Command;
use std::time::Duration;

use sched_tests::bundle::{BusyboxBundle, process_alive};

const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn container_exit_code_becomes_run_exit_code() {
    let bundle = BusyboxBundle::new().shell("echo hello from the container; exit 3");
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 3, "{outcome:#?}");
    assert_eq!(outcome.stdout, "hello from the container\n", "stdout is inherited");
    bundle.assert_nothing_left(None);
}

#[test]
fn successful_container_makes_run_exit_zero() {
    let bundle = BusyboxBundle::new().args(&["true"]);
    bundle.run().assert_success();
}

#[test]
fn kill_by_name_ends_run_with_128_plus_signal() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    let run = bundle.spawn_run();
    bundle.wait_for_status("running", STATUS_TIMEOUT);
    bundle.kill("KILL").assert_success();
    let outcome = run.wait(STATUS_TIMEOUT);
    assert_eq!(outcome.code(), 128 + 9, "{outcome:#?}");
    bundle.assert_nothing_left(None);
}

#[test]
fn kill_by_number_ends_run_with_128_plus_signal() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    let run = bundle.spawn_run();
    bundle.wait_for_status("running", STATUS_TIMEOUT);
    bundle.kill("9").assert_success();
    assert_eq!(run.wait(STATUS_TIMEOUT).code(), 137);
}

#[test]
fn kill_defaults_to_term() {
    // Without a pid namespace `sleep` is not an init process, so SIGTERM's default action applies.
    let bundle = BusyboxBundle::new().without_namespace("pid").args(&["sleep", "1000"]);
    let run = bundle.spawn_run();
    bundle.wait_for_status("running", STATUS_TIMEOUT);
    bundle.cli(&["kill", bundle.id()]).assert_success();
    let outcome = run.wait(STATUS_TIMEOUT);
    assert_eq!(outcome.code(), 128 + 15, "{outcome:#?}");
}

#[test]
fn kill_accepts_sig_prefixed_names() {
    let bundle = BusyboxBundle::new().without_namespace("pid").args(&["sleep", "1000"]);
    let run = bundle.spawn_run();
    bundle.wait_for_status("running", STATUS_TIMEOUT);
    bundle.kill("SIGTERM").assert_success();
    assert_eq!(run.wait(STATUS_TIMEOUT).code(), 143);
}

#[test]
fn signals_sent_to_run_reach_the_container() {
    let bundle = BusyboxBundle::new().shell("trap 'echo got TERM; exit 42' TERM; touch /tmp/ready; while :; do sleep 0.05; done");
    let run = bundle.spawn_run();
    bundle.wait_for_file("/tmp/ready", STATUS_TIMEOUT);
    let sent = Command::new("kill").args(["-TERM", &run.pid().to_string()]).status();
    assert!(sent.expect("run kill(1)").success());
    let outcome = run.wait(STATUS_TIMEOUT);
    assert_eq!(outcome.code(), 42, "the container's TERM handler ran: {outcome:#?}");
    assert!(outcome.stdout.contains("got TERM"), "{outcome:#?}");
}

#[test]
fn state_goes_created_running_stopped() {
    let bundle = BusyboxBundle::new().shell("while [ ! -e /tmp/go ]; do sleep 0.02; done; exit 0");
    bundle.create().assert_success();

    let created = bundle.state();
    assert_eq!(created["status"], "created", "{created:#}");
    assert_eq!(created["id"], bundle.id());
    assert!(created["ociVersion"].is_string(), "{created:#}");
    let bundle_path = fs::canonicalize(bundle.bundle_dir()).expect("canonical bundle path");
    assert_eq!(created["bundle"], bundle_path.to_string_lossy().as_ref(), "{created:#}");
    let pid = created["pid"].as_i64().expect("a created container has a pid") as i32;
    assert!(pid > 0 && process_alive(pid), "the init process {pid} waits for start");

    bundle.start().assert_success();
    assert_eq!(bundle.status(), "running");
    assert_eq!(bundle.state()["pid"], created["pid"], "start runs the created process");

    fs::write(bundle.rootfs().join("tmp/go"), "").expect("signal the container to exit");
    bundle.wait_for_status("stopped", STATUS_TIMEOUT);
    assert!(!process_alive(pid));

    bundle.delete().assert_success();
    let gone = bundle.cli(&["state", bundle.id()]);
    gone.assert_one_line_failure();
    bundle.assert_nothing_left(Some(pid));
}

#[test]
fn kill_and_delete_leave_nothing_behind() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]).mount("/scratch", "tmpfs", "tmpfs", &["size=1m"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    let pid = bundle.state()["pid"].as_i64().expect("pid") as i32;
    assert!(process_alive(pid));
    assert!(!bundle.existing_cgroup_dirs().is_empty(), "a running container has a cgroup named {}", bundle.cgroup_name());

    bundle.kill("KILL").assert_success();
    bundle.wait_for_status("stopped", STATUS_TIMEOUT);
    bundle.delete().assert_success();
    bundle.assert_nothing_left(Some(pid));
}

#[test]
fn delete_force_removes_a_running_container() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    let pid = bundle.state()["pid"].as_i64().expect("pid") as i32;
    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    bundle.assert_nothing_left(Some(pid));
}

#[test]
fn delete_removes_a_created_container_that_never_started() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    let pid = bundle.state()["pid"].as_i64().expect("pid") as i32;
    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    bundle.assert_nothing_left(Some(pid));
}

#[test]
fn pid_file_holds_the_container_pid() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.write_config();
    let pid_file = bundle.dir().join("container.pid");
    bundle
        .cli(&["create", "--bundle", &bundle.bundle_dir().to_string_lossy(), "--pid-file", &pid_file.to_string_lossy(), bundle.id()])
        .assert_success();
    let written = fs::read_to_string(&pid_file).expect("the pid file exists after create");
    let state_pid = bundle.state()["pid"].as_i64().expect("pid");
    assert_eq!(written.trim().parse::<i64>().ok(), Some(state_pid));
}

#[test]
fn list_shows_created_containers() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    bundle.create().assert_success();
    let listed = bundle.cli(&["list"]);
    listed.assert_success();
    assert!(listed.stdout.contains(bundle.id()), "{listed:#?}");
    assert!(listed.stdout.contains("created"), "{listed:#?}");
}

/// config.json is read once, at create: a later edit of the bundle (other args, env, a failing
/// hook) changes neither what start runs nor what exec starts from.
#[test]
fn editing_config_json_after_create_changes_nothing() {
    let bundle = BusyboxBundle::new().env(&["MODE=original"]).shell("echo $MODE > /out; sleep 30");
    bundle.create().assert_success();
    let mut edited = bundle.config().clone();
    edited["process"]["args"] = serde_json::json!(["sh", "-c", "echo edited > /out"]);
    edited["process"]["env"] = serde_json::json!(["PATH=/bin", "MODE=edited"]);
    edited["hooks"] = serde_json::json!({ "poststart": [{ "path": "/bin/false" }] });
    fs::write(bundle.bundle_dir().join("config.json"), serde_json::to_vec(&edited).unwrap()).unwrap();
    bundle.start().assert_success();
    // The shell creates /out before it writes the line: wait for the line, not the file.
    let out = bundle.rootfs().join("out");
    sched_tests::wait::wait_until(
        "/out holds a line",
        Duration::from_secs(10),
        || fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n')),
        || format!("{:?}", fs::read_to_string(&out)),
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "original\n");
    let exec = bundle.cli(&["exec", bundle.id(), "sh", "-c", "echo $MODE"]);
    exec.assert_success();
    assert_eq!(exec.stdout, "original\n");
    bundle.kill("KILL").assert_success();
}
