//! Test images built by hand: layer tars (including malicious ones, whose names a normal tar
//! writer refuses), OCI image layouts on disk (blobs, manifest, config, index with platforms),
//! and pushes to a registry with `skopeo copy` (OCI or Docker schema2 media types).
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// One tar entry. Paths are written verbatim (so `../x` and `/x` are possible).
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    /// A block device node (e.g. of the host's disk: what a hostile image would carry).
    BlockDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    Fifo {
        path: String,
        mode: u32,
    },
    /// A regular file carrying PAX xattrs.
    FileWithXattrs {
        path: String,
        content: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
    },
}

impl Entry {
    pub fn dir(path: &str) -> Self {
        Entry::Dir { path: path.into(), mode: 0o755, uid: 0, gid: 0 }
    }
    pub fn file(path: &str, content: &str) -> Self {
        Entry::File { path: path.into(), content: content.as_bytes().to_vec(), mode: 0o644, uid: 0, gid: 0 }
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::Symlink { path: path.into(), target: target.into() }
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Entry::Hardlink { path: path.into(), target: target.into() }
    }
    /// `.wh.NAME` in the directory of `path`: deletes `path` from lower layers.
    pub fn whiteout(path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        Entry::file(&p, "")
    }
    /// `DIR/.wh..wh..opq`: hides what lower layers put in `dir`.
    pub fn opaque(dir: &str) -> Self {
        Entry::file(&format!("{dir}/.wh..wh..opq"), "")
    }
}

fn raw_header(kind: tar::EntryType, path: &str, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    assert!(path.len() < 100, "test paths must fit a ustar name: {path}");
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// An uncompressed layer tar of `entries`, in order.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir { path, mode, uid, gid } => {
                let mut h = raw_header(tar::EntryType::Directory, path, *mode, *uid, *gid, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Entry::File { path, content, mode, uid, gid } => {
                let mut h = raw_header(tar::EntryType::Regular, path, *mode, *uid, *gid, content.len() as u64);
                h.set_cksum();
                b.append(&h, &content[..]).unwrap();
            }
            Entry::FileWithXattrs { path, content, xattrs } => {
                let pax: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), &v[..])).collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
                let mut h = raw_header(tar::EntryType::Regular, path, 0o644, 0, 0, content.len() as u64);
                h.set_cksum();
                b.append(&h, &content[..]).unwrap();
            }
            Entry::Symlink { path, target } | Entry::Hardlink { path, target } => {
                let kind = if matches!(e, Entry::Symlink { .. }) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                let mut h = raw_header(kind, path, 0o777, 0, 0, 0);
                h.set_link_name_literal(target.as_bytes()).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Entry::CharDev { path, major, minor, mode } | Entry::BlockDev { path, major, minor, mode } => {
                let kind = if matches!(e, Entry::CharDev { .. }) { tar::EntryType::Char } else { tar::EntryType::Block };
                let mut h = raw_header(kind, path, *mode, 0, 0, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Entry::Fifo { path, mode } => {
                let mut h = raw_header(tar::EntryType::Fifo, path, *mode, 0, 0, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    use std::io::Write;
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A content descriptor (JSON) of `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// An image to build: layers (uncompressed tars + compression) and the config's `config`.
pub struct ImageDef {
    pub layers: Vec<(Vec<u8>, Compression)>,
    pub architecture: String,
    pub process: Value,
}

impl ImageDef {
    pub fn new(layers: Vec<Vec<Entry>>) -> Self {
        Self {
            layers: layers.iter().map(|l| (layer_tar(l), Compression::Gzip)).collect(),
            architecture: "amd64".into(),
            process: json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}),
        }
    }
}

/// A "gzip bomb": a harmless first layer, then a layer of one file of `zeros` zero bytes, which
/// gzip shrinks over 200-fold (64 MiB -> about 290 KiB at the fastest level the fixtures use).
pub fn gzip_bomb(zeros: usize) -> ImageDef {
    use std::io::Read as _;
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(zeros as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "bomb", std::io::repeat(0).take(zeros as u64)).unwrap();
    ImageDef::new(vec![vec![Entry::file("ok", "fine")], vec![]]).with_layer(1, builder.into_inner().unwrap())
}

impl ImageDef {
    /// Replaces layer `index` with the (uncompressed) tar `tar`, gzip-compressed.
    pub fn with_layer(mut self, index: usize, tar: Vec<u8>) -> Self {
        self.layers[index] = (tar, Compression::Gzip);
        self
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
pub struct OciLayout {
    pub dir: PathBuf,
    index: Vec<Value>,
}

impl OciLayout {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Self { dir: dir.to_path_buf(), index: Vec::new() };
        layout.write_index();
        layout
    }

    pub fn put_blob(&self, data: &[u8]) -> String {
        let d = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// Writes layers, config and manifest; returns the manifest descriptor.
    pub fn add_image(&self, image: &ImageDef) -> Value {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, c) in &image.layers {
            let blob = compress(tar, *c);
            self.put_blob(&blob);
            let mt = match c {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            layer_descs.push(descriptor(mt, &blob));
            diff_ids.push(sha256(tar));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": image.architecture, "os": "linux",
            "config": image.process,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        self.put_blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layer_descs,
        }))
        .unwrap();
        self.put_blob(&manifest);
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest)
    }

    /// Adds an index of `(manifest descriptor, architecture)`; returns its descriptor.
    pub fn add_index(&self, manifests: &[(Value, &str)]) -> Value {
        let list: Vec<Value> = manifests
            .iter()
            .map(|(d, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list,
        }))
        .unwrap();
        self.put_blob(&index);
        descriptor("application/vnd.oci.image.index.v1+json", &index)
    }

    /// Names `desc` as `tag` in index.json (what `oci:DIR:TAG` refers to).
    pub fn tag(&mut self, tag: &str, desc: &Value) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// The media types a push produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    Oci,
    DockerV2s2,
}

/// `skopeo copy oci:DIR:TAG docker://DEST` (plain HTTP); `all` pushes an index with its images.
/// OCI pushes keep every blob byte for byte (uncompressed and zstd layers stay so).
pub fn push(layout: &Path, tag: &str, dest: &str, format: PushFormat, all: bool, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
    match format {
        PushFormat::DockerV2s2 => {
            cmd.args(["--format", "v2s2"]);
        }
        // Without this skopeo gzips uncompressed layers on the way: keep blobs as built.
        PushFormat::Oci => {
            cmd.arg("--preserve-digests");
        }
    }
    if all {
        cmd.arg("--all");
    }
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{dest}"));
    let out = cmd.output().expect("skopeo runs (scripts/install-test-deps.sh installs it)");
    assert!(out.status.success(), "skopeo copy to {dest} failed: {}", String::from_utf8_lossy(&out.stderr));
}
