//! A runnable busybox image in a registry: Debian's static busybox with every applet linked,
//! plus extra files (e.g. a CGI script), built as one OCI layer and pushed with skopeo.

use std::path::Path;

use crate::oci_image::{Compression, Entry, ImageDef, OciLayout, PushFormat, push};

/// The applets the tests use (all link to /bin/busybox).
const APPLETS: [&str; 27] = [
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "hostname", "ps", "grep", "wc", "httpd", "nc", "wget", "env", "kill",
    "mkdir", "touch", "tr", "head", "seq", "yes", "date", "test", "rm", "ln",
];

/// Builds a busybox image with `extra` entries in a layout under `work` and pushes it to
/// `registry_addr` as `repo:tag`. Returns the reference to pull.
pub fn push_busybox(work: &Path, registry_addr: &str, repo_tag: &str, extra: Vec<Entry>, process: serde_json::Value) -> String {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/install-test-deps.sh)");
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::File { path: "bin/busybox".into(), content: busybox, mode: 0o755, uid: 0, gid: 0 },
        Entry::dir("etc"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        Entry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        Entry::Dir { path: "tmp".into(), mode: 0o1777, uid: 0, gid: 0 },
    ];
    entries.extend(APPLETS.iter().map(|a| Entry::symlink(&format!("bin/{a}"), "busybox")));
    entries.extend(extra);
    let mut image = ImageDef::new(vec![entries]);
    image.layers[0].1 = Compression::Gzip;
    image.process = process;
    let layout_dir = work.join("busybox-layout");
    let mut layout = OciLayout::create(&layout_dir);
    let desc = layout.add_image(&image);
    let tag = repo_tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    layout.tag(tag, &desc);
    let reference = format!("{registry_addr}/{repo_tag}");
    push(&layout_dir, tag, &reference, PushFormat::Oci, false, None);
    reference
}
