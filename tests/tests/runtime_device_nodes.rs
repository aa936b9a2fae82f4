//! Device nodes a container brings along (issue 11 point 2): an image or rootfs may carry a
//! 0666 block device node of a host device (here loop0, which the host opens). Two independent locks keep it closed:
//! - the runtime's default device rules (runc's: deny everything, then the spec's rules, then
//!   null, zero, full, random, urandom, tty, console, ptmx, pts, tun and mknod), applied even
//!   when the spec's `linux.resources` has no device rules at all, as the agent's task bundles;
//! - image rootfs mounts (overlay, and the copy fallback) are `nodev`, so a node from a layer
//!   cannot be opened even where a spec rule allows its numbers.
//!
//! This host has cgroup v1 device rules; `cgroup_v2_vm.rs` checks the eBPF program on cgroup v2.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use runtime::image::{ImageService, ImageServiceOptions, NoProgress, ProcessOverrides, RootfsMode};
use sched_tests::bundle::{BusyboxBundle, CLI_TIMEOUT, remove_cgroup_parent, runtime_binary, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::oci_image::Entry;
use sched_tests::registry::Registry;
use serde_json::json;

/// Tries /dev/null (always allowed) and the planted node; prints what worked.
const PROBE: &str = "echo x > /dev/null && echo null-ok; head -c 512 /disk > /dev/null && echo disk-opened; true";

/// A block device this test process can open through a node of its own: loop0 (7:0), else a
/// disk from /proc/partitions. (The machines these tests run on refuse their root disk to
/// every process, even root on the host; an unbound loop device opens.) Fails loudly if
/// there is none: a node nothing could open proves nothing.
fn openable_block_device() -> (u32, u32) {
    let partitions = fs::read_to_string("/proc/partitions").expect("read /proc/partitions");
    let disks = partitions.lines().skip(2).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        Some((fields.first()?.parse().ok()?, fields.get(1)?.parse().ok()?))
    });
    let probe = tempfile::Builder::new().prefix("sched-devprobe-").tempdir().expect("temp dir");
    let node = probe.path().join("node");
    std::iter::once((7, 0))
        .chain(disks)
        .find(|&dev| {
            let _ = fs::remove_file(&node);
            plant_block_node(&node, dev);
            fs::File::open(&node).is_ok()
        })
        .expect("no block device (loop0 or a disk) can be opened on this host: load the loop module")
}

/// `mknod PATH b MAJOR MINOR` with mode 0666.
#[track_caller]
fn plant_block_node(path: &Path, (major, minor): (u32, u32)) {
    let status =
        Command::new("mknod").args(["-m", "0666"]).arg(path).args(["b", &major.to_string(), &minor.to_string()]).status().expect("mknod");
    assert!(status.success(), "mknod {} b {major} {minor}", path.display());
}

#[test]
fn default_device_rules_refuse_a_block_node_from_the_rootfs() {
    let disk = openable_block_device();
    let mut bundle = BusyboxBundle::new().shell(PROBE);
    // Like the agent's task bundles: resources without a single device rule.
    bundle.config_mut()["linux"]["resources"] = json!({ "pids": { "limit": 64 } });
    plant_block_node(&bundle.rootfs().join("disk"), disk);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:#?}");
    assert!(outcome.stdout.contains("null-ok"), "the default devices stay usable: {outcome:#?}");
    assert!(!outcome.stdout.contains("disk-opened"), "the container opened the host's block device {disk:?}: {outcome:#?}");
    assert!(outcome.stderr.contains("Operation not permitted"), "the device cgroup refuses it: {outcome:#?}");
}

#[test]
fn a_spec_rule_still_allows_a_device_on_top_of_the_defaults() {
    let disk = openable_block_device();
    let mut bundle = BusyboxBundle::new().shell(PROBE);
    bundle.config_mut()["linux"]["resources"] = json!({
        "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "b", "major": disk.0, "minor": disk.1, "access": "r" },
        ],
    });
    plant_block_node(&bundle.rootfs().join("disk"), disk);
    let outcome = bundle.run();
    assert!(outcome.stdout.contains("null-ok") && outcome.stdout.contains("disk-opened"), "{outcome:#?}");
}

/// Pulls an image whose layer carries a 0666 node of a host block device, makes its rootfs in
/// `mode`, and runs it with a spec whose device rules allow that node: only `nodev` on the
/// image mount stands in the way.
async fn image_node_is_refused(mode: RootfsMode) {
    let disk = openable_block_device();
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-devnode-").tempdir().expect("temp dir");
    let node = Entry::BlockDev { path: "disk".into(), major: disk.0, minor: disk.1, mode: 0o666 };
    let reference = push_busybox(work.path(), &registry.addr(), "devnode:1", vec![node], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let options = ImageServiceOptions { rootfs_mode: mode, ..Default::default() };
    let images = ImageService::open(&work.path().join("data"), options).expect("open the image service");
    images.pull(&reference, Arc::new(NoProgress)).await.expect("pull");
    let id = unique_name();
    let prepared = images.prepare_rootfs(&reference, &id).expect("prepare the rootfs");
    let flags = nix::sys::statvfs::statvfs(&prepared.path).expect("statvfs the rootfs").flags();
    let nodev = flags.contains(nix::sys::statvfs::FsFlags::ST_NODEV);

    let overrides = ProcessOverrides { entrypoint: Some(vec!["sh".into(), "-c".into(), PROBE.into()]), ..Default::default() };
    let spec = images.spec_for(&prepared, &overrides, runtime::spec_template::default_spec(&[])).expect("spec");
    let mut config = serde_json::to_value(&spec).expect("spec to JSON");
    config["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    config["linux"]["resources"] = json!({
        "devices": [{ "allow": true, "type": "b", "major": disk.0, "minor": disk.1, "access": "rwm" }],
    });
    let bundle = work.path().join("bundle");
    fs::create_dir_all(&bundle).expect("bundle dir");
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).expect("config")).expect("write config.json");
    let state = work.path().join("state");
    let runtime = |args: &[&str]| Command::new(runtime_binary()).arg("--root").arg(&state).args(args).output().expect("run sched-runtime");
    let started = std::time::Instant::now();
    let out = runtime(&["run", "--bundle", &bundle.to_string_lossy(), &id]);
    let _ = runtime(&["delete", "--force", &id]);
    remove_cgroup_parent(&format!("/{id}"));
    images.release_rootfs(&id).expect("release the rootfs");
    assert!(started.elapsed() < CLI_TIMEOUT, "run took {:?}", started.elapsed());

    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(nodev, "{mode:?}: the image rootfs {} is mounted without nodev ({flags:?})", prepared.path.display());
    assert!(stdout.contains("null-ok"), "{mode:?}: {out:?}");
    assert!(!stdout.contains("disk-opened"), "{mode:?}: the container opened the host's block device {disk:?} from its image: {out:?}");
    assert!(stderr.contains("Permission denied"), "{mode:?}: nodev refuses it: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_node_from_an_overlay_image_cannot_be_opened() {
    image_node_is_refused(RootfsMode::Overlay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_node_from_a_copied_image_cannot_be_opened() {
    image_node_is_refused(RootfsMode::Copy).await;
}
