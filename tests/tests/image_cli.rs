//! `sched-runtime image ...` end to end: pull a busybox image the test builds from Debian's
//! busybox-static, list, inspect, unpack, remove and prune it through the CLI, and run
//! containers from the pulled image (overlay rootfs + the spec built from the image config)
//! with bundles the product makes: `ImageService::create_bundle` and `image bundle`.
use std::path::Path;
use std::process::Command;

use runtime::image::{ImageService, ImageServiceOptions, ProcessOverrides};
use sched_tests::bundle::{BusyboxBundle, runtime_binary};
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, push};
use sched_tests::registry::Registry;
use serde_json::json;

fn busybox_image() -> ImageDef {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/install-test-deps.sh installs it)");
    let mut layer = vec![
        Entry::dir("bin"),
        Entry::File { path: "bin/busybox".into(), content: busybox, mode: 0o755, uid: 0, gid: 0 },
        Entry::dir("etc"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n"),
        Entry::file("etc/group", "root:x:0:\napp:x:1234:\nextra:x:77:app\n"),
        Entry::Dir { path: "home".into(), mode: 0o755, uid: 0, gid: 0 },
        Entry::Dir { path: "home/app".into(), mode: 0o755, uid: 1234, gid: 1234 },
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("dev"),
        Entry::dir("tmp"),
    ];
    for applet in ["sh", "echo", "id", "cat", "pwd"] {
        layer.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    let mut image = ImageDef::new(vec![layer, vec![Entry::file("etc/motd", "from layer two\n")]]);
    image.process = json!({
        "Env": ["PATH=/bin", "GREETING=image"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello from $GREETING; id -u; id -G; pwd; cat /etc/motd"],
        "User": "app",
        "WorkingDir": "/home/app",
    });
    image
}

/// Unmounts and deletes a prepared rootfs also when the test fails.
struct ReleaseOnDrop<'a>(&'a ImageService, String);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.release_rootfs(&self.1);
    }
}

/// A loopback registry holding the busybox test image as `cli/busybox:v1`, a work dir (its
/// layout under `layout/`), and the reference to pull.
fn pushed_busybox() -> (Registry, tempfile::TempDir, String) {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&busybox_image());
    layout.tag("v1", &desc);
    let reference = format!("{}/cli/busybox:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, None);
    (registry, work, reference)
}

fn image_cli(data: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(runtime_binary()).arg("--data-dir").arg(data).arg("image").args(args).output().expect("run sched-runtime");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "image {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

#[test]
fn image_commands_pull_list_inspect_unpack_remove_and_prune() {
    let (_registry, work, reference) = pushed_busybox();
    let data = work.path().join("data");

    let (out, err) = image_cli(&data, &["pull", &reference]);
    assert!(out.contains(&format!("pulled {reference}")) && out.contains("2 layers"), "{out}");
    assert!(err.lines().filter(|l| l.ends_with(": done")).count() == 2, "plain progress lines expected off a terminal: {err}");

    let (out, _) = image_cli(&data, &["list"]);
    assert!(out.lines().next().unwrap().starts_with("IMAGE") && out.contains(&reference), "{out}");
    let (out, _) = image_cli(&data, &["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], reference.as_str());

    let (out, _) = image_cli(&data, &["inspect", &reference]);
    let inspect: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspect["Config"]["config"]["User"], "app");
    let id = inspect["Id"].as_str().unwrap().to_string();

    let dir = work.path().join("rootfs");
    image_cli(&data, &["unpack", &id[7..19], dir.to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(dir.join("bin/sh")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(dir.join("etc/motd")).unwrap(), "from layer two\n");

    let (out, _) = image_cli(&data, &["rm", &reference]);
    assert!(out.contains("removed") && out.contains("2 snapshots"), "{out}");
    let (out, _) = image_cli(&data, &["prune"]);
    assert!(out.contains("pruned 0 blobs, 0 snapshots"), "{out}");
    assert_eq!(std::fs::read_dir(data.join("blobs/sha256")).unwrap().count(), 0);

    // A missing image: one line that says what to do.
    let out = Command::new(runtime_binary()).arg("--data-dir").arg(&data).args(["image", "inspect", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pull it first"), "{err}");
}

#[test]
fn a_container_runs_from_a_pulled_image() {
    let (_registry, work, reference) = pushed_busybox();
    let data = work.path().join("data");
    image_cli(&data, &["pull", &reference]);

    // The product's pipeline (the one the agent and `run --image` use): overlay rootfs + spec
    // from the image config on the fixture's base spec, written as the bundle's config.json.
    let mut bundle = BusyboxBundle::new();
    let images = ImageService::open(&data, ImageServiceOptions::default()).unwrap();
    let base: oci_spec::runtime::Spec = serde_json::from_value(bundle.config().clone()).unwrap();
    let overrides = ProcessOverrides { env: vec!["GREETING=override".into()], ..Default::default() };
    let made = images.create_bundle(&reference, bundle.id(), &bundle.bundle_dir(), &overrides, base).unwrap();
    let _unmount = ReleaseOnDrop(&images, bundle.id().to_string());
    assert_eq!(made.spec.root().as_ref().unwrap().path(), &made.rootfs.path);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(made.dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(written, serde_json::to_value(&made.spec).unwrap(), "config.json holds the spec returned");
    // Run exactly what was written (the fixture rewrites config.json from its own copy).
    *bundle.config_mut() = written;
    let outcome = bundle.run();
    outcome.assert_success();
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines, ["hello from override", "1234", "1234 77", "/home/app", "from layer two"], "{outcome:#?}");
    images.release_rootfs(bundle.id()).unwrap();
    assert!(!data.join("rootfs").join(bundle.id()).exists(), "the rootfs was not released");
}

#[test]
fn sched_runtime_runs_a_bundle_made_from_a_pulled_image() {
    let (_registry, work, reference) = pushed_busybox();
    let data = work.path().join("data");
    image_cli(&data, &["pull", &reference]);

    let mut bundle = BusyboxBundle::new();
    let id = bundle.id().to_string();
    let dir = bundle.bundle_dir();
    let (out, _) = image_cli(
        &data,
        &[
            "bundle",
            &reference,
            dir.to_str().unwrap(),
            "--id",
            &id,
            "-e",
            "GREETING=cli",
            "-u",
            "4321:77",
            "--",
            "echo $GREETING; id -u; id -g; pwd",
        ],
    );
    let _release = ReleaseCli(&data, id.clone());
    assert!(out.contains("Overlay"), "{out}");
    // Keep the test's own cgroup (the fixture removes it) and run through the runtime CLI.
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["linux"]["cgroupsPath"] = bundle.config()["linux"]["cgroupsPath"].clone();
    assert_eq!(config["root"]["path"].as_str().unwrap(), data.join("rootfs").join(&id).join("merged").to_str().unwrap());
    *bundle.config_mut() = config;
    let outcome = bundle.run();
    outcome.assert_success();
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines, ["cli", "4321", "77", "/home/app"], "{outcome:#?}");
    image_cli(&data, &["release", &id]);
    assert!(!data.join("rootfs").join(&id).exists());
}

/// `image release ID` also when the test fails.
struct ReleaseCli<'a>(&'a Path, String);

impl Drop for ReleaseCli<'_> {
    fn drop(&mut self) {
        let _ = Command::new(runtime_binary()).arg("--data-dir").arg(self.0).args(["image", "release", &self.1]).output();
    }
}
