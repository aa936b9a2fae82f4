//! Durable Raft storage on raft-engine, implementing `raft::Storage`.
//!
//! Layout in the engine (one directory per server):
//! - raft group [`LOG`]: the log entries, appended and overwritten by raft-rs's rules;
//! - raft group [`META`]: `hard_state` (term, vote, commit), `snapshot` (the latest snapshot:
//!   the serialized [`StateMachine`] with its index, term and membership) and `truncated` (the
//!   index and term of the last entry dropped by compaction).
//!
//! Entries at or below `truncated` are gone; `term()` of `truncated.index` is still answered,
//! as raft-rs requires. Terms change rarely, so the term of every kept entry is answered from
//! an in-memory map of term boundaries instead of reading entries back from disk.
//!
//! A follower that needs entries the log no longer has gets a snapshot made on demand from the
//! live state machine ([`Storage::snapshot`] reads [`AppliedState`]), so it catches up to the
//! newest applied state in one step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Engine, LogBatch, MessageExt, ReadableSize};

use super::entry_cache::EntryCache;
use super::state_machine::StateMachine;
use crate::state::ClusterState;

/// The raft-engine group that holds the log entries.
const LOG: u64 = 1;
/// The raft-engine group that holds hard state, snapshot and truncation point.
const META: u64 = 2;
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_TRUNCATED: &[u8] = b"truncated";

/// The index and term a freshly bootstrapped cluster starts from. Not 0: a server that joins
/// later can then never be fed the log from its start (which lacks the initial membership) and
/// always receives a snapshot first (the approach TiKV takes).
pub const BOOTSTRAP_INDEX: u64 = 5;

struct EntryCodec;

impl MessageExt for EntryCodec {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Why storage failed. Any of these stops the Raft loop: the server must not go on with a log
/// it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum StorageFailure {
    #[error("raft log at {path}: {source}")]
    Engine { path: String, source: raft_engine::Error },
    #[error("corrupt {what} in the raft log: {source}")]
    Corrupt { what: &'static str, source: protobuf::ProtobufError },
    #[error("corrupt state machine snapshot: {0}")]
    CorruptSnapshot(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether a Ready's write must reach the disk before its messages go out: when it appends
/// entries (a follower acknowledges them, a leader counts its own copy toward the quorum) or
/// changes the term or the vote (a server must never vote twice in a term). A hard state that
/// only moves the commit index need not be: a restarted server learns the commit index again
/// from the leader, and it never goes back below what the log holds (etcd's `MustSync` rule).
/// The leader's Readies that only commit (its followers acknowledged) then cost no fsync.
pub fn must_sync(stored: &HardState, new: Option<&HardState>, new_entries: usize) -> bool {
    new_entries > 0 || new.is_some_and(|hs| hs.term != stored.term || hs.vote != stored.vote)
}

/// The state machine as last applied, shared between the Raft loop (writer), the API (readers)
/// and [`DiskStorage::snapshot`].
#[derive(Debug)]
pub struct AppliedState<S = ClusterState> {
    pub state: S,
    pub index: u64,
    pub term: u64,
    /// The membership as of `index`.
    pub conf_state: ConfState,
    /// How many applied entries changed the state machine since this server started (see
    /// [`StateMachine::changed`]): the leader skips a look at a state no entry changed. Local
    /// to each server, not saved.
    pub changes: u64,
}

impl<S: StateMachine> AppliedState<S> {
    /// Reads the state machine back from a snapshot.
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<AppliedState<S>, StorageFailure> {
        let meta = snapshot.get_metadata();
        let state = S::from_snapshot(snapshot.get_data()).map_err(|e| StorageFailure::CorruptSnapshot(Box::new(e)))?;
        Ok(AppliedState { state, index: meta.index, term: meta.term, conf_state: meta.get_conf_state().clone(), changes: 0 })
    }

    /// A snapshot of this state, as raft-rs sends it to a lagging follower.
    pub fn to_snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.state.to_snapshot().into());
        let meta = snapshot.mut_metadata();
        meta.index = self.index;
        meta.term = self.term;
        meta.set_conf_state(self.conf_state.clone());
        snapshot
    }
}

/// What a server starts from.
pub enum Bootstrap {
    /// The first start of a member of the initial cluster: every such server starts from the
    /// same snapshot holding these voters.
    InitialCluster(BTreeMap<u64, String>),
    /// A server that will be added with `sched cluster join`: it waits for the leader's snapshot.
    Join,
}

/// raft-rs storage backed by raft-engine, holding the state machine `S` as last applied.
pub struct DiskStorage<S = ClusterState> {
    engine: Arc<Engine>,
    path: String,
    hard_state: HardState,
    /// The membership raft-rs starts from: the latest snapshot's.
    snapshot_conf_state: ConfState,
    /// (index, term) of the last entry removed from the log.
    truncated: (u64, u64),
    /// First index of each run of entries with the same term -> that term.
    term_starts: BTreeMap<u64, u64>,
    last_index: u64,
    /// Index of the latest persisted snapshot.
    snapshot_index: u64,
    applied: Arc<RwLock<AppliedState<S>>>,
    /// The newest entries, so that reading them back soon after their append costs no read
    /// from the engine.
    cache: EntryCache,
}

impl<S: StateMachine> DiskStorage<S> {
    /// Opens (or creates) the log under `dir` and returns it with the state machine restored
    /// from the latest snapshot. `bootstrap` is used only when the directory is new.
    pub fn open(dir: &Path, bootstrap: Bootstrap) -> Result<DiskStorage<S>, StorageFailure> {
        let path = dir.display().to_string();
        let config = raft_engine::Config {
            dir: path.clone(),
            target_file_size: ReadableSize::mb(16),
            purge_threshold: ReadableSize::mb(64),
            ..Default::default()
        };
        let engine_err = |source| StorageFailure::Engine { path: path.clone(), source };
        let engine = Arc::new(Engine::open(config).map_err(engine_err)?);
        let snapshot: Option<Snapshot> = engine.get_message(META, KEY_SNAPSHOT).map_err(engine_err)?;
        let mut storage = match snapshot {
            Some(snapshot) => Self::reopen(engine, path, snapshot)?,
            None => Self::create(engine, path, bootstrap)?,
        };
        storage.load_term_starts()?;
        Ok(storage)
    }

    fn reopen(engine: Arc<Engine>, path: String, snapshot: Snapshot) -> Result<DiskStorage<S>, StorageFailure> {
        let engine_err = |source| StorageFailure::Engine { path: path.clone(), source };
        let mut hard_state: HardState = engine.get_message(META, KEY_HARD_STATE).map_err(engine_err)?.unwrap_or_default();
        let meta = snapshot.get_metadata();
        // The snapshot holds only committed state, so the commit index is at least its index.
        hard_state.commit = hard_state.commit.max(meta.index);
        let truncated = engine
            .get(META, KEY_TRUNCATED)
            .and_then(|b| Some((u64::from_le_bytes(b.get(..8)?.try_into().ok()?), u64::from_le_bytes(b.get(8..16)?.try_into().ok()?))))
            .unwrap_or((meta.index, meta.term));
        let applied = AppliedState::from_snapshot(&snapshot)?;
        let last_index = engine.last_index(LOG).unwrap_or(truncated.0).max(truncated.0);
        Ok(DiskStorage {
            snapshot_conf_state: meta.get_conf_state().clone(),
            engine,
            path,
            hard_state,
            truncated,
            term_starts: BTreeMap::new(),
            last_index,
            snapshot_index: meta.index,
            applied: Arc::new(RwLock::new(applied)),
            cache: EntryCache::default(),
        })
    }

    fn create(engine: Arc<Engine>, path: String, bootstrap: Bootstrap) -> Result<DiskStorage<S>, StorageFailure> {
        let mut storage = DiskStorage {
            engine,
            path,
            hard_state: HardState::default(),
            snapshot_conf_state: ConfState::default(),
            truncated: (0, 0),
            term_starts: BTreeMap::new(),
            last_index: 0,
            snapshot_index: 0,
            applied: Arc::new(RwLock::new(AppliedState {
                state: S::default(),
                index: 0,
                term: 0,
                conf_state: ConfState::default(),
                changes: 0,
            })),
            cache: EntryCache::default(),
        };
        if let Bootstrap::InitialCluster(members) = bootstrap {
            let voters: Vec<u64> = members.keys().copied().collect();
            let applied = AppliedState {
                state: S::with_members(members),
                index: BOOTSTRAP_INDEX,
                term: BOOTSTRAP_INDEX,
                conf_state: ConfState::from((voters, vec![])),
                changes: 0,
            };
            let snapshot = applied.to_snapshot();
            *storage.applied.write().expect("state lock") = applied;
            storage.apply_snapshot(&snapshot)?;
        }
        Ok(storage)
    }

    /// Rebuilds the term boundaries from the kept entries (once, at open).
    fn load_term_starts(&mut self) -> Result<(), StorageFailure> {
        let mut entries = Vec::new();
        if self.last_index > self.truncated.0 {
            self.engine
                .fetch_entries_to::<EntryCodec>(LOG, self.truncated.0 + 1, self.last_index + 1, None, &mut entries)
                .map_err(|source| StorageFailure::Engine { path: self.path.clone(), source })?;
        }
        self.term_starts.clear();
        self.record_terms(&entries);
        Ok(())
    }

    fn record_terms(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.term_starts.split_off(&first.index);
        for e in entries {
            if self.term_starts.last_key_value().is_none_or(|(_, term)| *term != e.term) {
                self.term_starts.insert(e.index, e.term);
            }
        }
    }

    /// The state machine shared with the API and the Raft loop.
    pub fn applied(&self) -> Arc<RwLock<AppliedState<S>>> {
        self.applied.clone()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Index of the latest persisted snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    fn write(&self, batch: &mut LogBatch, sync: bool) -> Result<(), StorageFailure> {
        self.engine.write(batch, sync).map(|_| ()).map_err(|source| StorageFailure::Engine { path: self.path.clone(), source })
    }

    /// Appends entries (overwriting any conflicting tail) and persists the hard state, in one
    /// write: raft-rs's steps "append entries" and "persist hard state" of a Ready. The write is
    /// synced unless it only moves the commit index ([`must_sync`]).
    pub fn append(&mut self, entries: Vec<Entry>, hard_state: Option<&HardState>) -> Result<(), StorageFailure> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = LogBatch::default();
        if !entries.is_empty() {
            batch.add_entries::<EntryCodec>(LOG, &entries).map_err(|source| StorageFailure::Engine { path: self.path.clone(), source })?;
        }
        if let Some(hs) = hard_state {
            batch
                .put_message(META, KEY_HARD_STATE.to_vec(), hs)
                .map_err(|source| StorageFailure::Engine { path: self.path.clone(), source })?;
        }
        self.write(&mut batch, must_sync(&self.hard_state, hard_state, entries.len()))?;
        if let Some(last) = entries.last().map(|e| e.index) {
            self.last_index = last;
            self.record_terms(&entries);
            self.cache.append(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a commit index raft-rs reported in a light ready (not synced: the commit index
    /// can always be learned again from the leader).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageFailure> {
        self.hard_state.commit = commit;
        let mut batch = LogBatch::default();
        batch
            .put_message(META, KEY_HARD_STATE.to_vec(), &self.hard_state)
            .map_err(|source| StorageFailure::Engine { path: self.path.clone(), source })?;
        self.write(&mut batch, false)
    }

    /// Installs a snapshot (from the leader, or the bootstrap one): persists it, drops the whole
    /// log, and moves the hard state's commit (and term) up to it. The caller restores the state
    /// machine from the same snapshot.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        let meta = snapshot.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        let mut batch = LogBatch::default();
        batch.add_command(LOG, raft_engine::Command::Clean);
        let wrap = |source| StorageFailure::Engine { path: self.path.clone(), source };
        batch.put_message(META, KEY_SNAPSHOT.to_vec(), snapshot).map_err(wrap)?;
        batch.put_message(META, KEY_HARD_STATE.to_vec(), &hs).map_err(wrap)?;
        batch.put(META, KEY_TRUNCATED.to_vec(), truncated_bytes(meta.index, meta.term)).map_err(wrap)?;
        self.write(&mut batch, true)?;
        self.hard_state = hs;
        self.truncated = (meta.index, meta.term);
        self.last_index = meta.index;
        self.term_starts.clear();
        self.cache.clear();
        self.snapshot_conf_state = meta.get_conf_state().clone();
        self.snapshot_index = meta.index;
        Ok(())
    }

    /// Persists `snapshot` (made from the applied state) and drops log entries up to
    /// `compact_to` (at most the snapshot's index), then lets raft-engine delete files no longer
    /// needed. Entries after `compact_to` are kept so a follower that lags a little catches up
    /// from the log instead of a snapshot.
    pub fn save_snapshot_and_compact(&mut self, snapshot: &Snapshot, compact_to: u64) -> Result<(), StorageFailure> {
        let index = snapshot.get_metadata().index;
        let compact_to = compact_to.min(index).min(self.last_index);
        let mut batch = LogBatch::default();
        let wrap = |source| StorageFailure::Engine { path: self.path.clone(), source };
        batch.put_message(META, KEY_SNAPSHOT.to_vec(), snapshot).map_err(wrap)?;
        let truncate = compact_to > self.truncated.0;
        let mut truncated = self.truncated;
        if truncate {
            let term = self.term_of(compact_to).unwrap_or(snapshot.get_metadata().term);
            truncated = (compact_to, term);
            batch.put(META, KEY_TRUNCATED.to_vec(), truncated_bytes(truncated.0, truncated.1)).map_err(wrap)?;
        }
        self.write(&mut batch, true)?;
        self.snapshot_conf_state = snapshot.get_metadata().get_conf_state().clone();
        self.snapshot_index = index;
        if truncate {
            self.engine.compact_to(LOG, compact_to + 1);
            self.cache.compact_to(compact_to);
            self.truncated = truncated;
            // Keep the boundary that covers the first kept entry.
            let first_term = self.term_of(compact_to + 1);
            self.term_starts = self.term_starts.split_off(&(compact_to + 1));
            if let Some(term) = first_term {
                self.term_starts.insert(compact_to + 1, term);
            }
            let _ = self.engine.purge_expired_files();
        }
        Ok(())
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.truncated.0 {
            return Some(self.truncated.1);
        }
        if index <= self.truncated.0 || index > self.last_index {
            return None;
        }
        self.term_starts.range(..=index).next_back().map(|(_, term)| *term)
    }

    /// Index of the first kept entry.
    pub fn first_kept_index(&self) -> u64 {
        self.truncated.0 + 1
    }
}

fn truncated_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut bytes = index.to_le_bytes().to_vec();
    bytes.extend_from_slice(&term.to_le_bytes());
    bytes
}

fn store_error(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl<S: StateMachine> raft::Storage for DiskStorage<S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.snapshot_conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        if let Some(entries) = self.cache.get(low, high, max_size) {
            return Ok(entries);
        }
        let mut entries = Vec::with_capacity((high - low) as usize);
        if low < high {
            let max = max_size.map(|m| m as usize);
            self.engine.fetch_entries_to::<EntryCodec>(LOG, low, high, max, &mut entries).map_err(store_error)?;
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let applied = self.applied.read().expect("state lock");
        if applied.index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(applied.to_snapshot())
    }
}

/// Decodes a protobuf message raft-rs produced (conf changes in entries, peer messages).
pub fn decode<M: protobuf::Message>(what: &'static str, bytes: &[u8]) -> Result<M, StorageFailure> {
    M::parse_from_bytes(bytes).map_err(|source| StorageFailure::Corrupt { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    /// The servers' storage (the harness tests another state machine).
    type DiskStorage = super::DiskStorage<ClusterState>;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8].into(), ..Default::default() }
    }

    #[test]
    fn only_a_moved_commit_index_is_written_without_a_sync() {
        let hs = |term, vote, commit| HardState { term, vote, commit, ..Default::default() };
        let stored = hs(3, 1, 10);
        let cases = [
            ("nothing new", None, 0, false),
            ("the commit index moved", Some(hs(3, 1, 12)), 0, false),
            ("entries appended", None, 2, true),
            ("entries and a commit", Some(hs(3, 1, 12)), 1, true),
            ("a new term", Some(hs(4, 0, 10)), 0, true),
            ("a vote", Some(hs(3, 2, 10)), 0, true),
        ];
        for (what, new, entries, sync) in cases {
            assert_eq!(must_sync(&stored, new.as_ref(), entries), sync, "{what}");
        }
    }

    fn members() -> BTreeMap<u64, String> {
        [(1, "127.0.0.1:1".to_string()), (2, "127.0.0.1:2".to_string())].into()
    }

    #[test]
    fn bootstrap_starts_every_member_from_the_same_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStorage::open(dir.path(), Bootstrap::InitialCluster(members())).unwrap();
        let state = s.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, [1, 2]);
        assert_eq!((state.hard_state.commit, state.hard_state.term), (BOOTSTRAP_INDEX, BOOTSTRAP_INDEX));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (BOOTSTRAP_INDEX + 1, BOOTSTRAP_INDEX));
        assert_eq!(s.term(BOOTSTRAP_INDEX).unwrap(), BOOTSTRAP_INDEX);
        assert_eq!(s.applied().read().unwrap().state.members(), &members());
    }

    #[test]
    fn entries_and_hard_state_survive_reopen_and_tail_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), Bootstrap::InitialCluster(members())).unwrap();
            let hs = HardState { term: 6, commit: 7, ..Default::default() };
            s.append(vec![entry(6, 6), entry(7, 6), entry(8, 6)], Some(&hs)).unwrap();
            // A new leader overwrites index 8 onward.
            s.append(vec![entry(8, 7), entry(9, 7)], None).unwrap();
        }
        let s = DiskStorage::open(dir.path(), Bootstrap::Join).unwrap();
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!((s.term(7).unwrap(), s.term(8).unwrap(), s.term(9).unwrap()), (6, 7, 7));
        assert_eq!(s.hard_state().commit, 7);
        let got = s.entries(6, 10, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), [(6, 6), (7, 6), (8, 7), (9, 7)]);
    }

    #[test]
    fn compaction_keeps_term_of_truncated_entry_and_refuses_older_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), Bootstrap::InitialCluster(members())).unwrap();
        let entries: Vec<_> = (6..=20).map(|i| entry(i, if i < 12 { 6 } else { 8 })).collect();
        s.append(entries.clone(), None).unwrap();
        let mut snap = s.applied().read().unwrap().to_snapshot();
        snap.mut_metadata().index = 18;
        snap.mut_metadata().term = 8;
        s.save_snapshot_and_compact(&snap, 15).unwrap();
        assert_eq!(s.first_index().unwrap(), 16);
        assert_eq!(s.term(15).unwrap(), 8);
        assert!(matches!(s.term(14), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(s.entries(15, 17, None, GetEntriesContext::empty(false)), Err(raft::Error::Store(StorageError::Compacted))));
        drop(s);
        let s = DiskStorage::open(dir.path(), Bootstrap::Join).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.term(16).unwrap()), (16, 20, 8));
    }

    #[test]
    fn installing_a_snapshot_drops_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), Bootstrap::Join).unwrap();
        s.append(vec![entry(1, 1), entry(2, 1)], None).unwrap();
        let applied = AppliedState {
            state: ClusterState::with_members(members()),
            index: 40,
            term: 9,
            conf_state: ConfState::from((vec![1, 2], vec![])),
            changes: 0,
        };
        s.apply_snapshot(&applied.to_snapshot()).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.term(40).unwrap()), (41, 40, 9));
        s.append(vec![entry(41, 9)], None).unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path(), Bootstrap::Join).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (41, 41));
        assert_eq!(s.initial_state().unwrap().conf_state.voters, [1, 2]);
        assert_eq!(s.applied().read().unwrap().index, 40);
    }
}
