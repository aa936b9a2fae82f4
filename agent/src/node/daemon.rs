//! The agent's main loop. One session per server connection: register (by name, so a restarted
//! agent keeps its node id), then, until the connection breaks, heartbeat, follow the
//! assignment stream, check local tasks, act on the [`plan`](super::plan::plan) and report
//! every task state change. When a server dies the agent moves to the next one; tasks keep
//! running meanwhile (each under its own shim).
//!
//! Starting and stopping tasks run as background jobs, so a slow image pull never delays a
//! heartbeat. Beside the sessions, the image collector removes images no task uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use proto::sched::v1 as sched_pb;
use runtime::image::{ImageService, ImageServiceOptions};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::AgentConfig;
use super::image_gc::ImageGc;
use super::plan::{Action, Seen, Wanted, plan};
use crate::error::{AgentError, Result};
use crate::health::{Health, HealthSpec, HealthTracker, Probe, ProbeTarget, probe};
use crate::metrics::CpuSampler;
use crate::network::{NodeNetwork, TaskNetwork};
use crate::task::{DriverConfig, Seccomp, TaskDriver, TaskSpec, TaskStatus};

/// How a background job ended.
enum JobDone {
    Started { task: String, result: std::result::Result<(i32, Vec<String>, Option<Ipv4Addr>), String> },
    Stopped { task: String },
    Probed { task: String, ok: bool },
}

/// The state last reported for a task (so each change is reported once).
#[derive(Debug, Clone, PartialEq)]
enum Reported {
    Running(Option<Health>),
    Exited(i32),
    Failed(String),
}

/// Runs the agent until `shutdown` completes. Tasks keep running after it returns.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    if config.servers.is_empty() {
        return Err(AgentError::Spec("no server address given (--server HOST:PORT)".into()));
    }
    config.image_gc.validate().map_err(AgentError::Spec)?;
    if config.max_log_follows == 0 {
        return Err(AgentError::Spec("--max-log-follows must be at least 1".into()));
    }
    let mut image_options = ImageServiceOptions { max_image_bytes: config.max_image_bytes, ..Default::default() };
    image_options.client.insecure_registries = config.insecure_registries.clone();
    let images = Arc::new(ImageService::open(&config.data_dir, image_options)?);
    let mut image_gc = ImageGc::new(images.clone(), config.image_gc);
    let image_lock = image_gc.lock();
    let (wanted_images, mut wanted_rx) = watch::channel::<Option<HashSet<String>>>(None);
    // Until the first assignments arrive the node does not know what it will run: no
    // collection before then.
    let collect_images = async move {
        let mut tick = tokio::time::interval(image_gc.policy().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(wanted) = wanted_rx.borrow_and_update().clone() else { continue };
            image_gc.collect(&wanted).await;
        }
    };
    let driver = TaskDriver::new(
        DriverConfig {
            runtime_binary: config.runtime_binary.clone(),
            state_root: config.data_dir.join("runtime"),
            tasks_dir: config.data_dir.join("tasks"),
            cgroup_parent: config.cgroup_parent.clone(),
            max_log_bytes: 10 * 1024 * 1024,
        },
        images,
    )?;
    let driver = Arc::new(driver);
    let network = match &config.network {
        Some(net) => Some(Arc::new(NodeNetwork::new(net.clone()).await?)),
        None => None,
    };
    let api_listen = config.api_listen.clone().unwrap_or_else(|| crate::logs::default_api_listen(&config.address));
    let api =
        tokio::net::TcpListener::bind(&api_listen).await.map_err(|e| AgentError::Api(format!("cannot listen on {api_listen}: {e}")))?;
    let bound = api.local_addr().map_err(|e| AgentError::Api(e.to_string()))?;
    let api_address = crate::logs::advertised_address(bound, &config.address);
    tracing::info!(%bound, advertised = api_address, "agent API (task logs) listening");
    let (ingress, serve_ingress) = match &config.ingress {
        Some(settings) => {
            let bound = crate::ingress_node::bind(settings).await?;
            tracing::info!(listen = ?bound.local_addr(), "ingress listening");
            let (handle, served) = crate::ingress_node::start(bound, config.servers.clone())?;
            (Some(handle), Some(served))
        }
        None => (None, None),
    };
    let serve_ingress = async {
        match serve_ingress {
            Some(served) => served.await,
            None => std::future::pending().await,
        }
    };
    let node = Node { driver: driver.clone(), network, api_address, ingress, image_lock, wanted_images: Arc::new(wanted_images) };
    tokio::select! {
        () = shutdown => Ok(()),
        served = serve_ingress => served,
        () = collect_images => Ok(()),
        () = serve(&config, node) => Ok(()),
        served = crate::logs::serve(api, driver, config.max_log_follows) => Err(AgentError::Api(format!("stopped serving: {}", served.err().map_or_else(String::new, |e| e.to_string())))),
    }
}

/// What the daemon acts through.
#[derive(Clone)]
struct Node {
    driver: Arc<TaskDriver>,
    network: Option<Arc<NodeNetwork>>,
    /// HOST:PORT the servers reach the agent API on (registered with the node).
    api_address: String,
    /// The node's ingress, whose targets and requests in flight go with every heartbeat.
    ingress: Option<crate::ingress_node::IngressHandle>,
    /// Held shared by every start, exclusively by image collections (see `image_gc`).
    image_lock: Arc<tokio::sync::RwLock<()>>,
    /// The images the assigned tasks name, for the image collector.
    wanted_images: Arc<watch::Sender<Option<HashSet<String>>>>,
}

impl Node {
    /// Network, container, published ports; returns the pid and the endpoints. On failure the
    /// task's network is removed again (the driver cleans up its own part).
    async fn start(&self, spec: &TaskSpec, address: &str) -> std::result::Result<(i32, Vec<String>, Option<Ipv4Addr>), String> {
        // No image collection between finding (or pulling) the image and mounting its rootfs.
        let _images = self.image_lock.read().await;
        let Some(network) = &self.network else {
            let pid = self.driver.start(spec, None).await.map_err(|e| e.to_string())?;
            return Ok((pid, Vec::new(), None));
        };
        // Only a task that is not on the node is started, so a network it has is what an agent
        // that died during an earlier start left: it would block this one.
        if network.tasks().await.iter().any(|t| t.task_id == spec.id) {
            tracing::warn!(task = spec.id, "removing the network an unfinished start left");
            network.destroy_task(&spec.id).await.map_err(|e| e.to_string())?;
        }
        let net = TaskNetwork::create(network, &spec.id).await.map_err(|e| e.to_string())?;
        let started = async {
            let pid = self.driver.start(spec, Some(&net.netns_path)).await.map_err(|e| e.to_string())?;
            let mut endpoints = Vec::new();
            for port in &spec.ports {
                let host_port = network.publish(net.ip, *port).await.map_err(|e| e.to_string())?;
                endpoints.push(format!("{address}:{host_port}"));
            }
            Ok::<_, String>((pid, endpoints, Some(net.ip)))
        }
        .await;
        if started.is_err() {
            let _ = self.driver.stop(&spec.id, Duration::ZERO).await;
            let _ = self.driver.remove(&spec.id);
            let _ = network.destroy_task(&spec.id).await;
        }
        started
    }

    /// Frees an exited task's network and rootfs; its dir stays. Idempotent.
    async fn release(&self, id: &str) {
        if let Err(e) = self.driver.release(id) {
            tracing::warn!(task = id, "releasing its rootfs failed: {e}");
        }
        if let Some(network) = &self.network
            && let Err(e) = network.destroy_task(id).await
        {
            tracing::warn!(task = id, "removing its network failed: {e}");
        }
    }

    /// Removes an exited task and its network.
    async fn remove(&self, id: &str) {
        if let Err(e) = self.driver.remove(id) {
            tracing::warn!(task = id, "remove failed: {e}");
        }
        if let Some(network) = &self.network
            && let Err(e) = network.destroy_task(id).await
        {
            tracing::warn!(task = id, "removing its network failed: {e}");
        }
    }

    /// The address of every task with a network (after an agent restart too).
    async fn ips(&self) -> HashMap<String, Ipv4Addr> {
        match &self.network {
            Some(network) => network.tasks().await.into_iter().map(|t| (t.task_id, t.ip)).collect(),
            None => HashMap::new(),
        }
    }

    /// The endpoints of every task with published ports (after an agent restart too).
    async fn endpoints(&self, address: &str) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        let Some(network) = &self.network else { return out };
        let by_ip: HashMap<_, _> = network.tasks().await.into_iter().map(|t| (t.ip, t.task_id)).collect();
        for p in network.published().await {
            if let Some(task) = by_ip.get(&p.task_ip) {
                out.entry(task.clone()).or_default().push(format!("{address}:{}", p.host_port));
            }
        }
        out
    }
}

/// Sessions with the servers in turn, forever.
async fn serve(config: &AgentConfig, node: Node) {
    let mut rotation = super::connect::ServerRotation::new(&config.servers);
    let mut state = NodeState { endpoints: node.endpoints(&config.address).await, ips: node.ips().await, ..Default::default() };
    loop {
        let server = rotation.server();
        let began = Instant::now();
        match session(config, &node, server, &mut state).await {
            Ok(()) => tracing::warn!(server, "the assignment stream ended; reconnecting"),
            Err(e) => tracing::warn!(server, "session failed: {e}"),
        }
        rotation.ended(began).await;
    }
}

/// What the node remembers across sessions.
#[derive(Default)]
struct NodeState {
    wanted: BTreeMap<String, Wanted>,
    reported: HashMap<String, Reported>,
    /// Tasks with a start or stop job in flight.
    busy: HashSet<String>,
    /// Tasks whose start failed (reported FAILED; not retried by this node).
    failed: HashMap<String, String>,
    /// `node_address:host_port` of each task's published ports.
    endpoints: HashMap<String, Vec<String>>,
    /// Each task's address on the node bridge.
    ips: HashMap<String, Ipv4Addr>,
    /// Health of tasks with a check: tracker, when it was first seen running, next probe time,
    /// and whether a probe is in flight.
    health: HashMap<String, HealthState>,
    cpu: CpuSampler,
    /// Exited tasks whose network and rootfs were released (by this process).
    released: HashSet<String>,
    /// Whether assignments arrived since this process started. Until then `wanted` is empty,
    /// and acting on it would stop every task a restarted agent is about to adopt.
    assigned: bool,
}

type SessionResult = std::result::Result<(), String>;

async fn session(config: &AgentConfig, agent: &Node, server: &str, node: &mut NodeState) -> SessionResult {
    let driver = &agent.driver;
    let channel = super::connect::connect(server).await?;
    let mut client = AgentApiClient::new(channel);
    let node_id = client
        .register(pb::RegisterRequest {
            name: config.name.clone(),
            address: config.address.clone(),
            cpu_millis: config.cpu_millis,
            memory_mib: config.memory_mib,
            labels: config.labels.clone().into_iter().collect(),
            api_address: agent.api_address.clone(),
        })
        .await
        .map_err(|s| format!("register: {}", s.message()))?
        .into_inner()
        .node_id;
    tracing::info!(server, node_id, "registered");
    // Everything must be reported again to a (possibly new) leader.
    node.reported.clear();
    let mut stream = client
        .watch_assignments(pb::WatchAssignmentsRequest { node_id })
        .await
        .map_err(|s| format!("watch assignments: {}", s.message()))?
        .into_inner();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    let mut check = tokio::time::interval(config.check_interval);
    loop {
        tokio::select! {
            message = stream.message() => match message.map_err(|s| format!("assignment stream: {}", s.message()))? {
                Some(assignments) => {
                    node.wanted = wanted_from(&assignments);
                    node.assigned = true;
                    agent.wanted_images.send_replace(Some(node.wanted.values().map(|w| w.spec.image.clone()).collect()));
                    act(config, agent, node, &done_tx).await?;
                }
                None => return Ok(()),
            },
            _ = heartbeat.tick() => {
                let metrics = sample_metrics(driver, node);
                let measured_unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let ingress = agent.ingress.as_ref().map(crate::ingress_node::IngressHandle::report);
                let known = client
                    .heartbeat(pb::HeartbeatRequest { node_id, metrics, measured_unix_ms, ingress })
                    .await
                    .map_err(|s| format!("heartbeat: {}", s.message()))?
                    .into_inner()
                    .known;
                if !known {
                    return Err("the server does not know this node any more; registering again".into());
                }
            }
            _ = check.tick() => {
                if node.assigned {
                    act(config, agent, node, &done_tx).await?;
                }
                probe_due(config, driver, node, &done_tx);
                report_changes(&mut client, node_id, driver, node).await?;
            }
            Some(done) = done_rx.recv() => {
                match done {
                    JobDone::Started { task, result: Err(reason) } => {
                        tracing::warn!(task, "start failed: {reason}");
                        node.failed.insert(task.clone(), event_text(&reason));
                        node.busy.remove(&task);
                    }
                    JobDone::Started { task, result: Ok((pid, endpoints, ip)) } => {
                        tracing::info!(task, pid, ?endpoints, "task started");
                        node.endpoints.insert(task.clone(), endpoints);
                        if let Some(ip) = ip {
                            node.ips.insert(task.clone(), ip);
                        }
                        node.busy.remove(&task);
                    }
                    JobDone::Probed { task, ok } => {
                        let spec = node.wanted.get(&task).and_then(|w| w.spec.health.clone());
                        if let (Some(spec), Some(h)) = (spec, node.health.get_mut(&task)) {
                            h.tracker.record(&spec, ok, h.since.elapsed());
                            h.in_flight = false;
                        }
                    }
                    JobDone::Stopped { task } => {
                        node.busy.remove(&task);
                    }
                }
                report_changes(&mut client, node_id, driver, node).await?;
            }
        }
    }
}

/// The tasks an assignment message wants on this node.
fn wanted_from(assignments: &pb::Assignments) -> BTreeMap<String, Wanted> {
    assignments
        .assignments
        .iter()
        .map(|a| {
            let spec = a.spec.clone().unwrap_or_default();
            let image = if a.image_digest.is_empty() { spec.image.clone() } else { pin_digest(&spec.image, &a.image_digest) };
            let task = TaskSpec {
                id: a.task_id.clone(),
                image,
                command: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env: spec.env.clone().into_iter().collect(),
                cpu_millis: spec.cpu_millis,
                memory_mib: spec.memory_mib,
                ports: spec.ports.iter().filter_map(|p| u16::try_from(*p).ok()).collect(),
                health: spec.health.as_ref().and_then(health_spec),
                seccomp: seccomp(spec.security.as_ref()),
            };
            let running = a.desired_state != sched_pb::DesiredState::Stopped as i32;
            (a.task_id.clone(), Wanted { spec: task, running })
        })
        .collect()
}

/// Longest reason a task report carries (it becomes a service event).
const MAX_EVENT_CHARS: usize = 512;

/// A start failure as a service event: one line, control characters blanked, at most
/// [`MAX_EVENT_CHARS`]. Reasons quote what registries, images and the runtime said (a manifest
/// parse error quotes the manifest): a registry must not write events of its own lines or size.
fn event_text(reason: &str) -> String {
    let mut text: String = reason.chars().take(MAX_EVENT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if reason.chars().nth(MAX_EVENT_CHARS).is_some() {
        text.push_str(" [...]");
    }
    text
}

/// The task's seccomp profile: unconfined only when the service says so; anything else
/// (absent, unspecified, a value this agent does not know) gets the default profile.
fn seccomp(security: Option<&sched_pb::Security>) -> Seccomp {
    match security.map(|s| sched_pb::SeccompProfile::try_from(s.seccomp)) {
        Some(Ok(sched_pb::SeccompProfile::Unconfined)) => Seccomp::Unconfined,
        _ => Seccomp::Default,
    }
}

/// The agent's health check from the wire form; defaults as the service.toml docs give them.
fn health_spec(h: &sched_pb::HealthCheck) -> Option<HealthSpec> {
    let probe = match sched_pb::HealthKind::try_from(h.kind).ok()? {
        sched_pb::HealthKind::Http => {
            Probe::Http { port: u16::try_from(h.port).ok()?, path: if h.path.is_empty() { "/".into() } else { h.path.clone() } }
        }
        sched_pb::HealthKind::Tcp => Probe::Tcp { port: u16::try_from(h.port).ok()? },
        sched_pb::HealthKind::Cmd if !h.command.is_empty() => Probe::Cmd { command: h.command.clone() },
        _ => return None,
    };
    let ms = |v: u64, default: u64| Duration::from_millis(if v == 0 { default } else { v });
    Some(HealthSpec {
        probe,
        interval: ms(h.interval_ms, 10_000),
        timeout: ms(h.timeout_ms, 2_000),
        retries: if h.retries == 0 { 3 } else { h.retries },
        grace: Duration::from_millis(h.grace_ms),
    })
}

/// One task's health bookkeeping.
struct HealthState {
    tracker: HealthTracker,
    /// When the task was first seen running.
    since: Instant,
    next: Instant,
    in_flight: bool,
}

/// Starts the probes that are due, as background jobs.
fn probe_due(config: &AgentConfig, driver: &TaskDriver, node: &mut NodeState, done: &mpsc::UnboundedSender<JobDone>) {
    let now = Instant::now();
    for (id, wanted) in &node.wanted {
        let Some(spec) = &wanted.spec.health else { continue };
        if node.busy.contains(id) || !matches!(driver.status(id), Ok(TaskStatus::Running { pid }) if pid > 0) {
            continue;
        }
        let h = node.health.entry(id.clone()).or_insert_with(|| HealthState {
            tracker: HealthTracker::default(),
            since: now,
            next: now,
            in_flight: false,
        });
        if h.in_flight || now < h.next {
            continue;
        }
        h.in_flight = true;
        h.next = now + spec.interval;
        let target = ProbeTarget {
            task_id: id.clone(),
            ip: node.ips.get(id).copied(),
            runtime_binary: config.runtime_binary.clone(),
            state_root: config.data_dir.join("runtime"),
        };
        let (probe_spec, timeout, done, task) = (spec.probe.clone(), spec.timeout, done.clone(), id.clone());
        tokio::spawn(async move {
            let ok = probe(&probe_spec, &target, timeout).await;
            let _ = done.send(JobDone::Probed { task, ok });
        });
    }
}

/// `repo:tag` + `sha256:...` -> `repo@sha256:...`: every node runs exactly the resolved image.
fn pin_digest(image: &str, digest: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    format!("{repo}@{digest}")
}

/// What runs here now, as the plan sees it (tasks with jobs in flight count as running).
fn seen(driver: &TaskDriver, node: &NodeState) -> std::result::Result<BTreeMap<String, Seen>, String> {
    let mut out = BTreeMap::new();
    for id in driver.list().map_err(|e| e.to_string())? {
        let status = driver.status(&id).map_err(|e| e.to_string())?;
        let s = match status {
            _ if node.busy.contains(&id) => Seen::Running,
            TaskStatus::Running { .. } => Seen::Running,
            TaskStatus::Exited(exit) => Seen::Exited(exit.code),
            TaskStatus::Missing => continue,
        };
        out.insert(id, s);
    }
    for id in node.busy.iter().chain(node.failed.keys()) {
        out.entry(id.clone()).or_insert(Seen::Exited(-1));
    }
    Ok(out)
}

/// Starts background jobs for the plan's actions.
async fn act(config: &AgentConfig, agent: &Node, node: &mut NodeState, done: &mpsc::UnboundedSender<JobDone>) -> SessionResult {
    let driver = &agent.driver;
    // Failed starts the servers no longer want are forgotten.
    node.failed.retain(|id, _| node.wanted.contains_key(id));
    let seen = seen(driver, node)?;
    for action in plan(&node.wanted, &seen) {
        match action {
            Action::Start(spec) => {
                node.busy.insert(spec.id.clone());
                let (agent, done, address) = (agent.clone(), done.clone(), config.address.clone());
                tokio::spawn(async move {
                    let result = agent.start(&spec, &address).await;
                    let _ = done.send(JobDone::Started { task: spec.id.clone(), result });
                });
            }
            Action::Stop(id) if !node.busy.contains(&id) => {
                node.busy.insert(id.clone());
                let (driver, done, grace) = (driver.clone(), done.clone(), config.stop_grace);
                tokio::spawn(async move {
                    if let Err(e) = driver.stop(&id, grace).await {
                        tracing::warn!(task = id, "stop failed: {e}");
                    }
                    let _ = done.send(JobDone::Stopped { task: id });
                });
            }
            Action::Stop(_) => {}
            Action::Release(id) if !node.busy.contains(&id) && !node.released.contains(&id) => {
                agent.release(&id).await;
                node.endpoints.remove(&id);
                node.ips.remove(&id);
                node.released.insert(id);
            }
            Action::Release(_) => {}
            Action::Remove(id) if !node.busy.contains(&id) => {
                if node.failed.remove(&id).is_none() {
                    agent.remove(&id).await;
                }
                node.reported.remove(&id);
                node.released.remove(&id);
                node.endpoints.remove(&id);
                node.ips.remove(&id);
                node.health.remove(&id);
            }
            Action::Remove(_) => {}
        }
    }
    Ok(())
}

/// Reports each task whose state changed since it was last reported.
async fn report_changes(client: &mut AgentApiClient<Channel>, node_id: u64, driver: &TaskDriver, node: &mut NodeState) -> SessionResult {
    let mut current: Vec<(String, Reported)> = Vec::new();
    for (id, reason) in &node.failed {
        current.push((id.clone(), Reported::Failed(reason.clone())));
    }
    for id in driver.list().map_err(|e| e.to_string())? {
        if node.busy.contains(&id) || !node.wanted.contains_key(&id) {
            continue;
        }
        match driver.status(&id).map_err(|e| e.to_string())? {
            TaskStatus::Running { pid } if pid > 0 => {
                let health = node.health.get(&id).map(|h| h.tracker.status());
                current.push((id, Reported::Running(health)));
            }
            TaskStatus::Exited(exit) => current.push((id, Reported::Exited(exit.code))),
            _ => {}
        }
    }
    for (id, state) in current {
        if node.reported.get(&id) == Some(&state) {
            continue;
        }
        let endpoints = match &state {
            Reported::Running(_) => node.endpoints.get(&id).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        let (task_state, exit_code, message) = match &state {
            Reported::Running(_) => (sched_pb::TaskState::Running, None, String::new()),
            Reported::Exited(code) => (sched_pb::TaskState::Exited, Some(*code), String::new()),
            Reported::Failed(reason) => (sched_pb::TaskState::Failed, None, reason.clone()),
        };
        client
            .report_task_status(pb::ReportTaskStatusRequest {
                node_id,
                task_id: id.clone(),
                state: task_state as i32,
                exit_code,
                endpoints,
                health: match &state {
                    Reported::Running(Some(Health::Starting)) => sched_pb::HealthStatus::Starting,
                    Reported::Running(Some(Health::Healthy)) => sched_pb::HealthStatus::Healthy,
                    Reported::Running(Some(Health::Unhealthy)) => sched_pb::HealthStatus::Unhealthy,
                    _ => sched_pb::HealthStatus::Unspecified,
                } as i32,
                message,
            })
            .await
            .map_err(|s| format!("report {id}: {}", s.message()))?;
        node.reported.insert(id, state);
    }
    Ok(())
}

/// CPU and memory of every running task, for the heartbeat.
fn sample_metrics(driver: &TaskDriver, node: &mut NodeState) -> Vec<pb::TaskMetrics> {
    let mut out = Vec::new();
    for (id, wanted) in &node.wanted {
        let dirs = driver.cgroup_dirs(id);
        if dirs.is_empty() {
            continue;
        }
        if let Some(u) = node.cpu.sample(id, &dirs, wanted.spec.cpu_millis) {
            out.push(pb::TaskMetrics { task_id: id.clone(), cpu_fraction: u.cpu_fraction, memory_bytes: u.memory_bytes });
        }
    }
    let wanted = &node.wanted;
    node.cpu.retain(|t| wanted.contains_key(t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_become_one_bounded_line() {
        assert_eq!(event_text("pull failed: HTTP 404"), "pull failed: HTTP 404");
        assert_eq!(event_text("bad manifest: \"a\nEVENT: fake\r\u{1b}[2J\""), "bad manifest: \"a EVENT: fake  [2J\"");
        let long = event_text(&"x".repeat(10_000));
        assert_eq!(long.len(), MAX_EVENT_CHARS + " [...]".len());
        assert_eq!(event_text(&"é".repeat(MAX_EVENT_CHARS)), "é".repeat(MAX_EVENT_CHARS), "counted in characters, cut on one");
    }

    #[test]
    fn only_an_explicit_unconfined_turns_seccomp_off() {
        let with = |seccomp: i32| seccomp_of(Some(sched_pb::Security { seccomp }));
        fn seccomp_of(s: Option<sched_pb::Security>) -> Seccomp {
            seccomp(s.as_ref())
        }
        assert_eq!(seccomp_of(None), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Unspecified as i32), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Default as i32), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Unconfined as i32), Seccomp::Unconfined);
        assert_eq!(with(99), Seccomp::Default, "a value from a newer server is not read as unconfined");
    }

    #[test]
    fn tags_are_replaced_by_the_resolved_digest() {
        let d = "sha256:abc";
        assert_eq!(pin_digest("127.0.0.1:5000/quotes:1.0", d), "127.0.0.1:5000/quotes@sha256:abc");
        assert_eq!(pin_digest("busybox", d), "busybox@sha256:abc");
        assert_eq!(pin_digest("localhost:5000/app", d), "localhost:5000/app@sha256:abc");
        assert_eq!(pin_digest("app@sha256:old", d), "app@sha256:abc");
    }
}
