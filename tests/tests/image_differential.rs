//! Differential test: the rootfs `sched-runtime image unpack` writes equals the one `umoci
//! unpack` writes for the same image pulled from the same registry (by `skopeo copy`): same
//! paths, types, modes, owners, contents, symlink targets, device numbers, hard links and
//! user xattrs.
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use runtime::image::{ImageService, ImageServiceOptions, NoProgress};
use sched_tests::oci_image::{Compression, Entry, ImageDef, OciLayout, PushFormat, push};
use sched_tests::registry::Registry;

fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let mut xattrs: Vec<String> = Vec::new();
            if !ft.is_symlink() {
                let mut names = vec![0u8; 4096];
                let n = list_xattrs(&p, &mut names);
                for name in names[..n].split(|b| *b == 0).filter(|s| s.starts_with(b"user.")) {
                    xattrs.push(String::from_utf8_lossy(name).into_owned());
                }
                xattrs.sort();
            }
            let common = format!("mode={:o} owner={}:{} xattrs={xattrs:?}", m.mode() & 0o7777, m.uid(), m.gid());
            let what = if ft.is_symlink() {
                format!("symlink -> {} owner={}:{}", std::fs::read_link(&p).unwrap().display(), m.uid(), m.gid())
            } else if ft.is_dir() {
                walk(root, &p, out);
                format!("dir {common}")
            } else if ft.is_file() {
                format!("file {common} nlink={} content={:?}", m.nlink(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()))
            } else {
                format!("special type={:o} rdev={} {common}", m.mode() & 0o170000, m.rdev())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

// The one call nix does not wrap; a test helper, so allowed here rather than in runtime's sys.
#[allow(unsafe_code)]
fn list_xattrs(path: &Path, buf: &mut [u8]) -> usize {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { 0 } else { n as usize }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn image() -> ImageDef {
    let l1 = vec![
        Entry::dir("etc"),
        Entry::file("etc/hostname", "box\n"),
        Entry::file("etc/replaced-by-dir", "file"),
        Entry::dir("var"),
        Entry::Dir { path: "var/tmp".into(), mode: 0o1777, uid: 0, gid: 0 },
        Entry::Dir { path: "home".into(), mode: 0o755, uid: 0, gid: 0 },
        Entry::Dir { path: "home/app".into(), mode: 0o700, uid: 1000, gid: 1000 },
        Entry::File { path: "home/app/key".into(), content: b"k".to_vec(), mode: 0o600, uid: 1000, gid: 1000 },
        Entry::dir("bin"),
        Entry::File { path: "bin/tool".into(), content: b"#!/bin/sh\n".to_vec(), mode: 0o755, uid: 0, gid: 0 },
        Entry::File { path: "bin/suid".into(), content: b"s".to_vec(), mode: 0o4755, uid: 0, gid: 0 },
        Entry::File { path: "bin/sgid".into(), content: b"g".to_vec(), mode: 0o2711, uid: 0, gid: 50 },
        Entry::hardlink("bin/tool-link", "bin/tool"),
        Entry::symlink("bin/sh", "tool"),
        Entry::symlink("abs", "/etc/hostname"),
        Entry::symlink("dangling", "/nowhere/at/all"),
        Entry::dir("dev"),
        Entry::CharDev { path: "dev/null".into(), major: 1, minor: 3, mode: 0o666 },
        Entry::Fifo { path: "dev/fifo".into(), mode: 0o600 },
        Entry::FileWithXattrs { path: "etc/tagged".into(), content: b"t".to_vec(), xattrs: vec![("user.sched".into(), b"yes".to_vec())] },
        Entry::dir("opaque"),
        Entry::file("opaque/lower", "lower"),
        Entry::dir("gone"),
        Entry::file("gone/file", "gone"),
        Entry::dir("dir-replaced-by-file"),
        Entry::file("dir-replaced-by-file/x", "x"),
    ];
    let l2 = vec![
        Entry::whiteout("gone"),
        Entry::whiteout("etc/hostname"),
        Entry::dir("opaque"),
        Entry::opaque("opaque"),
        Entry::file("opaque/upper", "upper"),
        Entry::dir("etc/replaced-by-dir"),
        Entry::file("etc/replaced-by-dir/inner", "inner"),
        Entry::file("dir-replaced-by-file", "now a file"),
        Entry::File { path: "bin/tool".into(), content: b"#!/bin/sh\necho v2\n".to_vec(), mode: 0o750, uid: 0, gid: 0 },
    ];
    let l3 = vec![
        Entry::file("etc/hostname", "box v3\n"),
        Entry::Dir { path: "home/app".into(), mode: 0o750, uid: 1000, gid: 100 },
        Entry::hardlink("bin/sgid-link", "bin/sgid"), // to a file of layer 1
    ];
    let mut def = ImageDef::new(vec![l1, l2, l3]);
    def.layers[1].1 = Compression::None; // umoci 0.4 reads gzip and plain tar, not zstd
    def
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacked_rootfs_equals_umoci_unpack() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(&work.path().join("layout"));
    let desc = layout.add_image(&image());
    layout.tag("v1", &desc);
    let reference = format!("{}/diff/img:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, None);

    // sched
    let images = ImageService::open(&work.path().join("data"), ImageServiceOptions::default()).unwrap();
    images.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    let ours = work.path().join("ours");
    images.unpack(&reference, &ours).unwrap();

    // skopeo + umoci
    let copied = work.path().join("copied");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", copied.display())));
    let bundle = work.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", copied.display())).arg(&bundle));

    let (a, b) = (describe(&ours), describe(&bundle.join("rootfs")));
    let only_ours: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).collect();
    let only_umoci: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).collect();
    assert!(only_ours.is_empty() && only_umoci.is_empty(), "sched differs from umoci:\n sched: {only_ours:#?}\n umoci: {only_umoci:#?}");
    // And the comparison saw what it should.
    assert!(a["dev/null"].contains("rdev=259"), "{}", a["dev/null"]);
    assert!(a["etc/tagged"].contains("user.sched"), "{}", a["etc/tagged"]);
    assert!(!a.contains_key("gone") && a["opaque/upper"].contains("upper") && !a.contains_key("opaque/lower"));
    assert!(a.len() > 20, "{a:#?}");
}
