//! Reaping: when the [reaper](super::reaper) runs, its claim on the tasks it works on, and
//! carrying out its plan as a background job.
//!
//! It runs once the first assignments of this agent process arrived (before the plan acts on
//! them: until then every task would look unassigned, and a restarted agent would kill what it
//! is about to adopt), then every `reap_interval` (`--reap-interval-secs`, 60 s by default),
//! between the session's checks. The census and the decision are taken in the session, where
//! no plan is applied meanwhile; the ids the plan touches are then claimed as busy (a job in
//! flight) until the job ends, so no start, stop, release or removal of theirs runs beside it,
//! and the reaper itself never touches a busy id — that is the guard for starts in flight: a
//! start is busy from the moment the plan decides it until its container runs. (A start
//! left by an agent process that died, whose shim still creates the container, is seen by its
//! live shim and left for the next round.)
//!
//! Each removal is one log line (warn) naming the task, the piece and why; a failed one is
//! logged and retried by the next round.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::AgentConfig;
use super::census;
use super::reaper::{Piece, ReapPlan, TaskAction, Why, plan};
use super::state::NodeState;
use super::task_jobs::{JobDone, TaskHost};
use crate::error::{AgentError, Result};

/// How long the processes of a reaped cgroup may take to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long removing a reaped cgroup may be retried while dying processes hold it.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a reap job did to one task.
pub(super) struct Reaped {
    pub(super) task: String,
    /// Its records went (or were gone): what the node remembers of it goes too.
    pub(super) forgotten: bool,
}

impl NodeState {
    /// Runs the reaper if it is due: takes the census, decides, claims the ids the plan
    /// touches and starts the job. Called only once assignments arrived.
    pub(super) async fn reap_if_due(&mut self, config: &AgentConfig, host: &TaskHost, done: &mpsc::UnboundedSender<JobDone>) {
        if self.reaping || self.reaped_at.is_some_and(|at| at.elapsed() < config.reap_interval) {
            return;
        }
        self.reaped_at = Some(Instant::now());
        let census = match census::take(host).await {
            Ok(census) => census,
            Err(e) => {
                tracing::warn!("the reaper's census failed (next try in {:?}): {e}", config.reap_interval);
                return;
            }
        };
        let assigned: BTreeSet<String> = self.wanted.keys().cloned().collect();
        let plan = plan(&census, &assigned, &self.busy);
        if plan.is_empty() {
            return;
        }
        for t in &plan.tasks {
            self.busy.insert(t.task.clone());
        }
        self.reaping = true;
        host.spawn_reap(plan, done);
    }

    /// Books a finished reap job: its tasks are free again, and what the node remembered of
    /// those whose records went is dropped (a task that starts again reports afresh).
    pub(super) fn reap_done(&mut self, tasks: Vec<Reaped>) {
        for Reaped { task, forgotten } in tasks {
            self.busy.remove(&task);
            if forgotten {
                self.reported.remove(&task);
                self.endpoints.remove(&task);
                self.ips.remove(&task);
                self.health.remove(&task);
                self.released.remove(&task);
            }
        }
        self.reaping = false;
    }
}

impl TaskHost {
    /// Carries out `plan` as a background job, ending with [`JobDone::Reaped`].
    fn spawn_reap(&self, plan: ReapPlan, done: &mpsc::UnboundedSender<JobDone>) {
        let (host, done) = (self.clone(), done.clone());
        tokio::spawn(async move {
            let tasks = host.reap(plan).await;
            let _ = done.send(JobDone::Reaped { tasks });
        });
    }

    async fn reap(&self, plan: ReapPlan) -> Vec<Reaped> {
        let mut reaped = Vec::new();
        for t in plan.tasks {
            match t.action {
                TaskAction::KillUnsupervised => {
                    let driver = self.driver.clone();
                    let id = t.task.clone();
                    match blocking(move || driver.kill_unsupervised(&id)).await {
                        Ok(()) => tracing::warn!(task = t.task, "reaped the processes of its container: {}", t.why),
                        Err(e) => tracing::warn!(task = t.task, "killing its unsupervised container failed: {e}"),
                    }
                }
                TaskAction::Remove(pieces) => {
                    for piece in pieces {
                        let what = describe(&piece);
                        match self.remove_piece(&t.task, piece).await {
                            Ok(Some(what)) => tracing::warn!(task = t.task, "reaped {what}: {}", t.why),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(task = t.task, "reaping {what} failed (the next round tries again): {e}"),
                        }
                    }
                }
            }
            reaped.push(Reaped { task: t.task, forgotten: matches!(t.why, Why::RecordsLost | Why::Unassigned) });
        }
        if let Some(network) = &self.network {
            for veth in plan.veths {
                match network.remove_stray_veth(&veth).await {
                    Ok(true) => tracing::warn!(veth, "reaped veth {veth}: {}", Why::StrayVeth),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(veth, "reaping veth {veth} failed: {e}"),
                }
            }
            for port in plan.ports {
                match network.unpublish_stray(port).await {
                    Ok(true) => tracing::warn!(host_port = port, "reaped published port {port} (its nft rule): {}", Why::StrayPort),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(host_port = port, "reaping published port {port} failed: {e}"),
                }
            }
        }
        reaped
    }

    /// Removes one piece of task `id`; returns what it removed (for the log line), `None` when
    /// there was nothing left to remove.
    async fn remove_piece(&self, id: &str, piece: Piece) -> Result<Option<String>> {
        let driver = self.driver.clone();
        let task = id.to_string();
        match piece {
            Piece::Shim(pid) => {
                // The pid is checked again: a shim that ended meanwhile may have passed it on.
                let still =
                    census::shim_task_of(pid, &driver.config().state_root).as_deref() == Some(id) || driver.shim_running(id) == Some(pid);
                if !still {
                    return Ok(None);
                }
                kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|e| AgentError::io(format!("kill shim {pid}"), e.into()))?;
                Ok(Some(format!("shim process {pid}")))
            }
            Piece::Container => {
                let pids = runtime::cgroups::live_pids(&driver.cgroup_dirs(id));
                blocking(move || driver.delete_container(&task)).await?;
                Ok(Some(format!("container (deleted with force; processes killed: {pids:?})")))
            }
            Piece::ContainerDir => {
                let dir = driver.config().state_root.join(id);
                let removed = blocking(move || driver.remove_unrecorded_container(&task)).await?;
                Ok(removed.then(|| format!("container dir {} (no state.json)", dir.display())))
            }
            Piece::Cgroup(dirs) => {
                let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
                if dirs.is_empty() {
                    return Ok(None);
                }
                let pids = runtime::cgroups::live_pids(&dirs);
                let shown = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                blocking(move || {
                    runtime::cgroups::kill_all(&dirs, KILL_TIMEOUT)?;
                    runtime::cgroups::remove_dirs(&dirs, CGROUP_REMOVE_TIMEOUT)?;
                    Ok(())
                })
                .await?;
                Ok(Some(format!("cgroup {shown} (processes killed: {pids:?})")))
            }
            Piece::Rootfs => {
                blocking(move || driver.remove_rootfs(&task)).await?;
                Ok(Some("rootfs (overlay unmounted, upper dir deleted)".into()))
            }
            Piece::IdRange => {
                let range = driver.release_id_range(id)?;
                Ok(range.map(|r| format!("host id range {}-{} of its user namespace", r.first, u64::from(r.first) + 65_535)))
            }
            Piece::Network => {
                let Some(network) = &self.network else { return Ok(None) };
                network.destroy_task(id).await?;
                Ok(Some("network (published ports, veth, netns pin, address)".into()))
            }
            Piece::TaskDir => {
                let dir = driver.task_dir(id);
                blocking(move || driver.remove_task_dir(&task)).await?;
                Ok(Some(format!("task dir {}", dir.display())))
            }
        }
    }
}

/// A piece as log lines name it before it is removed.
fn describe(piece: &Piece) -> String {
    match piece {
        Piece::Shim(pid) => format!("shim process {pid}"),
        Piece::Container => "container".into(),
        Piece::ContainerDir => "container dir".into(),
        Piece::Cgroup(_) => "cgroup".into(),
        Piece::Rootfs => "rootfs".into(),
        Piece::IdRange => "host id range".into(),
        Piece::Network => "network".into(),
        Piece::TaskDir => "task dir".into(),
    }
}

/// Runs blocking driver work (kill rounds, unmounts, deletions) off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| AgentError::Spec(format!("a reap step panicked: {e}")))?
}
