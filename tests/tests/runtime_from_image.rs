//! `sched-runtime run --image REF`: a container straight from a pulled image (its rootfs an
//! overlay snapshot), with the exit code propagated and nothing left afterwards.

use std::process::Command;

use sched_tests::bundle::{mounts_under, runtime_binary, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::registry::Registry;
use serde_json::json;

#[test]
fn a_pulled_image_runs_with_a_command_and_leaves_nothing() {
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-run-image-").tempdir().expect("temp dir");
    let reference = push_busybox(work.path(), &registry.addr(), "runme:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let data = work.path().join("data");
    let state = work.path().join("state");
    let cli = |args: &[&str]| {
        Command::new(runtime_binary())
            .arg("--data-dir")
            .arg(&data)
            .arg("--root")
            .arg(&state)
            .args(args)
            .output()
            .expect("run sched-runtime")
    };
    let id = unique_name();
    let out = cli(&["run", "--image", &reference, &id, "--", "sh", "-c", "echo from-image; exit 4"]);
    assert_eq!(out.status.code(), Some(1), "an image that is not pulled is refused: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not pulled"), "{out:?}");

    assert!(cli(&["image", "pull", &reference]).status.success());
    let out = cli(&["run", "--image", &reference, &id, "--", "sh", "-c", "echo from-image; cat /etc/passwd | head -1; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-image\nroot:x:0:0:root:/root:/bin/sh\n");
    assert!(mounts_under(work.path()).is_empty(), "the overlay rootfs is unmounted");
    assert!(!data.join("bundles").join(&id).exists(), "the bundle is removed");
    let _ = Command::new(runtime_binary()).arg("--root").arg(&state).args(["delete", "--force", &id]).output();
    // The container used the runtime's default cgroup parent; only this test does: remove it.
    for h in sched_tests::bundle::cgroup_hierarchies() {
        assert!(!h.join("sched-runtime").join(&id).exists(), "the container's cgroup is removed");
        let _ = std::fs::remove_dir(h.join("sched-runtime"));
    }
}
