//! The container process as the spec describes it: user, group and additional groups, env,
//! cwd, rlimits, noNewPrivileges, oomScoreAdj and umask (each read back from inside, mostly from
//! /proc/1 so the exec'd process itself is checked, not a child of it).
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_process`.

use std::fs;

use sched_tests::bundle::BusyboxBundle;
use serde_json::json;

#[track_caller]
fn run_ok(bundle: &BusyboxBundle) -> String {
    let outcome = bundle.run();
    outcome.assert_success();
    outcome.stdout
}

/// The value of `key:` in a /proc/PID/status dump, whitespace-normalised.
#[track_caller]
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn user_group_and_additional_groups_apply() {
    let bundle = BusyboxBundle::new().user(1000, 1000, &[2000, 3000]).shell("cat /proc/1/status");
    let status = run_ok(&bundle);
    assert_eq!(status_field(&status, "Uid"), "1000 1000 1000 1000");
    assert_eq!(status_field(&status, "Gid"), "1000 1000 1000 1000");
    assert_eq!(status_field(&status, "Groups"), "2000 3000");
}

#[test]
fn non_root_user_cannot_write_root_owned_files() {
    let bundle = BusyboxBundle::new().user(1000, 1000, &[]).shell("echo x 2>/dev/null > /etc/passwd && echo WROTE; id -u");
    assert_eq!(run_ok(&bundle), "1000\n");
}

#[test]
fn env_is_exactly_the_specs() {
    let bundle = BusyboxBundle::new().env(&["GREETING=hello world", "EMPTY="]).shell("env");
    let out = run_ok(&bundle);
    let vars: Vec<&str> = out.lines().collect();
    assert!(vars.contains(&"GREETING=hello world"), "{out}");
    assert!(vars.contains(&"EMPTY="), "{out}");
    assert!(vars.iter().any(|v| v.starts_with("PATH=/usr/local/sbin:")), "{out}");
    assert!(!vars.iter().any(|v| v.starts_with("CARGO") || v.starts_with("RUST")), "the host's environment must not leak in: {out}");
}

#[test]
fn cwd_is_the_specs() {
    let bundle = BusyboxBundle::new();
    fs::create_dir_all(bundle.rootfs().join("srv/app")).expect("create the cwd");
    let bundle = bundle.cwd("/srv/app").shell("pwd");
    assert_eq!(run_ok(&bundle), "/srv/app\n");
}

#[test]
fn rlimits_apply_to_the_process() {
    let bundle = BusyboxBundle::new().rlimit("RLIMIT_NOFILE", 512, 768).rlimit("RLIMIT_CORE", 0, 4096).shell("cat /proc/1/limits");
    let out = run_ok(&bundle);
    let limit = |name: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        line[name.len()..].split_whitespace().take(2).map(str::to_owned).collect()
    };
    assert_eq!(limit("Max open files"), ["512", "768"], "{out}");
    assert_eq!(limit("Max core file size"), ["0", "4096"], "{out}");
}

#[test]
fn no_new_privileges_is_set_when_asked() {
    let on = BusyboxBundle::new().no_new_privileges(true).shell("cat /proc/1/status");
    assert_eq!(status_field(&run_ok(&on), "NoNewPrivs"), "1");
    let off = BusyboxBundle::new().no_new_privileges(false).shell("cat /proc/1/status");
    assert_eq!(status_field(&run_ok(&off), "NoNewPrivs"), "0");
}

#[test]
fn oom_score_adj_applies() {
    let mut bundle = BusyboxBundle::new().shell("cat /proc/1/oom_score_adj");
    bundle.config_mut()["process"]["oomScoreAdj"] = json!(345);
    assert_eq!(run_ok(&bundle), "345\n");
}

#[test]
fn umask_applies() {
    let mut bundle = BusyboxBundle::new().shell("umask");
    bundle.config_mut()["process"]["user"]["umask"] = json!(0o027);
    assert_eq!(run_ok(&bundle), "0027\n");
}
