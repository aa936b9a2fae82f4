//! Image records: what `image pull` resolved a reference to (manifest, config, layers, chain
//! ids), one JSON file per reference under `<data dir>/images/`, written atomically. They are
//! the roots of garbage collection: blobs and snapshots no record (and no container rootfs)
//! references can be pruned.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::digest::Digest;
use super::error::{IoContext, Result};
use super::manifest::{Descriptor, Platform};
use super::store::unique_path;

/// One pulled image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The normalised reference it was pulled as (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The digest of the manifest that was pulled (for an index: the platform's manifest).
    pub manifest_digest: Digest,
    /// The index (manifest list) the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub platform: Platform,
    /// Compressed layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Snapshot keys, bottom first.
    pub chain_ids: Vec<Digest>,
    /// Seconds since the epoch.
    pub pulled_at: u64,
}

impl ImageRecord {
    /// Total compressed size of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// The image id docker shows: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// Every blob this image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.config_digest]
            .into_iter()
            .chain(self.index_digest.as_ref())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// The records under `<data dir>/images/`.
pub struct ImageRecords {
    dir: PathBuf,
}

impl ImageRecords {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("images");
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", Digest::of(name.as_bytes()).hex()))
    }

    pub fn save(&self, record: &ImageRecord) -> Result<()> {
        let path = self.path(&record.name);
        let tmp = unique_path(&self.dir, ".tmp");
        let json = serde_json::to_vec_pretty(record).expect("records serialise");
        std::fs::write(&tmp, json).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)
    }

    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| RegistryError::InvalidConfig { what: path.display().to_string(), reason: e.to_string() }.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    pub fn remove(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).at(path),
        }
    }

    /// Every record, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).at(&self.dir)? {
            let e = e.at(&self.dir)?;
            let name = e.file_name();
            if !name.to_string_lossy().ends_with(".json") {
                continue;
            }
            let bytes = std::fs::read(e.path()).at(e.path())?;
            match serde_json::from_slice::<ImageRecord>(&bytes) {
                Ok(r) => out.push(r),
                Err(err) => tracing::warn!(path = %e.path().display(), %err, "skipping an unreadable image record"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
