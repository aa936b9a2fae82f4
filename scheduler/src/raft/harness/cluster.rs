//! Raft servers of one test: real loops over raft-engine storage in a temporary directory,
//! connected by a [`MemNetwork`], with the waits and writes the tests need. Every wait is on
//! events (a status change of any server) and fails the test, saying what it waited for and
//! where each server stood, after [`WAIT_LIMIT`] of virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::select_all;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::list_machine::ListMachine;
use super::mem_network::{MemNetwork, MemTransport};
use crate::raft::node::{NodeError, ProposeResult};
use crate::raft::storage::{Bootstrap, DiskStorage};
use crate::raft::{NodeStatus, Proposal, ProposeFailure, RaftHandle, RaftNode, RaftOptions, Role};

/// Virtual time a wait may take before the test fails: many election timeouts.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The seed of the network's losses: a failing run can be replayed.
const SEED: u64 = 12;

pub type TestHandle = RaftHandle<ListMachine, MemTransport>;

struct Server {
    handle: TestHandle,
    transport: std::sync::Arc<MemTransport>,
    task: JoinHandle<Result<(), NodeError>>,
}

pub struct TestCluster {
    pub network: MemNetwork,
    dir: tempfile::TempDir,
    /// The options of every server but its id.
    template: RaftOptions,
    servers: BTreeMap<u64, Server>,
}

/// The address server `id` is known by (routing is by id; addresses are only replicated).
pub fn address(id: u64) -> String {
    format!("mem:{id}")
}

impl TestCluster {
    /// Starts servers `1..=voters` as a new cluster. Must run inside a tokio runtime.
    pub fn start(voters: u64, template: RaftOptions) -> TestCluster {
        let mut cluster = TestCluster {
            network: MemNetwork::new(SEED),
            dir: tempfile::tempdir().expect("a temporary directory"),
            template,
            servers: BTreeMap::new(),
        };
        let members: BTreeMap<u64, String> = (1..=voters).map(|id| (id, address(id))).collect();
        for id in 1..=voters {
            cluster.launch(id, Bootstrap::InitialCluster(members.clone()));
        }
        cluster
    }

    /// Starts server `id` on the network: a new member of the initial cluster, a server that
    /// waits to be added (`Bootstrap::Join`), or a restart (its directory exists: `bootstrap`
    /// is ignored).
    pub fn launch(&mut self, id: u64, bootstrap: Bootstrap) {
        let dir = self.dir.path().join(id.to_string());
        // On a thread of its own, as each round of the loop (see `RaftNode::run`): raft-engine's
        // per-thread block cache must never see two engines.
        let storage = std::thread::scope(|scope| scope.spawn(|| DiskStorage::<ListMachine>::open(&dir, bootstrap)).join())
            .expect("opening storage panicked")
            .expect("storage opens");
        let options = RaftOptions { id, ..self.template.clone() };
        let transport = self.network.transport(id);
        let (node, handle) = RaftNode::new(options, storage, transport.clone()).expect("the raft loop builds");
        let inbox = handle.clone();
        self.network.attach(id, move |message| inbox.step(message));
        let task = tokio::spawn(node.run());
        self.servers.insert(id, Server { handle, transport, task });
    }

    /// Stops server `id` as a crash would (its loop is dropped between two Readies) and starts
    /// it again from its directory.
    pub async fn restart(&mut self, id: u64) {
        let server = self.servers.remove(&id).expect("a running server");
        server.task.abort();
        let _ = server.task.await;
        self.launch(id, Bootstrap::Join);
    }

    pub fn handle(&self, id: u64) -> &TestHandle {
        &self.servers[&id].handle
    }

    pub fn transport(&self, id: u64) -> &MemTransport {
        &self.servers[&id].transport
    }

    pub fn status(&self, id: u64) -> NodeStatus {
        self.handle(id).status()
    }

    /// The voters as server `id` counts them, in order.
    pub fn voters(&self, id: u64) -> Vec<u64> {
        let mut voters = self.status(id).voters;
        voters.sort_unstable();
        voters
    }

    /// The list as server `id` has applied it.
    pub fn list(&self, id: u64) -> Vec<String> {
        self.handle(id).state().state.entries.clone()
    }

    fn statuses(&self) -> Vec<NodeStatus> {
        self.servers.values().map(|s| s.handle.status()).collect()
    }

    /// Waits until `done` holds, re-checking after every status change of any server (every
    /// applied entry changes the status).
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&TestCluster) -> bool) {
        let mut watches: Vec<_> = self.servers.values().map(|s| s.handle.watch_status()).collect();
        let waited = tokio::time::timeout(WAIT_LIMIT, async {
            while !done(self) {
                let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
                let (changed, index, _) = select_all(changes).await;
                if changed.is_err() {
                    // That server's loop stopped: its status will not change again.
                    watches.remove(index);
                    assert!(!watches.is_empty(), "{what}: every raft loop stopped");
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "{what}: not reached within {WAIT_LIMIT:?} of virtual time; servers: {:#?}", self.statuses());
    }

    /// The leader of the newest term among `among`, if one of them leads it.
    pub fn leader_among(&self, among: &[u64]) -> Option<u64> {
        let statuses: Vec<NodeStatus> = among.iter().map(|id| self.status(*id)).filter(|s| !s.removed).collect();
        let newest = statuses.iter().map(|s| s.term).max()?;
        statuses.iter().find(|s| s.term == newest && s.role == Some(Role::Leader)).map(|s| s.id)
    }

    /// Waits until one of `among` leads the newest term any of them knows, and returns it.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        self.wait_until(&format!("a leader among {among:?}"), |c| c.leader_among(among).is_some()).await;
        self.leader_among(among).expect("waited for")
    }

    /// Waits until every server of `among` has applied the same list, of `len` entries, and
    /// returns it.
    pub async fn wait_converged(&self, among: &[u64], len: usize) -> Vec<String> {
        self.wait_until(&format!("servers {among:?} applied the same {len} entries"), |c| {
            let first = c.list(among[0]);
            first.len() == len && among.iter().all(|id| c.list(*id) == first)
        })
        .await;
        self.list(among[0])
    }

    /// Proposes through the leader among `among`, retrying while there is none or it moves
    /// before the proposal enters its log (as `Consensus::write` does); returns the answer or
    /// why there is none.
    pub async fn propose(&self, among: &[u64], proposal: Proposal<String>) -> ProposeResult<ListMachine> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let leader = self.wait_for_leader(among).await;
            let attempt = tokio::time::timeout_at(deadline, self.handle(leader).propose(proposal.clone())).await;
            match attempt.unwrap_or_else(|_| panic!("{proposal:?} got no answer within {WAIT_LIMIT:?} of virtual time")) {
                Err(ProposeFailure::NotLeader { .. } | ProposeFailure::Dropped { .. }) => {
                    assert!(Instant::now() < deadline, "{proposal:?}: no leader took it within {WAIT_LIMIT:?}");
                    // Let the servers move on (a tick) before asking again.
                    tokio::time::sleep(self.template.tick).await;
                }
                answer => return answer,
            }
        }
    }

    /// Appends `entry` through the leader among `among`.
    pub async fn write(&self, among: &[u64], entry: &str) -> ProposeResult<ListMachine> {
        self.propose(among, Proposal::Command(entry.to_string())).await
    }
}
