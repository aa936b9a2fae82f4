//! Image garbage collection on a real node (`sched server` + `sched-agent` + a loopback
//! registry): once a service is deleted its image (record, blobs and snapshots) leaves the
//! node after `--image-gc-unused-secs`, or at once under disk pressure (here: a high mark of
//! 1 %, which every real disk is above), while the image of a running service stays; and an
//! image past `--max-image-bytes` (a gzip bomb) fails its task naming the limit, leaving no
//! snapshot on the node.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use runtime::image::{ImageService, ImageServiceOptions};
use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::oci_image::{Entry, OciLayout, PushFormat, gzip_bomb, push};
use sched_tests::registry::Registry;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Image names and snapshot (chain id) count in the node's data dir.
fn node_images(data_dir: &Path) -> (BTreeSet<String>, usize) {
    let images = ImageService::open(data_dir, ImageServiceOptions::default()).unwrap();
    let names = images.list().unwrap().into_iter().map(|r| r.name).collect();
    (names, images.snapshotter().list().unwrap().len())
}

fn service(cluster: &Cluster, name: &str, image: &str) {
    let file = cluster.dir().join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!("name = \"{name}\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\ncpu = 100\nmemory = 32\ncount = 1\n"),
    )
    .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
}

/// Runs `kept` and `dropped` on a node started with `gc_flags`, deletes `dropped`, and waits
/// for its image to be collected while `kept`'s stays.
fn unused_image_is_collected(gc_flags: &[&str]) {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let process = json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]});
    let kept = push_busybox(cluster.dir(), &registry.addr(), "gc/kept:1", vec![Entry::file("kept", "k")], process.clone());
    let dropped = push_busybox(cluster.dir(), &registry.addr(), "gc/dropped:1", vec![Entry::file("dropped", "d")], process);
    let mut flags = vec!["--image-gc-interval-secs", "1"];
    flags.extend_from_slice(gc_flags);
    let agent = AgentProcess::start_with(&cluster, "gc-node", &flags);
    service(&cluster, "kept", &kept);
    service(&cluster, "dropped", &dropped);
    let data = agent.data_dir().to_path_buf();
    let context = || format!("images: {:?}\ncontainers: {:?}", node_images(&data), agent.containers());
    let running = || agent.containers().iter().filter(|(_, s)| s == "running").count();
    agent_process::wait_until("both services run", TIMEOUT, || running() == 2, context);
    let (names, snapshots) = node_images(&data);
    assert_eq!((names.len(), snapshots), (2, 2), "two single-layer images: {names:?}");

    cluster.sched_ok(&["delete", "dropped"]);
    // The record goes first, then (in the same pass) its blobs and snapshot: wait for both.
    agent_process::wait_until(
        "the deleted service's image and its snapshot are collected",
        TIMEOUT,
        || {
            let (names, snapshots) = node_images(&data);
            names.len() == 1 && snapshots == 1
        },
        context,
    );
    let (names, _) = node_images(&data);
    assert!(names.iter().all(|n| n.contains("gc/kept@sha256:")), "the running service's image stays: {names:?}");
    assert_eq!(running(), 1, "the kept service still runs");

    cluster.sched_ok(&["delete", "kept"]);
    agent_process::wait_until("no container is left", TIMEOUT, || agent.containers().is_empty(), context);
}

#[test]
fn an_image_unused_for_its_age_is_collected_and_one_in_use_is_not() {
    unused_image_is_collected(&["--image-gc-unused-secs", "1"]);
}

#[test]
fn under_disk_pressure_an_unused_image_goes_before_its_age() {
    // A day's age never passes here: only the pressure removes it.
    unused_image_is_collected(&["--image-gc-unused-secs", "86400", "--image-gc-high-percent", "1", "--image-gc-low-percent", "0"]);
}

#[test]
fn an_image_past_max_image_bytes_fails_its_task_and_leaves_no_snapshot() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let mut layout = OciLayout::create(&cluster.dir().join("bomb-layout"));
    let desc = layout.add_image(&gzip_bomb(64 << 20));
    layout.tag("1", &desc);
    let image = format!("{}/gc/bomb:1", registry.addr());
    push(&layout.dir, "1", &image, PushFormat::Oci, false, None);
    let agent = AgentProcess::start_with(&cluster, "bomb-node", &["--max-image-bytes", "16MiB"]);
    service(&cluster, "bomb", &image);
    let failure = || -> Option<String> {
        let tasks = cluster.sched_json(&["get", "tasks"]);
        tasks.as_array()?.iter().find_map(|t| {
            let failed = t["observed_state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("failed"));
            failed.then(|| t["message"].as_str().unwrap_or_default().to_string())
        })
    };
    let data = agent.data_dir().to_path_buf();
    let context = || format!("tasks: {:#}\nimages: {:?}", cluster.sched_json(&["get", "tasks"]), node_images(&data));
    agent_process::wait_until("the task fails", TIMEOUT, || failure().is_some(), context);
    let message = failure().unwrap();
    assert!(message.contains("16 MiB limit") && message.contains("gc/bomb"), "the failure names the image and the limit: {message}");
    assert_eq!(node_images(&data), (BTreeSet::new(), 0), "no image record and no snapshot on the node");
    cluster.sched_ok(&["delete", "bomb"]);
}
