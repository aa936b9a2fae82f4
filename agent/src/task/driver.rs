//! The task driver: one task = one container under its own `sched-runtime shim` process.
//!
//! The shim, not the agent, is the container's parent: it writes the exit code to the task dir
//! and keeps the logs, so tasks and their exit codes outlive an agent restart, and the agent
//! (a multi-threaded tokio process, which must not fork) never forks containers itself. Task
//! dirs live under `<data dir>/tasks/<task id>/` with `bundle/`, `exit.json`, `shim.pid` and
//! `logs/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use runtime::container::{Container, parse_signal};
use runtime::image::config_to_spec::STOP_SIGNAL_ANNOTATION;
use runtime::image::{ImageService, NoProgress};
use runtime::shim::{self, ExitRecord};
use runtime::state::{StateRoot, Status};

use super::id_ranges::{IdPool, IdRange, IdRangeFile};
use super::{TaskSpec, UserNamespace, bundle};
use crate::error::{AgentError, Result};

/// Where and how tasks run.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The `sched-runtime` binary.
    pub runtime_binary: PathBuf,
    /// The runtime's state root (`--root`).
    pub state_root: PathBuf,
    /// The parent of every task dir.
    pub tasks_dir: PathBuf,
    /// The cgroup under which every task's cgroup is made (at each hierarchy's root).
    pub cgroup_parent: String,
    /// Size at which a task's log rotates.
    pub max_log_bytes: u64,
    /// The host ids tasks' user namespaces get their ranges from (`--userns-ids`).
    pub id_pool: IdPool,
    /// Where the ranges tasks hold are kept (`DATA_DIR/userns/ranges.json`).
    pub id_ranges_file: PathBuf,
}

/// A task's status as the node sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStatus {
    /// The container runs (or is being set up).
    Running { pid: i32 },
    /// The container has exited.
    Exited(ExitRecord),
    /// Nothing of this task is on the node.
    Missing,
}

/// Starts, stops and inspects tasks.
pub struct TaskDriver {
    config: DriverConfig,
    images: Arc<ImageService>,
    state: StateRoot,
    /// The host id range of every task in a user namespace of its own, held from its start
    /// until its rootfs is released.
    ids: IdRangeFile,
}

/// How often stop looks for the exit record.
const POLL: Duration = Duration::from_millis(20);
/// How long a SIGKILLed task may take to be reaped and recorded.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl TaskDriver {
    /// A driver over `images`.
    pub fn new(config: DriverConfig, images: Arc<ImageService>) -> Result<TaskDriver> {
        std::fs::create_dir_all(&config.tasks_dir).map_err(|e| AgentError::io(format!("create {}", config.tasks_dir.display()), e))?;
        let state = StateRoot::open(&config.state_root)?;
        let ids = IdRangeFile::open(config.id_ranges_file.clone(), config.id_pool)?;
        Ok(TaskDriver { config, images, state, ids })
    }

    /// The directory of task `id`.
    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.config.tasks_dir.join(id)
    }

    /// Pulls the image unless it is already in the store.
    pub async fn ensure_image(&self, reference: &str) -> Result<()> {
        if self.images.get(reference).is_err() {
            self.images.pull(reference, Arc::new(NoProgress)).await?;
        }
        Ok(())
    }

    /// Starts a task: image, rootfs, bundle, then the shim. Returns the container's pid.
    /// On failure nothing of the task is left. A task dir that an earlier start left without a
    /// shim (the agent died between writing the bundle and starting the shim) is cleared first.
    pub async fn start(&self, task: &TaskSpec, netns: Option<&Path>) -> Result<i32> {
        runtime::state::validate_id(&task.id)?;
        self.ensure_image(&task.image).await?;
        crate::crash_point::reached("start:after-pull");
        let dir = self.task_dir(&task.id);
        if dir.exists() {
            self.clear_unstarted(&task.id)?;
        }
        // A range the task still holds (a start that was cut short) is kept.
        let ids = match task.userns {
            UserNamespace::Auto => Some(self.ids.allocate(&task.id)?),
            UserNamespace::Host => {
                self.ids.release(&task.id)?;
                None
            }
        };
        let started = self.start_in(task, netns, &dir, ids).await;
        if started.is_err() {
            let _ = self.images.release_rootfs(&task.id);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = self.ids.release(&task.id);
        }
        started
    }

    /// Removes the task dir and rootfs of a start that never got a shim: no exit record, no
    /// container, no shim process. Anything else (a task that runs, is being started by a live
    /// shim, or ended) is refused: its dir is not ours to delete.
    fn clear_unstarted(&self, id: &str) -> Result<()> {
        let dir = self.task_dir(id);
        let refuse =
            |why: &str| Err(AgentError::Start { task: id.into(), reason: format!("it already has a task dir on this node ({why})") });
        if shim::read_exit(&dir)?.is_some() {
            return refuse("it ran and exited");
        }
        match Container::load(&self.state, id) {
            Err(runtime::Error::NotFound(_)) => {}
            Ok(_) => return refuse("its container exists"),
            Err(e) => return Err(e.into()),
        }
        if shim_pid(&dir).is_some_and(|pid| shim_process_alive(pid, &self.config.runtime_binary)) {
            return refuse("its shim is running");
        }
        tracing::warn!(task = id, "clearing the task dir of a start that never reached its shim");
        self.images.release_rootfs(id)?;
        std::fs::remove_dir_all(&dir).map_err(|e| AgentError::io(format!("remove the unstarted task dir of {id}"), e))
    }

    async fn start_in(&self, task: &TaskSpec, netns: Option<&Path>, dir: &Path, ids: Option<IdRange>) -> Result<i32> {
        let base = bundle::finish_spec(runtime::spec_template::default_spec(&[]), task, &self.config.cgroup_parent, netns, ids)?;
        let (images, overrides) = (self.images.clone(), bundle::overrides(task));
        let (image, id, bundle_dir) = (task.image.clone(), task.id.clone(), dir.join("bundle"));
        let made = tokio::task::spawn_blocking(move || images.create_bundle(&image, &id, &bundle_dir, &overrides, base))
            .await
            .map_err(|e| AgentError::Spec(format!("bundle creation panicked: {e}")))??;
        let bundle_dir = made.dir;
        crate::crash_point::reached("start:after-bundle");
        let output = tokio::process::Command::new(&self.config.runtime_binary)
            .arg("--root")
            .arg(&self.config.state_root)
            .arg("shim")
            .arg("--bundle")
            .arg(&bundle_dir)
            .arg("--task-dir")
            .arg(dir)
            .arg("--max-log-bytes")
            .arg(self.config.max_log_bytes.to_string())
            .arg(&task.id)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| AgentError::io(format!("run {}", self.config.runtime_binary.display()), e))?;
        if !output.status.success() {
            let reason = String::from_utf8_lossy(&output.stderr).trim().trim_start_matches("sched-runtime: ").to_string();
            return Err(AgentError::Start { task: task.id.clone(), reason });
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| AgentError::Start { task: task.id.clone(), reason: "the shim printed no pid".into() })
    }

    /// The task's status now.
    pub fn status(&self, id: &str) -> Result<TaskStatus> {
        let dir = self.task_dir(id);
        if let Some(exit) = shim::read_exit(&dir)? {
            return Ok(TaskStatus::Exited(exit));
        }
        match Container::load(&self.state, id) {
            Ok(c) if c.status() != Status::Stopped => Ok(TaskStatus::Running { pid: c.pid() }),
            // Stopped but not yet recorded: the shim is writing exit.json right now.
            Ok(_) if shim_alive(&dir, &self.config.runtime_binary) => Ok(TaskStatus::Running { pid: 0 }),
            // ... unless the shim is gone too (killed with its node, or the node rebooted): then
            // the task ended without a record.
            Ok(_) => Ok(TaskStatus::Exited(shim::read_exit(&dir)?.unwrap_or_else(unrecorded_exit))),
            Err(runtime::Error::NotFound(_)) if dir.exists() => {
                // The shim deletes the container only after it wrote exit.json: read it again.
                Ok(shim::read_exit(&dir)?.map(TaskStatus::Exited).unwrap_or(TaskStatus::Missing))
            }
            Err(runtime::Error::NotFound(_)) => Ok(TaskStatus::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops a task: its stop signal (the image's, else SIGTERM), then SIGKILL after `grace`.
    /// Returns how it ended.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ExitRecord> {
        let signal = self.stop_signal(id);
        if let TaskStatus::Exited(exit) = self.status(id)? {
            return Ok(exit);
        }
        self.signal(id, signal)?;
        crate::crash_point::reached("stop:after-signal");
        if let Some(exit) = self.wait_exit(id, grace).await? {
            return Ok(exit);
        }
        self.signal(id, Signal::SIGKILL)?;
        self.wait_exit(id, KILL_WAIT)
            .await?
            .ok_or_else(|| AgentError::Start { task: id.into(), reason: format!("it survived SIGKILL for {KILL_WAIT:?}") })
    }

    /// Frees an exited task's rootfs (unmounted, its upper layer deleted); the task dir with its
    /// exit record and logs stays. Idempotent.
    pub fn release(&self, id: &str) -> Result<()> {
        if let TaskStatus::Running { .. } = self.status(id)? {
            return Err(AgentError::Start { task: id.into(), reason: "cannot release a running task: stop it first".into() });
        }
        // A container whose shim died with it was never deleted: its state and cgroups go now.
        if let Ok(container) = Container::load(&self.state, id) {
            container.delete(true)?;
        }
        self.images.release_rootfs(id)?;
        // Its processes are dead and its upper dir is gone: nothing holds its ids any more.
        self.ids.release(id)?;
        Ok(())
    }

    /// Removes an exited task: its rootfs and its task dir (and its container, if its shim died
    /// before deleting it).
    pub fn remove(&self, id: &str) -> Result<()> {
        if let TaskStatus::Running { .. } = self.status(id)? {
            return Err(AgentError::Start { task: id.into(), reason: "cannot remove a running task: stop it first".into() });
        }
        // A live shim deletes its container itself, right after recording the exit.
        if let Ok(container) = Container::load(&self.state, id)
            && !shim_alive(&self.task_dir(id), &self.config.runtime_binary)
        {
            container.delete(true)?;
        }
        self.images.release_rootfs(id)?;
        self.ids.release(id)?;
        crate::crash_point::reached("remove:after-rootfs");
        match std::fs::remove_dir_all(self.task_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::io(format!("remove task dir of {id}"), e)),
            _ => Ok(()),
        }
    }

    /// The ids of every task with a dir on this node (running or exited): what a restarted agent
    /// adopts.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = std::fs::read_dir(&self.config.tasks_dir)
            .map_err(|e| AgentError::io(format!("read {}", self.config.tasks_dir.display()), e))?;
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Where and how this driver runs tasks.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Every container dir under the runtime root: `(id, status)`, the status `None` for a dir
    /// without `state.json` (a create that did not finish, a delete cut short).
    pub fn containers(&self) -> Result<Vec<(String, Option<Status>)>> {
        let root = &self.config.state_root;
        let entries = std::fs::read_dir(root).map_err(|e| AgentError::io(format!("read {}", root.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let id = entry.file_name().to_string_lossy().into_owned();
            match Container::load(&self.state, &id) {
                Ok(c) => out.push((id, Some(c.status()))),
                Err(runtime::Error::NotFound(_)) => out.push((id, None)),
                // A malformed state (or an id the runtime refuses) is not ours to judge.
                Err(e) => tracing::warn!(container = id, "skipping an unreadable container: {e}"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The container id of every rootfs dir in the image store.
    pub fn rootfs_ids(&self) -> Result<Vec<String>> {
        Ok(self.images.snapshotter().rootfs_ids()?)
    }

    /// The pid of task `id`'s shim as its task dir names it (`shim.pid`), if that process runs.
    pub fn shim_running(&self, id: &str) -> Option<i32> {
        shim_pid(&self.task_dir(id)).filter(|pid| shim_process_alive(*pid, &self.config.runtime_binary)).map(|pid| pid as i32)
    }

    /// Kills every process of task `id`'s container (SIGKILL to its init, whose pid namespace
    /// takes the rest) and keeps its state, so that the task reads as exited: for a container
    /// whose shim is gone. A container already stopped or gone is fine.
    pub fn kill_unsupervised(&self, id: &str) -> Result<()> {
        self.signal(id, Signal::SIGKILL)
    }

    /// Deletes task `id`'s container with force: everything in its cgroup is killed, then its
    /// cgroups and state go (the runtime's `delete --force`). A missing container is fine.
    pub fn delete_container(&self, id: &str) -> Result<()> {
        match Container::load(&self.state, id) {
            Ok(c) => Ok(c.delete(true)?),
            Err(runtime::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes container dir `id` if it has no `state.json` (nothing loads or deletes it);
    /// returns whether it did (a dir that got its state meanwhile stays).
    pub fn remove_unrecorded_container(&self, id: &str) -> Result<bool> {
        match Container::load(&self.state, id) {
            Err(runtime::Error::NotFound(_)) => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let dir = self.state.container_dir(id)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::io(format!("remove {}", dir.display()), e)),
            _ => Ok(true),
        }
    }

    /// Unmounts and deletes task `id`'s rootfs, whatever the task's state.
    pub fn remove_rootfs(&self, id: &str) -> Result<()> {
        Ok(self.images.release_rootfs(id)?)
    }

    /// Every task that holds a host id range (see [`super::id_ranges`]).
    pub fn id_range_holders(&self) -> Vec<String> {
        self.ids.holders()
    }

    /// Task `id`'s host id range, if it holds one.
    pub fn id_range(&self, id: &str) -> Option<IdRange> {
        self.ids.get(id)
    }

    /// Gives task `id`'s host id range back, whatever the task's state; returns it, `None` if it
    /// held none. Only once its processes are dead and its rootfs is gone.
    pub fn release_id_range(&self, id: &str) -> Result<Option<IdRange>> {
        self.ids.release(id)
    }

    /// Deletes task `id`'s dir (records and logs), whatever the task's state.
    pub fn remove_task_dir(&self, id: &str) -> Result<()> {
        runtime::state::validate_id(id)?;
        match std::fs::remove_dir_all(self.task_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::io(format!("remove task dir of {id}"), e)),
            _ => Ok(()),
        }
    }

    /// The task's cgroup directories (for CPU and memory metrics); empty when it is not running.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.state.load(id).map(|s| s.cgroup_dirs).unwrap_or_default()
    }

    /// Every log record of a task, oldest first.
    pub fn logs(&self, id: &str) -> Result<Vec<shim::log::LogRecord>> {
        let dir = self.task_dir(id);
        if !dir.exists() {
            return Err(AgentError::UnknownTask(id.into()));
        }
        shim::log::read_all(&dir.join(shim::LOG_DIR)).map_err(|e| AgentError::io(format!("read the logs of {id}"), e))
    }

    fn signal(&self, id: &str, signal: Signal) -> Result<()> {
        match Container::load(&self.state, id) {
            Ok(c) => match c.kill(signal) {
                // It stopped between our status check and the signal: fine.
                Err(runtime::Error::WrongStatus { .. }) => Ok(()),
                other => Ok(other?),
            },
            Err(runtime::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<Option<ExitRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let TaskStatus::Exited(exit) = self.status(id)? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The image's stop signal from the task's bundle, SIGTERM by default.
    fn stop_signal(&self, id: &str) -> Signal {
        let config = self.task_dir(id).join("bundle").join("config.json");
        std::fs::read(config)
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .and_then(|v| v["annotations"][STOP_SIGNAL_ANNOTATION].as_str().map(str::to_string))
            .and_then(|s| parse_signal(&s).ok())
            .unwrap_or(Signal::SIGTERM)
    }
}

/// Whether the task's shim (`shim.pid` in its dir, a process of `runtime_binary`) still runs.
/// Without a pid file it is assumed to, as before such files existed.
fn shim_alive(task_dir: &Path, runtime_binary: &Path) -> bool {
    shim_pid(task_dir).is_none_or(|pid| shim_process_alive(pid, runtime_binary))
}

/// The pid in the task's `shim.pid`, if it has one.
fn shim_pid(task_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(task_dir.join(shim::PID_FILE)).ok().and_then(|p| p.trim().parse::<u32>().ok())
}

/// Whether `pid` is a live (not zombie) process of `runtime_binary`.
fn shim_process_alive(pid: u32, runtime_binary: &Path) -> bool {
    // A reused pid is not the shim: check the name (the kernel keeps 15 bytes of it), and that
    // it is not a zombie.
    let binary = runtime_binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let comm: String = binary.chars().take(15).collect();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((name, rest)) = stat.split_once(") ") else { return false };
    name.ends_with(&format!("({comm}")) && !rest.starts_with('Z')
}

/// The record of a task that ended while nothing watched it (its shim was killed too).
fn unrecorded_exit() -> ExitRecord {
    ExitRecord { code: 255, signal: None, finished_at: String::new(), log_lines_dropped: 0 }
}
