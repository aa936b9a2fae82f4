//! User-namespace id mappings: the checks on a spec's `linux.uidMappings`/`gidMappings` (every
//! one of them hostile input), the text written to `/proc/PID/uid_map` and `gid_map`, and the id
//! arithmetic of the chown fallback ([`shift_tree`]) used where a filesystem cannot be mounted
//! idmapped.
//!
//! A mapping line says: container ids `container_id .. container_id+size` are host ids
//! `host_id .. host_id+size`. The kernel takes at most 340 lines per map, each range inside
//! 0..=u32::MAX-1 (u32::MAX is the "no id" value), and refuses ranges that overlap on either
//! side. We check all of that before any process exists, so that the error names the line.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxIdMapping;
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// The kernel's limit on lines in one uid_map or gid_map (`UID_GID_MAP_MAX_EXTENTS`).
pub const MAX_LINES: usize = 340;

/// Which map a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapKind {
    Uid,
    Gid,
}

impl std::fmt::Display for MapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MapKind::Uid => "linux.uidMappings",
            MapKind::Gid => "linux.gidMappings",
        })
    }
}

/// One line of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerID {} hostID {} size {}", self.container_id, self.host_id, self.size)
    }
}

impl IdRange {
    fn contains_container(&self, id: u32) -> bool {
        id >= self.container_id && u64::from(id) < u64::from(self.container_id) + u64::from(self.size)
    }

    fn contains_host(&self, id: u32) -> bool {
        id >= self.host_id && u64::from(id) < u64::from(self.host_id) + u64::from(self.size)
    }
}

/// What is wrong with a spec's mappings, or with writing them.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// A line maps no id at all.
    #[error("{kind}[{index}] ({range}): size must be at least 1")]
    Empty { kind: MapKind, index: usize, range: IdRange },
    /// A line runs past the largest id (4294967294).
    #[error("{kind}[{index}] ({range}): the {side} range runs past the largest id 4294967294")]
    Overflow { kind: MapKind, index: usize, range: IdRange, side: &'static str },
    /// Two lines cover the same ids on one side.
    #[error("{kind}[{index}] ({range}) overlaps {kind}[{other}] in {side} ids")]
    Overlap { kind: MapKind, index: usize, other: usize, range: IdRange, side: &'static str },
    /// More lines than the kernel takes.
    #[error("{kind} has {count} entries; the kernel takes at most {MAX_LINES}")]
    TooMany { kind: MapKind, count: usize },
    /// The map's text is longer than the kernel takes in one write (less than a page).
    #[error("{kind} is {len} bytes as a map file; the kernel takes less than 4096")]
    TooLong { kind: MapKind, len: usize },
    /// A new user namespace without mappings would run everything as the overflow id.
    #[error("a new user namespace needs both linux.uidMappings and linux.gidMappings (missing {kind})")]
    Missing { kind: MapKind },
    /// Mappings without a user namespace to apply them to.
    #[error("{kind} is set but linux.namespaces has no user namespace")]
    WithoutUserNamespace { kind: MapKind },
    /// An id the process needs is not mapped.
    #[error("{what} {id} is not mapped by {kind}")]
    Unmapped { what: String, id: u32, kind: MapKind },
    /// The kernel refused a map.
    #[error("write {kind} to {path} ({lines}): {source}")]
    Write { kind: MapKind, path: PathBuf, lines: String, source: std::io::Error },
    /// Shifting the ids of the rootfs (the chown fallback) failed.
    #[error("chown fallback on {path}: {reason}")]
    Shift { path: PathBuf, reason: String },
}

/// A validated map: at least one line, at most [`MAX_LINES`], no overflow, no overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub kind: MapKind,
    pub ranges: Vec<IdRange>,
}

impl IdMap {
    /// Checks a spec's mappings.
    pub fn from_spec(kind: MapKind, lines: &[LinuxIdMapping]) -> Result<IdMap, IdMapError> {
        let ranges = lines.iter().map(|l| IdRange { container_id: l.container_id(), host_id: l.host_id(), size: l.size() }).collect();
        IdMap::new(kind, ranges)
    }

    /// Checks `ranges`.
    pub fn new(kind: MapKind, ranges: Vec<IdRange>) -> Result<IdMap, IdMapError> {
        if ranges.is_empty() {
            return Err(IdMapError::Missing { kind });
        }
        if ranges.len() > MAX_LINES {
            return Err(IdMapError::TooMany { kind, count: ranges.len() });
        }
        let last = u64::from(u32::MAX);
        for (index, range) in ranges.iter().enumerate() {
            if range.size == 0 {
                return Err(IdMapError::Empty { kind, index, range: *range });
            }
            for (side, first) in [("container", range.container_id), ("host", range.host_id)] {
                if u64::from(first) + u64::from(range.size) > last {
                    return Err(IdMapError::Overflow { kind, index, range: *range, side });
                }
            }
            for (other, earlier) in ranges[..index].iter().enumerate() {
                let overlaps = |a: u32, b: u32| {
                    let (a, b, size_a, size_b) = (u64::from(a), u64::from(b), u64::from(range.size), u64::from(earlier.size));
                    a < b + size_b && b < a + size_a
                };
                if overlaps(range.container_id, earlier.container_id) {
                    return Err(IdMapError::Overlap { kind, index, other, range: *range, side: "container" });
                }
                if overlaps(range.host_id, earlier.host_id) {
                    return Err(IdMapError::Overlap { kind, index, other, range: *range, side: "host" });
                }
            }
        }
        let map = IdMap { kind, ranges };
        let len = map.proc_text().len();
        if len >= 4096 {
            return Err(IdMapError::TooLong { kind, len });
        }
        Ok(map)
    }

    /// Reads a map as the kernel shows it (`/proc/PID/uid_map`: "container host size" lines).
    pub fn parse_proc(kind: MapKind, text: &str) -> Option<IdMap> {
        let ranges = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let mut n = line.split_whitespace().map(|w| w.parse::<u32>().ok());
                Some(IdRange { container_id: n.next()??, host_id: n.next()??, size: n.next()?? })
            })
            .collect::<Option<Vec<_>>>()?;
        IdMap::new(kind, ranges).ok()
    }

    /// The text for `/proc/PID/uid_map` (or `gid_map`): one "container host size" line per range,
    /// written in one `write` as the kernel requires.
    pub fn proc_text(&self) -> String {
        self.ranges.iter().map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.size)).collect()
    }

    /// The host id of container id `id`.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find(|r| r.contains_container(id)).map(|r| r.host_id + (id - r.container_id))
    }

    /// The container id of host id `id`.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find(|r| r.contains_host(id)).map(|r| r.container_id + (id - r.host_id))
    }

    /// Fails unless container id `id` (named `what` in the error) is mapped.
    pub fn require(&self, what: &str, id: u32) -> Result<(), IdMapError> {
        match self.to_host(id) {
            Some(_) => Ok(()),
            None => Err(IdMapError::Unmapped { what: what.into(), id, kind: self.kind }),
        }
    }
}

/// Both maps of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    pub uid: IdMap,
    pub gid: IdMap,
}

/// The host id that on-disk id `id` becomes when a tree shifted for `from` (`None`: never
/// shifted, on-disk ids are container ids) is shifted for `to`. Ids outside the mappings stay.
pub fn shifted(id: u32, from: Option<&IdMap>, to: &IdMap) -> u32 {
    let container = match from {
        None => Some(id),
        Some(from) => from.to_container(id),
    };
    container.and_then(|c| to.to_host(c)).unwrap_or(id)
}

/// The record of a chown fallback: which mappings a tree's on-disk ids were shifted for. It sits
/// beside the tree (`<parent>/.<name>.sched-idshift.json`), out of the container's reach, so a
/// later container on the same tree neither shifts it twice nor misreads it.
pub fn shift_record_path(tree: &Path) -> PathBuf {
    let name = tree.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "rootfs".into());
    tree.parent().unwrap_or(Path::new("/")).join(format!(".{name}.sched-idshift.json"))
}

/// How a tree came to show a user namespace's host ids, as its record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShiftedBy {
    /// The chown fallback ([`shift_tree`]) changed the owners on disk (records without a `by`
    /// are of this kind: they came before the field).
    #[default]
    Chown,
    /// The image service mounted it as an overlay of idmapped layers: nothing on disk changed.
    IdmappedLayers,
}

/// What sits beside a tree whose ids were made those of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftRecord {
    #[serde(flatten)]
    pub mappings: Mappings,
    #[serde(default)]
    pub by: ShiftedBy,
}

/// The record beside `tree`, if there is one: the mappings its ids were made those of, and how.
pub fn read_shift_record(tree: &Path) -> Result<Option<ShiftRecord>, IdMapError> {
    let path = shift_record_path(tree);
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| IdMapError::Shift { path: path.clone(), reason: format!("unreadable record: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdMapError::Shift { path, reason: e.to_string() }),
    }
}

/// The chown fallback: shifts the owner of every file of `tree` (one filesystem, symlinks not
/// followed, each inode once however many hard links it has) from the mappings recorded for it
/// to `to`, then records `to`. Set-user-ID and set-group-ID bits, which chown clears, are put
/// back. Returns the number of inodes changed.
pub fn shift_tree(tree: &Path, to: &Mappings) -> Result<u64, IdMapError> {
    let from = read_shift_record(tree)?.map(|record| record.mappings);
    if from.as_ref() == Some(to) {
        return Ok(0);
    }
    let err = |path: &Path, e: rustix::io::Errno| IdMapError::Shift { path: path.to_path_buf(), reason: e.to_string() };
    let root = rustix::fs::open(tree, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| err(tree, e))?;
    let mut walk =
        Walk { from: from.as_ref(), to, seen: HashSet::new(), changed: 0, dev: rustix::fs::fstat(&root).map_err(|e| err(tree, e))?.st_dev };
    walk.entry(root.as_fd(), c".", tree)?;
    walk.dir(root, tree)?;
    write_shift_record(tree, to, ShiftedBy::Chown)?;
    Ok(walk.changed)
}

/// Records that the ids `tree` shows are those of `mappings` (host ids, not container ids):
/// after [`shift_tree`], or for a tree mounted through idmapped layers (the image service's
/// overlay of idmapped snapshots), so that `create` takes it as it is.
pub fn write_shift_record(tree: &Path, mappings: &Mappings, by: ShiftedBy) -> Result<(), IdMapError> {
    let record = shift_record_path(tree);
    let text = serde_json::to_vec(&ShiftRecord { mappings: mappings.clone(), by }).expect("mappings serialize");
    let tmp = record.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &record))
        .map_err(|e| IdMapError::Shift { path: record.clone(), reason: format!("write the record: {e}") })
}

impl Mappings {
    /// The mappings of a spec's new user namespace (a `user` namespace without a path, with both
    /// maps), checked; `None` when the spec has none, joins one by path, or its maps are invalid
    /// (`create` reports those).
    pub fn of_new_user_namespace(spec: &oci_spec::runtime::Spec) -> Option<Mappings> {
        let linux = spec.linux().as_ref()?;
        let new_userns =
            linux.namespaces().iter().flatten().any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::User && ns.path().is_none());
        if !new_userns {
            return None;
        }
        let uid = IdMap::from_spec(MapKind::Uid, linux.uid_mappings().as_deref()?).ok()?;
        let gid = IdMap::from_spec(MapKind::Gid, linux.gid_mappings().as_deref()?).ok()?;
        Some(Mappings { uid, gid })
    }
}

struct Walk<'a> {
    from: Option<&'a Mappings>,
    to: &'a Mappings,
    /// (dev, inode) of every file shifted: a hard link must not be shifted twice.
    seen: HashSet<(u64, u64)>,
    changed: u64,
    /// The tree's filesystem: mounts inside it are not ours to change.
    dev: u64,
}

impl Walk<'_> {
    fn dir(&mut self, dir: OwnedFd, path: &Path) -> Result<(), IdMapError> {
        let err = |e: rustix::io::Errno| IdMapError::Shift { path: path.to_path_buf(), reason: e.to_string() };
        let entries = rustix::fs::Dir::read_from(&dir).map_err(err)?;
        for entry in entries {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child = path.join(name.to_string_lossy().as_ref());
            let is_dir = self.entry(dir.as_fd(), name, &child)?;
            if is_dir {
                let sub =
                    rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                        .map_err(|e| IdMapError::Shift { path: child.clone(), reason: e.to_string() })?;
                self.dir(sub, &child)?;
            }
        }
        Ok(())
    }

    /// Shifts one entry of `dir`; returns whether it is a directory to descend into.
    fn entry(&mut self, dir: std::os::fd::BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<bool, IdMapError> {
        let err = |e: rustix::io::Errno| IdMapError::Shift { path: path.to_path_buf(), reason: e.to_string() };
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
        let mode = st.st_mode;
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if st.st_dev != self.dev {
            return Ok(false);
        }
        if !self.seen.insert((st.st_dev, st.st_ino)) {
            return Ok(false);
        }
        let uid = shifted(st.st_uid, self.from.map(|m| &m.uid), &self.to.uid);
        let gid = shifted(st.st_gid, self.from.map(|m| &m.gid), &self.to.gid);
        if (uid, gid) != (st.st_uid, st.st_gid) {
            // Never u32::MAX ("no id"): validated maps end below it, other ids come from disk.
            let owner = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
            rustix::fs::chownat(dir, name, Some(owner.0), Some(owner.1), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
            let special = mode & (libc::S_ISUID | libc::S_ISGID);
            if special != 0 && mode & libc::S_IFMT != libc::S_IFLNK {
                rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty()).map_err(err)?;
            }
            self.changed += 1;
        }
        Ok(is_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(container_id: u32, host_id: u32, size: u32) -> IdRange {
        IdRange { container_id, host_id, size }
    }

    #[test]
    fn several_ranges_map_both_ways() {
        let map = IdMap::new(MapKind::Uid, vec![r(0, 100_000, 1000), r(1000, 500_000, 10)]).unwrap();
        assert_eq!(map.to_host(0), Some(100_000));
        assert_eq!(map.to_host(999), Some(100_999));
        assert_eq!(map.to_host(1005), Some(500_005));
        assert_eq!(map.to_host(1010), None);
        assert_eq!(map.to_container(500_009), Some(1009));
        assert_eq!(map.proc_text(), "0 100000 1000\n1000 500000 10\n");
        assert_eq!(IdMap::parse_proc(MapKind::Uid, "         0     100000       1000\n      1000     500000         10\n"), Some(map));
    }

    #[test]
    fn an_empty_range_is_refused_naming_it() {
        let err = IdMap::new(MapKind::Uid, vec![r(0, 100_000, 10), r(10, 200_000, 0)]).unwrap_err().to_string();
        assert_eq!(err, "linux.uidMappings[1] (containerID 10 hostID 200000 size 0): size must be at least 1");
    }

    #[test]
    fn a_range_past_the_largest_id_is_refused() {
        let err = IdMap::new(MapKind::Gid, vec![r(0, u32::MAX - 10, 11)]).unwrap_err().to_string();
        assert!(err.starts_with("linux.gidMappings[0] (containerID 0 hostID 4294967285 size 11): the host range"), "{err}");
        let err = IdMap::new(MapKind::Gid, vec![r(u32::MAX, 0, u32::MAX)]).unwrap_err().to_string();
        assert!(err.contains("the container range runs past"), "{err}");
        assert!(IdMap::new(MapKind::Gid, vec![r(0, u32::MAX - 11, 11)]).is_ok(), "4294967294 is the largest id");
    }

    #[test]
    fn overlapping_ranges_are_refused_on_either_side() {
        let err = IdMap::new(MapKind::Uid, vec![r(0, 100_000, 100), r(50, 300_000, 100)]).unwrap_err().to_string();
        assert_eq!(err, "linux.uidMappings[1] (containerID 50 hostID 300000 size 100) overlaps linux.uidMappings[0] in container ids");
        let err = IdMap::new(MapKind::Uid, vec![r(0, 100_000, 100), r(100, 100_099, 5)]).unwrap_err().to_string();
        assert!(err.ends_with("in host ids"), "{err}");
        assert!(IdMap::new(MapKind::Uid, vec![r(0, 100_000, 100), r(100, 100_100, 5)]).is_ok(), "adjacent ranges are fine");
    }

    #[test]
    fn more_lines_than_the_kernel_takes_are_refused() {
        let lines: Vec<_> = (0..341).map(|i| r(i, 1000 + i, 1)).collect();
        assert_eq!(IdMap::new(MapKind::Uid, lines[..340].to_vec()).unwrap().ranges.len(), 340);
        let err = IdMap::new(MapKind::Uid, lines).unwrap_err().to_string();
        assert_eq!(err, "linux.uidMappings has 341 entries; the kernel takes at most 340");
        let long: Vec<_> = (0..300).map(|i| r(i * 10, 1_000_000_000 + i * 10, 10)).collect();
        let err = IdMap::new(MapKind::Uid, long).unwrap_err().to_string();
        assert!(err.starts_with("linux.uidMappings is ") && err.ends_with("bytes as a map file; the kernel takes less than 4096"), "{err}");
    }

    #[test]
    fn unmapped_ids_are_named() {
        let map = IdMap::new(MapKind::Gid, vec![r(0, 100_000, 10)]).unwrap();
        assert!(map.require("process.user.gid", 9).is_ok());
        let err = map.require("process.user.additionalGids", 10).unwrap_err().to_string();
        assert_eq!(err, "process.user.additionalGids 10 is not mapped by linux.gidMappings");
    }

    #[test]
    fn shifting_goes_from_the_recorded_mapping_to_the_new_one() {
        let a = IdMap::new(MapKind::Uid, vec![r(0, 100_000, 65536)]).unwrap();
        let b = IdMap::new(MapKind::Uid, vec![r(0, 200_000, 1000), r(1000, 300_000, 64536)]).unwrap();
        assert_eq!(shifted(0, None, &a), 100_000);
        assert_eq!(shifted(1500, None, &b), 300_500);
        assert_eq!(shifted(100_000, Some(&a), &b), 200_000);
        assert_eq!(shifted(70_000, None, &a), 70_000, "ids the mapping does not cover stay");
        assert_eq!(shifted(5, Some(&a), &b), 5, "ids the old mapping did not produce stay");
    }

    #[test]
    fn the_record_sits_beside_the_tree() {
        assert_eq!(shift_record_path(Path::new("/b/rootfs")), Path::new("/b/.rootfs.sched-idshift.json"));
    }

    #[test]
    fn the_record_says_how_the_ids_were_made_and_older_records_are_chowns() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("merged");
        let map = |kind| IdMap::new(kind, vec![r(0, 100_000, 65_536)]).unwrap();
        let mappings = Mappings { uid: map(MapKind::Uid), gid: map(MapKind::Gid) };
        assert_eq!(read_shift_record(&tree).unwrap(), None);
        write_shift_record(&tree, &mappings, ShiftedBy::IdmappedLayers).unwrap();
        assert_eq!(read_shift_record(&tree).unwrap(), Some(ShiftRecord { mappings: mappings.clone(), by: ShiftedBy::IdmappedLayers }));
        // A record written before `by` existed: the mappings alone, from a chown.
        std::fs::write(shift_record_path(&tree), serde_json::to_vec(&mappings).unwrap()).unwrap();
        assert_eq!(read_shift_record(&tree).unwrap(), Some(ShiftRecord { mappings, by: ShiftedBy::Chown }));
    }
}
