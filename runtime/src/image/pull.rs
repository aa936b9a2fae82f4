//! Pulling an image: resolve the reference to a manifest (choosing the host's platform from an
//! index), fetch and verify the config, then fetch every layer in parallel. Each layer is
//! streamed once: the bytes go into the content store's temporary blob (hashed on the way) and,
//! at the same time, through the decompressor into the safe unpacker that fills the layer's
//! snapshot. Nothing is kept unless its digest verifies: the blob digest, the diff id of the
//! uncompressed tar, and the manifest and config digests. Snapshots are committed (renamed to
//! their chain id) only after every layer is unpacked, the lower-layer symlink check passed
//! and hard links to lower-layer files were copied up;
//! the image record is written last.
//!
//! Sizes are capped before anything is trusted: the manifest (4 MiB) and config (8 MiB) by the
//! registry client, the layers' compressed sizes together and their uncompressed bytes (counted
//! while they unpack, see [`super::budget`]) by the image's `max_image_bytes`.
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::RegistryError;
use super::budget::{CappedReader, ImageBudget};
use super::client::{RegistryClient, human_size};
use super::digest::{Digest, HashingReader};
use super::error::{ImageError, Result};
use super::manifest::{Descriptor, ImageConfig, ManifestKind, Platform, parse_manifest};
use super::records::ImageRecord;
use super::reference::Reference;
use super::snapshot::{Snapshotter, TempSnapshot, chain_ids, check_implicit_dirs};
use super::store::{ContentStore, Ingest};
use super::unpack::{LayerStats, WhiteoutMode, copy_up_lower_links, decompress, unpack_layer};

/// Receives pull progress (the CLI draws bars from it). Every method has a no-op default.
pub trait PullProgress: Send + Sync {
    /// A layer starts; `cached` when nothing needs downloading.
    fn layer_start(&self, _digest: &Digest, _size: u64, _cached: bool) {}
    /// `n` more bytes of the layer arrived.
    fn layer_bytes(&self, _digest: &Digest, _n: u64) {}
    /// The layer is stored and unpacked.
    fn layer_done(&self, _digest: &Digest) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl PullProgress for NoProgress {}

/// What a pull needs from the image service.
pub(crate) struct Puller<'a> {
    pub client: &'a RegistryClient,
    pub store: &'a Arc<ContentStore>,
    pub snapshots: &'a Snapshotter,
    pub platform: &'a Platform,
    pub max_parallel_layers: usize,
    /// The most uncompressed bytes the image's layers may unpack to.
    pub max_image_bytes: u64,
    pub progress: Arc<dyn PullProgress>,
}

/// Channel size between the download and the unpacker, in chunks (a chunk is ~8-16 KiB).
const CHUNKS_IN_FLIGHT: usize = 64;

/// The outcome of one layer.
struct LayerResult {
    index: usize,
    /// A freshly unpacked snapshot to commit (None when the snapshot already existed).
    snapshot: Option<(TempSnapshot, LayerStats)>,
}

impl Puller<'_> {
    pub async fn pull(&self, reference: &Reference) -> Result<(ImageRecord, Vec<(Digest, Vec<u8>)>)> {
        let top = self.client.get_manifest(reference).await?;
        let mut blobs_to_store = vec![(top.digest.clone(), top.body.clone())];
        let (manifest, manifest_digest, index_digest) = match parse_manifest(&top.body, top.media_type.as_deref(), &reference.to_string())?
        {
            ManifestKind::Image(m) => (m, top.digest.clone(), None),
            ManifestKind::Index(index) => {
                let chosen = index.select(self.platform).ok_or_else(|| ImageError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    wanted: self.platform.to_string(),
                    available: index.platforms(),
                })?;
                debug!(%reference, digest = %chosen.digest, platform = %self.platform, "index: chose manifest");
                let fetched = self.client.get_manifest(&reference.with_digest(chosen.digest.clone())).await?;
                let what = format!("{reference}@{}", chosen.digest);
                match parse_manifest(&fetched.body, fetched.media_type.as_deref(), &what)? {
                    ManifestKind::Image(m) => {
                        blobs_to_store.push((fetched.digest.clone(), fetched.body.clone()));
                        (m, fetched.digest, Some(top.digest.clone()))
                    }
                    ManifestKind::Index(_) => {
                        return Err(RegistryError::InvalidManifest { what, reason: "an index inside an index".into() }.into());
                    }
                }
            }
        };
        let config_bytes = self.client.get_config_bytes(reference, &manifest.config.digest, manifest.config.size).await?;
        let config = ImageConfig::parse(&config_bytes, &manifest.config.digest.to_string())?;
        blobs_to_store.push((manifest.config.digest.clone(), config_bytes));
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(RegistryError::InvalidConfig {
                what: manifest.config.digest.to_string(),
                reason: format!("it lists {} diff ids for the manifest's {} layers", config.rootfs.diff_ids.len(), manifest.layers.len()),
            }
            .into());
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        // A layer never unpacks to (much) less than its compressed size: layers that add up to
        // more than the cap already are refused before any download.
        let compressed = manifest.layers.iter().fold(0u64, |sum, l| sum.saturating_add(l.size));
        if compressed > self.max_image_bytes {
            return Err(RegistryError::TooLarge {
                what: format!("image {reference} (its layers are {compressed} bytes compressed)"),
                limit: human_size(self.max_image_bytes),
            }
            .into());
        }
        let budget = ImageBudget::new(self.max_image_bytes);

        // The futures are built first (they are lazy): a closure inside the stream's type would
        // make the pull future fail `Send` checks when callers spawn it (a rustc HRTB limit).
        let pulls: Vec<_> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| self.pull_layer(reference, i, layer, &config.rootfs.diff_ids[i], &chains[i], &budget))
            .collect();
        let results: Vec<Result<LayerResult>> =
            futures::stream::iter(pulls).buffer_unordered(self.max_parallel_layers.max(1)).collect().await;
        let mut done: Vec<LayerResult> = Vec::with_capacity(results.len());
        if budget.exceeded() {
            // Whatever each layer reported, the reason is the cap (temporary snapshots are gone).
            return Err(RegistryError::TooLarge {
                what: format!("image {reference} (uncompressed, its layers unpacked past the limit)"),
                limit: human_size(budget.limit()),
            }
            .into());
        }
        for r in results {
            done.push(r?);
        }
        done.sort_by_key(|r| r.index);

        // Refuse entries redirected through a lower layer's symlink, then commit bottom-up.
        let dirs: Vec<PathBuf> = done
            .iter()
            .map(|r| match &r.snapshot {
                Some((t, _)) => t.fs(),
                None => self.snapshots.fs_dir(&chains[r.index]),
            })
            .collect();
        for r in &done {
            if let Some((temp, stats)) = &r.snapshot {
                let lowers: Vec<PathBuf> = dirs[..r.index].iter().rev().cloned().collect();
                let layer = manifest.layers[r.index].digest.to_string();
                check_implicit_dirs(&layer, &stats.implicit_dirs, &lowers)?;
                if !stats.lower_links.is_empty() {
                    let (fs, links) = (temp.fs(), stats.lower_links.clone());
                    run_blocking(move || copy_up_lower_links(&layer, &fs, &links, &lowers)).await?;
                }
            }
        }
        for r in done {
            if let Some((temp, _)) = r.snapshot {
                self.snapshots.commit(temp, &chains[r.index])?;
            }
        }
        let record = ImageRecord {
            name: reference.to_string(),
            manifest_digest,
            index_digest,
            config_digest: manifest.config.digest.clone(),
            platform: Platform { architecture: config.architecture.clone(), os: config.os.clone(), variant: None },
            layers: manifest.layers.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            chain_ids: chains,
            pulled_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        info!(image = %record.name, layers = record.layers.len(), "pulled");
        Ok((record, blobs_to_store))
    }

    async fn pull_layer(
        &self,
        reference: &Reference,
        index: usize,
        layer: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
        budget: &Arc<ImageBudget>,
    ) -> Result<LayerResult> {
        let digest = &layer.digest;
        let _guard = self.store.lock(digest).await;
        let have_blob = self.store.has_blob(digest);
        let have_snapshot = self.snapshots.has(chain);
        self.progress.layer_start(digest, layer.size, have_blob);
        let name = digest.to_string();
        let result = if have_blob && have_snapshot {
            LayerResult { index, snapshot: None }
        } else if have_blob {
            // Unpack from the local blob.
            let temp = self.snapshots.create_temp()?;
            let (fs, file, budget) = (temp.fs(), self.store.open_blob(digest)?, budget.clone());
            let (stats, got) = run_blocking(move || -> Result<(LayerStats, Digest)> {
                let tar = decompress(file).map_err(|e| invalid(&name, e))?;
                let mut tar = HashingReader::new(CappedReader::new(tar, budget));
                let stats = unpack_layer(&mut tar, &fs, WhiteoutMode::Overlay, &name)?;
                Ok((stats, tar.finish().map_err(|e| invalid(&name, e))?))
            })
            .await?;
            check_diff_id(digest, diff_id, &got)?;
            LayerResult { index, snapshot: Some((temp, stats)) }
        } else {
            let temp = if have_snapshot { None } else { Some(self.snapshots.create_temp()?) };
            let ingest = self.store.ingest()?;
            let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
            let fs = temp.as_ref().map(TempSnapshot::fs);
            let (expected, size, budget) = (digest.clone(), layer.size, budget.clone());
            let consumer = run_blocking(move || consume_layer(rx, ingest, fs, &expected, size, budget));
            let progress = self.progress.clone();
            let on_bytes = |n: u64| progress.layer_bytes(digest, n);
            let download = self.client.fetch_blob(reference, digest, layer.size, tx, &on_bytes);
            let (downloaded, consumed) = tokio::join!(download, consumer);
            let stats = match (downloaded, consumed) {
                // A bad digest explains any unpack error: report it first.
                (_, Err(e @ ImageError::Registry(RegistryError::DigestMismatch { .. }))) => return Err(e),
                (Err(e), _) => return Err(e.into()),
                (Ok(()), Err(e)) => return Err(e),
                (Ok(()), Ok(stats)) => stats,
            };
            if let Some((_, got)) = &stats {
                check_diff_id(digest, diff_id, got)?;
            }
            LayerResult { index, snapshot: temp.zip(stats.map(|(s, _)| s)) }
        };
        self.progress.layer_done(digest);
        Ok(result)
    }
}

/// The blocking half of a layer download: writes every chunk to the blob, unpacks it (when
/// `fs` is given) while it streams, then checks the blob digest. Returns the unpack stats and
/// the diff id. The blob is kept only when it unpacked (or was not to be unpacked).
fn consume_layer(
    rx: mpsc::Receiver<Bytes>,
    ingest: Ingest,
    fs: Option<PathBuf>,
    expected: &Digest,
    size: u64,
    budget: Arc<ImageBudget>,
) -> Result<Option<(LayerStats, Digest)>> {
    let name = expected.to_string();
    let mut source = ChannelReader { rx, ingest, chunk: Bytes::new() };
    let unpacked = match &fs {
        Some(fs) => {
            let r = (|| -> Result<(LayerStats, Digest)> {
                let tar = decompress(&mut source).map_err(|e| invalid(&name, e))?;
                let mut tar = HashingReader::new(CappedReader::new(tar, budget));
                let stats = unpack_layer(&mut tar, fs, WhiteoutMode::Overlay, &name)?;
                Ok((stats, tar.finish().map_err(|e| invalid(&name, e))?))
            })();
            Some(r)
        }
        None => None,
    };
    // Whatever happened, take in the rest of the blob so its digest can be checked.
    std::io::copy(&mut source, &mut std::io::sink()).map_err(|e| invalid(&name, e))?;
    let what = format!("layer {expected}");
    match unpacked {
        Some(Err(e)) => {
            source.ingest.discard(expected, Some(size), &what)?;
            Err(e)
        }
        unpacked => {
            source.ingest.commit(expected, Some(size), &what)?;
            unpacked.transpose()
        }
    }
}

/// Reads the chunks of a download in order, writing each into the blob being ingested.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    ingest: Ingest,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.ingest.write(&chunk).map_err(std::io::Error::other)?;
                    self.chunk = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

fn check_diff_id(layer: &Digest, expected: &Digest, got: &Digest) -> Result<()> {
    if expected != got {
        return Err(RegistryError::DigestMismatch {
            what: format!("uncompressed content (diff id) of layer {layer}"),
            expected: expected.to_string(),
            actual: got.to_string(),
        }
        .into());
    }
    Ok(())
}

fn invalid(layer: &str, e: std::io::Error) -> ImageError {
    ImageError::InvalidLayer { layer: layer.to_string(), reason: e.to_string() }
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ImageError::InvalidLayer { layer: String::new(), reason: format!("the unpack thread failed: {e}") }))
}
