//! OCI hooks as runc runs them: every stage (prestart, createRuntime, createContainer,
//! startContainer, poststart, poststop) gets the container's state as JSON on stdin; a hook that
//! outlives its `timeout` is killed and fails create (or start); a spec hook with a relative path
//! is refused at create.
//!
//! Run against runc with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests --test
//! runtime_hooks`.

use std::fs;
use std::time::{Duration, Instant};

use sched_tests::bundle::BusyboxBundle;
use serde_json::{Value, json};

/// A hook that writes its stdin to `file` (a path the hook's process can reach).
fn save_stdin(file: &str) -> Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", format!("cat > {file}")] })
}

#[test]
fn every_hook_gets_the_state_on_stdin() {
    let mut bundle = BusyboxBundle::new().shell("echo running");
    let host = bundle.dir().join("hooks");
    fs::create_dir_all(&host).unwrap();
    let at = |stage: &str| host.join(format!("{stage}.json")).to_string_lossy().into_owned();
    bundle.config_mut()["hooks"] = json!({
        "prestart": [save_stdin(&at("prestart"))],
        "createRuntime": [save_stdin(&at("createRuntime"))],
        // In the container's mount namespace before pivot_root: the host's paths still resolve.
        "createContainer": [save_stdin(&at("createContainer"))],
        // After pivot_root: /bin/sh is the container's busybox, the file lands in the rootfs.
        "startContainer": [save_stdin("/startContainer.json")],
        "poststart": [save_stdin(&at("poststart"))],
        "poststop": [save_stdin(&at("poststop"))],
    });
    bundle.config_mut()["annotations"] = json!({ "org.example/hooked": "yes" });
    bundle.create().assert_success();
    let pid = bundle.state()["pid"].as_i64().unwrap();
    bundle.start().assert_success();
    bundle.wait_for_status("stopped", Duration::from_secs(10));
    bundle.delete().assert_success();

    let read = |path: std::path::PathBuf| -> Value {
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text:?}", path.display()))
    };
    let expected = [
        ("prestart", host.join("prestart.json"), "creating"),
        ("createRuntime", host.join("createRuntime.json"), "creating"),
        ("createContainer", host.join("createContainer.json"), "creating"),
        ("startContainer", bundle.rootfs().join("startContainer.json"), "created"),
        ("poststart", host.join("poststart.json"), "running"),
        ("poststop", host.join("poststop.json"), "stopped"),
    ];
    for (stage, path, status) in expected {
        let state = read(path);
        assert_eq!(state["id"], json!(bundle.id()), "{stage}: {state}");
        assert_eq!(state["pid"], json!(pid), "{stage}: {state}");
        assert_eq!(state["status"], json!(status), "{stage}: {state}");
        assert_eq!(state["bundle"], json!(bundle.bundle_dir()), "{stage}: {state}");
        assert_eq!(state["annotations"]["org.example/hooked"], json!("yes"), "{stage}: {state}");
        assert!(state["ociVersion"].is_string(), "{stage}: {state}");
    }
}

#[test]
fn a_create_hook_past_its_timeout_fails_create_and_leaves_nothing() {
    let mut bundle = BusyboxBundle::new();
    bundle.config_mut()["hooks"] = json!({ "createRuntime": [{ "path": "/bin/sleep", "args": ["sleep", "60"], "timeout": 1 }] });
    let started = Instant::now();
    let out = bundle.create();
    assert!(started.elapsed() < Duration::from_secs(10), "the hook was killed at its timeout");
    let line = out.assert_one_line_failure();
    assert!(line.contains("createRuntime hook 0 (/bin/sleep) did not finish within its timeout of 1s"), "{line}");
    bundle.assert_nothing_left(None);
}

#[test]
fn a_failing_prestart_hook_fails_create() {
    let mut bundle = BusyboxBundle::new();
    bundle.config_mut()["hooks"] = json!({ "prestart": [{ "path": "/bin/false" }] });
    let line = bundle.create().assert_one_line_failure().to_owned();
    assert!(line.contains("prestart hook 0 (/bin/false) failed: exit status: 1"), "{line}");
    bundle.assert_nothing_left(None);
}

#[test]
fn a_poststart_hook_past_its_timeout_fails_start_and_stops_the_container() {
    let mut bundle = BusyboxBundle::new().args(&["sleep", "60"]);
    bundle.config_mut()["hooks"] = json!({ "poststart": [{ "path": "/bin/sleep", "args": ["sleep", "60"], "timeout": 1 }] });
    bundle.create().assert_success();
    let line = bundle.start().assert_one_line_failure().to_owned();
    assert!(line.contains("poststart hook 0 (/bin/sleep) did not finish within its timeout of 1s"), "{line}");
    bundle.wait_for_status("stopped", Duration::from_secs(10));
}

#[test]
fn a_hook_with_a_relative_path_is_refused_at_create() {
    let mut bundle = BusyboxBundle::new();
    bundle.config_mut()["hooks"] = json!({ "poststop": [{ "path": "bin/true" }] });
    let line = bundle.create().assert_one_line_failure().to_owned();
    assert!(line.contains("hooks.poststop[0] (bin/true): path must be absolute"), "{line}");
    bundle.assert_nothing_left(None);
}
