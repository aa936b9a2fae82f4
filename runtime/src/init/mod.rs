//! The container's init process: what runs in the child between the fork and the `execve` of the
//! user's program.
//!
//! Order matters and follows runc: wait until the parent has put us in our cgroup; enter
//! (`setns`) or create (`unshare`) the namespaces; hostname, sysctls and oom score; the root
//! filesystem with its mounts, devices, masked and read-only paths, then `pivot_root`; rlimits,
//! user, groups and capabilities; report "ready"; block on the exec FIFO until `start`; `execve`.
//! Any error before "ready" travels back to the parent as text and the child exits.

mod cgroup_mount;
mod console;
mod devices;
mod exec;
mod identity;
mod in_root;
mod mounts;
mod namespaces;
mod paths;
mod rootfs;
mod seccomp;
mod tenant;

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::{Mode, umask};
use oci_spec::runtime::Process;

use crate::bundle::Bundle;
use crate::error::{Context, Result};
use crate::sync::ChildChannel;
use crate::sys;

pub use namespaces::{NamespaceJoin, open_joins};
pub use tenant::{TenantArgs, run as run_tenant};

/// What the parent hands to the child across the fork.
pub struct InitArgs<'a> {
    pub bundle: &'a Bundle,
    pub channel: ChildChannel,
    /// The exec FIFO, opened read-write so that opening it never blocks; reading it blocks until
    /// `start` writes a byte.
    pub exec_fifo: File,
    /// Namespaces to join, opened by the parent.
    pub joins: Vec<NamespaceJoin>,
    /// The signal mask to restore before `execve` (`run` blocks signals to forward them).
    pub signal_mask: SigSet,
    /// With `process.terminal`, the connected `--console-socket` that receives the pty master.
    pub console_socket: Option<UnixStream>,
}

/// Runs the container init in the forked child. Never returns.
pub fn run(mut args: InitArgs<'_>) -> ! {
    let ready = setup(&mut args);
    let (target, late_seccomp) = report_setup(&mut args.channel, ready);
    // Created: wait for `start`. A read error or end of file means nobody will ever start us.
    let mut byte = [0u8; 1];
    match args.exec_fifo.read(&mut byte) {
        Ok(1) => {}
        _ => sys::exit_now(1),
    }
    exec_program(target, late_seccomp, &args.signal_mask)
}

/// What setup prepared: the program to exec and the seccomp filter still to install.
type Prepared = (exec::ExecTarget, Option<seccomp::CompiledProfile>);

/// Tells the parent how setup went: on failure sends the error and exits, else reports
/// "ready" and returns what setup prepared.
fn report_setup(channel: &mut ChildChannel, ready: Result<Prepared>) -> Prepared {
    let prepared = match ready {
        Ok(prepared) => prepared,
        Err(err) => {
            channel.send_error(&err);
            sys::exit_now(1);
        }
    };
    if let Err(err) = channel.send_ready() {
        eprintln!("sched-runtime: {err}");
        sys::exit_now(1);
    }
    prepared
}

/// The last steps of an init or an exec'd process, after "ready": default signal dispositions
/// and the caller's signal mask, the late seccomp filter, `execve`. Never returns.
fn exec_program(target: exec::ExecTarget, late_seccomp: Option<seccomp::CompiledProfile>, signal_mask: &SigSet) -> ! {
    sys::reset_signal_dispositions();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(signal_mask), None);
    if let Some(Err(err)) = late_seccomp.map(|filter| filter.install()) {
        eprintln!("sched-runtime: {err}");
        sys::exit_now(1);
    }
    let err = target.exec();
    eprintln!("sched-runtime: {err}");
    sys::exit_now(127);
}

/// Every fallible step of the setup, in order. Returns the program to exec, and the seccomp
/// filter still to install right before `execve` (with `noNewPrivileges`).
fn setup(args: &mut InitArgs<'_>) -> Result<Prepared> {
    let spec = &args.bundle.spec;
    // No descriptor of the runtime or the host may reach the container's program.
    sys::cloexec_from(3)?;
    // Other processes in the container must not reach us through /proc/PID (exe, fds, memory)
    // while we still run the runtime's code; execve resets this for the user's program.
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    // Files and devices we create get exactly the modes we ask for.
    umask(Mode::empty());
    // Compiled while the parent sets up the cgroup; a profile this runtime cannot apply fails
    // `create` (reported after "go", so the parent is listening) before anything is set up.
    let seccomp = seccomp::compile_spec(spec);
    args.channel.wait_go()?;
    let seccomp = seccomp?;

    namespaces::enter(args.bundle, &args.joins)?;
    namespaces::configure(args.bundle)?;
    rootfs::prepare(args.bundle)?;

    let process = spec.process().as_ref().expect("validated: process exists");
    if let Some(socket) = &args.console_socket {
        console::attach_new_terminal(socket, true)?;
    }
    // runc's order: without noNewPrivileges the kernel wants CAP_SYS_ADMIN for a filter, which
    // become_process drops, so install it now; with it, as late as possible (in `run`).
    let late_seccomp = seccomp::install_unless_no_new_privileges(seccomp, process)?;
    Ok((become_process(process)?, late_seccomp))
}

/// The steps shared by a container's init and a process exec'd into it: rlimits,
/// noNewPrivileges, user, groups and capabilities, cwd and umask; then the program is resolved.
fn become_process(process: &Process) -> Result<exec::ExecTarget> {
    identity::apply_rlimits(process)?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().context(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    }
    identity::switch_user_and_capabilities(process)?;
    nix::unistd::chdir(process.cwd()).context(|| format!("chdir to process.cwd {}", process.cwd().display()))?;
    umask(Mode::from_bits_truncate(process.user().umask().unwrap_or(0o022) as _));
    exec::ExecTarget::resolve(process)
}
