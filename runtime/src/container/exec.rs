//! `exec`: runs another process inside a created or running container, with the container's
//! namespaces and cgroup and the given process spec (args, env, cwd, user, capabilities, ...).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::Container;
use super::run::wait_forwarding;
use crate::error::{Context, Error, Result};
use crate::init::{NamespaceJoin, TenantArgs, run_tenant};
use crate::state::Status;
use crate::{sync, sys};

/// What `exec` needs.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub process: Process,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// The namespaces an exec'd process joins: mount after the others (it changes how paths
/// resolve), user last (once in it, the host's privileges no longer reach namespaces the
/// container joined from the host).
const JOIN_ORDER: [(LinuxNamespaceType, &str); 6] = [
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Mount, "mnt"),
    (LinuxNamespaceType::User, "user"),
];

impl Container {
    /// Execs a process in the container. Returns its exit code, or 0 at once with `detach`.
    pub fn exec(&self, opts: &ExecOptions) -> Result<i32> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.id().into(),
                status: status.to_string(),
                what: "cannot exec in a stopped container".into(),
            });
        }
        validate(&opts.process, opts.console_socket.is_some())?;
        // The container's own spec: its seccomp filter confines exec'd processes too.
        let container_spec = self.spec()?;
        let joins = self.open_namespaces()?;
        let pid_ns = self.namespace_file("pid")?;
        let console_socket = match (&opts.console_socket, opts.process.terminal() == Some(true)) {
            (Some(path), true) => Some(UnixStream::connect(path).context(|| format!("connect to --console-socket {}", path.display()))?),
            _ => None,
        };
        let all = SigSet::all();
        let mut old = SigSet::empty();
        if !opts.detach {
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old)).context(|| "block signals".into())?;
        } else {
            old = SigSet::thread_get_mask().context(|| "read the signal mask".into())?;
        }
        let (mut parent_end, child_end) = sync::channel()?;
        if let Some(ns) = &pid_ns {
            setns(ns, CloneFlags::CLONE_NEWPID).context(|| "join the container's pid namespace".into())?;
        }
        let child = match sys::fork()? {
            ForkResult::Child => {
                drop(parent_end);
                run_tenant(TenantArgs {
                    process: &opts.process,
                    channel: child_end,
                    joins,
                    signal_mask: old,
                    console_socket,
                    container_spec: &container_spec,
                })
            }
            ForkResult::Parent { child } => child,
        };
        drop(child_end);
        let started = self.join_cgroup(child.as_raw()).and_then(|()| parent_end.send_go()).and_then(|()| parent_end.wait_ready());
        if let Err(e) = started {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(match e {
                Error::Init(msg) => Error::Exec(msg),
                other => other,
            });
        }
        if let Some(pid_file) = &opts.pid_file {
            super::create::write_pid_file(pid_file, child.as_raw())?;
        }
        if opts.detach {
            return Ok(0);
        }
        let code = wait_forwarding(child, &all);
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        code
    }

    /// The container's namespaces that differ from ours (joining our own is pointless).
    fn open_namespaces(&self) -> Result<Vec<NamespaceJoin>> {
        let mut joins = Vec::new();
        for (typ, name) in JOIN_ORDER {
            if let Some(file) = self.namespace_file(name)? {
                joins.push(NamespaceJoin { typ, file });
            }
        }
        Ok(joins)
    }

    /// `/proc/<init>/ns/<name>` if it is not also ours.
    fn namespace_file(&self, name: &str) -> Result<Option<std::fs::File>> {
        use std::os::unix::fs::MetadataExt;
        let theirs = format!("/proc/{}/ns/{name}", self.pid());
        let file = std::fs::File::open(&theirs).context(|| format!("open {theirs}"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).context(|| format!("stat our {name} namespace"))?;
        let meta = file.metadata().context(|| format!("stat {theirs}"))?;
        Ok((meta.ino() != ours.ino() || meta.dev() != ours.dev()).then_some(file))
    }

    /// Moves `pid` into the container's cgroup in every hierarchy.
    fn join_cgroup(&self, pid: i32) -> Result<()> {
        for dir in &self.state.cgroup_dirs {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string()).context(|| format!("write {}", procs.display()))?;
        }
        Ok(())
    }
}

fn validate(process: &Process, has_console_socket: bool) -> Result<()> {
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(Error::ConfigInvalid("the process to exec needs args".into())),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::ConfigInvalid(format!("process cwd {:?} must be absolute", process.cwd())));
    }
    if process.terminal() == Some(true) && !has_console_socket {
        return Err(Error::ConfigInvalid("a terminal needs --console-socket to hand the pty to".into()));
    }
    Ok(())
}

impl Container {
    /// The container's own process spec (from config.json as `create` read it): the base a `sched-runtime
    /// exec ID CMD...` starts from before its flags change args, env, cwd, user and the rest.
    pub fn base_process(&self) -> Result<Process> {
        self.spec()?.process().clone().ok_or_else(|| Error::ConfigInvalid("the container's config.json has no process".into()))
    }
}
