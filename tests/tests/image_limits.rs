//! Sizes an image may not exceed, pulled from a real registry (Debian's docker-registry on
//! loopback): a "gzip bomb" layer (a small blob that expands past the image's cap) fails the
//! pull with an error naming the limit and leaves no snapshot, blob or record behind (through
//! the library and `sched-runtime image pull --max-image-bytes`), while the
//! same image pulls under a cap it fits; layers whose compressed sizes already exceed the cap
//! are refused before any download; a manifest over 4 MiB (which the registry will not store,
//! so a proxy in front of it serves one) is refused, with or without a `Content-Length`, after
//! reading no more than the limit; a bearer-token answer over 1 MiB is refused.
use std::path::Path;
use std::sync::Arc;

use runtime::image::{CredentialStore, Credentials, ImageError, ImageService, ImageServiceOptions, NoProgress, RegistryError};
use sched_tests::bundle::runtime_binary;
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, gzip_bomb, push};
use sched_tests::registry::Registry;
use sched_tests::registry_proxy::{ProxyMode, RegistryProxy};
use serde_json::json;

/// Files and directories under `dir` (recursively), to prove nothing was left.
fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| 1 + if e.file_type().is_ok_and(|t| t.is_dir()) { count_entries(&e.path()) } else { 0 }).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_fails_the_pull_past_the_cap_and_leaves_nothing() {
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-limits-bomb-").tempdir().unwrap();
    // 64 MiB of zeros gzip to about 290 KiB: a 230-fold expansion.
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&gzip_bomb(64 << 20));
    layout.tag("bomb", &desc);
    let image = format!("{}/limits/bomb:1", registry.addr());
    push(&layout.dir, "bomb", &image, PushFormat::Oci, false, None);

    let data = work.path().join("data");
    let options = ImageServiceOptions { max_image_bytes: 16 << 20, ..Default::default() };
    let images = ImageService::open(&data, options).unwrap();
    let err = images.pull(&image, Arc::new(NoProgress)).await.expect_err("a 64 MiB layer under a 16 MiB cap");
    assert!(matches!(err, ImageError::Registry(RegistryError::TooLarge { .. })), "{err}");
    let text = err.to_string();
    assert!(text.contains(&image) && text.contains("16 MiB limit"), "the error names the image and the limit: {text}");
    assert!(images.list().unwrap().is_empty(), "no image record");
    assert!(images.snapshotter().list().unwrap().is_empty(), "no snapshot, not even the harmless first layer's");
    assert_eq!(count_entries(&data.join("snapshots/tmp")), 0, "no temporary snapshot");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.dir.join("blobs/sha256").join(&desc["digest"].as_str().unwrap()[7..])).unwrap())
            .unwrap();
    let bomb = &manifest["layers"][1];
    let bomb_digest = bomb["digest"].as_str().unwrap();
    assert!(bomb["size"].as_u64().unwrap() < 1 << 20, "the bomb is small: {bomb}");
    let kept: Vec<String> = images.store().list().unwrap().iter().map(ToString::to_string).collect();
    assert!(!kept.iter().any(|d| d == bomb_digest), "the bomb's blob is not kept: {kept:?}");
    assert!(kept.len() <= 1, "at most the harmless first layer's verified blob (prune takes it): {kept:?}");
    assert_eq!(count_entries(&data.join("blobs/ingest")), 0, "no partial download");

    // `sched-runtime image pull` takes the cap as a flag and says the same.
    let cli_data = work.path().join("data-cli");
    let out = std::process::Command::new(runtime_binary())
        .arg("--data-dir")
        .arg(&cli_data)
        .args(["image", "pull", &image, "--max-image-bytes", "16MiB"])
        .output()
        .expect("run sched-runtime");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("16 MiB limit"), "sched-runtime image pull: {out:?}");
    assert_eq!(count_entries(&cli_data.join("snapshots")), 1, "only the empty snapshots/tmp: {stderr}");

    // The same image fits a larger cap: the limit, not the image, failed the first pull.
    let roomy =
        ImageService::open(&work.path().join("data-roomy"), ImageServiceOptions { max_image_bytes: 80 << 20, ..Default::default() })
            .unwrap();
    let record = roomy.pull(&image, Arc::new(NoProgress)).await.expect("64 MiB under an 80 MiB cap");
    assert_eq!(record.layers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_whose_compressed_sizes_exceed_the_cap_are_refused_before_download() {
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-limits-big-").tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let noise: String = (0..(2 << 20)).map(|i: u32| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26)).collect();
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("noise", &noise)]]));
    layout.tag("big", &desc);
    let image = format!("{}/limits/big:1", registry.addr());
    push(&layout.dir, "big", &image, PushFormat::Oci, false, None);
    let data = work.path().join("data");
    let images = ImageService::open(&data, ImageServiceOptions { max_image_bytes: 64 << 10, ..Default::default() }).unwrap();
    let err = images.pull(&image, Arc::new(NoProgress)).await.expect_err("over 1 MiB compressed under a 64 KiB cap");
    assert!(matches!(err, ImageError::Registry(RegistryError::TooLarge { .. })) && err.to_string().contains("compressed"), "{err}");
    assert!(images.list().unwrap().is_empty() && images.store().list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_over_4_mib_is_refused_with_or_without_a_content_length() {
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-limits-manifest-").tempdir().unwrap();
    // The registry itself refuses to store a manifest over 4 MiB (distribution's own limit)...
    let body = serde_json::to_vec(&json!({"schemaVersion": 2, "annotations": {"p": "x".repeat(5 << 20)}})).unwrap();
    let (status, answer) = registry.put_manifest("limits/manifest", "big", "application/vnd.oci.image.manifest.v1+json", &body);
    assert_eq!(status, 400, "distribution refuses a 5 MiB manifest: {answer}");
    // ... so a registry that serves one is hostile: a proxy in front of the real one plays it.
    let images = ImageService::open(&work.path().join("data"), ImageServiceOptions::default()).unwrap();
    for announce_length in [true, false] {
        let size = 256 << 20;
        let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::OversizedManifest { size, announce_length });
        let image = format!("{}/limits/manifest:big", proxy.addr());
        let err = images.pull(&image, Arc::new(NoProgress)).await.expect_err("a 256 MiB manifest");
        assert!(matches!(err, ImageError::Registry(RegistryError::TooLarge { .. })), "{err}");
        let text = err.to_string();
        assert!(text.contains("manifest from http://") && text.contains("/manifests/big") && text.contains("4 MiB limit"), "{text}");
        // The client stopped reading at the limit: what the proxy got out is the limit plus
        // the sockets' buffers, not the whole body.
        let sent = proxy.manifest_bytes_sent();
        eprintln!("announce_length={announce_length}: the proxy got {sent} of {size} bytes out before the client hung up");
        assert!(sent < 64 << 20, "announce_length={announce_length}: the client took in {sent} of {size} bytes");
    }
    assert!(images.list().unwrap().is_empty() && images.store().list().unwrap().is_empty(), "nothing kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answer_over_1_mib_is_refused() {
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("sched-limits-token-").tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("ok", "fine")]]));
    layout.tag("v1", &desc);
    push(&layout.dir, "v1", &format!("{}/limits/token:v1", registry.addr()), PushFormat::Oci, false, None);
    // The proxy's token server answers `{"token":"<token>",...}`: a 2 MiB token.
    let token = "t".repeat(2 << 20);
    let proxy = RegistryProxy::start(&registry.addr(), ProxyMode::Bearer { user: "bob".into(), password: "pw".into(), token });
    let mut credentials = CredentialStore::default();
    credentials.insert(&proxy.addr(), Credentials::new("bob", "pw"));
    let mut options = ImageServiceOptions::default();
    options.client.credentials = credentials;
    let images = ImageService::open(&work.path().join("data"), options).unwrap();
    let err = images.pull(&format!("{}/limits/token:v1", proxy.addr()), Arc::new(NoProgress)).await.expect_err("a 2 MiB token");
    assert!(matches!(err, ImageError::Registry(RegistryError::TooLarge { .. })), "{err}");
    assert!(err.to_string().contains("token server's answer") && err.to_string().contains("1 MiB limit"), "{err}");
}
