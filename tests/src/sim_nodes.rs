//! Simulated nodes: many lightweight agents in one process, speaking the real agent protocol
//! (mutual TLS, `agent.v1.AgentApi`) to real `sched server` processes, for scale tests and the
//! scale benchmark (issue 17). Each registers, heartbeats with per-task metrics, follows its
//! assignment stream and reports every assigned task running (and stopped ones exited) at
//! once: no images, no containers.
//!
//! Their certificates are issued here from the cluster's CA directory (`sched ca create`'s
//! `ca.pem` and `ca-key.pem`), as `sched dev` issues its agent's: a thousand joins would
//! measure joining, not scheduling.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use proto::sched::v1::{DesiredState, TaskState};
use tokio::task::JoinSet;
use transport::{Credentials, Profile, Security, Transport};

/// How each simulated node behaves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Heartbeat period (sched-agent's default is 1 s).
    pub heartbeat: Duration,
    /// Capacity each node offers.
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Names are `PREFIX-N`.
    pub prefix: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { heartbeat: Duration::from_secs(1), cpu_millis: 4000, memory_mib: 8192, prefix: "sim".into() }
    }
}

/// What the simulated nodes did, summed over all of them.
#[derive(Debug, Default)]
pub struct SimStats {
    pub registered: AtomicU64,
    pub heartbeats: AtomicU64,
    pub reports: AtomicU64,
    /// Sessions that ended with an error (a server gone, a refused call) and were started again.
    pub session_errors: AtomicU64,
}

/// Running simulated nodes; dropping them stops them all (their servers mark them down later).
pub struct SimNodes {
    nodes: JoinSet<()>,
    pub stats: Arc<SimStats>,
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.nodes.abort_all();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl SimNodes {
    /// Starts `count` nodes on the current tokio runtime, each talking to `servers` (spread
    /// over them, moving on when one fails), with certificates from the CA in `ca_dir`.
    pub fn start(servers: &[String], ca_dir: &Path, count: usize, options: SimOptions) -> SimNodes {
        let read =
            |name: &str| std::fs::read_to_string(ca_dir.join(name)).unwrap_or_else(|e| panic!("{name} in {}: {e}", ca_dir.display()));
        let (ca_pem, ca_key) = (read("ca.pem"), read("ca-key.pem"));
        let ca = pki::ClusterCa::from_pem(&ca_pem, &ca_key).expect("the cluster CA");
        let stats = Arc::new(SimStats::default());
        let mut nodes = JoinSet::new();
        for i in 0..count {
            let name = format!("{}-{i}", options.prefix);
            let identity = pki::Identity::new(pki::Role::Agent, &name).expect("a node name");
            let (key_pem, request) = pki::key_and_request(&identity).expect("a key");
            let names = [transport::AGENT_NAME.to_string()];
            let issued = ca
                .issue_for_request(&identity, &request, &names, SystemTime::now(), Duration::from_secs(24 * 3600))
                .expect("a certificate");
            let credentials = Credentials { ca_pem: ca_pem.clone(), certificate_pem: issued.certificate_pem, key_pem };
            let transport = Transport::new(Security::MutualTls(credentials)).expect("usable credentials");
            let node = SimNode {
                name,
                address: format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256),
                servers: servers.to_vec(),
                first_server: i,
                transport,
                options: options.clone(),
                stats: stats.clone(),
            };
            nodes.spawn(node.run());
        }
        SimNodes { nodes, stats }
    }
}

struct SimNode {
    name: String,
    address: String,
    servers: Vec<String>,
    first_server: usize,
    transport: Transport,
    options: SimOptions,
    stats: Arc<SimStats>,
}

impl SimNode {
    async fn run(self) {
        let mut turn = self.first_server;
        loop {
            let server = self.servers[turn % self.servers.len()].clone();
            if let Err(e) = self.session(&server).await {
                tracing::debug!(node = self.name, server, "session ended: {e}");
                self.stats.session_errors.fetch_add(1, Ordering::Relaxed);
            }
            turn += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn session(&self, server: &str) -> Result<(), String> {
        let channel = self.transport.connect(server, Profile::AGENT_TO_SERVER).await.map_err(|e| e.to_string())?;
        let mut client = AgentApiClient::new(channel);
        let register = pb::RegisterRequest {
            name: self.name.clone(),
            address: self.address.clone(),
            cpu_millis: self.options.cpu_millis,
            memory_mib: self.options.memory_mib,
            labels: Default::default(),
            api_address: String::new(),
        };
        let node_id = client.register(register).await.map_err(|s| s.message().to_string())?.into_inner().node_id;
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        let mut stream =
            client.watch_assignments(pb::WatchAssignmentsRequest { node_id }).await.map_err(|s| s.message().to_string())?.into_inner();
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        let mut running: BTreeSet<String> = BTreeSet::new();
        let mut exited: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let metrics = running
                        .iter()
                        .map(|task_id| pb::TaskMetrics { task_id: task_id.clone(), cpu_fraction: 0.1, memory_bytes: 16 << 20 })
                        .collect();
                    let request = pb::HeartbeatRequest { node_id, metrics, measured_unix_ms: now_ms(), ingress: None };
                    let known = client.heartbeat(request).await.map_err(|s| s.message().to_string())?.into_inner().known;
                    self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    if !known {
                        return Err("the server does not know this node".into());
                    }
                }
                message = stream.message() => {
                    let Some(assignments) = message.map_err(|s| s.message().to_string())? else { return Ok(()) };
                    let assigned: BTreeSet<String> = assignments.assignments.iter().map(|a| a.task_id.clone()).collect();
                    running.retain(|t| assigned.contains(t));
                    exited.retain(|t| assigned.contains(t));
                    for assignment in assignments.assignments {
                        let wants_stop = assignment.desired_state == DesiredState::Stopped as i32;
                        let (state, endpoints) = if wants_stop {
                            if exited.contains(&assignment.task_id) {
                                continue;
                            }
                            (TaskState::Exited, Vec::new())
                        } else {
                            if running.contains(&assignment.task_id) {
                                continue;
                            }
                            let ports = assignment.spec.as_ref().map(|s| s.ports.clone()).unwrap_or_default();
                            (TaskState::Running, ports.iter().map(|p| format!("{}:{}", self.address, 30_000 + p % 1000)).collect())
                        };
                        let report = pb::ReportTaskStatusRequest {
                            node_id,
                            task_id: assignment.task_id.clone(),
                            state: state as i32,
                            exit_code: wants_stop.then_some(0),
                            endpoints,
                            health: 0,
                            message: String::new(),
                        };
                        client.report_task_status(report).await.map_err(|s| s.message().to_string())?;
                        self.stats.reports.fetch_add(1, Ordering::Relaxed);
                        if wants_stop {
                            running.remove(&assignment.task_id);
                            exited.insert(assignment.task_id);
                        } else {
                            running.insert(assignment.task_id);
                        }
                    }
                }
            }
        }
    }
}
