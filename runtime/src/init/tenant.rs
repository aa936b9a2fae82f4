//! A process exec'd into a running container (`sched-runtime exec`): the forked child joins the
//! container's namespaces (the parent already put it in the container's pid namespace and
//! cgroup), takes the process's identity and execs. Errors before "ready" go back to the parent
//! like the init's.

use std::os::unix::net::UnixStream;

use nix::sys::signal::SigSet;
use nix::sys::stat::{Mode, umask};
use oci_spec::runtime::Process;

use super::{NamespaceJoin, Prepared, become_process, console, exec_program, report_setup, seccomp};
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
    /// The container's spec: its `linux.seccomp` filter applies to exec'd processes too.
    pub container_spec: &'a oci_spec::runtime::Spec,
}

/// Runs the exec'd process in the forked child. Never returns.
pub fn run(mut args: TenantArgs<'_>) -> ! {
    let ready = setup(&mut args);
    let (target, late_seccomp) = report_setup(&mut args.channel, ready);
    exec_program(target, late_seccomp, &args.signal_mask)
}

/// Returns the program to exec and the seccomp filter still to install right before `execve`.
fn setup(args: &mut TenantArgs<'_>) -> Result<Prepared> {
    sys::cloexec_from(3)?;
    // The container's processes must not reach our memory, fds or /proc/PID/exe (CVE-2019-5736).
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    umask(Mode::empty());
    let seccomp = seccomp::compile_spec(args.container_spec);
    args.channel.wait_go()?;
    let seccomp = seccomp?;
    for join in &args.joins {
        nix::sched::setns(&join.file, super::namespaces::flag(join.typ))
            .context(|| format!("join the container's {} namespace", join.typ))?;
    }
    if let Some(socket) = &args.console_socket {
        console::attach_new_terminal(socket, false)?;
    }
    // The same order as the init's (runc's): before the identity switch unless noNewPrivileges.
    let late_seccomp = seccomp::install_unless_no_new_privileges(seccomp, args.process)?;
    Ok((become_process(args.process)?, late_seccomp))
}
