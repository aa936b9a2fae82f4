//! [`ImageService`]: the front door of the image module, used by `sched-runtime image ...`
//! and the agent. It owns a data dir (default `/var/lib/sched`) with `blobs/`, `images/`,
//! `snapshots/` and `rootfs/`, and turns an image reference into a pulled image, a container
//! rootfs, and an OCI spec.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use oci_spec::runtime::Spec;
use tracing::{info, warn};

use super::RegistryError;
use super::budget::DEFAULT_MAX_IMAGE_BYTES;
use super::client::{ClientOptions, RegistryClient};
use super::config_to_spec::{ProcessOverrides, config_to_spec};
use super::digest::Digest;
use super::error::{ImageError, IoContext, Result};
use super::manifest::{ImageConfig, Platform};
use super::pull::{PullProgress, Puller};
use super::records::{ImageRecord, ImageRecords};
use super::reference::Reference;
use super::snapshot::{RootfsKind, RootfsRecord, Snapshotter};
use super::store::ContentStore;
use super::unpack::{WhiteoutMode, decompress, unpack_layer};
use crate::idmap::Mappings;

/// The default data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sched";

/// How container rootfs directories are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlay, falling back to copy when the mount fails.
    #[default]
    Auto,
    Overlay,
    Copy,
}

/// Options of an [`ImageService`].
#[derive(Debug, Clone)]
pub struct ImageServiceOptions {
    pub client: ClientOptions,
    /// The platform chosen from indexes (default: this host's).
    pub platform: Platform,
    /// Layers downloaded and unpacked at the same time.
    pub max_parallel_layers: usize,
    pub rootfs_mode: RootfsMode,
    /// The most bytes an image's layers may unpack to (a pull past it fails and leaves
    /// nothing); [`DEFAULT_MAX_IMAGE_BYTES`] by default.
    pub max_image_bytes: u64,
}

impl Default for ImageServiceOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            platform: Platform::host(),
            max_parallel_layers: 6,
            rootfs_mode: RootfsMode::Auto,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

/// A prepared container rootfs.
#[derive(Debug, Clone)]
pub struct PreparedRootfs {
    /// What the container's `root.path` should be.
    pub path: PathBuf,
    pub kind: RootfsKind,
    pub image: ImageRecord,
    pub config: ImageConfig,
}

/// What [`ImageService::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub snapshots: usize,
    pub bytes: u64,
}

/// Images in one data dir.
pub struct ImageService {
    data_dir: PathBuf,
    client: RegistryClient,
    store: Arc<ContentStore>,
    records: ImageRecords,
    snapshots: Snapshotter,
    options: ImageServiceOptions,
    /// Start times of the pulls in flight (by id): prune spares what they may be writing.
    pulls_in_flight: Mutex<Vec<(u64, SystemTime)>>,
}

/// Registers a pull as in flight until dropped.
struct PullInFlight<'a> {
    list: &'a Mutex<Vec<(u64, SystemTime)>>,
    id: u64,
}

impl<'a> PullInFlight<'a> {
    fn new(list: &'a Mutex<Vec<(u64, SystemTime)>>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        list.lock().expect("poisoned").push((id, SystemTime::now()));
        Self { list, id }
    }
}

impl Drop for PullInFlight<'_> {
    fn drop(&mut self) {
        self.list.lock().expect("poisoned").retain(|(id, _)| *id != self.id);
    }
}

impl ImageService {
    /// Opens (creating) the data dir.
    pub fn open(data_dir: &Path, options: ImageServiceOptions) -> Result<Self> {
        std::fs::create_dir_all(data_dir).at(data_dir)?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            client: RegistryClient::new(options.client.clone())?,
            store: Arc::new(ContentStore::open(data_dir)?),
            records: ImageRecords::open(data_dir)?,
            snapshots: Snapshotter::open(data_dir)?,
            options,
            pulls_in_flight: Mutex::default(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// Pulls `reference` (verifying every digest) and records it.
    pub async fn pull(&self, reference: &str, progress: Arc<dyn PullProgress>) -> Result<ImageRecord> {
        let reference = Reference::parse(reference)?;
        let _in_flight = PullInFlight::new(&self.pulls_in_flight);
        let puller = Puller {
            client: &self.client,
            store: &self.store,
            snapshots: &self.snapshots,
            platform: &self.options.platform,
            max_parallel_layers: self.options.max_parallel_layers,
            max_image_bytes: self.options.max_image_bytes,
            progress,
        };
        let (record, blobs) = puller.pull(&reference).await?;
        for (digest, bytes) in blobs {
            self.store.write_blob(&digest, &bytes)?;
        }
        self.records.save(&record)?;
        Ok(record)
    }

    /// Every pulled image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.records.list()
    }

    /// Finds a pulled image by reference (`busybox`, `host/repo:tag`) or by id (the config
    /// digest, `sha256:...` or a hex prefix of at least 12 digits).
    pub fn get(&self, reference_or_id: &str) -> Result<ImageRecord> {
        if let Ok(r) = Reference::parse(reference_or_id)
            && let Some(rec) = self.records.get(&r.to_string())?
        {
            return Ok(rec);
        }
        let hex = reference_or_id.strip_prefix("sha256:").unwrap_or(reference_or_id);
        if hex.len() >= 12
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Some(rec) = self.records.list()?.into_iter().find(|r| r.config_digest.hex().starts_with(hex))
        {
            return Ok(rec);
        }
        Err(ImageError::NotFound(reference_or_id.to_string()))
    }

    /// The image config of a pulled image.
    pub fn config(&self, record: &ImageRecord) -> Result<ImageConfig> {
        Ok(ImageConfig::parse(&self.store.read_blob(&record.config_digest)?, &record.config_digest.to_string())?)
    }

    /// Record, manifest and config of a pulled image, as one JSON document.
    pub fn inspect(&self, reference_or_id: &str) -> Result<serde_json::Value> {
        let record = self.get(reference_or_id)?;
        let parse = |d: &Digest| -> Result<serde_json::Value> {
            serde_json::from_slice(&self.store.read_blob(d)?)
                .map_err(|e| RegistryError::InvalidConfig { what: d.to_string(), reason: e.to_string() }.into())
        };
        Ok(serde_json::json!({
            "Id": record.config_digest,
            "Name": record.name,
            "Size": record.size(),
            "Record": record,
            "Manifest": parse(&record.manifest_digest)?,
            "Config": parse(&record.config_digest)?,
        }))
    }

    /// Forgets an image, then prunes what nothing references any more. Refused while a
    /// container rootfs uses it.
    pub fn remove(&self, reference_or_id: &str) -> Result<PruneReport> {
        let record = self.get(reference_or_id)?;
        let users: Vec<String> =
            self.snapshots.rootfs_records()?.into_iter().filter(|r| r.image == record.name).map(|r| r.container_id).collect();
        if !users.is_empty() {
            return Err(ImageError::InUse { what: format!("image {}", record.name), users: users.join(", ") });
        }
        self.records.remove(&record.name)?;
        info!(image = %record.name, "removed");
        self.prune()
    }

    /// Removes blobs and snapshots that no image and no container rootfs references, and
    /// leftovers of interrupted pulls. While pulls of this service are in flight, what changed
    /// since the oldest of them started (and every temporary file) is spared: it may be theirs.
    /// (Pulls in other processes are not seen: do not prune a data dir an agent is pulling into.)
    pub fn prune(&self) -> Result<PruneReport> {
        // Timestamps can be coarse: spare a little more than strictly needed.
        let spare_since =
            self.pulls_in_flight.lock().expect("poisoned").iter().map(|(_, t)| *t).min().map(|t| t - std::time::Duration::from_secs(2));
        let fresh =
            |path: &Path| spare_since.is_some_and(|since| std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|m| m >= since));
        let records = self.records.list()?;
        let rootfs = self.snapshots.rootfs_records()?;
        let keep_blobs: HashSet<Digest> = records.iter().flat_map(|r| r.blobs().cloned()).collect();
        let keep_chains: HashSet<Digest> = records
            .iter()
            .flat_map(|r| r.chain_ids.iter().cloned())
            .chain(rootfs.iter().flat_map(|r| r.chain_ids.iter().cloned()))
            .collect();
        let mut report = PruneReport::default();
        for blob in self.store.list()? {
            if !keep_blobs.contains(&blob) && !fresh(&self.store.blob_path(&blob)) {
                report.bytes += self.store.blob_size(&blob).unwrap_or(0);
                self.store.remove_blob(&blob)?;
                report.blobs += 1;
            }
        }
        if spare_since.is_none() {
            self.store.clean_ingest()?;
        }
        report.snapshots = self.snapshots.gc(&keep_chains, spare_since)?;
        Ok(report)
    }

    /// Writes the flattened rootfs of a pulled image into `dir` (created; must be empty).
    pub fn unpack(&self, reference_or_id: &str, dir: &Path) -> Result<ImageRecord> {
        let record = self.get(reference_or_id)?;
        std::fs::create_dir_all(dir).at(dir)?;
        if std::fs::read_dir(dir).at(dir)?.next().is_some() {
            return Err(ImageError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("the target directory is not empty; give an empty or new directory"),
            });
        }
        self.apply_layers(&record, dir)?;
        Ok(record)
    }

    fn apply_layers(&self, record: &ImageRecord, dir: &Path) -> Result<()> {
        for layer in &record.layers {
            let file = self.store.open_blob(&layer.digest)?;
            let name = layer.digest.to_string();
            let tar = decompress(std::io::BufReader::with_capacity(256 << 10, file))
                .map_err(|e| ImageError::InvalidLayer { layer: name.clone(), reason: e.to_string() })?;
            unpack_layer(tar, dir, WhiteoutMode::Apply, &name)?;
        }
        Ok(())
    }

    /// Makes the rootfs of container `container_id` from a pulled image: an overlay mount of
    /// its snapshots with a private upper dir, or (copy mode, or when overlay fails in auto
    /// mode) a flattened copy bound onto itself; both are mounted `nodev`. Undo with
    /// [`ImageService::release_rootfs`].
    pub fn prepare_rootfs(&self, reference_or_id: &str, container_id: &str) -> Result<PreparedRootfs> {
        self.prepare_rootfs_for(reference_or_id, container_id, None)
    }

    /// [`ImageService::prepare_rootfs`] for a container in a new user namespace with `mappings`:
    /// the overlay is mounted on idmapped snapshots
    /// ([`Snapshotter::mount_overlay_idmapped`]), so the container's ids own the image's files
    /// with nothing copied. Where the kernel cannot, the overlay is mounted as usual and the
    /// runtime chowns it through the overlay at `create` (copying every file up, see
    /// docs/runtime.md); a copy-mode rootfs is idmapped (or chowned) by the runtime too.
    pub fn prepare_rootfs_for(&self, reference_or_id: &str, container_id: &str, mappings: Option<&Mappings>) -> Result<PreparedRootfs> {
        let image = self.get(reference_or_id)?;
        let config = self.config(&image)?;
        if let Some(missing) = image.chain_ids.iter().find(|c| !self.snapshots.has(c)) {
            return Err(ImageError::NotFound(format!("{} (snapshot {missing} is missing; pull the image again)", image.name)));
        }
        let mut record = RootfsRecord {
            container_id: container_id.to_string(),
            image: image.name.clone(),
            chain_ids: image.chain_ids.clone(),
            kind: RootfsKind::Overlay,
        };
        let mode = self.options.rootfs_mode;
        if mode != RootfsMode::Copy {
            let merged = self.snapshots.create_rootfs_dir(&record)?;
            if let Some(mappings) = mappings
                && let Err(e) = self.snapshots.own_rootfs_dir(container_id, mappings)
            {
                let _ = self.snapshots.remove_rootfs(container_id);
                return Err(e);
            }
            if let Some(mappings) = mappings {
                match self.mount_idmapped(container_id, &image.chain_ids, mappings) {
                    Ok(()) => return Ok(PreparedRootfs { path: merged, kind: RootfsKind::Overlay, image, config }),
                    Err(e) => {
                        warn!(error = %e, "cannot mount the overlay on idmapped layers; the runtime will chown it (a copy-up of every file)")
                    }
                }
            }
            match self.snapshots.mount_overlay(container_id, &image.chain_ids) {
                Ok(()) => return Ok(PreparedRootfs { path: merged, kind: RootfsKind::Overlay, image, config }),
                Err(e) if mode == RootfsMode::Auto => {
                    warn!(error = %e, "overlayfs unavailable; copying the layers instead");
                    self.snapshots.remove_rootfs(container_id)?;
                }
                Err(e) => {
                    let _ = self.snapshots.remove_rootfs(container_id);
                    return Err(e);
                }
            }
        }
        record.kind = RootfsKind::Copy;
        let merged = self.snapshots.create_rootfs_dir(&record)?;
        let owned = match mappings {
            Some(mappings) => self.snapshots.own_rootfs_dir(container_id, mappings),
            None => Ok(()),
        };
        if let Err(e) = owned.and_then(|()| self.apply_layers(&image, &merged)).and_then(|()| self.snapshots.mount_copy_nodev(container_id))
        {
            let _ = self.snapshots.remove_rootfs(container_id);
            return Err(e);
        }
        Ok(PreparedRootfs { path: merged, kind: RootfsKind::Copy, image, config })
    }

    /// The overlay of `chain_ids` on snapshots idmapped with a user namespace of `mappings`.
    fn mount_idmapped(&self, container_id: &str, chain_ids: &[Digest], mappings: &Mappings) -> Result<()> {
        let userns = crate::container::userns::user_namespace_with(mappings).map_err(|e| ImageError::Mount {
            target: self.snapshots.rootfs_dir(container_id),
            source: std::io::Error::other(format!("a user namespace for the idmapped layers: {e}")),
        })?;
        self.snapshots.mount_overlay_idmapped(container_id, chain_ids, std::os::fd::AsFd::as_fd(&userns), mappings)
    }

    /// Unmounts and deletes a container's rootfs (its upper dir goes with it).
    pub fn release_rootfs(&self, container_id: &str) -> Result<()> {
        self.snapshots.remove_rootfs(container_id)
    }

    /// The OCI spec for a container of a pulled image, on top of `base`.
    pub fn spec_for(&self, prepared: &PreparedRootfs, overrides: &ProcessOverrides, base: Spec) -> Result<Spec> {
        config_to_spec(&prepared.config, &prepared.path, overrides, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_spares_what_a_pull_in_flight_may_have_written() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageService::open(dir.path(), ImageServiceOptions::default()).unwrap();
        let old = Digest::of(b"old");
        images.store.write_blob(&old, b"old").unwrap();
        let past = std::fs::File::options().write(true).open(images.store.blob_path(&old)).unwrap();
        past.set_modified(SystemTime::now() - std::time::Duration::from_secs(60)).unwrap();
        let in_flight = PullInFlight::new(&images.pulls_in_flight);
        let new = Digest::of(b"new");
        images.store.write_blob(&new, b"new").unwrap();
        let report = images.prune().unwrap();
        assert_eq!(report.blobs, 1, "only the blob older than the pull goes");
        assert!(images.store.has_blob(&new) && !images.store.has_blob(&old));
        drop(in_flight);
        assert_eq!(images.prune().unwrap().blobs, 1, "once the pull is over, unreferenced blobs go");
    }

    /// The agent runs pulls on tokio tasks and shares one service between them.
    #[test]
    fn the_service_and_its_pull_future_can_cross_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let images = ImageService::open(dir.path(), ImageServiceOptions::default()).unwrap();
        send_sync(&images);
        send(images.pull("localhost:1/x:y", Arc::new(super::super::pull::NoProgress)));
    }
}
