//! `create`: sets a container up and leaves its init waiting for `start`.
//!
//! The parent (this process) validates the bundle, claims the id, forks the init into its pid
//! namespace, puts it into its cgroup and applies the limits, then waits for the init to report
//! "ready" or its error. Whatever fails, everything made so far is undone: the init is killed,
//! the cgroup and the state directory are removed. The init re-executes itself from a read-only
//! clone of the runtime binary right after the fork ([`crate::init`]), so the caller must be
//! `sched-runtime` (its hidden `init` command takes over).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::LinuxNamespaceType;

use super::Container;
use crate::bundle::Bundle;
use crate::cgroups::{ContainerCgroup, cgroup_path};
use crate::error::{Context, Error, Result};
use crate::hooks::Stage;
use crate::init::{self, InitArgs};
use crate::state::{CONFIG_FILE, EXEC_FIFO, PersistedState, StateRoot, process_start_time};
use crate::sync::ChildMessage;
use crate::{sync, sys};

/// What `create` (and `run`) needs.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
}

/// Undoes a half-made container when dropped unarmed.
struct Rollback<'a> {
    dir: &'a Path,
    child: Option<Pid>,
    cgroup: Option<ContainerCgroup>,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = cgroup.remove()
        {
            tracing::warn!("cleanup after a failed create: {e}");
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

impl Container {
    /// Creates a container. `signal_mask` is the mask the user's program gets (callers that block
    /// signals to forward them pass the mask from before they blocked).
    pub fn create(root: &StateRoot, opts: &CreateOptions, signal_mask: SigSet) -> Result<Container> {
        crate::state::validate_id(&opts.id)?;
        let bundle = Bundle::load(&opts.bundle)?;
        let mappings = bundle.mappings()?;
        tracing::debug!(id = %opts.id, "bundle loaded");
        let dir = root.claim(&opts.id)?;
        let mut rollback = Rollback { dir: &dir, child: None, cgroup: None, armed: true };
        // config.json is read once: the init, start, exec and delete read this copy.
        let config = dir.join(CONFIG_FILE);
        std::fs::write(&config, serde_json::to_vec(&bundle.spec).map_err(|e| Error::ConfigInvalid(format!("spec: {e}")))?)
            .context(|| format!("write {}", config.display()))?;

        let fifo_path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600)).context(|| format!("create {}", fifo_path.display()))?;
        // Read-write: opening never blocks, and the init's read blocks until `start` writes.
        let exec_fifo =
            std::fs::OpenOptions::new().read(true).write(true).open(&fifo_path).context(|| format!("open {}", fifo_path.display()))?;
        let joins = init::open_joins(&bundle)?;
        let cg_path = cgroup_path(&bundle.spec, &opts.id);
        rollback.cgroup = Some(ContainerCgroup::open(&cg_path, &opts.id)?);
        tracing::debug!("cgroup manager ready");
        let (mut parent_end, child_end) = sync::channel()?;
        let console_socket = connect_console(&bundle, opts)?;

        // The init execs the container's program from a binary no container can write.
        let protected_exe = crate::self_exe::protected_copy()?;

        let own_pid_ns = enter_pid_namespace(&bundle, &joins)?;
        let child = match sys::fork()? {
            ForkResult::Child => {
                drop(parent_end);
                let args = InitArgs { bundle: &bundle, config, channel: child_end, exec_fifo, joins, signal_mask, console_socket };
                match &protected_exe {
                    Some(exe) => init::reexec(exe, args),
                    None => init::run(args),
                }
            }
            ForkResult::Parent { child } => child,
        };
        // Our later children (hooks) belong in our own pid namespace, not the container's.
        if let Some(own) = own_pid_ns {
            setns(&own, CloneFlags::CLONE_NEWPID).context(|| "return to the runtime's pid namespace".into())?;
        }
        drop(protected_exe);
        drop(child_end);
        drop(exec_fifo);
        rollback.child = Some(child);
        let resources = bundle.spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let cgroup = rollback.cgroup.as_ref().expect("set before the fork");
        cgroup.enter_and_limit(child.as_raw(), resources)?;
        tracing::debug!(pid = child.as_raw(), "init in its cgroup, limits applied");
        parent_end.send_go()?;
        let created = crate::time::now_rfc3339();
        let mut child = child;
        let mut rootfs_ids = None;
        loop {
            match parent_end.recv()? {
                ChildMessage::Ready => break,
                ChildMessage::MapRequest => {
                    let mapped = super::userns::map_and_mount(child.as_raw(), &bundle, mappings.as_ref())?;
                    let fds: Vec<_> = mapped.fds.iter().map(|fd| fd.as_fd()).collect();
                    parent_end.send_mapped(&mapped.layout, &fds)?;
                    rootfs_ids = Some(mapped.rootfs);
                    tracing::debug!(rootfs = ?mapped.rootfs, "user namespace mapped");
                }
                ChildMessage::Pid(pid) => {
                    // The process that forked the container's pid 1 exits; pid 1 is our child.
                    let _ = waitpid(child, None);
                    child = Pid::from_raw(pid);
                    rollback.child = Some(child);
                    parent_end.send_ack()?;
                }
                ChildMessage::Hooks => {
                    let state = hook_state(&opts.id, child.as_raw(), &bundle, &created);
                    crate::hooks::run(Stage::Prestart, bundle.spec.hooks().as_ref(), &state)?;
                    crate::hooks::run(Stage::CreateRuntime, bundle.spec.hooks().as_ref(), &state)?;
                    parent_end.send_hooks_done(&state)?;
                }
            }
        }
        tracing::debug!("init ready");

        let (pid_start_time, _) =
            process_start_time(child.as_raw()).ok_or_else(|| Error::Init("the container init died right after setup".into()))?;
        let state = PersistedState {
            id: opts.id.clone(),
            pid: child.as_raw(),
            pid_start_time,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            cgroup_dirs: crate::cgroups::dirs_of(child.as_raw(), &cg_path)?,
            cgroup_path: cg_path,
            created,
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            rootfs_ids,
        };
        root.save(&state)?;
        tracing::debug!("state saved");
        if let Some(pid_file) = &opts.pid_file {
            write_pid_file(pid_file, child.as_raw())?;
        }
        rollback.armed = false;
        drop(rollback);
        Ok(Container { dir, state })
    }
}

/// A new pid namespace (or a joined one) applies to the children of the caller, so the parent
/// enters it just before the fork and the init becomes its pid 1 (or a member). Returns our own
/// pid namespace, to go back to right after the fork. With a user namespace a new pid namespace
/// is the init's to make ([`init::pid_namespace_in_init`]).
fn enter_pid_namespace(bundle: &Bundle, joins: &[init::NamespaceJoin]) -> Result<Option<std::fs::File>> {
    let wanted = bundle.namespaces().iter().any(|ns| ns.typ() == LinuxNamespaceType::Pid);
    if !wanted || init::pid_namespace_in_init(bundle) {
        return Ok(None);
    }
    let own = std::fs::File::open("/proc/self/ns/pid").context(|| "open /proc/self/ns/pid".into())?;
    if let Some(join) = joins.iter().find(|j| j.typ == LinuxNamespaceType::Pid) {
        setns(&join.file, CloneFlags::CLONE_NEWPID).context(|| "join the pid namespace".into())?;
    } else {
        unshare(CloneFlags::CLONE_NEWPID).context(|| "create the pid namespace".into())?;
    }
    Ok(Some(own))
}

/// The state JSON hooks get on their stdin while the container is being created.
fn hook_state(id: &str, pid: i32, bundle: &Bundle, created: &str) -> Vec<u8> {
    let state = super::OciState {
        oci_version: "1.2.0".into(),
        id: id.into(),
        pid,
        status: crate::state::Status::Creating,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: created.into(),
        owner: String::new(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
    };
    serde_json::to_vec(&state).expect("the state serializes")
}

/// Connects to `--console-socket` when the process wants a terminal.
fn connect_console(bundle: &Bundle, opts: &CreateOptions) -> Result<Option<std::os::unix::net::UnixStream>> {
    let terminal = bundle.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    match (terminal, &opts.console_socket) {
        (false, _) => Ok(None),
        (true, Some(path)) => {
            std::os::unix::net::UnixStream::connect(path).map(Some).context(|| format!("connect to --console-socket {}", path.display()))
        }
        (true, None) => Err(Error::ConfigInvalid("process.terminal is true: pass --console-socket to receive the terminal".into())),
    }
}

/// Writes the pid file atomically, as containerd and conmon expect.
pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("sched-tmp");
    std::fs::write(&tmp, pid.to_string()).context(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("write pid file {}", path.display()))
}
