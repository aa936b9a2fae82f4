//! Task jobs: starting, stopping, releasing and removing this node's tasks through the task
//! driver and the node network. Starts and stops run as background jobs, so a slow image pull
//! never delays a heartbeat; each ends with a [`JobDone`] on the session's channel, which
//! [`NodeState::job_done`] books.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, mpsc};

use super::reports::event_text;
use super::state::NodeState;
use crate::error::{AgentError, Result};
use crate::network::NodeNetwork;
use crate::task::{TaskDriver, TaskSpec};

/// How a background job ended.
pub(super) enum JobDone {
    Started {
        task: String,
        result: Result<Started>,
    },
    Stopped {
        task: String,
    },
    Probed {
        task: String,
        ok: bool,
    },
    /// A reap job ended (see `reaping.rs`).
    Reaped {
        tasks: Vec<super::reaping::Reaped>,
    },
}

/// What a task that started has on the node.
pub(super) struct Started {
    pid: i32,
    /// `node_address:host_port` of each published port.
    endpoints: Vec<String>,
    /// Its address on the node bridge (none without task networking).
    ip: Option<Ipv4Addr>,
}

/// The task driver and node network the jobs act through (cheap to clone).
#[derive(Clone)]
pub(super) struct TaskHost {
    pub(super) driver: Arc<TaskDriver>,
    /// None when the agent runs without task networking.
    pub(super) network: Option<Arc<NodeNetwork>>,
    /// Held shared by every start, exclusively by image collections (see `image_gc`).
    image_lock: Arc<RwLock<()>>,
}

impl TaskHost {
    pub(super) fn new(driver: Arc<TaskDriver>, network: Option<Arc<NodeNetwork>>, image_lock: Arc<RwLock<()>>) -> Self {
        TaskHost { driver, network, image_lock }
    }

    /// Starts `spec` as a background job; `address` is the node's, for its endpoints.
    pub(super) fn spawn_start(&self, spec: TaskSpec, address: String, done: &mpsc::UnboundedSender<JobDone>) {
        let (host, done) = (self.clone(), done.clone());
        tokio::spawn(async move {
            let result = host.start(&spec, &address).await;
            let _ = done.send(JobDone::Started { task: spec.id.clone(), result });
        });
    }

    /// Stops task `id` (its stop signal, SIGKILL after `grace`) as a background job.
    pub(super) fn spawn_stop(&self, id: String, grace: Duration, done: &mpsc::UnboundedSender<JobDone>) {
        let (driver, done) = (self.driver.clone(), done.clone());
        tokio::spawn(async move {
            match driver.stop(&id, grace).await {
                Ok(_) => crate::crash_point::reached("stop:after-exit"),
                Err(e) => tracing::warn!(task = id, "stop failed: {e}"),
            }
            let _ = done.send(JobDone::Stopped { task: id });
        });
    }

    /// Network, container, published ports. On failure the task's network is removed again
    /// (the driver cleans up its own part).
    async fn start(&self, spec: &TaskSpec, address: &str) -> Result<Started> {
        // No image collection between finding (or pulling) the image and mounting its rootfs.
        let _images = self.image_lock.read().await;
        let Some(network) = &self.network else {
            let pid = self.driver.start(spec, None).await?;
            crate::crash_point::reached("start:after-shim");
            return Ok(Started { pid, endpoints: Vec::new(), ip: None });
        };
        // Only a task that is not on the node is started, so a network it has is what an agent
        // that died during an earlier start left: it would block this one.
        if network.tasks().await.iter().any(|t| t.task_id == spec.id) {
            tracing::warn!(task = spec.id, "removing the network an unfinished start left");
            network.destroy_task(&spec.id).await?;
        }
        let net = network.create_task(&spec.id).await?;
        crate::crash_point::reached("start:after-network");
        let started = async {
            let pid = self.driver.start(spec, Some(&net.netns_path)).await?;
            crate::crash_point::reached("start:after-shim");
            let endpoints = self.publish(net.ip, &spec.ports, address).await?;
            Ok::<_, AgentError>(Started { pid, endpoints, ip: Some(net.ip) })
        }
        .await;
        if started.is_err() {
            let _ = self.driver.stop(&spec.id, Duration::ZERO).await;
            let _ = self.driver.remove(&spec.id);
            let _ = network.destroy_task(&spec.id).await;
        }
        started
    }

    /// Publishes each of `ports` of the task at `ip` (again: a port published already keeps its
    /// host port); returns the endpoints, `address:host_port`.
    pub(super) async fn publish(&self, ip: Ipv4Addr, ports: &[u16], address: &str) -> Result<Vec<String>> {
        let Some(network) = &self.network else { return Ok(Vec::new()) };
        let mut endpoints = Vec::new();
        for port in ports {
            let host_port = network.publish(ip, *port).await?;
            endpoints.push(format!("{address}:{host_port}"));
        }
        Ok(endpoints)
    }

    /// Frees an exited task's network and rootfs; its dir stays. Idempotent.
    pub(super) async fn release(&self, id: &str) {
        if let Err(e) = self.driver.release(id) {
            tracing::warn!(task = id, "releasing its rootfs failed: {e}");
        }
        self.destroy_network(id).await;
    }

    /// Removes an exited task and its network.
    pub(super) async fn remove(&self, id: &str) {
        if let Err(e) = self.driver.remove(id) {
            tracing::warn!(task = id, "remove failed: {e}");
        }
        crate::crash_point::reached("remove:after-task-dir");
        self.destroy_network(id).await;
    }

    async fn destroy_network(&self, id: &str) {
        if let Some(network) = &self.network
            && let Err(e) = network.destroy_task(id).await
        {
            tracing::warn!(task = id, "removing its network failed: {e}");
        }
    }

    /// The address of every task with a network (after an agent restart too).
    pub(super) async fn ips(&self) -> HashMap<String, Ipv4Addr> {
        match &self.network {
            Some(network) => network.tasks().await.into_iter().map(|t| (t.task_id, t.ip)).collect(),
            None => HashMap::new(),
        }
    }

    /// The endpoints of every task with published ports (after an agent restart too).
    pub(super) async fn endpoints(&self, address: &str) -> HashMap<String, Vec<String>> {
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

impl NodeState {
    /// Books a finished job: a failed start is remembered (and reported FAILED), a started
    /// task's endpoints and address are kept, a probe result goes to the task's health.
    pub(super) fn job_done(&mut self, done: JobDone) {
        match done {
            JobDone::Started { task, result: Err(e) } => {
                tracing::warn!(task, "start failed: {e}");
                self.failed.insert(task.clone(), event_text(&e.to_string()));
                self.busy.remove(&task);
            }
            JobDone::Started { task, result: Ok(Started { pid, endpoints, ip }) } => {
                tracing::info!(task, pid, ?endpoints, "task started");
                self.endpoints.insert(task.clone(), endpoints);
                if let Some(ip) = ip {
                    self.ips.insert(task.clone(), ip);
                }
                self.busy.remove(&task);
            }
            JobDone::Probed { task, ok } => self.record_probe(&task, ok),
            JobDone::Stopped { task } => {
                self.busy.remove(&task);
            }
            JobDone::Reaped { tasks } => self.reap_done(tasks),
        }
    }
}
