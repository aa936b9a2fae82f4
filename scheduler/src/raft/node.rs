//! The Raft loop: one task owns the `RawNode` and nothing else touches it.
//!
//! It is generic over the replicated [`StateMachine`] and the [`Transport`] to the peers: the
//! servers run [`ClusterState`] over gRPC (the defaults of the type parameters), the harness
//! (`raft::harness`, tests only) a trivial machine over an in-memory network.
//!
//! Inputs arrive on one channel ([`Request`]: peer messages, proposals, read requests, transport
//! feedback) plus a ticker. After each batch of inputs, [`RaftNode::on_ready`] handles the
//! `Ready` exactly in the order raft-rs's contract gives:
//!
//! 1. send the messages (a leader may send before persisting);
//! 2. apply the snapshot, if any (storage and state machine);
//! 3. apply the committed entries to the state machine;
//! 4. append the new entries and 5. persist the hard state (one synced write);
//! 6. send the persisted messages;
//! 7. advance; then the light ready: record the commit index, send its messages, apply its
//!    committed entries, and advance the applied index.
//!
//! Afterwards linearizable reads whose read index is applied are answered, and every
//! `snapshot_every` applied entries the state machine is saved as a snapshot and the log is
//! compacted behind it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::grpc_transport::GrpcTransport;
use super::state_machine::StateMachine;
use super::storage::{AppliedState, DiskStorage, StorageFailure, decode};
use super::transport::{Feedback, FeedbackSink, Transport};
use super::{Proposal, ProposeFailure};
use crate::state::ClusterState;

/// Applied entries between two snapshots unless told otherwise: etcd's default.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;
/// Entries kept behind a snapshot unless told otherwise: etcd's default.
pub const DEFAULT_KEEP_ENTRIES: u64 = 5_000;

/// Timing and snapshot policy of a Raft member.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    pub id: u64,
    /// One raft tick. etcd's default heartbeat is 100 ms.
    pub tick: Duration,
    /// Ticks without a leader before an election (randomized up to twice that). With 100 ms
    /// ticks, 10 gives etcd's default 1 s election timeout.
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between two saved snapshots (each followed by log compaction). etcd's
    /// default (`--snapshot-count`) since 3.2: a snapshot serializes the whole state, so under
    /// thousands of writes a second a lower count spends a share of every server's CPU on them.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot so a follower a little behind catches up from the log
    /// (etcd keeps 5,000).
    pub keep_entries: u64,
}

impl RaftOptions {
    pub fn new(id: u64) -> RaftOptions {
        RaftOptions {
            id,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            keep_entries: DEFAULT_KEEP_ENTRIES,
        }
    }
}

/// What a server does in the Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
}

/// A summary of the member, published after each `Ready`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub role: Option<Role>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub voters: Vec<u64>,
    /// True once a membership change removed this server.
    pub removed: bool,
    /// A leader whose state holds everything any leader committed: it has committed and applied
    /// an entry of its own term. Until then a new leader's state may lack entries an earlier
    /// leader committed, and deciding from it (placing tasks) would decide twice.
    pub leader_caught_up: bool,
}

/// The most requests one drain of the queue takes into a round.
const MAX_BATCH: usize = 256;

/// Under load (at least this many proposals in the previous round), a round waits
/// [`GROUP_COMMIT_WAIT`] for more before it makes its Ready: one fsync, and one append to each
/// follower (each an fsync there too), then covers more writes. A lone writer never waits.
const GROUP_COMMIT_MIN: usize = 8;
const GROUP_COMMIT_WAIT: Duration = Duration::from_micros(200);

/// How long a round waits for more proposals, given how many the previous round had.
fn group_commit_wait(last_proposals: usize) -> Option<Duration> {
    (last_proposals >= GROUP_COMMIT_MIN).then_some(GROUP_COMMIT_WAIT)
}

/// A follower's proposal not applied within this many election timeouts is answered
/// `OutcomeUnknown` (it may have been lost on the way to the leader).
const FORWARDED_TICKS: usize = 2;

/// The answer to a proposal: the state machine's, or why there is none.
pub type ProposeResult<S> = Result<<S as StateMachine>::Answer, ProposeFailure>;
type ProposeReply<S> = oneshot::Sender<ProposeResult<S>>;

/// Inputs of the Raft loop.
pub enum Request<S: StateMachine> {
    /// A message from a peer.
    Step(Message),
    /// Propose (only on the leader) and answer once applied.
    Propose { proposal: Proposal<S::Command>, reply: ProposeReply<S> },
    /// Answer once the state machine has applied everything committed before now.
    ReadIndex { reply: oneshot::Sender<()> },
    /// What the transport learned about a delivery.
    Feedback(Feedback),
}

/// Carried in each proposed entry's context so the proposer can answer its caller.
#[derive(Serialize, Deserialize)]
struct EntryContext {
    proposer: u64,
    seq: u64,
}

/// A cheap, cloneable handle on the Raft loop for the API and the peer service.
pub struct RaftHandle<S: StateMachine = ClusterState, T = GrpcTransport> {
    id: u64,
    requests: mpsc::Sender<Request<S>>,
    applied: Arc<RwLock<AppliedState<S>>>,
    status: watch::Receiver<NodeStatus>,
    transport: Arc<T>,
}

// Not derived: the derive would require `S: Clone` and `T: Clone`.
impl<S: StateMachine, T> Clone for RaftHandle<S, T> {
    fn clone(&self) -> Self {
        RaftHandle {
            id: self.id,
            requests: self.requests.clone(),
            applied: self.applied.clone(),
            status: self.status.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<S: StateMachine, T> RaftHandle<S, T> {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The state machine as last applied on this server (may lag the leader).
    pub fn state(&self) -> RwLockReadGuard<'_, AppliedState<S>> {
        self.applied.read().expect("state lock")
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that changes after every `Ready` (leader, term, applied index).
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// Hands a peer's message to the loop (dropped if the loop is overloaded: Raft resends).
    pub fn step(&self, message: Message) {
        let _ = self.requests.try_send(Request::Step(message));
    }

    /// Proposes on this server, which must be the leader; resolves once applied here.
    pub async fn propose(&self, proposal: Proposal<S::Command>) -> ProposeResult<S> {
        if let Some(refused) = Self::refused(&proposal) {
            return refused;
        }
        self.submit(proposal).await?.await.map_err(|_| ProposeFailure::Stopped)?
    }

    /// Proposes `proposals` on this server, which must be the leader, in their order and
    /// pipelined (each handed to the loop before the one before has committed, so they share
    /// appends and fsyncs); resolves once every one is answered, with the answers in order.
    pub async fn propose_all(&self, proposals: Vec<Proposal<S::Command>>) -> Vec<ProposeResult<S>> {
        let mut pending = Vec::with_capacity(proposals.len());
        for proposal in proposals {
            pending.push(match Self::refused(&proposal) {
                Some(refused) => Err(refused),
                None => Ok(self.submit(proposal).await),
            });
        }
        let mut answers = Vec::with_capacity(pending.len());
        for pending in pending {
            answers.push(match pending {
                Err(refused) => refused,
                Ok(Ok(answer)) => answer.await.map_err(|_| ProposeFailure::Stopped).and_then(|answer| answer),
                Ok(Err(failure)) => Err(failure),
            });
        }
        answers
    }

    /// The answer to a proposal refused before it is proposed. A voter's address is not
    /// checked when the change is applied (it changes the membership, not the state): it is
    /// checked here, for local and forwarded proposals alike.
    fn refused(proposal: &Proposal<S::Command>) -> Option<ProposeResult<S>> {
        match proposal {
            Proposal::AddVoter { address, .. } => S::check_voter_address(address).err().map(Ok),
            _ => None,
        }
    }

    /// Hands `proposal` to the loop and returns where its answer will come, without waiting
    /// for it: proposals submitted one after another enter the log in that order, and those
    /// the loop finds queued together share one append and one fsync.
    pub async fn submit(&self, proposal: Proposal<S::Command>) -> Result<oneshot::Receiver<ProposeResult<S>>, ProposeFailure> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Propose { proposal, reply }).await.map_err(|_| ProposeFailure::Stopped)?;
        Ok(answer)
    }

    /// Resolves once this server has applied everything committed when it was called (a
    /// ReadIndex round through the leader). Never resolves while no leader is reachable: the
    /// caller times out.
    pub async fn read_index(&self) -> Result<(), ProposeFailure> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::ReadIndex { reply }).await.map_err(|_| ProposeFailure::Stopped)?;
        answer.await.map_err(|_| ProposeFailure::Stopped)
    }
}

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A committed entry this build cannot read: applying around it would make this server's
    /// state differ from the others', so it stops instead (as etcd and Nomad do).
    #[error(
        "committed log entry {index} cannot be applied by this build ({source}); this server \
         stopped applying so that its state does not diverge from the other servers': upgrade \
         this sched binary to the version the other servers run, then start it again"
    )]
    UnreadableEntry {
        index: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The Raft member: owns the `RawNode`, applies entries, answers proposals and reads.
pub struct RaftNode<S: StateMachine = ClusterState, T = GrpcTransport> {
    raw: RawNode<DiskStorage<S>>,
    options: RaftOptions,
    requests: mpsc::Receiver<Request<S>>,
    transport: Arc<T>,
    applied: Arc<RwLock<AppliedState<S>>>,
    status: watch::Sender<NodeStatus>,
    /// Proposals of this server awaiting their entry's application, by sequence number.
    proposals: HashMap<u64, ProposeReply<S>>,
    /// Proposals this server made as a follower (raft-rs sent them to the leader as
    /// `MsgPropose`), by sequence number: the leader they went to and the ticks left before
    /// their outcome is declared unknown.
    forwarded: HashMap<u64, (u64, usize)>,
    /// Commands of this round not yet handed to raft-rs, with their sequence numbers and
    /// callers: they go in one `MsgPropose` (see [`RaftNode::propose_queued`]).
    queued: Vec<Entry>,
    queued_replies: Vec<(u64, ProposeReply<S>)>,
    next_seq: u64,
    /// ReadIndex requests awaiting their read state, by sequence number.
    reads: HashMap<u64, oneshot::Sender<()>>,
    /// Reads whose read index is known, awaiting its application.
    ready_reads: Vec<(u64, oneshot::Sender<()>)>,
    removed: bool,
    /// Whether this server led after the previous round of the loop.
    was_leader: bool,
}

impl<S: StateMachine, T: Transport> RaftNode<S, T> {
    /// Builds the member over opened storage and returns it with its handle. Run it with
    /// [`RaftNode::run`].
    pub fn new(options: RaftOptions, storage: DiskStorage<S>, transport: Arc<T>) -> Result<(Self, RaftHandle<S, T>), NodeError> {
        let applied = storage.applied();
        let applied_index = applied.read().expect("state lock").index;
        let config = raft::Config {
            id: options.id,
            election_tick: options.election_ticks,
            heartbeat_tick: options.heartbeat_ticks,
            applied: applied_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            // Proposals handled in one round go to each follower as one append, not one each.
            batch_append: true,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, storage, &super::logger::raft_logger(options.id))?;
        let (tx, rx) = mpsc::channel(4096);
        let (status_tx, status_rx) = watch::channel(NodeStatus { id: options.id, ..Default::default() });
        {
            let state = applied.read().expect("state lock");
            for (id, address) in state.state.members() {
                transport.learn(*id, address);
            }
        }
        let feedback = tx.clone();
        transport.set_feedback(FeedbackSink::new(move |report| {
            let _ = feedback.try_send(Request::Feedback(report));
        }));
        let handle = RaftHandle { id: options.id, requests: tx, applied: applied.clone(), status: status_rx, transport: transport.clone() };
        let node = RaftNode {
            raw,
            options,
            requests: rx,
            transport,
            applied,
            status: status_tx,
            proposals: HashMap::new(),
            forwarded: HashMap::new(),
            queued: Vec::new(),
            queued_replies: Vec::new(),
            next_seq: first_seq(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            removed: false,
            was_leader: false,
        };
        Ok((node, handle))
    }

    /// Runs until every handle is dropped, or storage fails.
    pub async fn run(mut self) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let single_threaded = tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
        self.publish_status();
        let mut last_proposals = 0;
        loop {
            let mut tick = false;
            let mut inputs = Vec::new();
            tokio::select! {
                _ = ticker.tick() => tick = true,
                request = self.requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    inputs.push(request);
                    // Batch what else is queued into the same Ready (one fsync for many).
                    self.drain_queued(&mut inputs);
                    if let Some(wait) = group_commit_wait(last_proposals)
                        && !single_threaded
                    {
                        // This thread is the loop's own: sleeping blocks nothing else.
                        std::thread::sleep(wait);
                        self.drain_queued(&mut inputs);
                    }
                }
            }
            last_proposals = inputs.iter().filter(|r| matches!(r, Request::Propose { .. })).count();
            if single_threaded {
                // A single-threaded runtime (the harness's, which hosts several servers) can
                // neither `block_in_place` nor give each server's storage a thread of its own;
                // raft-engine caches the last block it read per thread, keyed by file position
                // and not by engine, so two engines on one thread would read each other's
                // entries. Each round runs on a new thread, which starts with an empty cache.
                std::thread::scope(|scope| match scope.spawn(|| self.round(tick, inputs, false)).join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                })?;
            } else {
                self.round(tick, inputs, true)?;
            }
        }
    }

    /// Moves what is queued (up to [`MAX_BATCH`] requests) into `inputs`.
    fn drain_queued(&mut self, inputs: &mut Vec<Request<S>>) {
        for _ in 0..MAX_BATCH {
            match self.requests.try_recv() {
                Ok(request) => inputs.push(request),
                Err(_) => break,
            }
        }
    }

    /// One round of the loop: the tick or the inputs, then the `Ready` they made, then the
    /// answers and the status.
    fn round(&mut self, tick: bool, inputs: Vec<Request<S>>, block_in_place: bool) -> Result<(), NodeError> {
        // A removed server goes quiet: were it the leader, its heartbeats would keep the
        // remaining servers from electing a new one.
        if tick && !self.removed {
            self.raw.tick();
            self.age_forwarded();
        }
        for request in inputs {
            self.handle(request);
        }
        self.propose_queued();
        if self.raw.has_ready() {
            if block_in_place {
                // Handling a Ready writes to disk (fsync): the runtime moves its other tasks
                // off this thread meanwhile.
                tokio::task::block_in_place(|| self.on_ready())?;
            } else {
                self.on_ready()?;
            }
        }
        self.answer_if_deposed();
        self.publish_status();
        Ok(())
    }

    fn handle(&mut self, request: Request<S>) {
        if let Request::Propose { proposal: Proposal::Command(command), reply } = request {
            self.queue_command(command, reply);
            return;
        }
        // Whatever comes next finds the commands queued before it in the log already.
        self.propose_queued();
        match request {
            Request::Step(_) if self.removed => {}
            Request::Step(message) => {
                if let Err(e) = self.raw.step(message) {
                    tracing::debug!("ignored a raft message: {e}");
                }
            }
            Request::Propose { proposal, reply } => self.propose(proposal, reply),
            Request::ReadIndex { reply } => {
                let seq = self.next_seq();
                self.raw.read_index(seq.to_le_bytes().to_vec());
                self.reads.insert(seq, reply);
            }
            Request::Feedback(Feedback::Unreachable(id)) => self.raw.report_unreachable(id),
            Request::Feedback(Feedback::SnapshotSent { to, delivered }) => {
                let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Takes a command of this round for the next `MsgPropose`, or refuses it.
    ///
    /// The leader proposes; a follower that hears from a leader hands it its callers'
    /// commands through Raft itself: raft-rs sends them as `MsgPropose` with the other
    /// messages to the leader (one stream, no call of their own), and the follower answers
    /// each when it applies the entry, which carries this server's id and sequence number.
    /// Such a proposal can be lost on the way (a full peer queue, a leader that just died,
    /// one transferring leadership): it is answered `OutcomeUnknown` when the leader changes
    /// or after two election timeouts. A removed leader still believes it leads (raft-rs does
    /// not step it down); it must not take proposals, which would make it send appends that
    /// keep the remaining servers from electing a new leader.
    fn queue_command(&mut self, command: S::Command, reply: ProposeReply<S>) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if self.removed || !(leader || self.hears_leader()) {
            let _ = reply.send(Err(ProposeFailure::NotLeader { me: self.options.id }));
            return;
        }
        let seq = self.next_seq();
        let context = serde_json::to_vec(&EntryContext { proposer: self.options.id, seq }).expect("context serializes");
        self.queued.push(Entry { data: S::encode(&command).into(), context: context.into(), ..Default::default() });
        self.queued_replies.push((seq, reply));
    }

    /// Hands the queued commands to raft-rs as one `MsgPropose`, in their order: the leader
    /// appends them together and sends each follower one append for all of them (one
    /// `MsgPropose` per command would make one append per command per follower); a follower
    /// sends them to the leader in one message.
    fn propose_queued(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.options.id;
        message.set_entries(std::mem::take(&mut self.queued).into());
        let replies = std::mem::take(&mut self.queued_replies);
        let leader = self.raw.raft.state == StateRole::Leader;
        match self.raw.step(message) {
            Ok(()) => {
                for (seq, reply) in replies {
                    self.proposals.insert(seq, reply);
                    if !leader {
                        self.forwarded.insert(seq, (self.raw.raft.leader_id, FORWARDED_TICKS * self.options.election_ticks));
                    }
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(ProposeFailure::Dropped { reason: e.to_string() }));
                }
            }
        }
    }

    /// Proposes a membership change; only the leader does (a follower's callers send theirs
    /// to the leader's API: `Consensus::write`, the forwarder). A command joins the queue.
    fn propose(&mut self, proposal: Proposal<S::Command>, reply: ProposeReply<S>) {
        let mut change = ConfChange::default();
        match proposal {
            Proposal::Command(command) => return self.queue_command(command, reply),
            Proposal::AddVoter { id, address } => {
                change.set_change_type(ConfChangeType::AddNode);
                change.node_id = id;
                change.context = address.into_bytes().into();
            }
            Proposal::RemoveVoter { id } => {
                change.set_change_type(ConfChangeType::RemoveNode);
                change.node_id = id;
            }
        }
        if self.raw.raft.state != StateRole::Leader || self.removed {
            let _ = reply.send(Err(ProposeFailure::NotLeader { me: self.options.id }));
            return;
        }
        let seq = self.next_seq();
        let context = serde_json::to_vec(&EntryContext { proposer: self.options.id, seq }).expect("context serializes");
        match self.raw.propose_conf_change(context, change) {
            Ok(()) => {
                self.proposals.insert(seq, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(ProposeFailure::Dropped { reason: e.to_string() }));
            }
        }
    }

    /// Handles one `Ready` in the order of raft-rs's contract (see the module doc).
    fn on_ready(&mut self) -> Result<(), NodeError> {
        let mut ready = self.raw.ready();

        // 1. Messages that need no persistence first.
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        // 2. A snapshot from the leader replaces storage and state machine.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().apply_snapshot(&snapshot)?;
            let mut installed = AppliedState::<S>::from_snapshot(&snapshot)?;
            for (id, address) in installed.state.members() {
                self.transport.learn(*id, address);
            }
            let (index, term, bytes) = (installed.index, installed.term, snapshot.get_data().len());
            let mut applied = self.applied.write().expect("state lock");
            installed.changes = applied.changes + 1;
            *applied = installed;
            drop(applied);
            tracing::info!(index, term, bytes, "installed a snapshot from the leader");
        }
        // 3. Committed entries to the state machine.
        self.apply_entries(ready.take_committed_entries())?;
        // 4 + 5. New entries and hard state, one synced write.
        let entries = ready.take_entries();
        self.raw.mut_store().append(entries, ready.hs())?;
        // 6. Messages that needed the entries persisted.
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        for read in ready.take_read_states() {
            let seq = read.request_ctx.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            if let Some(reply) = seq.and_then(|seq| self.reads.remove(&seq)) {
                self.ready_reads.push((read.index, reply));
            }
        }
        // 7. Advance, then the light ready.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();

        self.answer_reads();
        self.maybe_snapshot()
    }

    /// Applies committed entries under one hold of the state lock (readers see a whole batch
    /// or none of it), then answers the proposers among them, the lock released.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut answers = Vec::new();
        let shared = Arc::clone(&self.applied);
        let mut applied = shared.write().expect("state lock");
        for entry in entries {
            let answer = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => None,
                EntryType::EntryNormal => {
                    let command = decode_committed::<S>(&entry)?;
                    let answer = applied.state.apply(command);
                    if S::changed(&answer) {
                        applied.changes += 1;
                    }
                    Some(answer)
                }
                EntryType::EntryConfChange => {
                    let change: ConfChange = decode("membership change", &entry.data)?;
                    self.apply_conf_change(&change, &mut applied)?;
                    applied.changes += 1;
                    Some(S::membership_changed())
                }
                EntryType::EntryConfChangeV2 => {
                    tracing::error!(index = entry.index, "joint membership changes are not used by sched; skipped");
                    None
                }
            };
            applied.index = entry.index;
            applied.term = entry.term;
            // Only the proposer of an entry answers it; a server with no proposal waiting (a
            // follower, mostly) need not read whose it is.
            if let Some(answer) = answer
                && !self.proposals.is_empty()
                && let Ok(context) = serde_json::from_slice::<EntryContext>(&entry.context)
                && context.proposer == self.options.id
                && let Some(reply) = self.proposals.remove(&context.seq)
            {
                answers.push((reply, answer));
            }
        }
        drop(applied);
        for (reply, answer) in answers {
            let _ = reply.send(Ok(answer));
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, change: &ConfChange, applied: &mut AppliedState<S>) -> Result<(), NodeError> {
        let conf_state = self.raw.apply_conf_change(change)?;
        applied.conf_state = conf_state;
        match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let address = String::from_utf8_lossy(&change.context).into_owned();
                self.transport.learn(change.node_id, &address);
                applied.state.set_member(change.node_id, address);
                tracing::info!(server = change.node_id, "server added to the cluster");
            }
            ConfChangeType::RemoveNode => {
                applied.state.remove_member(change.node_id);
                self.transport.forget(change.node_id);
                if change.node_id == self.options.id {
                    self.removed = true;
                    self.transport.mute();
                    tracing::warn!("this server was removed from the cluster; it no longer takes part");
                }
                tracing::info!(server = change.node_id, "server removed from the cluster");
            }
        }
        Ok(())
    }

    /// Whether this server follows a leader it heard from within two heartbeats: its commands
    /// go to that leader through Raft. (A leader that has just died is still named until the
    /// election timeout; proposals sent to it would only come back `OutcomeUnknown`, where the
    /// caller's retry after `NotLeader` reaches the next leader.)
    fn hears_leader(&self) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Follower && raft.leader_id != 0 && raft.election_elapsed <= 2 * self.options.heartbeat_ticks
    }

    /// Answers `OutcomeUnknown` to forwarded proposals not applied within their ticks.
    fn age_forwarded(&mut self) {
        self.give_up_forwarded(|(_, ticks)| {
            *ticks = ticks.saturating_sub(1);
            *ticks == 0
        });
    }

    /// Answers `OutcomeUnknown` to the forwarded proposals `lost` picks (given the leader each
    /// went to and its ticks left), and forgets those already answered by their entry.
    fn give_up_forwarded(&mut self, mut lost: impl FnMut(&mut (u64, usize)) -> bool) {
        if self.forwarded.is_empty() {
            return;
        }
        let proposals = &mut self.proposals;
        self.forwarded.retain(|seq, sent| {
            if !proposals.contains_key(seq) {
                return false;
            }
            if lost(sent) {
                if let Some(reply) = proposals.remove(seq) {
                    let _ = reply.send(Err(ProposeFailure::OutcomeUnknown));
                }
                return false;
            }
            true
        });
    }

    /// Once this server stops leading (a newer term, or check quorum), its proposals not yet
    /// applied may or may not ever be: their callers hear that now, not at their deadline.
    /// Leadership is lost while stepping a message or ticking, before the Ready that follows,
    /// so it is compared with the previous round of the loop. Likewise a follower's proposals
    /// sent to a leader that is no longer the one it follows.
    fn answer_if_deposed(&mut self) {
        let current = self.raw.raft.leader_id;
        self.give_up_forwarded(|(leader, _)| *leader != current);
        let leader = self.raw.raft.state == StateRole::Leader;
        if self.was_leader && !leader {
            for (_, reply) in self.proposals.drain() {
                let _ = reply.send(Err(ProposeFailure::OutcomeUnknown));
            }
        }
        self.was_leader = leader;
    }

    /// Answers the reads whose read index this server has applied.
    fn answer_reads(&mut self) {
        let applied = self.applied.read().expect("state lock").index;
        let (done, waiting): (Vec<_>, Vec<_>) = self.ready_reads.drain(..).partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
        // Reads raft-rs dropped (no leader yet) are abandoned by their callers' timeouts.
        self.reads.retain(|_, reply| !reply.is_closed());
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let (index, snapshot) = {
            let applied = self.applied.read().expect("state lock");
            if applied.index < self.raw.store().snapshot_index() + self.options.snapshot_every {
                return Ok(());
            }
            (applied.index, applied.to_snapshot())
        };
        let compact_to = index.saturating_sub(self.options.keep_entries);
        self.raw.mut_store().save_snapshot_and_compact(&snapshot, compact_to)?;
        tracing::info!(index, compact_to, "saved a snapshot and compacted the log");
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let applied = self.applied.read().expect("state lock").index;
        let status = NodeStatus {
            id: self.options.id,
            leader_id: raft.leader_id,
            role: Some(match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
                StateRole::Follower => Role::Follower,
            }),
            term: raft.term,
            commit: raft.raft_log.committed,
            applied,
            voters: raft.prs().conf().voters().ids().iter().collect(),
            removed: self.removed,
            leader_caught_up: raft.state == StateRole::Leader && raft.commit_to_current_term() && applied >= raft.raft_log.committed,
        };
        self.status.send_if_modified(|old| {
            if *old == status {
                false
            } else {
                *old = status;
                true
            }
        });
    }
}

/// The first sequence number of this run of the loop: the clock's nanoseconds, so that an entry
/// an earlier run of this server proposed, applied after a restart, never matches (and answers)
/// a new proposal of this run.
fn first_seq() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

/// The command in a committed entry, or the error that stops this server (never a skip).
fn decode_committed<S: StateMachine>(entry: &Entry) -> Result<S::Command, NodeError> {
    S::decode(&entry.data).map_err(|source| {
        let error = NodeError::UnreadableEntry { index: entry.index, source: Box::new(source) };
        tracing::error!("{error}");
        error
    })
}

/// Is this message a snapshot (the transport reports their delivery)?
pub fn is_snapshot(message: &Message) -> bool {
    message.get_msg_type() == MessageType::MsgSnapshot
}

/// Encodes a raft message for the wire.
pub fn encode_message(message: &Message) -> Vec<u8> {
    message.write_to_bytes().expect("raft messages encode")
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_loaded_leader_waits_to_commit_more_writes_together() {
        for (proposals, wait) in [
            (0, None),
            (1, None),
            (GROUP_COMMIT_MIN - 1, None),
            (GROUP_COMMIT_MIN, Some(GROUP_COMMIT_WAIT)),
            (256, Some(GROUP_COMMIT_WAIT)),
        ] {
            assert_eq!(group_commit_wait(proposals), wait, "{proposals} proposals in the last round");
        }
    }

    use super::*;

    #[test]
    fn an_entry_of_a_newer_build_stops_this_server_with_upgrade_advice() {
        let mut entry = Entry { index: 42, data: br#"{"v":9,"command":{"op":"from_the_future"}}"#.to_vec().into(), ..Default::default() };
        let error = decode_committed::<ClusterState>(&entry).unwrap_err();
        assert!(matches!(error, NodeError::UnreadableEntry { index: 42, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("entry 42") && message.contains("upgrade this sched binary"), "{message}");
        // An unknown command in a known version is refused the same way.
        entry.data = br#"{"v":1,"command":{"op":"from_the_future"}}"#.to_vec().into();
        assert!(matches!(decode_committed::<ClusterState>(&entry), Err(NodeError::UnreadableEntry { index: 42, .. })));
    }
}
