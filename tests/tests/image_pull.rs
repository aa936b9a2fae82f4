//! Pulling real images from a real registry (Debian's docker-registry on loopback): layered
//! images with whiteouts and opaque directories in three compressions, an index with two
//! platforms, Docker schema2 media types, a blob corrupted in the registry's storage, a
//! connection cut in the middle of a blob, two concurrent pulls of one image, and the
//! list/inspect/remove/prune life cycle. Every rootfs form (overlay mount, copy fallback,
//! `unpack`) must show the same files.
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use runtime::image::{ImageError, ImageService, ImageServiceOptions, NoProgress, Platform, RegistryError, RootfsKind, RootfsMode};
use sched_tests::oci_image::{Compression, Entry, ImageDef, OciLayout, PushFormat, layer_tar, push};
use sched_tests::registry::Registry;
use sched_tests::registry_proxy::{ProxyMode, RegistryProxy};

/// Unmounts and deletes a prepared rootfs also when the test fails.
struct ReleaseOnDrop<'a>(&'a ImageService, &'static str);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.release_rootfs(self.1);
    }
}

fn service(dir: &Path, mode: RootfsMode) -> ImageService {
    let options = ImageServiceOptions { rootfs_mode: mode, ..Default::default() };
    ImageService::open(dir, options).unwrap()
}

/// Every path below `root` with what it is: `d 755 0:0`, `f 644 0:0 <content>`, `l -> target`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ids = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            let desc = if m.file_type().is_symlink() {
                format!("l -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                format!("d {ids}")
            } else if m.is_file() {
                format!("f {ids} {}", String::from_utf8_lossy(&std::fs::read(&p).unwrap()))
            } else {
                format!("other {:o} {ids} rdev={}", m.mode() & 0o170000, m.rdev())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Three layers (gzip, zstd, plain): the second deletes `etc/gone` and `gone-dir`, makes `opq`
/// opaque, adds files; the third changes a file.
fn layered_image() -> ImageDef {
    let l1 = vec![
        Entry::dir("etc"),
        Entry::file("etc/keep", "keep v1"),
        Entry::file("etc/gone", "gone"),
        Entry::dir("gone-dir"),
        Entry::file("gone-dir/x", "x"),
        Entry::dir("opq"),
        Entry::file("opq/old", "old"),
        Entry::dir("opq/sub"),
        Entry::file("opq/sub/deep", "deep"),
        Entry::dir("data"),
        Entry::file("data/a", "a"),
        Entry::symlink("link", "etc/keep"),
        Entry::hardlink("etc/hard", "etc/keep"),
        Entry::File { path: "bin/suid".into(), content: b"#!".to_vec(), mode: 0o4755, uid: 0, gid: 0 },
        Entry::File { path: "home/user/owned".into(), content: b"mine".to_vec(), mode: 0o600, uid: 1000, gid: 1000 },
    ];
    let l2 = vec![
        Entry::whiteout("etc/gone"),
        Entry::whiteout("gone-dir"),
        Entry::dir("opq"),
        Entry::opaque("opq"),
        Entry::file("opq/new", "new"),
        Entry::file("data/b", "b"),
    ];
    let l3 = vec![
        Entry::file("etc/keep", "keep v3"),
        Entry::Fifo { path: "fifo".into(), mode: 0o640 },
        // A hard link to a file of layer 1 (overlay snapshots copy it up).
        Entry::hardlink("data/a-link", "data/a"),
        Entry::hardlink("home/user/owned-link", "home/user/owned"),
    ];
    let mut image = ImageDef::new(vec![l1, l2, l3]);
    image.layers[1].1 = Compression::Zstd;
    image.layers[2].1 = Compression::None;
    image
}

fn assert_layered_tree(t: &BTreeMap<String, String>) {
    assert_eq!(t.get("etc/keep").map(String::as_str), Some("f 644 0:0 keep v3"), "{t:#?}");
    assert_eq!(t.get("etc/hard").map(String::as_str), Some("f 644 0:0 keep v1"), "{t:#?}");
    assert_eq!(t.get("link").map(String::as_str), Some("l -> etc/keep"));
    assert_eq!(t.get("bin/suid").map(String::as_str), Some("f 4755 0:0 #!"));
    assert_eq!(t.get("home/user/owned").map(String::as_str), Some("f 600 1000:1000 mine"));
    assert_eq!(t.get("home/user/owned-link").map(String::as_str), Some("f 600 1000:1000 mine"));
    assert_eq!(t.get("data/a-link").map(String::as_str), Some("f 644 0:0 a"));
    assert!(t.get("fifo").is_some_and(|f| f.starts_with("other 10000 640")), "{t:#?}");
    for gone in ["etc/gone", "gone-dir", "gone-dir/x", "opq/old", "opq/sub", "opq/sub/deep"] {
        assert!(!t.contains_key(gone), "{gone} should be gone: {t:#?}");
    }
    for present in ["opq/new", "data/a", "data/b"] {
        assert!(t.contains_key(present), "{present} missing: {t:#?}");
    }
    assert!(!t.keys().any(|k| k.contains(".wh.")), "whiteout markers leaked: {t:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_image_has_the_same_files_as_overlay_copy_and_unpack() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&layered_image());
    layout.tag("v1", &desc);
    push(&layout.dir, "v1", &format!("{}/test/layered:v1", registry.addr()), PushFormat::Oci, false, None);

    let data = work.path().join("data");
    let images = service(&data, RootfsMode::Overlay);
    let reference = format!("{}/test/layered:v1", registry.addr());
    let record = images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(record.layers.len(), 3);
    assert_eq!(record.name, reference);
    let types: Vec<&str> = record.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar"
        ],
        "the registry must serve the three compressions as built"
    );
    for chain in &record.chain_ids {
        assert!(images.snapshotter().has(chain), "snapshot {chain} missing");
    }

    // Overlay rootfs.
    let overlay = images.prepare_rootfs(&reference, "c-overlay").unwrap();
    let _g1 = ReleaseOnDrop(&images, "c-overlay");
    assert_eq!(overlay.kind, RootfsKind::Overlay);
    let overlay_tree = tree(&overlay.path);
    assert_layered_tree(&overlay_tree);
    // Writes go to the container's upper dir, not to the shared snapshots.
    std::fs::write(overlay.path.join("etc/keep"), "changed").unwrap();
    images.release_rootfs("c-overlay").unwrap();
    let again = images.prepare_rootfs(&reference, "c-overlay2").unwrap();
    let _g2 = ReleaseOnDrop(&images, "c-overlay2");
    assert_eq!(std::fs::read_to_string(again.path.join("etc/keep")).unwrap(), "keep v3");
    images.release_rootfs("c-overlay2").unwrap();
    assert!(!data.join("rootfs/c-overlay").exists());

    // Copy fallback.
    let copy_images = service(&data, RootfsMode::Copy);
    let copy = copy_images.prepare_rootfs(&reference, "c-copy").unwrap();
    assert_eq!(copy.kind, RootfsKind::Copy);
    let copy_tree = tree(&copy.path);
    let hard = std::fs::metadata(copy.path.join("etc/hard")).unwrap();
    copy_images.release_rootfs("c-copy").unwrap();

    // image unpack.
    let out = work.path().join("unpacked");
    images.unpack(&reference, &out).unwrap();
    let unpack_tree = tree(&out);
    assert_layered_tree(&unpack_tree);
    assert_eq!(copy_tree, unpack_tree);
    // Directory modes and owners aside from the root, overlay shows exactly the same.
    assert_eq!(overlay_tree, unpack_tree);
    assert_eq!(hard.nlink(), 1, "etc/keep was replaced by layer 3, so etc/hard is alone");
    let first = std::fs::metadata(out.join("etc/hard")).unwrap();
    assert_eq!(first.nlink(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_two_platforms_pulls_the_requested_one() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let mut amd = ImageDef::new(vec![vec![Entry::file("arch", "amd64")]]);
    amd.architecture = "amd64".into();
    let mut arm = ImageDef::new(vec![vec![Entry::file("arch", "arm64")]]);
    arm.architecture = "arm64".into();
    let (a, b) = (layout.add_image(&amd), layout.add_image(&arm));
    let index = layout.add_index(&[(a.clone(), "amd64"), (b, "arm64")]);
    layout.tag("multi", &index);
    let reference = format!("{}/test/multi:1", registry.addr());
    push(&layout.dir, "multi", &reference, PushFormat::Oci, true, None);

    for arch in ["amd64", "arm64"] {
        let data = work.path().join(format!("data-{arch}"));
        let platform = Platform { architecture: arch.into(), os: "linux".into(), variant: None };
        let images = ImageService::open(&data, ImageServiceOptions { platform, ..Default::default() }).unwrap();
        let record = images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
        assert_eq!(record.platform.architecture, arch);
        assert_eq!(record.index_digest.as_ref().map(|d| d.to_string()), Some(index["digest"].as_str().unwrap().to_string()));
        let out = data.join("out");
        images.unpack(&reference, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("arch")).unwrap(), arch);
    }

    let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), variant: None };
    let images = ImageService::open(&work.path().join("data-s390x"), ImageServiceOptions { platform: s390, ..Default::default() }).unwrap();
    let err = images.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::NoMatchingPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/amd64, linux/arm64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_images_pull() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("hello", "docker")]]));
    layout.tag("v1", &desc);
    let reference = format!("{}/test/docker:v2s2", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::DockerV2s2, false, None);

    let images = service(&work.path().join("data"), RootfsMode::Auto);
    let record = images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    let inspect = images.inspect(&reference).unwrap();
    assert_eq!(inspect["Manifest"]["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(record.layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");
    let out = work.path().join("out");
    images.unpack(&reference, &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("hello")).unwrap(), "docker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_corrupted_in_the_registry_fails_the_pull_and_stores_nothing() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let image = ImageDef::new(vec![vec![Entry::file("big", &big)], vec![Entry::file("second", "2")]]);
    let desc = layout.add_image(&image);
    layout.tag("v1", &desc);
    let reference = format!("{}/test/corrupt:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, None);

    // Flip one byte in the middle of the first layer's blob in the registry's storage.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.dir.join("blobs/sha256").join(&desc["digest"].as_str().unwrap()[7..])).unwrap())
            .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = registry.blob_data_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let data = work.path().join("data");
    let images = service(&data, RootfsMode::Auto);
    let err = images.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::DigestMismatch { .. })), "{err}");
    assert!(err.to_string().contains(&layer), "the error names the layer: {err}");
    assert!(!data.join("blobs/sha256").join(&layer[7..]).exists(), "the corrupt blob was stored");
    assert_eq!(std::fs::read_dir(data.join("blobs/ingest")).unwrap().count(), 0, "temporary blob left behind");
    assert!(images.list().unwrap().is_empty(), "an image record was written");
    // The good second layer may be unpacked, but never the corrupt one (chain id = diff id).
    let corrupt_chain = runtime::image::Digest::parse(&sched_tests::oci_image::sha256(&layer_tar(&[Entry::file("big", &big)]))).unwrap();
    assert!(!images.snapshotter().has(&corrupt_chain), "the corrupt layer's snapshot was kept");
    assert_eq!(std::fs::read_dir(data.join("snapshots/tmp")).unwrap().count(), 0, "temporary snapshot left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_in_the_middle_resumes_with_range() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    // ~2 MB of poorly compressible content so the cut lands mid-stream.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..2_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect();
    let noise = String::from_utf8(noise).unwrap();
    let mut image = ImageDef::new(vec![vec![Entry::file("noise", &noise)]]);
    image.layers[0].1 = Compression::None;
    let desc = layout.add_image(&image);
    layout.tag("v1", &desc);
    push(&layout.dir, "v1", &format!("{}/test/resume:v1", registry.addr()), PushFormat::Oci, false, None);

    let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::CutFirstBlob);
    let reference = format!("{}/test/resume:v1", proxy.addr());
    let images = service(&work.path().join("data"), RootfsMode::Auto);
    let record = images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    assert!(proxy.cut_happened(), "the proxy never cut a blob");
    let ranges = proxy.ranges();
    assert_eq!(ranges.len(), 1, "one resumed request expected: {ranges:?}");
    // The proxy cut the (plain tar, ~2 MB) layer after half of it; we resume exactly there.
    assert_eq!(ranges[0], format!("bytes={}-", record.layers[0].size / 2));
    let out = work.path().join("out");
    images.unpack(&reference, &out).unwrap();
    assert!(std::fs::read_to_string(out.join("noise")).unwrap() == noise, "resumed content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_pulls_download_each_blob_once() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let layers: Vec<Vec<Entry>> = (0..4).map(|i| vec![Entry::file(&format!("f{i}"), &"x".repeat(100_000 * (i + 1)))]).collect();
    let desc = layout.add_image(&ImageDef::new(layers));
    layout.tag("v1", &desc);
    push(&layout.dir, "v1", &format!("{}/test/once:v1", registry.addr()), PushFormat::Oci, false, None);

    let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::Forward);
    let reference = format!("{}/test/once:v1", proxy.addr());
    let images = service(&work.path().join("data"), RootfsMode::Auto);
    let (a, b) = tokio::join!(images.pull(&reference, Arc::new(NoProgress)), images.pull(&reference, Arc::new(NoProgress)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.manifest_digest, b.manifest_digest);
    for layer in &a.layers {
        assert_eq!(proxy.count(&format!("/blobs/{}", layer.digest)), 1, "layer {} downloaded more than once", layer.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_inspect_remove_and_prune_keep_shared_content() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let base = vec![Entry::file("base", "shared")];
    let one = layout.add_image(&ImageDef::new(vec![base.clone(), vec![Entry::file("one", "1")]]));
    let two = layout.add_image(&ImageDef::new(vec![base, vec![Entry::file("two", "2")]]));
    layout.tag("one", &one);
    layout.tag("two", &two);
    let (r1, r2) = (format!("{}/test/one:1", registry.addr()), format!("{}/test/two:1", registry.addr()));
    push(&layout.dir, "one", &r1, PushFormat::Oci, false, None);
    push(&layout.dir, "two", &r2, PushFormat::Oci, false, None);

    let images = service(&work.path().join("data"), RootfsMode::Auto);
    let i1 = images.pull(&r1, Arc::new(NoProgress)).await.unwrap();
    let i2 = images.pull(&r2, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(i1.chain_ids[0], i2.chain_ids[0], "the base layer's snapshot is shared");
    assert_eq!(images.list().unwrap().len(), 2);
    assert_eq!(images.get(&i1.config_digest.hex()[..12]).unwrap().name, r1, "lookup by id prefix");
    assert_eq!(images.inspect(&r1).unwrap()["Config"]["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(images.snapshotter().list().unwrap().len(), 3);

    // In use: refused.
    let rootfs = images.prepare_rootfs(&r1, "user-of-one").unwrap();
    let _g = ReleaseOnDrop(&images, "user-of-one");
    let err = images.remove(&r1).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }) && err.to_string().contains("user-of-one"), "{err}");
    images.release_rootfs("user-of-one").unwrap();
    assert!(!rootfs.path.exists());

    let report = images.remove(&r1).unwrap();
    assert_eq!(report.snapshots, 1, "only image one's top snapshot goes");
    assert_eq!(report.blobs, 3, "manifest, config and top layer of image one go");
    assert!(images.snapshotter().has(&i2.chain_ids[0]) && images.snapshotter().has(&i2.chain_ids[1]));
    for blob in i2.blobs() {
        assert!(images.store().has_blob(blob), "{blob} of image two was pruned");
    }
    assert!(matches!(images.get(&r1).unwrap_err(), ImageError::NotFound(_)));
    assert_eq!(images.prune().unwrap(), Default::default(), "nothing left to prune");
    images.remove(&r2).unwrap();
    assert!(images.snapshotter().list().unwrap().is_empty());
    assert!(images.store().list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("f", "retried")]]));
    layout.tag("v1", &desc);
    push(&layout.dir, "v1", &format!("{}/test/retry:v1", registry.addr()), PushFormat::Oci, false, None);

    let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::FailFirst(3));
    let reference = format!("{}/test/retry:v1", proxy.addr());
    let images = service(&work.path().join("data"), RootfsMode::Auto);
    images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    assert!(proxy.count("/manifests/v1") >= 4, "three 503s, then the manifest");

    // More failures than attempts: the error says so.
    let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::FailFirst(100));
    let reference = format!("{}/test/retry:v1", proxy.addr());
    let err = service(&work.path().join("data2"), RootfsMode::Auto).pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::Status { status: 503, .. })), "{err}");
    assert_eq!(proxy.count("/manifests/v1"), 5, "default: five attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_altered_in_the_registry_is_refused() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("f", "x")]]));
    layout.tag("v1", &desc);
    let reference = format!("{}/test/altered:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, None);
    let digest = desc["digest"].as_str().unwrap();
    let path = registry.blob_data_path(digest);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"schemaVersion\":2", "\"schemaVersion\": 2", 1)).unwrap();

    let data = work.path().join("data");
    let images = service(&data, RootfsMode::Auto);
    for r in [reference.clone(), format!("{}/test/altered@{digest}", registry.addr())] {
        let err = images.pull(&r, Arc::new(NoProgress)).await.unwrap_err();
        assert!(
            matches!(err, ImageError::Registry(RegistryError::DigestMismatch { .. })) && err.to_string().contains(digest),
            "{r}: {err}"
        );
    }
    assert!(images.store().list().unwrap().is_empty(), "something was stored");
    assert!(images.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_more_layers_than_fit_in_the_mount_options_still_mounts() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let layers: Vec<Vec<Entry>> = (0..60).map(|i| vec![Entry::file(&format!("layer-{i:02}"), &i.to_string())]).collect();
    let desc = layout.add_image(&ImageDef::new(layers));
    layout.tag("v1", &desc);
    let reference = format!("{}/test/many:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, None);

    let images = service(&work.path().join("data"), RootfsMode::Overlay);
    images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    let rootfs = images.prepare_rootfs(&reference, "many").unwrap();
    let _g = ReleaseOnDrop(&images, "many");
    assert_eq!(rootfs.kind, RootfsKind::Overlay);
    let names = tree(&rootfs.path);
    assert_eq!(names.len(), 60, "{names:#?}");
    assert_eq!(std::fs::read_to_string(rootfs.path.join("layer-59")).unwrap(), "59");
}
