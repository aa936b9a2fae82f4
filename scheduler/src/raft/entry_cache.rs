//! The newest log entries, kept in memory beside raft-engine (as TiKV keeps an entry cache in
//! front of its raft engine).
//!
//! raft-rs reads entries back from storage soon after they were appended: the committed ones
//! to apply, and the ones a follower still needs to be sent. raft-engine answers such a read
//! by reading the entries' block from its file and decoding every entry (protobuf) again;
//! under a steady stream of writes that was 2-3% of the servers' CPU. The cache answers the
//! reads it covers with copies that share the entries' bytes.
//!
//! It holds a contiguous run of entries ending at the last appended one, mirrors the log's
//! overwrites (an append at an index it holds replaces that entry and all after it) and
//! compactions, and forgets its oldest entries past [`MAX_ENTRIES`] or [`MAX_BYTES`]. What it
//! does not hold is read from raft-engine as before.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// The most entries kept.
pub const MAX_ENTRIES: usize = 1024;
/// The most bytes of entry data and context kept.
pub const MAX_BYTES: usize = 16 << 20;

/// A contiguous run of the newest entries (see the module docs).
#[derive(Debug, Default)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn size_of(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len()
}

impl EntryCache {
    /// The index of the first entry held, if any.
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Keeps `entries` (contiguous, as raft-rs appends them) once the log has stored them.
    /// Entries held at their indexes and after are replaced, as in the log; a run that does not
    /// continue what is held replaces it all.
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|e| e.index) else { return };
        match (self.first_index(), self.entries.back()) {
            (Some(front), Some(back)) if first > front && first <= back.index + 1 => {
                let keep = (first - front) as usize;
                for dropped in self.entries.drain(keep..) {
                    self.bytes -= size_of(&dropped);
                }
            }
            _ => self.clear(),
        }
        for entry in entries {
            self.bytes += size_of(&entry);
            self.entries.push_back(entry);
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Forgets the entries up to and including `index` (the log compacted them).
    pub fn compact_to(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// Forgets everything (the log was replaced by a snapshot).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= size_of(&entry);
        }
    }

    /// Copies of the entries `low..high`, if every one of them is held; at least one, and no
    /// more after the total size passes `max_size` (raft-rs's rule, as
    /// [`raft::util::limit_size`]).
    pub fn get(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let front = self.first_index()?;
        let back = self.entries.back()?.index;
        if low < front || high > back + 1 || low >= high {
            return None;
        }
        let start = (low - front) as usize;
        let mut entries: Vec<Entry> = self.entries.range(start..start + (high - low) as usize).cloned().collect();
        raft::util::limit_size(&mut entries, max_size);
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Entry::default() }
    }

    fn run(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes.map(|i| entry(i, term)).collect()
    }

    fn held(cache: &EntryCache) -> Vec<(u64, u64)> {
        cache.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn appends_overwrites_and_gaps() {
        let mut cache = EntryCache::default();
        cache.append(run(5..=7, 1));
        cache.append(run(8..=9, 1));
        assert_eq!(held(&cache), [(5, 1), (6, 1), (7, 1), (8, 1), (9, 1)]);
        // A new leader's entries replace the tail from their first index on.
        cache.append(run(7..=7, 2));
        assert_eq!(held(&cache), [(5, 1), (6, 1), (7, 2)]);
        assert_eq!(cache.bytes, 30);
        // An append at the first held index, or past a gap, replaces everything.
        cache.append(run(5..=5, 3));
        assert_eq!(held(&cache), [(5, 3)]);
        cache.append(run(9..=10, 3));
        assert_eq!(held(&cache), [(9, 3), (10, 3)]);
        cache.append(Vec::new());
        assert_eq!(held(&cache), [(9, 3), (10, 3)]);
    }

    #[test]
    fn reads_only_what_is_held_whole() {
        let mut cache = EntryCache::default();
        assert!(cache.get(1, 2, None).is_none());
        cache.append(run(5..=9, 1));
        let got: Vec<u64> = cache.get(6, 9, None).unwrap().iter().map(|e| e.index).collect();
        assert_eq!(got, [6, 7, 8]);
        assert!(cache.get(4, 6, None).is_none(), "starts before the first held");
        assert!(cache.get(8, 11, None).is_none(), "ends after the last held");
        assert!(cache.get(7, 7, None).is_none(), "empty range: the log answers");
        // At least one entry, then no more once the size passes the limit.
        assert_eq!(cache.get(5, 10, Some(0)).unwrap().len(), 1);
        let limited = cache.get(5, 10, Some(2 * entry(5, 1).compute_size() as u64)).unwrap();
        assert_eq!(limited.len(), 2);
    }

    #[test]
    fn compaction_and_bounds_drop_the_oldest() {
        let mut cache = EntryCache::default();
        cache.append(run(1..=10, 1));
        cache.compact_to(4);
        assert_eq!(cache.first_index(), Some(5));
        assert_eq!(cache.bytes, 60);
        cache.compact_to(20);
        assert!(cache.entries.is_empty());
        assert_eq!(cache.bytes, 0);
        let many = run(1..=(MAX_ENTRIES as u64 + 10), 1);
        cache.append(many);
        assert_eq!(cache.entries.len(), MAX_ENTRIES);
        assert_eq!(cache.first_index(), Some(11));
        let mut big = entry(MAX_ENTRIES as u64 + 11, 1);
        big.data = vec![0; MAX_BYTES].into();
        cache.append(vec![big]);
        assert_eq!(held(&cache), [(MAX_ENTRIES as u64 + 11, 1)], "one entry stays even above the byte bound");
        cache.clear();
        assert!(cache.get(1, 2, None).is_none());
    }
}
