//! Image pinning on a real 3-server cluster and a real registry (`docker-registry` on
//! loopback): an apply resolves the tag to the digest the registry serves at that moment and
//! the revision keeps it; a tag pushed again pins the next revision to the new image while the
//! old revision keeps the old digest; a multi-platform index pins by the index's digest; a
//! reference with a digest is taken as it is; and an apply whose registry is down or lacks the
//! tag is accepted with the tag alone and an event that says why.

use std::path::Path;

use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions};
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, push};
use sched_tests::registry::Registry;
use serde_json::Value;

/// Builds a one-file image (its content makes its digest) in a layout of its own under
/// `dir`, pushes it as `dest` (`HOST:PORT/REPO:TAG`) and returns its manifest digest (skopeo
/// keeps the manifest byte for byte).
fn push_image(dir: &Path, content: &str, dest: &str) -> String {
    let mut layout = OciLayout::create(&dir.join(format!("layout-{content}")));
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("version", content)]]));
    let tag = dest.rsplit_once(':').unwrap().1;
    layout.tag(tag, &desc);
    push(&layout.dir, tag, dest, PushFormat::Oci, false, None);
    desc["digest"].as_str().unwrap().to_string()
}

fn apply(cluster: &Cluster, name: &str, image: &str, count: u32) -> String {
    let file = cluster.service_file(name, image, count);
    cluster.sched_ok(&["apply", file.to_str().unwrap()]).trim().to_string()
}

/// (revision, image, digest) of every revision, oldest first.
fn history(cluster: &Cluster, name: &str) -> Vec<(u64, String, String)> {
    let history = cluster.sched_json(&["history", name]);
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let image = r["spec"]["image"].as_str().unwrap().to_string();
            (r["revision"].as_u64().unwrap(), image, r["image_digest"].as_str().unwrap().to_string())
        })
        .collect()
}

fn events(cluster: &Cluster, name: &str) -> Vec<String> {
    let described: Value = cluster.sched_json(&["describe", "service", name]);
    described["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn apply_pins_the_tag_to_the_pushed_digest_and_each_revision_keeps_its_own() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions::default());
    let image = format!("{}/team/app:1.0", registry.addr());

    let first = push_image(cluster.dir(), "one", &image);
    assert_eq!(apply(&cluster, "app", &image, 1), "service app applied: revision 1");
    assert_eq!(history(&cluster, "app"), [(1, image.clone(), first.clone())]);
    // Applying the same file while the tag still points at the same image changes nothing.
    assert_eq!(apply(&cluster, "app", &image, 1), "service app unchanged: revision 1");

    // The tag moves to a new image; a changed spec pins the new revision to it.
    let second = push_image(cluster.dir(), "two", &image);
    assert_ne!(first, second);
    assert_eq!(apply(&cluster, "app", &image, 2), "service app applied: revision 2");
    assert_eq!(history(&cluster, "app"), [(1, image.clone(), first.clone()), (2, image.clone(), second.clone())]);

    // describe and history show the digests.
    let text = cluster.sched_ok(&["describe", "service", "app"]);
    assert!(text.contains(&format!("Digest:      {second}\n")), "{text}");
    let table = cluster.sched_ok(&["history", "app"]);
    for digest in [&first, &second] {
        assert!(table.contains(&digest[..19]), "history shows {}:\n{table}", &digest[..19]);
    }
    // A rollback returns to the old image exactly, not to what the tag means now.
    cluster.sched_ok(&["rollback", "app"]);
    assert_eq!(history(&cluster, "app")[2], (3, image.clone(), first.clone()));
    assert!(!events(&cluster, "app").iter().any(|e| e.contains("could not be resolved")));
}

#[test]
fn a_multi_platform_index_is_pinned_by_the_index_digest_and_a_digest_reference_as_given() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions::default());
    let mut layout = OciLayout::create(&cluster.dir().join("layout"));
    let amd64 = layout.add_image(&ImageDef::new(vec![vec![Entry::file("arch", "amd64")]]));
    let mut arm = ImageDef::new(vec![vec![Entry::file("arch", "arm64")]]);
    arm.architecture = "arm64".into();
    let arm64 = layout.add_image(&arm);
    let index = layout.add_index(&[(amd64, "amd64"), (arm64, "arm64")]);
    layout.tag("multi", &index);
    let image = format!("{}/team/multi:multi", registry.addr());
    push(&layout.dir, "multi", &image, PushFormat::Oci, true, None);

    apply(&cluster, "multi", &image, 1);
    let index_digest = index["digest"].as_str().unwrap();
    assert_eq!(history(&cluster, "multi"), [(1, image.clone(), index_digest.to_string())]);

    // A reference that names its digest is pinned to it without asking any registry: nothing
    // listens at CLOSED_REGISTRY, so asking would have failed.
    let pinned = format!("{CLOSED_REGISTRY}/team/multi@{index_digest}");
    apply(&cluster, "given", &pinned, 1);
    assert_eq!(history(&cluster, "given"), [(1, pinned, index_digest.to_string())]);
    assert!(!events(&cluster, "given").iter().any(|e| e.contains("could not be resolved")));
}

#[test]
fn an_unreachable_registry_or_unknown_tag_is_accepted_by_tag_with_an_event_saying_why() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions::default());

    // Registry down: the apply is accepted at once, unpinned.
    let down = format!("{CLOSED_REGISTRY}/team/app:1.0");
    let started = std::time::Instant::now();
    assert_eq!(apply(&cluster, "down", &down, 1), "service down applied: revision 1");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "apply took {:?}", started.elapsed());
    assert_eq!(history(&cluster, "down"), [(1, down.clone(), String::new())]);
    let event = events(&cluster, "down").into_iter().find(|e| e.contains("could not be resolved")).expect("an event");
    assert!(event.starts_with(&format!("revision 1: the digest of {down} could not be resolved (")), "{event}");
    assert!(event.contains("Connection refused") && event.ends_with("its tasks will pull it by tag"), "{event}");
    let text = cluster.sched_ok(&["describe", "service", "down"]);
    assert!(text.contains("Digest:      (not resolved: tasks pull by tag; see Events)"), "{text}");
    assert!(text.contains(&event), "describe shows the event:\n{text}");

    // The registry answers but has no such tag.
    let missing = format!("{}/team/app:nope", registry.addr());
    assert_eq!(apply(&cluster, "missing", &missing, 1), "service missing applied: revision 1");
    assert_eq!(history(&cluster, "missing")[0].2, "");
    let events = events(&cluster, "missing");
    assert!(
        events.iter().any(|e| e.contains(&format!("registry {} has no manifest team/app:nope (HTTP 404)", registry.addr()))),
        "{events:#?}"
    );
}
