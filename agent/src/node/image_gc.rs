//! Image garbage collection on a node: images no task here uses are removed once they have
//! gone unused for `unused_age`, and sooner, least recently used first, while the data dir's
//! disk is fuller than `high_percent` (until it is below `low_percent`): the kubelet's image
//! GC, whose 85 % / 80 % thresholds are the defaults here.
//!
//! An image is in use while a task the servers assign to this node names it (started or not)
//! or a container rootfs on the node was made from it. "Last used" is the later of the pull,
//! the last collection that saw it in use, and the agent's start: a restarted agent gives
//! every image a fresh `unused_age` rather than guessing from a clock it did not keep.
//! Removing an image prunes the blobs and snapshots nothing else references
//! ([`ImageService::remove`]); a collection that removes nothing still prunes what failed
//! pulls left (the verified layers of an image refused as too large, for one).
//!
//! Collections and task starts exclude each other through [`ImageGc::lock`]: a start holds it
//! shared from its pull to its container's rootfs, a collection exclusively while it removes
//! (and skips its turn while any start is in flight, so no start ever waits behind another's
//! pull), so an image is never removed between a start finding it and mounting it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runtime::image::{ImageService, Reference};
use tokio::sync::RwLock;

/// When images are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// How long an image may go unused before it is removed.
    pub unused_age: Duration,
    /// Disk use (percent of the data dir's filesystem) from which unused images are removed
    /// regardless of age.
    pub high_percent: u8,
    /// What removals under pressure aim for.
    pub low_percent: u8,
    /// How often the node looks.
    pub interval: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self { unused_age: Duration::from_secs(24 * 3600), high_percent: 85, low_percent: 80, interval: Duration::from_secs(60) }
    }
}

impl ImageGcPolicy {
    /// Refuses thresholds that cannot work, naming the flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_percent > 100 || self.low_percent >= self.high_percent {
            return Err(format!(
                "--image-gc-low-percent ({}) must be below --image-gc-high-percent ({}), which must be at most 100",
                self.low_percent, self.high_percent
            ));
        }
        if self.interval.is_zero() {
            return Err("--image-gc-interval-secs must be at least 1".into());
        }
        Ok(())
    }
}

/// An unused image, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    pub name: String,
    pub last_used: SystemTime,
}

/// The unused images whose age is up, oldest first.
pub fn expired(unused: &[Unused], now: SystemTime, policy: &ImageGcPolicy) -> Vec<String> {
    let mut out: Vec<&Unused> =
        unused.iter().filter(|u| now.duration_since(u.last_used).is_ok_and(|age| age >= policy.unused_age)).collect();
    out.sort_by_key(|u| u.last_used);
    out.into_iter().map(|u| u.name.clone()).collect()
}

/// Whether the disk is full enough to remove unused images now: from `high_percent` on, and
/// then (once started) until below `low_percent`.
pub fn under_pressure(used_percent: f64, policy: &ImageGcPolicy, removing: bool) -> bool {
    let threshold = if removing { policy.low_percent } else { policy.high_percent };
    used_percent >= f64::from(threshold)
}

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub by_age: Vec<String>,
    pub by_pressure: Vec<String>,
}

/// The node's image collector.
pub struct ImageGc {
    images: Arc<ImageService>,
    policy: ImageGcPolicy,
    data_dir: PathBuf,
    started: SystemTime,
    /// When each image was last seen in use.
    last_seen: HashMap<String, SystemTime>,
    lock: Arc<RwLock<()>>,
}

impl ImageGc {
    pub fn new(images: Arc<ImageService>, policy: ImageGcPolicy) -> Self {
        let data_dir = images.data_dir().to_path_buf();
        Self { images, policy, data_dir, started: SystemTime::now(), last_seen: HashMap::new(), lock: Arc::default() }
    }

    /// Held shared by task starts (see the module docs).
    pub fn lock(&self) -> Arc<RwLock<()>> {
        self.lock.clone()
    }

    pub fn policy(&self) -> &ImageGcPolicy {
        &self.policy
    }

    /// One collection. `wanted` are the image references of the tasks assigned to the node.
    /// Skipped (an empty report) while a task start is in flight: waiting for it would queue
    /// every later start behind a pull, and the next look comes soon.
    pub async fn collect(&mut self, wanted: &HashSet<String>) -> GcReport {
        let Ok(_exclusive) = self.lock.clone().try_write_owned() else {
            tracing::debug!("a task start is in flight; image collection skipped this time");
            return GcReport::default();
        };
        let images = self.images.clone();
        let (policy, data_dir, started) = (self.policy, self.data_dir.clone(), self.started);
        let mut last_seen = std::mem::take(&mut self.last_seen);
        let wanted: HashSet<String> = wanted.iter().map(|w| Reference::parse(w).map_or_else(|_| w.clone(), |r| r.to_string())).collect();
        let joined = tokio::task::spawn_blocking(move || {
            let report = collect_blocking(&images, &policy, &data_dir, started, &mut last_seen, &wanted);
            (report, last_seen)
        })
        .await;
        match joined {
            Ok((report, last_seen)) => {
                self.last_seen = last_seen;
                report
            }
            Err(e) => {
                tracing::warn!("image collection failed: {e}");
                GcReport::default()
            }
        }
    }
}

fn collect_blocking(
    images: &ImageService,
    policy: &ImageGcPolicy,
    data_dir: &Path,
    started: SystemTime,
    last_seen: &mut HashMap<String, SystemTime>,
    wanted: &HashSet<String>,
) -> GcReport {
    let now = SystemTime::now();
    let (records, rootfs) = match (images.list(), images.snapshotter().rootfs_records()) {
        (Ok(r), Ok(f)) => (r, f),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("image collection: cannot list images: {e}");
            return GcReport::default();
        }
    };
    let in_use: HashSet<&str> = rootfs.iter().map(|r| r.image.as_str()).chain(wanted.iter().map(String::as_str)).collect();
    let mut unused = Vec::new();
    for r in &records {
        if in_use.contains(r.name.as_str()) {
            last_seen.insert(r.name.clone(), now);
            continue;
        }
        let pulled = UNIX_EPOCH + Duration::from_secs(r.pulled_at);
        let seen = last_seen.get(&r.name).copied().unwrap_or(UNIX_EPOCH);
        unused.push(Unused { name: r.name.clone(), last_used: pulled.max(seen).max(started) });
    }
    last_seen.retain(|name, _| records.iter().any(|r| &r.name == name));
    unused.sort_by_key(|u| u.last_used);

    let mut report = GcReport::default();
    let remove = |name: &str| match images.remove(name) {
        Ok(pruned) => {
            tracing::info!(
                image = name,
                blobs = pruned.blobs,
                snapshots = pruned.snapshots,
                bytes = pruned.bytes,
                "removed an unused image"
            );
            true
        }
        Err(e) => {
            tracing::warn!(image = name, "removing an unused image failed: {e}");
            false
        }
    };
    for name in expired(&unused, now, policy) {
        if remove(&name) {
            report.by_age.push(name);
        }
    }
    let mut removing = false;
    for u in unused.iter().filter(|u| !report.by_age.contains(&u.name)) {
        let used = match disk_used_percent(data_dir) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("image collection: cannot read the disk use of {}: {e}", data_dir.display());
                break;
            }
        };
        if !under_pressure(used, policy, removing) {
            break;
        }
        if !removing {
            tracing::info!(used_percent = used, high = policy.high_percent, "disk pressure: removing unused images");
            removing = true;
        }
        if remove(&u.name) {
            report.by_pressure.push(u.name.clone());
        }
    }
    for name in report.by_age.iter().chain(&report.by_pressure) {
        last_seen.remove(name);
    }
    if report.by_age.is_empty() && report.by_pressure.is_empty() {
        // Leftovers of failed pulls (verified layers of a refused image, temporary files) are
        // referenced by nothing: no start is in flight, so nothing of a pull is in the way.
        match images.prune() {
            Ok(pruned) if pruned.blobs + pruned.snapshots > 0 => {
                tracing::info!(
                    blobs = pruned.blobs,
                    snapshots = pruned.snapshots,
                    bytes = pruned.bytes,
                    "pruned leftovers of failed pulls"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning leftovers failed: {e}"),
        }
    }
    report
}

/// How full the filesystem of `dir` is, in percent, as `df` counts it (blocks reserved for
/// root count as unavailable).
pub fn disk_used_percent(dir: &Path) -> std::io::Result<f64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let used = (s.blocks() - s.blocks_free()) as f64;
    let usable = used + s.blocks_available() as f64;
    Ok(if usable == 0.0 { 0.0 } else { used * 100.0 / usable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn images_unused_for_the_age_go_oldest_first() {
        let policy = ImageGcPolicy { unused_age: Duration::from_secs(100), ..Default::default() };
        let unused = vec![
            Unused { name: "young".into(), last_used: at(950) },
            Unused { name: "old".into(), last_used: at(800) },
            Unused { name: "exactly".into(), last_used: at(900) },
            Unused { name: "future".into(), last_used: at(2000) },
        ];
        assert_eq!(expired(&unused, at(1000), &policy), vec!["old".to_string(), "exactly".to_string()]);
        assert!(expired(&unused, at(10), &policy).is_empty());
    }

    #[test]
    fn pressure_starts_at_high_and_lasts_until_below_low() {
        let policy = ImageGcPolicy { high_percent: 85, low_percent: 80, ..Default::default() };
        for (used, removing, want) in
            [(84.9, false, false), (85.0, false, true), (90.0, false, true), (82.0, false, false), (82.0, true, true), (79.9, true, false)]
        {
            assert_eq!(under_pressure(used, &policy, removing), want, "used {used}, removing {removing}");
        }
    }

    #[test]
    fn thresholds_that_cannot_work_are_refused() {
        let ok = ImageGcPolicy::default();
        assert!(ok.validate().is_ok());
        for bad in [
            ImageGcPolicy { low_percent: 85, ..ok },
            ImageGcPolicy { low_percent: 90, ..ok },
            ImageGcPolicy { high_percent: 101, low_percent: 50, ..ok },
            ImageGcPolicy { interval: Duration::ZERO, ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_disk_use_of_a_real_directory_is_a_percentage() {
        let used = disk_used_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
    }
}
