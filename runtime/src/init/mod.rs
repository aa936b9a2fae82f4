//! The container's init process: what runs in the child between the fork and the `execve` of the
//! user's program.
//!
//! Order matters and follows runc: wait until the parent has put us in our cgroup; enter
//! (`setns`) or create (`unshare`) the namespaces; hostname, sysctls and oom score; the root
//! filesystem with its mounts, devices, masked and read-only paths, then `pivot_root`; rlimits,
//! user, groups and capabilities; report "ready"; block on the exec FIFO until `start`; `execve`.
//! Any error before "ready" travels back to the parent as text and the child exits.
//!
//! Unless the runtime binary sits on a read-only mount already, the forked child first
//! re-executes itself from a read-only clone of that binary ([`crate::self_exe`]) as the
//! hidden command `sched-runtime init`, which takes over the descriptors named on its command
//! line ([`Handover`]) and goes on exactly as the forked child would: the container's program
//! is then exec'd by a process whose `/proc/self/exe` cannot be written (CVE-2019-5736). The
//! exec runs while the parent sets up the cgroup, so it adds little to a start. This is what
//! makes the runtime's code here depend on being `sched-runtime`.

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

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::{Mode, umask};
use oci_spec::runtime::Process;

use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};
use crate::sync::ChildChannel;
use crate::sys;

pub use mounts::is_bind;
pub use namespaces::{NamespaceJoin, open_joins, pid_namespace_in_init};
pub use tenant::{TenantArgs, run as run_tenant};

/// What the parent hands to the child across the fork.
pub struct InitArgs<'a> {
    pub bundle: &'a Bundle,
    /// The copy of the spec `create` keeps in the container's state directory: the re-executed
    /// init reads this one, never the bundle's config.json again.
    pub config: PathBuf,
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
    let (ready, hook_state) = match setup(&mut args) {
        Ok((prepared, state)) => (Ok(prepared), state),
        Err(e) => (Err(e), None),
    };
    let (target, late_seccomp) = report_setup(&mut args.channel, ready);
    // Created: wait for `start`. A read error or end of file means nobody will ever start us.
    let mut byte = [0u8; 1];
    match args.exec_fifo.read(&mut byte) {
        Ok(1) => {}
        _ => sys::exit_now(1),
    }
    if let Some(state) = hook_state.map(|s| with_status(&s, "created"))
        && let Err(err) = crate::hooks::run(crate::hooks::Stage::StartContainer, args.bundle.spec.hooks().as_ref(), &state)
    {
        eprintln!("sched-runtime: {err}");
        sys::exit_now(1);
    }
    exec_program(target, late_seccomp, &args.signal_mask)
}

/// The state JSON `state` with its status replaced.
fn with_status(state: &[u8], status: &str) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(state) {
        Ok(mut value) => {
            value["status"] = serde_json::Value::from(status);
            serde_json::to_vec(&value).unwrap_or_else(|_| state.to_vec())
        }
        Err(_) => state.to_vec(),
    }
}

/// What the re-executed init (`sched-runtime init`) is handed: the bundle directory, and the
/// numbers of the descriptors it inherits in place of [`InitArgs`]'.
#[derive(Debug, Clone)]
pub struct Handover {
    pub bundle: PathBuf,
    /// The spec's copy in the state directory ([`InitArgs::config`]).
    pub config: PathBuf,
    pub channel: RawFd,
    pub exec_fifo: RawFd,
    /// The namespaces joined by path, in the order of the spec's namespaces that have a path.
    pub joins: Vec<RawFd>,
    pub console_socket: Option<RawFd>,
    /// The signal numbers of [`InitArgs::signal_mask`].
    pub signal_mask: Vec<i32>,
}

impl Handover {
    /// The command line of `sched-runtime init` that carries this handover.
    pub fn to_args(&self) -> Vec<CString> {
        let mut args: Vec<Vec<u8>> = vec![b"sched-runtime".to_vec(), b"init".to_vec(), b"--bundle".to_vec()];
        args.push(self.bundle.as_os_str().as_bytes().to_vec());
        args.extend([b"--config".to_vec(), self.config.as_os_str().as_bytes().to_vec()]);
        args.extend([b"--channel".to_vec(), self.channel.to_string().into_bytes()]);
        args.extend([b"--exec-fifo".to_vec(), self.exec_fifo.to_string().into_bytes()]);
        for fd in &self.joins {
            args.extend([b"--join".to_vec(), fd.to_string().into_bytes()]);
        }
        if let Some(fd) = self.console_socket {
            args.extend([b"--console-socket-fd".to_vec(), fd.to_string().into_bytes()]);
        }
        if !self.signal_mask.is_empty() {
            let mask: Vec<String> = self.signal_mask.iter().map(i32::to_string).collect();
            args.extend([b"--signal-mask".to_vec(), mask.join(",").into_bytes()]);
        }
        args.into_iter().filter_map(|a| CString::new(a).ok()).collect()
    }
}

/// In the forked child: re-executes the runtime from `exe` (a read-only clone of its binary) as
/// `sched-runtime init`, handing over the descriptors of `args`. Never returns.
pub fn reexec(exe: &OwnedFd, mut args: InitArgs<'_>) -> ! {
    let handed = (|| -> Result<Vec<CString>> {
        let mut fds = vec![args.channel.as_fd(), args.exec_fifo.as_fd()];
        fds.extend(args.joins.iter().map(|j| j.file.as_fd()));
        fds.extend(args.console_socket.iter().map(|s| s.as_fd()));
        for fd in fds {
            sys::keep_on_exec(fd)?;
        }
        let handover = Handover {
            bundle: args.bundle.dir.clone(),
            config: args.config.clone(),
            channel: args.channel.as_fd().as_raw_fd(),
            exec_fifo: args.exec_fifo.as_raw_fd(),
            joins: args.joins.iter().map(|j| j.file.as_raw_fd()).collect(),
            console_socket: args.console_socket.as_ref().map(|s| s.as_raw_fd()),
            signal_mask: sys::signal_numbers(&args.signal_mask),
        };
        Ok(handover.to_args())
    })();
    let err = match handed {
        Ok(argv) => crate::self_exe::exec_from(exe, &argv),
        Err(e) => e,
    };
    fail_before_setup(&mut args.channel, &err)
}

/// `sched-runtime init`: takes over what the forked child handed on, and runs the init.
pub fn run_handed_over(handover: Handover) -> ! {
    crate::self_exe::restore_name();
    let Ok(channel) = sys::inherited_fd(handover.channel) else { sys::exit_now(1) };
    let mut channel = ChildChannel::from_fd(channel);
    let taken = (|| -> Result<_> {
        let bundle = Bundle::load_with_config(&handover.bundle, Some(&handover.config))?;
        let exec_fifo = File::from(sys::inherited_fd(handover.exec_fifo)?);
        let with_path: Vec<_> = bundle.namespaces().iter().filter(|ns| ns.path().is_some()).map(|ns| ns.typ()).collect();
        if with_path.len() != handover.joins.len() {
            return Err(Error::Init(format!("{} namespace descriptors for {} joined namespaces", handover.joins.len(), with_path.len())));
        }
        let joins = with_path
            .into_iter()
            .zip(&handover.joins)
            .map(|(typ, fd)| Ok(NamespaceJoin { typ, file: File::from(sys::inherited_fd(*fd)?) }))
            .collect::<Result<Vec<_>>>()?;
        let console_socket = handover.console_socket.map(|fd| sys::inherited_fd(fd).map(UnixStream::from)).transpose()?;
        Ok((bundle, exec_fifo, joins, console_socket))
    })();
    match taken {
        Ok((bundle, exec_fifo, joins, console_socket)) => run(InitArgs {
            bundle: &bundle,
            config: handover.config.clone(),
            channel,
            exec_fifo,
            joins,
            signal_mask: sys::signal_set(&handover.signal_mask),
            console_socket,
        }),
        Err(err) => fail_before_setup(&mut channel, &err),
    }
}

/// Reports an error that happened before setup began (after "go", so the parent listens) and
/// exits.
fn fail_before_setup(channel: &mut ChildChannel, err: &Error) -> ! {
    if channel.wait_go().is_ok() {
        channel.send_error(err);
    }
    sys::exit_now(1)
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

/// Every fallible step of the setup, in order. Returns the program to exec, the seccomp
/// filter still to install right before `execve` (with `noNewPrivileges`), and when the spec has
/// hooks the state JSON the startContainer hooks get.
fn setup(args: &mut InitArgs<'_>) -> Result<(Prepared, Option<Vec<u8>>)> {
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

    let mut trees = namespaces::enter(args.bundle, &args.joins, &mut args.channel)?;
    namespaces::configure(args.bundle)?;
    let hooks = spec.hooks().as_ref().filter(|h| crate::hooks::Stage::ALL.iter().any(|s| !s.of(h).is_empty()));
    let mut hook_state = None;
    let channel = &mut args.channel;
    rootfs::prepare(args.bundle, &mut trees, &mut || {
        if let Some(hooks) = hooks {
            let state = channel.request_hooks()?;
            crate::hooks::run(crate::hooks::Stage::CreateContainer, Some(hooks), &state)?;
            hook_state = Some(state);
        }
        Ok(())
    })?;

    let process = spec.process().as_ref().expect("validated: process exists");
    if let Some(socket) = &args.console_socket {
        console::attach_new_terminal(socket, true)?;
    }
    // runc's order: without noNewPrivileges the kernel wants CAP_SYS_ADMIN for a filter, which
    // become_process drops, so install it now; with it, as late as possible (in `run`).
    let late_seccomp = seccomp::install_unless_no_new_privileges(seccomp, process)?;
    Ok(((become_process(process)?, late_seccomp), hook_state))
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
