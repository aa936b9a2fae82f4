//! The sessions with the servers. One session per server connection: register (by name, so a
//! restarted agent keeps its node id), then, until the connection breaks, heartbeat (with the
//! [task metrics](super::task_metrics)), follow the assignment stream, check local tasks every
//! check interval — [reap](super::reaping) leftovers when due, apply the [plan](super::apply),
//! start due [probes](super::probes) — and
//! [report](super::reports) every task state change. When a server dies the agent moves to the
//! next one ([`ServerRotation`]); tasks keep running meanwhile (each under its own shim), and
//! the [`NodeState`] carries over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use tokio::sync::{mpsc, watch};

use super::AgentConfig;
use super::assignments::assigned;
use super::connect::{ServerRotation, connect};
use super::state::NodeState;
use super::task_jobs::{JobDone, TaskHost};
use crate::error::{AgentError, Result};
use crate::ingress_node::IngressHandle;

/// This node as the sessions act through it.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) host: TaskHost,
    /// HOST:PORT the servers reach the agent API on (registered with the node).
    pub(super) api_address: String,
    /// How connections to the servers are made (security, timeouts).
    pub(super) connections: transport::Transport,
    /// The node's ingress, whose targets and requests in flight go with every heartbeat.
    pub(super) ingress: Option<IngressHandle>,
    /// The images the assigned tasks name, for the image collector.
    pub(super) wanted_images: Arc<watch::Sender<Option<HashSet<String>>>>,
}

/// Sessions with the servers in turn, forever.
pub(super) async fn serve(config: &AgentConfig, node: Node) {
    let mut rotation = ServerRotation::new(&config.servers);
    let mut state = NodeState::new(node.host.endpoints(&config.address).await, node.host.ips().await);
    // One channel for every session: a job that ends between sessions (a start whose server
    // died meanwhile) is booked by the next one, so its task does not stay busy forever.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    loop {
        let server = rotation.server();
        let began = Instant::now();
        match session(config, &node, server, &mut state, (&done_tx, &mut done_rx)).await {
            Ok(()) => tracing::warn!(server, "the assignment stream ended; reconnecting"),
            Err(e) => tracing::warn!(server, "session failed: {e}"),
        }
        rotation.ended(began).await;
    }
}

/// The channel background jobs report on: the sender they are given, the receiver the session
/// books them from.
type JobChannel<'a> = (&'a mpsc::UnboundedSender<JobDone>, &'a mut mpsc::UnboundedReceiver<JobDone>);

/// One session with `server`, until its assignment stream ends (`Ok`) or a call fails.
async fn session(config: &AgentConfig, node: &Node, server: &str, state: &mut NodeState, jobs: JobChannel<'_>) -> Result<()> {
    let (done_tx, done_rx) = jobs;
    let driver = &node.host.driver;
    let channel = connect(&node.connections, server).await?;
    let mut client = AgentApiClient::new(channel);
    let node_id = client
        .register(pb::RegisterRequest {
            name: config.name.clone(),
            address: config.address.clone(),
            cpu_millis: config.cpu_millis,
            memory_mib: config.memory_mib,
            labels: config.labels.clone().into_iter().collect(),
            api_address: node.api_address.clone(),
        })
        .await
        .map_err(|s| AgentError::rpc("register", &s))?
        .into_inner()
        .node_id;
    tracing::info!(server, node_id, "registered");
    // Everything must be reported again to a (possibly new) leader.
    state.reported.clear();
    let mut stream = client
        .watch_assignments(pb::WatchAssignmentsRequest { node_id })
        .await
        .map_err(|s| AgentError::rpc("watch assignments", &s))?
        .into_inner();
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    let mut check = tokio::time::interval(config.check_interval);
    loop {
        tokio::select! {
            message = stream.message() => match message.map_err(|s| AgentError::rpc("assignment stream", &s))? {
                Some(assignments) => {
                    let assigned = assigned(&assignments);
                    state.wanted = assigned.wanted;
                    state.unpinned = assigned.unpinned;
                    state.assigned = true;
                    node.wanted_images.send_replace(Some(state.wanted.values().map(|w| w.spec.image.clone()).collect()));
                    state.reap_if_due(config, &node.host, done_tx).await;
                    state.apply_plan(config, &node.host, done_tx).await?;
                }
                None => return Ok(()),
            },
            _ = heartbeat.tick() => {
                let metrics = state.sample_metrics(driver);
                let measured_unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let ingress = node.ingress.as_ref().map(IngressHandle::report);
                let known = client
                    .heartbeat(pb::HeartbeatRequest { node_id, metrics, measured_unix_ms, ingress })
                    .await
                    .map_err(|s| AgentError::rpc("heartbeat", &s))?
                    .into_inner()
                    .known;
                if !known {
                    return Err(AgentError::UnknownNode);
                }
            }
            _ = check.tick() => {
                if state.assigned {
                    state.reap_if_due(config, &node.host, done_tx).await;
                    state.apply_plan(config, &node.host, done_tx).await?;
                }
                state.start_due_probes(config, driver, done_tx);
                state.report_changes(&mut client, node_id, driver).await?;
            }
            Some(done) = done_rx.recv() => {
                state.job_done(done);
                state.report_changes(&mut client, node_id, driver).await?;
            }
        }
    }
}
