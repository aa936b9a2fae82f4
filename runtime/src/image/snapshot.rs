//! Snapshots: one unpacked directory per layer chain under `<data dir>/snapshots/<chain id>/fs`,
//! shared by every image whose layers start with that chain. A snapshot holds only its own
//! layer's files, with overlayfs whiteouts, so the layers of an image unpack in parallel and a
//! container rootfs is an overlay mount of the chain (lowest last in `lowerdir`) with its own
//! `upper` and `work` under `<data dir>/rootfs/<container id>/`. Where overlayfs is not
//! available the image service flattens the layers into that directory instead (copy mode).
//! Snapshots and rootfs directories are created under temporary names and renamed into place,
//! so a crash never leaves a half-unpacked snapshot under a real key. [`Snapshotter::gc`]
//! removes what no image or rootfs references.
//!
//! Image rootfs mounts are `nodev` (as containers/storage mounts its overlays): a layer may
//! carry a device node of the host's disk with mode 0666, and no container may open it, even
//! where its spec's device rules allow the numbers. A copy-mode rootfs is bound onto itself
//! `nodev` for the same reason. The snapshot and rootfs directories are root's alone (0700),
//! so no host user reaches such a node through the data dir either.
//!
//! The overlay mount options must fit in one page (4 KiB); images with more layers than fit
//! (about 40 with the default data dir) name their layers as `/proc/self/fd/N` of descriptors
//! held during the mount, which allows about 200 layers.
use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::RegistryError;
use super::digest::Digest;
use super::error::{ImageError, IoContext, Result};
use super::store::unique_path;

/// The kernel copies at most one page of mount options.
const MOUNT_OPTIONS_MAX: usize = 4096;

/// Chain ids from diff ids: `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                Digest::parse(&format!("sha256:{}", hex::encode(h))).expect("valid")
            }
        };
        out.push(next);
    }
    out
}

/// How a container rootfs was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsKind {
    /// An overlayfs mount of the chain's snapshots with a private upper dir.
    Overlay,
    /// The layers applied one after another into a plain directory.
    Copy,
}

/// What a prepared rootfs references (stored as `rootfs.json` next to it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootfsRecord {
    pub container_id: String,
    pub image: String,
    pub chain_ids: Vec<Digest>,
    pub kind: RootfsKind,
}

/// The snapshot and rootfs directories of a data dir.
pub struct Snapshotter {
    snapshots: PathBuf,
    rootfs: PathBuf,
}

/// A snapshot being unpacked; removed on drop unless committed.
pub struct TempSnapshot {
    dir: PathBuf,
    committed: bool,
}

impl TempSnapshot {
    /// Where the layer is unpacked.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Snapshotter {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let snapshots = data_dir.join("snapshots");
        let rootfs = data_dir.join("rootfs");
        for d in [snapshots.join("tmp"), rootfs.clone()] {
            std::fs::create_dir_all(&d).at(&d)?;
        }
        // Layers hold whatever images carry (device nodes, setuid files): root's alone.
        for d in [&snapshots, &rootfs] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).at(d)?;
        }
        Ok(Self { snapshots, rootfs })
    }

    /// The unpacked layer of chain `chain`.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.snapshots.join(chain.hex()).join("fs")
    }

    pub fn has(&self, chain: &Digest) -> bool {
        self.fs_dir(chain).is_dir()
    }

    /// A new empty snapshot to unpack into.
    pub fn create_temp(&self) -> Result<TempSnapshot> {
        let dir = unique_path(&self.snapshots.join("tmp"), "snap");
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).at(&fs)?;
        std::fs::set_permissions(&fs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).at(&fs)?;
        Ok(TempSnapshot { dir, committed: false })
    }

    /// Moves `temp` to its key. If another pull committed the same chain first, keeps theirs.
    pub fn commit(&self, mut temp: TempSnapshot, chain: &Digest) -> Result<()> {
        let target = self.snapshots.join(chain.hex());
        match std::fs::rename(&temp.dir, &target) {
            Ok(()) => {
                temp.committed = true;
                Ok(())
            }
            Err(_) if self.has(chain) => Ok(()), // lost a race: drop ours
            Err(e) => Err(e).at(target),
        }
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.snapshots).at(&self.snapshots)? {
            let e = e.at(&self.snapshots)?;
            if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes snapshots not in `keep` and leftover temporary ones; returns how many went.
    /// With `spare_since`, snapshots changed since then and all temporary ones are kept (a pull
    /// in flight may be writing them).
    pub fn gc(&self, keep: &HashSet<Digest>, spare_since: Option<std::time::SystemTime>) -> Result<usize> {
        let mut removed = 0;
        for chain in self.list()? {
            let dir = self.snapshots.join(chain.hex());
            let fresh = spare_since.is_some_and(|since| std::fs::metadata(&dir).and_then(|m| m.modified()).is_ok_and(|m| m >= since));
            if !keep.contains(&chain) && !fresh {
                std::fs::remove_dir_all(&dir).at(&dir)?;
                removed += 1;
            }
        }
        if spare_since.is_some() {
            return Ok(removed);
        }
        let tmp = self.snapshots.join("tmp");
        for e in std::fs::read_dir(&tmp).at(&tmp)? {
            let _ = std::fs::remove_dir_all(e.at(&tmp)?.path());
        }
        Ok(removed)
    }

    /// The directory of container `id`'s rootfs (`merged` is what the container sees).
    pub fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.rootfs.join(id)
    }

    /// The container id of every rootfs dir (prepared, half made or unrecorded), sorted: what a
    /// node's reaper matches to its tasks.
    pub fn rootfs_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&self.rootfs).at(&self.rootfs)? {
            let e = e.at(&self.rootfs)?;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                ids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every prepared rootfs.
    pub fn rootfs_records(&self) -> Result<Vec<RootfsRecord>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.rootfs).at(&self.rootfs)? {
            let path = e.at(&self.rootfs)?.path().join("rootfs.json");
            if let Ok(bytes) = std::fs::read(&path)
                && let Ok(r) = serde_json::from_slice(&bytes)
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Creates `<rootfs>/<id>/` with `merged`, `upper` and `work`, and records what it uses.
    pub fn create_rootfs_dir(&self, record: &RootfsRecord) -> Result<PathBuf> {
        validate_container_id(&record.container_id)?;
        let dir = self.rootfs_dir(&record.container_id);
        if dir.exists() {
            return Err(ImageError::InUse { what: format!("rootfs directory {}", dir.display()), users: record.container_id.clone() });
        }
        for sub in ["merged", "upper", "work"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).at(&d)?;
        }
        let json = serde_json::to_vec_pretty(record).expect("serialises");
        std::fs::write(dir.join("rootfs.json"), json).at(dir.join("rootfs.json"))?;
        Ok(dir.join("merged"))
    }

    /// Gives container `id`'s rootfs dir (`<rootfs>/<id>`, mode 0700) to the host ids of its
    /// root under `mappings`: the container's init reaches its rootfs from there once it is in
    /// its user namespace, where host root's directories are closed to it (as containers/storage
    /// does for podman). No other host user enters it.
    pub fn own_rootfs_dir(&self, id: &str, mappings: &crate::idmap::Mappings) -> Result<()> {
        let dir = self.rootfs_dir(id);
        let uid = mappings.uid.to_host(0).map(rustix::fs::Uid::from_raw);
        let gid = mappings.gid.to_host(0).map(rustix::fs::Gid::from_raw);
        rustix::fs::chown(&dir, uid, gid).at(&dir)?;
        rustix::fs::chmod(&dir, rustix::fs::Mode::from_raw_mode(0o700)).at(&dir)
    }

    /// Mounts the overlay of `chain_ids` (bottom first) on `<rootfs>/<id>/merged`.
    pub fn mount_overlay(&self, id: &str, chain_ids: &[Digest]) -> Result<()> {
        let lower: Vec<PathBuf> = chain_ids.iter().rev().map(|chain| self.fs_dir(chain)).collect();
        self.mount_overlay_of(id, &lower)
    }

    /// Mounts the overlay of `chain_ids` on `<rootfs>/<id>/merged` with every layer seen through
    /// an idmapped mount of `userns` (overlayfs takes idmapped layers since Linux 5.19): the
    /// image's files show as the host ids `mappings` give their on-disk ids, files the container
    /// writes land in the upper dir with its host ids, and the snapshots stay shared and
    /// unchanged. Each layer is cloned idmapped (`open_tree` + `mount_setattr`), attached under
    /// `<rootfs>/<id>/layers/N` for the overlay to name, and detached again once the overlay is
    /// mounted (overlayfs holds private clones of its layers). The upper dir's root, which
    /// becomes the merged root, gets the top layer's owner and mode. The mappings are recorded
    /// beside `merged` ([`crate::idmap::write_shift_record`]), so that `create` takes the rootfs
    /// as it is. On failure nothing is mounted (the caller may fall back to a plain overlay).
    pub fn mount_overlay_idmapped(
        &self,
        id: &str,
        chain_ids: &[Digest],
        userns: std::os::fd::BorrowedFd<'_>,
        mappings: &crate::idmap::Mappings,
    ) -> Result<()> {
        let dir = self.rootfs_dir(id);
        let layers = dir.join("layers");
        let mounted = self.attach_idmapped_layers(&layers, chain_ids, userns).and_then(|lower| {
            let upper = dir.join("upper");
            let (uid, gid, mode) = match lower.first() {
                Some(top) => {
                    let st = rustix::fs::stat(top).map_err(std::io::Error::from).at(top)?;
                    (st.st_uid, st.st_gid, st.st_mode & 0o7777)
                }
                None => (mappings.uid.to_host(0).unwrap_or(0), mappings.gid.to_host(0).unwrap_or(0), 0o755),
            };
            let owner = (Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)));
            rustix::fs::chown(&upper, owner.0, owner.1).map_err(std::io::Error::from).at(&upper)?;
            rustix::fs::chmod(&upper, rustix::fs::Mode::from_raw_mode(mode)).map_err(std::io::Error::from).at(&upper)?;
            self.mount_overlay_of(id, &lower)
        });
        detach_layers(&layers);
        mounted?;
        let merged = dir.join("merged");
        if let Err(e) = crate::idmap::write_shift_record(&merged, mappings, crate::idmap::ShiftedBy::IdmappedLayers) {
            let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
            return Err(mount_err(&merged, &e.to_string()));
        }
        Ok(())
    }

    /// Attaches an idmapped clone of each snapshot of `chain_ids` under `layers/N`, top first;
    /// returns their paths. What was attached before a failure is left for [`detach_layers`].
    fn attach_idmapped_layers(&self, layers: &Path, chain_ids: &[Digest], userns: std::os::fd::BorrowedFd<'_>) -> Result<Vec<PathBuf>> {
        use rustix::mount::{MoveMountFlags, OpenTreeFlags};
        let mut lower = Vec::new();
        for (n, chain) in chain_ids.iter().rev().enumerate() {
            let fs = self.fs_dir(chain);
            let target = layers.join(n.to_string());
            std::fs::create_dir_all(&target).at(&target)?;
            let err = |what: &str, e: std::io::Error| mount_err(&target, &format!("{what} {}: {e}", fs.display()));
            let tree = rustix::mount::open_tree(rustix::fs::CWD, &fs, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
                .map_err(|e| err("clone", e.into()))?;
            crate::sys::mount_set_idmap(std::os::fd::AsFd::as_fd(&tree), userns, false)
                .map_err(|e| err("idmap", std::io::Error::from_raw_os_error(e as i32)))?;
            rustix::mount::move_mount(&tree, c"", rustix::fs::CWD, &target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
                .map_err(|e| err("attach", e.into()))?;
            lower.push(target);
        }
        Ok(lower)
    }

    /// Mounts the overlay of `lower` (top first) on `<rootfs>/<id>/merged`.
    fn mount_overlay_of(&self, id: &str, lower_dirs: &[PathBuf]) -> Result<()> {
        let dir = self.rootfs_dir(id);
        let merged = dir.join("merged");
        let mut lower: Vec<String> = Vec::new();
        for fs in lower_dirs {
            let s = fs.to_str().ok_or_else(|| mount_err(&merged, "the data dir path is not UTF-8"))?;
            if s.contains(':') || s.contains(',') {
                return Err(mount_err(&merged, "the data dir path must not contain ':' or ','"));
            }
            lower.push(s.to_string());
        }
        if lower.is_empty() {
            // overlayfs needs a lower dir; an image without layers gets an empty one.
            let empty = dir.join("empty");
            std::fs::create_dir_all(&empty).at(&empty)?;
            lower.push(empty.display().to_string());
        }
        let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), dir.join("upper").display(), dir.join("work").display());
        // The options must fit in one page. Past that, name each layer by a descriptor we hold
        // open (`/proc/self/fd/N`, ~17 bytes): overlayfs resolves the paths at mount time.
        let mut held: Vec<std::os::fd::OwnedFd> = Vec::new();
        let data = if data.len() < MOUNT_OPTIONS_MAX {
            data
        } else {
            let mut short = Vec::with_capacity(lower.len());
            for l in &lower {
                let fd = rustix::fs::open(
                    l.as_str(),
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .at(l.as_str())?;
                short.push(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
                held.push(fd);
            }
            format!("lowerdir={},upperdir={},workdir={}", short.join(":"), dir.join("upper").display(), dir.join("work").display())
        };
        if data.len() >= MOUNT_OPTIONS_MAX {
            return Err(mount_err(&merged, &format!("too many layers ({}) for one overlay mount (options exceed 4 KiB)", lower.len())));
        }
        let data = CString::new(data).map_err(|_| mount_err(&merged, "NUL in a path"))?;
        let result = rustix::mount::mount("overlay", &merged, "overlay", rustix::mount::MountFlags::NODEV, data.as_c_str())
            .map_err(|e| ImageError::Mount { target: merged.clone(), source: e.into() });
        drop(held);
        result
    }

    /// Binds container `id`'s copy-mode rootfs onto itself `nodev`, so that device nodes from its
    /// layers cannot be opened (the overlay gets `nodev` when it is mounted).
    pub fn mount_copy_nodev(&self, id: &str) -> Result<()> {
        let merged = self.rootfs_dir(id).join("merged");
        let err = |e: rustix::io::Errno| ImageError::Mount { target: merged.clone(), source: e.into() };
        rustix::mount::mount_bind(&merged, &merged).map_err(err)?;
        rustix::mount::mount_remount(&merged, rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::NODEV, "").map_err(err)
    }

    /// Unmounts (if mounted) and deletes container `id`'s rootfs. Missing is fine.
    pub fn remove_rootfs(&self, id: &str) -> Result<()> {
        validate_container_id(id)?;
        let dir = self.rootfs_dir(id);
        let merged = dir.join("merged");
        if is_mount_point(&merged) {
            rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| ImageError::Mount { target: merged.clone(), source: e.into() })?;
        }
        // A crash between attaching idmapped layers and detaching them leaves snapshots mounted
        // here: deleting through them would delete the shared layers' files.
        let layers = dir.join("layers");
        detach_layers(&layers);
        if std::fs::read_dir(&layers).is_ok_and(|mut e| e.any(|e| e.is_ok_and(|e| is_mount_point(&e.path())))) {
            return Err(mount_err(&layers, "a snapshot is still mounted here; not deleting through it"));
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(dir),
            _ => Ok(()),
        }
    }
}

/// Detaches every layer mount under `layers` (see [`Snapshotter::mount_overlay_idmapped`]) and
/// removes the dir. Best effort: [`Snapshotter::remove_rootfs`] checks that none is left.
fn detach_layers(layers: &Path) {
    let Ok(entries) = std::fs::read_dir(layers) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if is_mount_point(&path) {
            let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir(&path);
    }
    let _ = std::fs::remove_dir(layers);
}

fn mount_err(target: &Path, reason: &str) -> ImageError {
    ImageError::Mount { target: target.to_path_buf(), source: std::io::Error::other(reason.to_string()) }
}

/// A container id becomes a directory name: no separators, no dot names.
fn validate_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidReference {
            reference: id.to_string(),
            reason: "a container id must be 1-128 letters, digits, '-', '_' or '.' and not start with '.'".into(),
        }
        .into())
    }
}

/// Whether `path` is a mount point (its device differs from its parent's, or /proc says so).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let Ok(canon) = std::fs::canonicalize(path) else { return false };
    mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|mp| unescape_mountinfo(mp) == canon))
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Refuses an overlay layer whose implicitly created directories sit where a lower layer has a
/// symlink: applied in order, that entry would have been redirected through the symlink.
/// `lowers` are the lower layers' directories, top first.
pub fn check_implicit_dirs(layer: &str, implicit: &[PathBuf], lowers: &[PathBuf]) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    for rel in implicit {
        'lowers: for lower in lowers {
            // Walk without following symlinks: a symlink part-way means the path is not there.
            let mut cur = lower.clone();
            let comps: Vec<&OsStr> = rel.iter().collect();
            for (i, c) in comps.iter().enumerate() {
                cur.push(c);
                let Ok(meta) = std::fs::symlink_metadata(&cur) else { continue 'lowers };
                let last = i + 1 == comps.len();
                if meta.file_type().is_symlink() {
                    if last {
                        return Err(ImageError::UnsafeLayerEntry {
                            layer: layer.to_string(),
                            entry: rel.display().to_string(),
                            reason: "is written below a path that a lower layer made a symlink; \
                                     a symlink must not redirect later entries"
                                .to_string(),
                        });
                    }
                    break 'lowers; // an upper layer replaced this symlink
                }
                if meta.file_type().is_char_device() || !meta.is_dir() {
                    break 'lowers; // whited out or replaced: nothing below is visible
                }
                if last {
                    break 'lowers; // a real directory: fine
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn implicit_dirs_over_a_lower_symlink_are_refused() {
        let lower = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", lower.path().join("evil")).unwrap();
        std::fs::create_dir(lower.path().join("ok")).unwrap();
        let lowers = vec![lower.path().to_path_buf()];
        let err = check_implicit_dirs("l", &[PathBuf::from("evil")], &lowers).unwrap_err();
        assert!(err.to_string().contains("\"evil\""), "{err}");
        check_implicit_dirs("l", &[PathBuf::from("ok"), PathBuf::from("ok/new"), PathBuf::from("fresh")], &lowers).unwrap();
    }

    #[test]
    fn container_ids_cannot_escape_the_rootfs_dir() {
        for bad in ["", "..", "../x", "a/b", ".hidden"] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
        validate_container_id("web-1_a.b").unwrap();
    }
}
