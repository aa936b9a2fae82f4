//! A process exec'd into a running container (`sched-runtime exec`): the forked child joins the
//! container's namespaces (the parent already put it in the container's pid namespace and
//! cgroup), takes the process's identity and execs. Errors before "ready" go back to the parent
//! like the init's.

use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::{Mode, umask};
use oci_spec::runtime::Process;

use super::{NamespaceJoin, become_process, console, exec};
use crate::error::{Context, Result};
use crate::sync::ChildChannel;
use crate::sys;

/// What the parent hands to an exec'd process across the fork.
pub struct TenantArgs<'a> {
    pub process: &'a Process,
    pub channel: ChildChannel,
    /// The container's namespaces (mount last), opened by the parent; pid is entered already.
    pub joins: Vec<NamespaceJoin>,
    pub signal_mask: SigSet,
    pub console_socket: Option<UnixStream>,
}

/// Runs the exec'd process in the forked child. Never returns.
pub fn run(mut args: TenantArgs<'_>) -> ! {
    let target = match setup(&mut args) {
        Ok(target) => target,
        Err(err) => {
            args.channel.send_error(&err);
            sys::exit_now(1);
        }
    };
    if let Err(err) = args.channel.send_ready() {
        eprintln!("sched-runtime: {err}");
        sys::exit_now(1);
    }
    sys::reset_signal_dispositions();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&args.signal_mask), None);
    let err = target.exec();
    eprintln!("sched-runtime: {err}");
    sys::exit_now(127);
}

fn setup(args: &mut TenantArgs<'_>) -> Result<exec::ExecTarget> {
    sys::cloexec_from(3)?;
    // The container's processes must not reach our memory, fds or /proc/PID/exe (CVE-2019-5736).
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    umask(Mode::empty());
    args.channel.wait_go()?;
    for join in &args.joins {
        nix::sched::setns(&join.file, super::namespaces::flag(join.typ))
            .context(|| format!("join the container's {} namespace", join.typ))?;
    }
    if let Some(socket) = &args.console_socket {
        console::attach_new_terminal(socket, false)?;
    }
    become_process(args.process)
}
