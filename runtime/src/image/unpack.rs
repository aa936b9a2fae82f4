//! Safe layer extraction: a (gzip, zstd or plain) tar stream becomes files in one directory.
//!
//! A layer is untrusted input, so extraction is safe by construction: every path is resolved
//! component by component from a directory file descriptor with `O_NOFOLLOW`, never through a
//! path string, so nothing can be created or written outside the target directory. Entries with
//! absolute paths or `..`, hard links that point outside, and entries whose path goes through a
//! symlink (planted in this layer or, for [`WhiteoutMode::Apply`], a lower one) are refused
//! with an error naming the entry. For [`WhiteoutMode::Overlay`] (one directory per layer) the
//! directories an entry needed but the layer did not list are returned in
//! [`LayerStats::implicit_dirs`] so that the snapshotter can refuse a lower-layer symlink at the
//! same path (see `snapshot::check_implicit_dirs`), and hard links whose target is a file of a
//! lower layer in [`LayerStats::lower_links`], to be copied up by [`copy_up_lower_links`].
//!
//! Whiteouts: in `Apply` mode (`image unpack`, the copy fallback) `.wh.NAME` deletes `NAME` and
//! `.wh..wh..opq` empties the directory of what lower layers put there; in `Overlay` mode they
//! become overlayfs whiteouts (a 0:0 character device) and the `trusted.overlay.opaque=y`
//! xattr. Owners, modes, mtimes, xattrs (except `trusted.overlay.*`, which would steer
//! overlayfs), hard links, symlinks and device nodes are restored; owners and device nodes need
//! root.
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tracing::warn;

use super::error::{ImageError, IoContext};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Layers are applied on top of each other in one directory: whiteouts delete.
    Apply,
    /// The directory holds one layer of an overlayfs stack: whiteouts become overlay markers.
    Overlay,
}

/// What extracting a layer did.
#[derive(Debug, Default, Clone)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    /// Directories created because an entry needed them though the layer did not list them
    /// (relative paths, parents first). Only recorded in overlay mode.
    pub implicit_dirs: Vec<PathBuf>,
    /// Hard links `(link, target)` whose target is not in this layer (overlay mode): the
    /// target must come from a lower layer, see [`copy_up_lower_links`].
    pub lower_links: Vec<(PathBuf, PathBuf)>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COPY_BUFFER: usize = 256 << 10;

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd, or none).
pub fn decompress<'a, R: Read + Send + 'a>(mut reader: R) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        let got = reader.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let chained = std::io::Cursor::new(head[..n].to_vec()).chain(reader);
    Ok(if n >= 2 && head[..2] == GZIP_MAGIC {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(COPY_BUFFER, chained)))
    } else if n == 4 && head == ZSTD_MAGIC {
        Box::new(zstd::stream::read::Decoder::new(chained)?)
    } else {
        Box::new(chained)
    })
}

/// Extracts the (already decompressed) tar stream `tar` into `target`, which must exist.
/// `layer` names the layer in errors. The stream is not read to its end: the caller drains it
/// when it needs the digest of everything.
pub fn unpack_layer<R: Read>(tar: R, target: &Path, mode: WhiteoutMode, layer: &str) -> Result<LayerStats, ImageError> {
    let root = rustix::fs::open(target, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).at(target)?;
    let mut unpacker = Unpacker {
        root,
        root_path: target.to_path_buf(),
        mode,
        layer: layer.to_string(),
        created: HashSet::new(),
        stats: LayerStats::default(),
        dir_times: Vec::new(),
        privileged: rustix::process::geteuid().is_root(),
        buffer: vec![0u8; COPY_BUFFER],
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| unpacker.invalid(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| unpacker.invalid(format!("bad tar entry: {e}")))?;
        unpacker.entry(entry)?;
    }
    unpacker.finish()?;
    Ok(unpacker.stats)
}

struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    mode: WhiteoutMode,
    layer: String,
    /// Paths this layer created (apply mode): an opaque marker keeps them and removes the rest.
    created: HashSet<PathBuf>,
    stats: LayerStats,
    /// Directory mtimes, set at the end because creating children changes them.
    dir_times: Vec<(Vec<OsString>, u64)>,
    privileged: bool,
    buffer: Vec<u8>,
}

/// The pieces of a tar header an entry needs after its reader is borrowed.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Unpacker {
    fn invalid(&self, reason: String) -> ImageError {
        ImageError::InvalidLayer { layer: self.layer.clone(), reason }
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeLayerEntry { layer: self.layer.clone(), entry: entry.to_string(), reason: reason.into() }
    }

    fn io_at(&self, comps: &[OsString]) -> PathBuf {
        let mut p = self.root_path.clone();
        p.extend(comps);
        p
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        self.stats.entries += 1;
        let raw = entry.path().map_err(|e| self.invalid(format!("bad entry path: {e}")))?.into_owned();
        let name = raw.display().to_string();
        let comps = clean_path(&raw).map_err(|r| self.unsafe_entry(&name, r))?;
        let header = entry.header();
        let kind = header.entry_type();
        let meta = Meta {
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime: header.mtime().unwrap_or(0),
            xattrs: read_xattrs(&mut entry).map_err(|e| self.invalid(format!("entry {name:?}: bad PAX header: {e}")))?,
        };

        let Some((file_name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): take its metadata.
            if kind.is_dir() {
                let root = self.root.try_clone().at(&self.root_path)?;
                self.set_metadata(root.as_fd(), &[], &meta)?;
                self.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let file_name_bytes = file_name.as_bytes();
        if file_name_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(parent_comps, &name);
        }
        if file_name_bytes.starts_with(b".wh..wh.") {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk etc.), not content
        }
        if let Some(hidden) = file_name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent_comps, OsStr::from_bytes(hidden), &name);
        }

        let parent = self.open_dir(parent_comps, &name, true)?.expect("created");
        let path: PathBuf = comps.iter().collect();
        let at = self.io_at(&comps);
        match kind {
            tar::EntryType::Directory => {
                match stat_nofollow(&parent, file_name) {
                    Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Some(_) => {
                        remove_any(&parent, file_name).at(&at)?;
                        rustix::fs::mkdirat(&parent, file_name.as_os_str(), Mode::from_raw_mode(0o700)).at(&at)?;
                    }
                    None => rustix::fs::mkdirat(&parent, file_name.as_os_str(), Mode::from_raw_mode(0o700)).at(&at)?,
                }
                let dir = open_dir_nofollow(&parent, file_name).at(&at)?;
                self.set_metadata(dir.as_fd(), &comps, &meta)?;
                self.dir_times.push((comps.to_vec(), meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&parent, file_name, &at)?;
                let fd = rustix::fs::openat(
                    &parent,
                    file_name.as_os_str(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .at(&at)?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = match entry.read(&mut self.buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.invalid(format!("entry {name:?}: reading its content: {e}"))),
                    };
                    file.write_all(&self.buffer[..n]).at(&at)?;
                    self.stats.bytes += n as u64;
                }
                self.set_metadata(file.as_fd(), &comps, &meta)?;
                rustix::fs::futimens(&file, &times(meta.mtime)).at(&at)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.invalid(format!("entry {name:?}: bad link name: {e}")))?
                    .ok_or_else(|| self.invalid(format!("symlink {name:?} has no target")))?
                    .into_owned();
                self.clear(&parent, file_name, &at)?;
                rustix::fs::symlinkat(target.as_os_str(), &parent, file_name.as_os_str()).at(&at)?;
                self.chown_at(&parent, file_name, &meta, &at)?;
                rustix::fs::utimensat(&parent, file_name.as_os_str(), &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW).at(&at)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.invalid(format!("entry {name:?}: bad link name: {e}")))?
                    .ok_or_else(|| self.invalid(format!("hard link {name:?} has no target")))?
                    .into_owned();
                let tcomps = clean_path(&target)
                    .map_err(|r| self.unsafe_entry(&name, format!("is a hard link to {}: its target {r}", target.display())))?;
                let Some((tname, tparent_comps)) = tcomps.split_last() else {
                    return Err(self.unsafe_entry(&name, "is a hard link to the layer root"));
                };
                let missing =
                    format!("hard link {name:?} points to {:?}, which is not in this layer (or the layers below)", target.display());
                let tparent = self.open_dir(tparent_comps, &name, false)?;
                let Some(tparent) = tparent.filter(|t| stat_nofollow(t, tname).is_some()) else {
                    if self.mode == WhiteoutMode::Overlay {
                        // The target may be in a lower layer: copied up once all are unpacked.
                        self.clear(&parent, file_name, &at)?;
                        self.stats.lower_links.push((comps.iter().collect(), tcomps.iter().collect()));
                        return Ok(());
                    }
                    return Err(self.invalid(missing));
                };
                if tcomps == comps {
                    return Ok(());
                }
                self.clear(&parent, file_name, &at)?;
                rustix::fs::linkat(&tparent, tname.as_os_str(), &parent, file_name.as_os_str(), AtFlags::empty()).at(&at)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                self.clear(&parent, file_name, &at)?;
                match rustix::fs::mknodat(&parent, file_name.as_os_str(), file_type, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM) if !self.privileged && file_type != FileType::Fifo => {
                        warn!(layer = %self.layer, entry = %name, "skipping device node: creating it needs root");
                        return Ok(());
                    }
                    Err(e) => return Err(e).at(&at),
                }
                self.chown_at(&parent, file_name, &meta, &at)?;
                rustix::fs::chmodat(&parent, file_name.as_os_str(), Mode::from_raw_mode(meta.mode), AtFlags::empty()).at(&at)?;
                rustix::fs::utimensat(&parent, file_name.as_os_str(), &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW).at(&at)?;
            }
            other => {
                warn!(layer = %self.layer, entry = %name, kind = ?other, "skipping tar entry of an unsupported type");
                return Ok(());
            }
        }
        if self.mode == WhiteoutMode::Apply {
            self.created.insert(path);
        }
        Ok(())
    }

    /// Opens directory `comps` below the root without following any symlink. Missing
    /// directories are created (0755 root) when `create`, else `None` is returned. A symlink on
    /// the way makes the entry unsafe.
    fn open_dir(&mut self, comps: &[OsString], entry: &str, create: bool) -> Result<Option<OwnedFd>, ImageError> {
        let mut cur = self.root.try_clone().at(&self.root_path)?;
        for (i, comp) in comps.iter().enumerate() {
            let next = match open_dir_nofollow(&cur, comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    let at = self.io_at(&comps[..=i]);
                    rustix::fs::mkdirat(&cur, comp.as_os_str(), Mode::from_raw_mode(0o755)).at(&at)?;
                    let rel: PathBuf = comps[..=i].iter().collect();
                    match self.mode {
                        WhiteoutMode::Overlay => self.stats.implicit_dirs.push(rel),
                        WhiteoutMode::Apply => {
                            self.created.insert(rel);
                        }
                    }
                    open_dir_nofollow(&cur, comp).at(&at)?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    let sub: PathBuf = comps[..=i].iter().collect();
                    let is_link = stat_nofollow(&cur, comp).is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    if is_link {
                        return Err(self.unsafe_entry(
                            entry,
                            format!("goes through the symlink {:?}; a symlink must not redirect later entries", sub.display()),
                        ));
                    }
                    return Err(self.invalid(format!("entry {entry:?}: {:?} is not a directory", sub.display())));
                }
                Err(e) => return Err(e).at(self.io_at(&comps[..=i])),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Removes whatever is at `name` (recursively for a directory) so a new entry can take it.
    fn clear(&self, parent: &OwnedFd, name: &OsStr, at: &Path) -> Result<(), ImageError> {
        if stat_nofollow(parent, name).is_some() {
            remove_any(parent, name).at(at)?;
        }
        Ok(())
    }

    fn whiteout(&mut self, parent_comps: &[OsString], hidden: &OsStr, entry: &str) -> Result<(), ImageError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/') {
            return Err(self.unsafe_entry(entry, "is a whiteout of an invalid name"));
        }
        let mut comps = parent_comps.to_vec();
        comps.push(hidden.to_os_string());
        let at = self.io_at(&comps);
        match self.mode {
            WhiteoutMode::Apply => {
                if let Some(parent) = self.open_dir(parent_comps, entry, false)?
                    && stat_nofollow(&parent, hidden).is_some()
                {
                    remove_any(&parent, hidden).at(&at)?;
                }
            }
            WhiteoutMode::Overlay => {
                let parent = self.open_dir(parent_comps, entry, true)?.expect("created");
                self.clear(&parent, hidden, &at)?;
                rustix::fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0)).at(&at)?;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir_comps: &[OsString], entry: &str) -> Result<(), ImageError> {
        let at = self.io_at(dir_comps);
        match self.mode {
            WhiteoutMode::Apply => {
                if let Some(dir) = self.open_dir(dir_comps, entry, false)? {
                    let base: PathBuf = dir_comps.iter().collect();
                    remove_not_created(&dir, &base, &self.created).at(&at)?;
                }
            }
            WhiteoutMode::Overlay => {
                let dir = self.open_dir(dir_comps, entry, true)?.expect("created");
                rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty()).at(&at)?;
            }
        }
        Ok(())
    }

    fn chown_at(&self, parent: &OwnedFd, name: &OsStr, meta: &Meta, at: &Path) -> Result<(), ImageError> {
        if !self.privileged {
            return Ok(());
        }
        rustix::fs::chownat(parent, name, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)), AtFlags::SYMLINK_NOFOLLOW).at(at)
    }

    /// Owner (first: chown clears set-id bits), mode and xattrs of an open file or directory.
    fn set_metadata(&self, fd: BorrowedFd<'_>, comps: &[OsString], meta: &Meta) -> Result<(), ImageError> {
        let at = self.io_at(comps);
        if self.privileged {
            rustix::fs::fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))).at(&at)?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).at(&at)?;
        for (key, value) in &meta.xattrs {
            if key.starts_with("trusted.overlay.") {
                warn!(layer = %self.layer, path = %at.display(), xattr = %key, "ignoring an overlayfs xattr carried by a layer");
                continue;
            }
            match rustix::fs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::PERM | Errno::NOTSUP) if !self.privileged => {
                    warn!(path = %at.display(), xattr = %key, "cannot set xattr without root; skipped");
                }
                Err(e) => return Err(e).at(&at),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ImageError> {
        let dirs = std::mem::take(&mut self.dir_times);
        for (comps, mtime) in dirs.into_iter().rev() {
            if let Ok(Some(dir)) = self.open_dir(&comps, "", false) {
                rustix::fs::futimens(&dir, &times(mtime)).at(self.io_at(&comps))?;
            }
        }
        Ok(())
    }
}

/// Overlay mode: a hard link to a file of a lower layer cannot be a hard link across snapshot
/// directories, so the file is copied up into this layer (content, owner, mode, xattrs, mtime),
/// as containerd does. `lowers` are the lower layers' directories, top first; the target is
/// looked up as overlayfs would (whiteouts and opaque directories hide what is below), without
/// following any symlink.
pub fn copy_up_lower_links(layer: &str, dir: &Path, links: &[(PathBuf, PathBuf)], lowers: &[PathBuf]) -> Result<(), ImageError> {
    let invalid = |reason: String| ImageError::InvalidLayer { layer: layer.to_string(), reason };
    for (link, target) in links {
        let src = find_in_lowers(lowers, target)
            .map_err(|reason| ImageError::UnsafeLayerEntry {
                layer: layer.to_string(),
                entry: link.display().to_string(),
                reason: format!("is a hard link to {:?}, which {reason}", target.display()),
            })?
            .ok_or_else(|| {
                invalid(format!(
                    "hard link {:?} points to {:?}, which is a regular file in neither this layer nor the layers below",
                    link.display(),
                    target.display()
                ))
            })?;
        let comps: Vec<OsString> = link.iter().map(OsStr::to_os_string).collect();
        let (name, parent_comps) = comps.split_last().expect("a link has a name");
        let at = dir.join(link);
        let mut parent = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).at(dir)?;
        for c in parent_comps {
            parent = open_dir_nofollow(&parent, c).at(&at)?;
        }
        let dst = rustix::fs::openat(
            &parent,
            name.as_os_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .at(&at)?;
        let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
        std::io::copy(&mut src, &mut dst).at(&at)?;
        let st = rustix::fs::fstat(&src).at(&at)?;
        rustix::fs::fchown(&dst, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid))).at(&at)?;
        rustix::fs::fchmod(&dst, Mode::from_raw_mode(st.st_mode & 0o7777)).at(&at)?;
        let mut names = vec![0u8; 64 << 10];
        let n = rustix::fs::flistxattr(&src, &mut names[..]).at(&at)?;
        for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
            let key = OsStr::from_bytes(key);
            let mut value = vec![0u8; 64 << 10];
            let len = rustix::fs::fgetxattr(&src, key, &mut value[..]).at(&at)?;
            rustix::fs::fsetxattr(&dst, key, &value[..len], XattrFlags::empty()).at(&at)?;
        }
        let t = |ts: i64, ns: u64| Timespec { tv_sec: ts, tv_nsec: ns as _ };
        let mtime = t(st.st_mtime as i64, st.st_mtime_nsec as u64);
        rustix::fs::futimens(&dst, &Timestamps { last_access: mtime, last_modification: mtime }).at(&at)?;
    }
    Ok(())
}

/// Opens `rel` in the topmost lower that has it, if that is a regular file; whiteouts, opaque
/// directories and files on the way hide the layers below. A symlink on the way is an error
/// (the reason completes "which ...").
fn find_in_lowers(lowers: &[PathBuf], rel: &Path) -> Result<Option<OwnedFd>, String> {
    let comps: Vec<&OsStr> = rel.iter().collect();
    let Some((name, dirs)) = comps.split_last() else { return Ok(None) };
    for lower in lowers {
        let Ok(mut cur) = rustix::fs::open(lower.as_path(), OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
            return Ok(None);
        };
        let mut opaque = false;
        let mut missing = false;
        for c in dirs {
            match open_dir_nofollow(&cur, c) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    missing = true;
                    break;
                }
                Err(Errno::LOOP | Errno::NOTDIR)
                    if stat_nofollow(&cur, c).is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink) =>
                {
                    return Err(format!("goes through {c:?}, a symlink in a lower layer"));
                }
                Err(_) => return Ok(None), // a file replaced the directory here
            }
            let mut v = [0u8; 1];
            if rustix::fs::fgetxattr(&cur, OVERLAY_OPAQUE_XATTR, &mut v[..]).is_ok_and(|n| n == 1 && v[0] == b'y') {
                opaque = true;
            }
        }
        if !missing {
            match stat_nofollow(&cur, name) {
                Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    return Ok(rustix::fs::openat(&cur, *name, flags, Mode::empty()).ok());
                }
                Some(_) => return Ok(None), // a whiteout, or not a regular file
                None => {}
            }
        }
        if opaque {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Splits an entry path into plain components: `./` and `.` are dropped; absolute paths and
/// `..` are refused (the reason completes "entry X ...").
pub fn clean_path(raw: &Path) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path".into()),
            Component::ParentDir => return Err("contains '..'".into()),
        }
    }
    Ok(out)
}

fn read_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec { tv_sec: mtime.min(i64::MAX as u64) as i64, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn open_dir_nofollow(parent: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(parent, name, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
}

fn stat_nofollow(parent: impl AsFd, name: &OsStr) -> Option<rustix::fs::Stat> {
    rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).ok()
}

/// Removes `name` in `parent`; a directory is removed with everything in it, by descriptor.
pub(crate) fn remove_any(parent: impl AsFd, name: &OsStr) -> rustix::io::Result<()> {
    let parent = parent.as_fd();
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let dir = open_dir_nofollow(parent, name)?;
            empty_dir(&dir)?;
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        }
        Err(e) => Err(e),
    }
}

fn list_dir(dir: &OwnedFd) -> rustix::io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((OsStr::from_bytes(name).to_os_string(), e.file_type()));
    }
    Ok(out)
}

fn empty_dir(dir: &OwnedFd) -> rustix::io::Result<()> {
    for (name, kind) in list_dir(dir)? {
        if kind == FileType::Directory {
            remove_any(dir, &name)?;
        } else {
            match rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
                Err(Errno::ISDIR) => remove_any(dir, &name)?,
                r => r?,
            }
        }
    }
    Ok(())
}

/// For an opaque directory: removes everything below `dir` that this layer did not create.
fn remove_not_created(dir: &OwnedFd, base: &Path, created: &HashSet<PathBuf>) -> rustix::io::Result<()> {
    for (name, kind) in list_dir(dir)? {
        let path = base.join(&name);
        if !created.contains(&path) {
            remove_any(dir, &name)?;
        } else if kind == FileType::Directory {
            let child = open_dir_nofollow(dir, &name)?;
            remove_not_created(&child, &path, created)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_drops_dots_and_refuses_escapes() {
        let c = |s: &str| clean_path(Path::new(s));
        assert_eq!(c("./a/./b/").unwrap(), vec![OsString::from("a"), OsString::from("b")]);
        assert_eq!(c("./").unwrap(), Vec::<OsString>::new());
        assert_eq!(c("/etc/passwd").unwrap_err(), "has an absolute path");
        assert_eq!(c("a/../../etc").unwrap_err(), "contains '..'");
        assert_eq!(c("a/..").unwrap_err(), "contains '..'");
    }

    #[test]
    fn decompress_detects_gzip_zstd_and_plain() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for input in [gz, zs, data.clone(), b"x".to_vec()] {
            let mut out = Vec::new();
            decompress(&input[..]).unwrap().read_to_end(&mut out).unwrap();
            assert!(out == data || out == b"x");
        }
    }
}
