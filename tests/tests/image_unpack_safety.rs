//! Malicious layers, one per escape the unpacker must refuse: `..`, absolute paths, a symlink
//! (in the same layer or a lower one) that would redirect a later entry, hard links pointing
//! outside or through a symlink, and whiteouts/opaque markers through a symlink. Each is
//! refused with an error naming the entry, and nothing outside the layer directory is created,
//! changed or deleted: checked both through a real pull (overlay snapshots) and through
//! `image unpack` (layers applied in one directory).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::image::unpack::{WhiteoutMode, unpack_layer};
use runtime::image::{ImageError, ImageService, ImageServiceOptions, NoProgress};
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, layer_tar, push};
use sched_tests::registry::Registry;

struct Case {
    name: &'static str,
    layers: Vec<Vec<Entry>>,
    /// The entry the error must name.
    entry: &'static str,
}

/// The escapes. `outside` is a directory outside every layer dir holding `victim` (content
/// "victim"); `abs` is an absolute path that must never be created.
fn cases(outside: &Path, abs: &Path) -> Vec<Case> {
    let out = outside.display().to_string();
    let ok = Entry::file("ok", "fine");
    vec![
        Case { name: "dot-dot", layers: vec![vec![ok.clone(), Entry::file("../escape", "x")]], entry: "../escape" },
        Case { name: "dot-dot-inside", layers: vec![vec![Entry::file("a/../../escape", "x")]], entry: "a/../../escape" },
        Case { name: "absolute", layers: vec![vec![Entry::file(&abs.display().to_string(), "x")]], entry: "/tmp/" },
        Case {
            name: "symlink-same-layer",
            layers: vec![vec![Entry::symlink("evil", &out), Entry::file("evil/pwned", "x")]],
            entry: "evil/pwned",
        },
        Case {
            name: "relative-symlink-same-layer",
            layers: vec![vec![Entry::symlink("evil", &format!("../../../../../../..{out}")), Entry::file("evil/pwned", "x")]],
            entry: "evil/pwned",
        },
        Case {
            name: "symlink-lower-layer",
            layers: vec![vec![Entry::symlink("evil", &out)], vec![Entry::file("evil/pwned", "x")]],
            entry: "evil",
        },
        Case {
            name: "symlink-lower-layer-deep",
            layers: vec![vec![Entry::dir("d"), Entry::symlink("d/evil", &out)], vec![Entry::file("d/evil/sub/pwned", "x")]],
            entry: "d/evil",
        },
        Case {
            name: "hardlink-dot-dot",
            layers: vec![vec![Entry::hardlink("h", &format!("../../../../../../..{out}/victim"))]],
            entry: "h",
        },
        Case { name: "hardlink-absolute", layers: vec![vec![Entry::hardlink("h", &format!("{out}/victim"))]], entry: "h" },
        Case {
            name: "hardlink-through-symlink",
            layers: vec![vec![Entry::symlink("evil", &out), Entry::hardlink("h", "evil/victim")]],
            entry: "h",
        },
        Case {
            name: "hardlink-through-lower-symlink",
            layers: vec![vec![Entry::symlink("evil", &out)], vec![Entry::hardlink("h", "evil/victim")]],
            entry: "h",
        },
        Case {
            name: "whiteout-through-symlink",
            layers: vec![vec![Entry::symlink("evil", &out)], vec![Entry::whiteout("evil/victim")]],
            entry: "evil",
        },
        Case {
            name: "opaque-through-symlink",
            layers: vec![vec![Entry::symlink("evil", &out)], vec![Entry::opaque("evil")]],
            entry: "evil",
        },
    ]
}

/// `outside` must still hold exactly `victim` with its content and one link; `abs` must not exist.
fn assert_outside_untouched(case: &str, outside: &Path, abs: &Path, work: &Path) {
    let names: Vec<String> = std::fs::read_dir(outside).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["victim".to_string()], "{case}: something was written to {}", outside.display());
    assert_eq!(std::fs::read_to_string(outside.join("victim")).unwrap(), "victim", "{case}: victim changed");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(outside.join("victim")).unwrap().nlink(), 1, "{case}: victim got a hard link");
    assert!(!abs.exists(), "{case}: {} was created", abs.display());
    // No `escape` file anywhere under the work dir (where a `..` would land).
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if e.file_name() == name {
                return Some(p);
            }
            if e.file_type().ok()?.is_dir()
                && let Some(f) = find(&p, name)
            {
                return Some(f);
            }
        }
        None
    }
    for name in ["escape", "pwned"] {
        assert_eq!(find(work, name), None, "{case}: {name} was written");
    }
}

fn setup() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let work = tempfile::Builder::new().prefix("sched-unsafe-work-").tempdir().unwrap();
    let outside = tempfile::Builder::new().prefix("sched-unsafe-outside-").tempdir().unwrap();
    std::fs::write(outside.path().join("victim"), "victim").unwrap();
    let abs = PathBuf::from(format!("/tmp/sched-abs-escape-{}", std::process::id()));
    (work, outside, abs)
}

#[test]
fn malicious_layers_are_refused_when_applied_in_one_directory() {
    let (work, outside, abs) = setup();
    for case in cases(outside.path(), &abs) {
        let dir = work.path().join(case.name);
        std::fs::create_dir(&dir).unwrap();
        let mut result = Ok(());
        for (i, layer) in case.layers.iter().enumerate() {
            let tar = layer_tar(layer);
            if let Err(e) = unpack_layer(&tar[..], &dir, WhiteoutMode::Apply, &format!("layer{i}")) {
                result = Err(e);
                break;
            }
        }
        let err = result.expect_err(case.name);
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{}: {err}", case.name);
        assert!(err.to_string().contains(case.entry), "{}: the error must name {:?}: {err}", case.name, case.entry);
        assert_outside_untouched(case.name, outside.path(), &abs, work.path());
    }
}

#[test]
fn malicious_layers_are_refused_as_overlay_layers_too() {
    // One layer per directory: what a lower symlink does is checked at pull time; here only
    // the single-layer escapes apply.
    let (work, outside, abs) = setup();
    for case in cases(outside.path(), &abs).into_iter().filter(|c| c.layers.len() == 1) {
        let dir = work.path().join(case.name);
        std::fs::create_dir(&dir).unwrap();
        let err = unpack_layer(&layer_tar(&case.layers[0])[..], &dir, WhiteoutMode::Overlay, "layer").expect_err(case.name);
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{}: {err}", case.name);
        assert!(err.to_string().contains(case.entry), "{}: {err}", case.name);
        assert_outside_untouched(case.name, outside.path(), &abs, work.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_images_fail_to_pull_and_leave_no_image_or_snapshot() {
    let registry = Registry::start();
    let (work, outside, abs) = setup();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let all = cases(outside.path(), &abs);
    for case in &all {
        let desc = layout.add_image(&ImageDef::new(case.layers.clone()));
        layout.tag(case.name, &desc);
        push(&layout.dir, case.name, &format!("{}/evil/{}:1", registry.addr(), case.name), PushFormat::Oci, false, None);
    }
    let data = work.path().join("data");
    let images = ImageService::open(&data, ImageServiceOptions::default()).unwrap();
    for case in &all {
        let err = images.pull(&format!("{}/evil/{}:1", registry.addr(), case.name), Arc::new(NoProgress)).await.expect_err(case.name);
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{}: {err}", case.name);
        assert!(err.to_string().contains(case.entry), "{}: the error must name {:?}: {err}", case.name, case.entry);
        assert_outside_untouched(case.name, outside.path(), &abs, work.path());
        assert!(images.list().unwrap().is_empty(), "{}: an image record was written", case.name);
        assert_eq!(std::fs::read_dir(data.join("snapshots/tmp")).unwrap().count(), 0, "{}: temp snapshot left", case.name);
    }
    // Only harmless bottom layers (a lone symlink) may have become snapshots.
    for chain in images.snapshotter().list().unwrap() {
        let fs = images.snapshotter().fs_dir(&chain);
        let names: Vec<String> = std::fs::read_dir(&fs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| n == "evil" || n == "d" || n == "ok"), "unexpected snapshot content {names:?}");
    }
}
