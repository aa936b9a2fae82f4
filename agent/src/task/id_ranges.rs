//! Host id ranges for tasks' user namespaces: which task holds which 65,536 host ids.
//!
//! Every task in a user namespace of its own (the default, `[security] userns = "auto"`) maps
//! its container ids 0-65535 (uids and gids alike) onto a range of [`RANGE_SIZE`] host ids that
//! no other task of the node holds, as podman's `--userns=auto` does: root in the task is an
//! unprivileged host id, and two tasks cannot touch each other's files or processes through
//! their ids. The ranges come from the node's pool (`sched-agent --userns-ids FIRST:COUNT`,
//! [`IdPool`]), each aligned on a multiple of 65,536 from `FIRST`.
//!
//! [`IdRanges`] is the pure bookkeeping (table tested); [`IdRangeFile`] keeps it in
//! `DATA_DIR/userns/ranges.json`, written atomically on every change, so a restarted agent never
//! hands out a range that a task still holds. A range is taken at the task's start, before its
//! bundle, and given back when its rootfs is released (its processes are dead then, and its upper
//! dir, the only place it wrote with those ids, is gone); the reaper gives back the range of a
//! task no one owns any more. Ranges are handed out round-robin after the last one given (as
//! addresses are), so a range released a moment ago is not reused at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// Host ids per task: a whole 16-bit id space, as podman's `--userns=auto` and Kubernetes give.
pub const RANGE_SIZE: u32 = 65_536;

/// The host ids tasks' ranges come from: `count` ranges of [`RANGE_SIZE`] from `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdPool {
    pub first: u32,
    /// Number of ranges.
    pub ranges: u32,
}

impl Default for IdPool {
    /// Host ids 2147483648 to 4294901759 (32,767 ranges), the upper half of the id space that
    /// podman's documentation gives its `containers` user in `/etc/subuid`, far above the ids
    /// of the host's users.
    fn default() -> Self {
        IdPool { first: 1 << 31, ranges: 32_767 }
    }
}

impl std::str::FromStr for IdPool {
    type Err = String;

    /// `FIRST:COUNT` in host ids, as a line of `/etc/subuid` has them: FIRST at least 65536 (no
    /// range may hold the host's own users, root first of all), COUNT at least 65536 (a whole
    /// range; a remainder is not used), the last id below 4294967295.
    fn from_str(text: &str) -> std::result::Result<IdPool, String> {
        let (first, count) = text.split_once(':').ok_or_else(|| format!("{text:?} is not FIRST:COUNT"))?;
        let number = |what: &str, s: &str| s.trim().parse::<u64>().map_err(|_| format!("{what} {s:?} is not a number"));
        let (first, count) = (number("FIRST", first)?, number("COUNT", count)?);
        if first < u64::from(RANGE_SIZE) {
            return Err(format!("FIRST {first} is below 65536: the range would hold the host's own users"));
        }
        if count < u64::from(RANGE_SIZE) {
            return Err(format!("COUNT {count} is less than one range of 65536 ids"));
        }
        let ranges = count / u64::from(RANGE_SIZE);
        if first + ranges * u64::from(RANGE_SIZE) > u64::from(u32::MAX) {
            return Err(format!("{first}:{count} runs past the largest id 4294967294"));
        }
        Ok(IdPool { first: first as u32, ranges: ranges as u32 })
    }
}

impl std::fmt::Display for IdPool {
    /// `FIRST:COUNT`, as [`IdPool::from_str`](std::str::FromStr) reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.first, u64::from(self.ranges) * u64::from(RANGE_SIZE))
    }
}

impl IdPool {
    /// The first host id of range `index`.
    fn range_start(&self, index: u32) -> u32 {
        self.first + index * RANGE_SIZE
    }
}

/// The host ids of one task: container ids 0..65535 are host ids `first..first+65535`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub first: u32,
}

impl IdRange {
    /// Whether the two ranges share an id.
    fn overlaps(&self, other: &IdRange) -> bool {
        let (a, b) = (u64::from(self.first), u64::from(other.first));
        a < b + u64::from(RANGE_SIZE) && b < a + u64::from(RANGE_SIZE)
    }
}

/// Which task holds which range (pure; persisted by [`IdRangeFile`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRanges {
    /// The first host id of the range handed out last: the next search starts after it.
    last: Option<u32>,
    /// Task id -> its range.
    allocations: BTreeMap<String, IdRange>,
}

/// The pool has no range left that no task holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free range of 65536 host ids for a user namespace: all {ranges} of --userns-ids are held by tasks ({held} held)")]
pub struct PoolExhausted {
    pub ranges: u32,
    pub held: usize,
}

impl IdRanges {
    /// The task's range: the one it already holds, else the next one of `pool` that overlaps
    /// no range held (held ranges may come from an earlier, different pool).
    pub fn allocate(&mut self, pool: IdPool, task_id: &str) -> std::result::Result<IdRange, PoolExhausted> {
        if let Some(range) = self.allocations.get(task_id) {
            return Ok(*range);
        }
        let after = self
            .last
            .filter(|last| {
                *last >= pool.first && (last - pool.first).is_multiple_of(RANGE_SIZE) && (last - pool.first) / RANGE_SIZE < pool.ranges
            })
            .map_or(0, |last| (last - pool.first) / RANGE_SIZE + 1);
        let free = (0..pool.ranges)
            .map(|step| IdRange { first: pool.range_start((after + step) % pool.ranges) })
            .find(|candidate| !self.allocations.values().any(|held| held.overlaps(candidate)))
            .ok_or(PoolExhausted { ranges: pool.ranges, held: self.allocations.len() })?;
        self.allocations.insert(task_id.to_string(), free);
        self.last = Some(free.first);
        Ok(free)
    }

    /// Frees the task's range; returns it, or `None` if the task held none.
    pub fn release(&mut self, task_id: &str) -> Option<IdRange> {
        self.allocations.remove(task_id)
    }

    /// The task's range, if it holds one.
    pub fn get(&self, task_id: &str) -> Option<IdRange> {
        self.allocations.get(task_id).copied()
    }

    /// Every task that holds a range, ordered.
    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.allocations.keys().map(String::as_str)
    }
}

/// [`IdRanges`] kept in a file, every change written atomically before it is used.
pub struct IdRangeFile {
    path: PathBuf,
    pool: IdPool,
    ranges: Mutex<IdRanges>,
}

impl IdRangeFile {
    /// The ranges saved at `path` (none if the file does not exist), handing out from `pool`.
    pub fn open(path: PathBuf, pool: IdPool) -> Result<IdRangeFile> {
        let ranges = match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| {
                AgentError::io(
                    format!("read {}", path.display()),
                    std::io::Error::other(format!(
                        "cannot be parsed ({e}): fix it, or stop every task and remove it (its ranges are then forgotten)"
                    )),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IdRanges::default(),
            Err(e) => return Err(AgentError::io(format!("read {}", path.display()), e)),
        };
        Ok(IdRangeFile { path, pool, ranges: Mutex::new(ranges) })
    }

    /// Task `id`'s range, allocated (and saved) if it holds none yet.
    pub fn allocate(&self, id: &str) -> Result<IdRange> {
        self.change(|ranges| ranges.allocate(self.pool, id).map_err(|e| AgentError::Start { task: id.into(), reason: e.to_string() }))
    }

    /// Frees task `id`'s range (saved); fine if it held none.
    pub fn release(&self, id: &str) -> Result<Option<IdRange>> {
        self.change(|ranges| Ok(ranges.release(id)))
    }

    /// Every task that holds a range.
    pub fn holders(&self) -> Vec<String> {
        self.lock().holders().map(str::to_string).collect()
    }

    /// Task `id`'s range, if it holds one.
    pub fn get(&self, id: &str) -> Option<IdRange> {
        self.lock().get(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdRanges> {
        self.ranges.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `f` and saves the result; on any failure the ranges stay as they were.
    fn change<T>(&self, f: impl FnOnce(&mut IdRanges) -> Result<T>) -> Result<T> {
        let mut ranges = self.lock();
        let mut next = ranges.clone();
        let out = f(&mut next)?;
        if next != *ranges {
            save(&self.path, &next)?;
            *ranges = next;
        }
        Ok(out)
    }
}

/// Writes `ranges` to `path` through a temp file renamed into place (the directory fsynced).
fn save(path: &Path, ranges: &IdRanges) -> Result<()> {
    crate::network::state_file::write(path, ranges).map_err(AgentError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: IdPool = IdPool { first: 1_000 * RANGE_SIZE, ranges: 3 };

    fn at(index: u32) -> IdRange {
        IdRange { first: POOL.first + index * RANGE_SIZE }
    }

    #[test]
    fn tasks_get_disjoint_ranges_and_keep_theirs() {
        let mut ranges = IdRanges::default();
        assert_eq!(ranges.allocate(POOL, "a"), Ok(at(0)));
        assert_eq!(ranges.allocate(POOL, "b"), Ok(at(1)));
        assert_eq!(ranges.allocate(POOL, "a"), Ok(at(0)), "a task asking again keeps its range");
        assert_eq!(ranges.get("b"), Some(at(1)));
        assert!(!at(0).overlaps(&at(1)) && at(0).overlaps(&at(0)));
        assert_eq!(ranges.holders().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn released_ranges_are_reused_only_after_the_others_and_a_full_pool_says_so() {
        let mut ranges = IdRanges::default();
        ranges.allocate(POOL, "a").unwrap();
        ranges.allocate(POOL, "b").unwrap();
        assert_eq!(ranges.release("a"), Some(at(0)));
        assert_eq!(ranges.release("a"), None, "releasing twice is harmless");
        assert_eq!(ranges.allocate(POOL, "c"), Ok(at(2)), "not the range just released");
        assert_eq!(ranges.allocate(POOL, "d"), Ok(at(0)), "wraps around to the free one");
        assert_eq!(ranges.allocate(POOL, "e"), Err(PoolExhausted { ranges: 3, held: 3 }));
        assert!(ranges.get("e").is_none(), "a failed allocation holds nothing");
    }

    #[test]
    fn ranges_held_from_an_earlier_pool_are_never_overlapped() {
        let mut ranges = IdRanges::default();
        // Held from a pool that started half a range lower (the operator changed --userns-ids).
        let old = IdPool { first: POOL.first - RANGE_SIZE / 2, ranges: 1 };
        assert_eq!(ranges.allocate(old, "old").unwrap().first, POOL.first - RANGE_SIZE / 2);
        assert_eq!(ranges.allocate(POOL, "new"), Ok(at(1)), "range 0 shares ids with the old one");
        assert_eq!(ranges.allocate(POOL, "newer"), Ok(at(2)));
        assert!(ranges.allocate(POOL, "none").is_err());
    }

    #[test]
    fn pools_are_read_as_subuid_lines_and_checked() {
        let cases: &[(&str, Result<IdPool, &str>)] = &[
            ("2147483648:2147418112", Ok(IdPool { first: 1 << 31, ranges: 32_767 })),
            ("100000:65536", Ok(IdPool { first: 100_000, ranges: 1 })),
            ("100000:200000", Ok(IdPool { first: 100_000, ranges: 3 })),
            ("0:65536", Err("below 65536")),
            ("65535:65536", Err("below 65536")),
            ("100000:65535", Err("less than one range")),
            ("4294901760:65536", Err("runs past")),
            ("100000", Err("not FIRST:COUNT")),
            ("x:65536", Err("not a number")),
        ];
        for (text, want) in cases {
            match (text.parse::<IdPool>(), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        let default = IdPool::default();
        assert_eq!(default.to_string().parse::<IdPool>(), Ok(default), "Display gives what FromStr reads");
    }

    #[test]
    fn the_file_keeps_allocations_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userns/ranges.json");
        let file = IdRangeFile::open(path.clone(), POOL).unwrap();
        assert_eq!(file.allocate("a").unwrap(), at(0));
        assert_eq!(file.allocate("b").unwrap(), at(1));
        file.release("a").unwrap();
        let again = IdRangeFile::open(path.clone(), POOL).unwrap();
        assert_eq!(again.holders(), ["b"]);
        assert_eq!(again.allocate("c").unwrap(), at(2), "the last one handed out is remembered too");
        std::fs::write(&path, "{broken").unwrap();
        let error = IdRangeFile::open(path, POOL).err().unwrap().to_string();
        assert!(error.contains("ranges.json") && error.contains("cannot be parsed"), "{error}");
    }
}
