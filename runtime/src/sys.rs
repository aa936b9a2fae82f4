//! The only place in the crate with `unsafe` code: thin wrappers over the few system calls that
//! nix does not wrap safely. Each wrapper states and checks the invariant it relies on.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::ForkResult;

use crate::error::{Context, Error, Result};

/// Forks the calling process. Refuses if the process has more than one thread, because only the
/// calling thread survives a fork and locks held by the others would stay locked forever.
pub fn fork() -> Result<ForkResult> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Error::ConfigInvalid(format!("internal: cannot fork a process with {threads} threads")));
    }
    // SAFETY: the process has exactly one thread (checked above), so the child gets a consistent
    // copy of every lock and allocator state; the child only calls async-signal-safe functions or
    // functions that are safe in a single-threaded process, and it ends with exec or `_exit`.
    unsafe { nix::unistd::fork() }.context(|| "fork the container init".into())
}

/// Number of threads of this process, from /proc/self/stat (field 20).
fn thread_count() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context(|| "read /proc/self/stat".into())?;
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Fields after the command: state(3) ppid(4) ... num_threads(20) -> index 17 here.
    after_comm
        .split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::ConfigInvalid("internal: unreadable /proc/self/stat".into()))
}

/// Marks every file descriptor from `first` upwards close-on-exec, so that no descriptor of the
/// runtime (or inherited by it from the host) leaks into the container's process.
pub fn cloexec_from(first: RawFd) -> Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it takes
    // plain integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_uint)
    };
    if rc < 0 {
        return Err(Error::Sys { what: "mark inherited file descriptors close-on-exec".into(), source: nix::Error::last() });
    }
    Ok(())
}

/// Ends the calling process at once, without running exit handlers or flushing buffers that
/// belong to the parent it was forked from.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns; nothing of ours runs afterwards.
    unsafe { libc::_exit(code) }
}

/// `open(2)` returning an owned descriptor.
pub fn open(path: &std::path::Path, flags: nix::fcntl::OFlag) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` returning an owned descriptor.
pub fn openat2(dir: BorrowedFd<'_>, path: &std::path::Path, how: nix::fcntl::OpenHow) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: `openat2` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `tty` the controlling terminal of the calling session leader (`TIOCSCTTY`).
pub fn set_controlling_terminal(tty: &OwnedFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal), no pointer; `tty` is a valid
    // open descriptor for the duration of the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 { Err(nix::Error::last()) } else { Ok(()) }
}

/// Installs a seccomp BPF program on the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`).
/// Unlike seccompiler's `apply_filter`, it leaves no_new_privs alone: the spec decides that, and
/// without it the kernel requires `CAP_SYS_ADMIN`.
pub fn install_seccomp_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> nix::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| nix::Error::EINVAL)?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `prog` describes `program` (pointer and length), which outlives the call; the
    // kernel only reads the instructions (it copies them) and keeps no pointer to our memory.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &prog as *const libc::sock_fprog) };
    match rc {
        0 => Ok(()),
        // With TSYNC, a positive result names a thread that could not be synchronized.
        r if r > 0 => Err(nix::Error::ESRCH),
        _ => Err(nix::Error::last()),
    }
}

/// Clears close-on-exec on `fd`, so that it survives the init's re-execution.
pub fn keep_on_exec(fd: BorrowedFd<'_>) -> Result<()> {
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
        .map(drop)
        .context(|| format!("keep descriptor {} open across exec", fd.as_raw_fd()))
}

/// Takes ownership of descriptor `fd`, inherited across `execve` from the process that named it
/// on our command line. Refuses a number that is not an open descriptor.
pub fn inherited_fd(fd: RawFd) -> Result<OwnedFd> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).context(|| format!("inherited descriptor {fd}"))?;
    // Closed when we exec the container's program, like every other descriptor of ours.
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC))
        .context(|| format!("inherited descriptor {fd}"))?;
    // SAFETY: fcntl just showed that `fd` is open; the parent handed it over for this process
    // alone and named it once on the command line, so nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The signal numbers (1..=SIGRTMAX) in `set`, real-time signals included (nix's `Signal` has
/// only the standard ones).
pub fn signal_numbers(set: &nix::sys::signal::SigSet) -> Vec<i32> {
    let raw: &libc::sigset_t = set.as_ref();
    // SAFETY: `raw` points to a valid, initialised sigset_t for the duration of the call;
    // sigismember only reads it.
    (1..=libc::SIGRTMAX()).filter(|&n| unsafe { libc::sigismember(raw, n) } == 1).collect()
}

/// The signal set of `numbers` (numbers outside 1..=SIGRTMAX are ignored).
pub fn signal_set(numbers: &[i32]) -> nix::sys::signal::SigSet {
    // SAFETY: sigemptyset initialises the zeroed sigset_t, sigaddset only writes inside it and
    // rejects numbers it does not know; the set is fully initialised (by sigemptyset) before
    // nix takes it, which is what from_sigset_t_unchecked asks for.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut raw);
        for &n in numbers {
            libc::sigaddset(&mut raw, n);
        }
        nix::sys::signal::SigSet::from_sigset_t_unchecked(raw)
    }
}

/// `struct mount_attr` of <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(2)` (Linux 5.12) on the detached mount `tree`, which neither nix nor rustix
/// wraps; `recursive` applies it to every mount of the tree.
fn mount_setattr(tree: BorrowedFd<'_>, attr: &MountAttr, recursive: bool) -> nix::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `tree` is a valid descriptor for the call; the empty path is a NUL-terminated
    // static string; `attr` is a `struct mount_attr` laid out as the kernel expects and its size
    // is passed with it; the kernel only reads both and keeps no pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 { Err(nix::Error::last()) } else { Ok(()) }
}

/// Makes the detached mount `tree` (from `open_tree(OPEN_TREE_CLONE)`) read-only.
pub fn mount_set_read_only(tree: BorrowedFd<'_>) -> nix::Result<()> {
    mount_setattr(tree, &MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 }, false)
}

/// Makes the detached mount `tree` an idmapped mount through the mappings of the user namespace
/// `userns` (`MOUNT_ATTR_IDMAP`): a file owned by id N on disk shows as owned by the host id that
/// container id N maps to, and files created through it are stored with the container's ids.
pub fn mount_set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> nix::Result<()> {
    let userns_fd = u64::try_from(userns.as_raw_fd()).map_err(|_| nix::Error::EBADF)?;
    mount_setattr(tree, &MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd }, recursive)
}

/// The type of the namespace behind `fd` as its `CLONE_NEW*` flag (`NS_GET_NSTYPE`, Linux 4.11).
/// ENOTTY means `fd` is not a namespace file.
pub fn namespace_type(fd: BorrowedFd<'_>) -> nix::Result<libc::c_int> {
    /// `_IO(0xb7, 0x3)` of <linux/nsfs.h>.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an integer; `fd` is a valid open
    // descriptor for the duration of the call; no memory of ours is touched.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if rc < 0 { Err(nix::Error::last()) } else { Ok(rc) }
}

/// Creates a process like `fork`, except that its parent is our parent (`CLONE_PARENT`): the
/// container's init forks its pid 1 this way once it has created the pid namespace inside the
/// container's user namespace, so that the runtime, not the init's first process, is the parent
/// that waits for it. Refuses in a process with more than one thread, like [`fork`].
pub fn fork_as_sibling() -> Result<ForkResult> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Error::ConfigInvalid(format!("internal: cannot fork a process with {threads} threads")));
    }
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: like `fork` above: the process has exactly one thread, so the child gets a
    // consistent copy of every lock and allocator state. Without CLONE_VM the child runs on a
    // copy of our stack and memory, as after fork; the null stack pointer means "the same stack
    // address", and the tid pointers are unused (no CLONE_*SETTID flags). glibc's raise and
    // pthread_kill ask the kernel for the caller's tid, so they work in the child too.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        r if r < 0 => Err(Error::Sys { what: "fork the container's pid 1 (clone CLONE_PARENT)".into(), source: nix::Error::last() }),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: nix::unistd::Pid::from_raw(pid as i32) }),
    }
}

/// Starts a child in a new user namespace (`clone(CLONE_NEWUSER)`) that does nothing but wait
/// to be killed: a holder of the namespace while its maps are written and its file is opened (for
/// idmapped mounts made before any container exists). Unlike [`fork`] this works in a
/// multi-threaded process, because the child never runs Rust code again: it only makes two raw
/// system calls in a loop. The caller kills and reaps it.
pub fn spawn_user_namespace_holder() -> Result<nix::unistd::Pid> {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM the child runs on a copy of our memory, as after fork; the null
    // stack pointer means "the same stack address" and no tid pointers are used. Other threads'
    // locks may be held in that copy, so the child takes none: it only calls `prctl` and `pause`
    // (plain system calls, async-signal-safe) and never returns from this block.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        r if r < 0 => Err(Error::Sys { what: "create a user namespace (clone CLONE_NEWUSER)".into(), source: nix::Error::last() }),
        0 => loop {
            // SAFETY: see above; the child dies with the thread that made it, or when killed.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                libc::pause();
            }
        },
        pid => Ok(nix::unistd::Pid::from_raw(pid as i32)),
    }
}

/// Resets every catchable signal to its default action. Rust ignores SIGPIPE at startup, and
/// ignored signals stay ignored across `execve`: without this, a container's program would start
/// with SIGPIPE ignored (unlike under runc).
pub fn reset_signal_dispositions() {
    for signo in 1..=libc::SIGRTMAX() {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no handler code of ours, so no handler can run in
        // an async-signal-unsafe context. This includes the real-time signals glibc reserves for
        // threads (32, 33): we are single-threaded and about to exec. Errors (signal numbers the
        // kernel rejects) are ignored.
        unsafe { libc::signal(signo, libc::SIG_DFL) };
    }
}

/// Takes ownership of descriptors that arrived with `SCM_RIGHTS`.
pub fn received_fds(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    raw.into_iter()
        // SAFETY: the kernel installed these descriptors in our table while receiving the
        // message (with MSG_CMSG_CLOEXEC), and nothing else has seen their numbers yet.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}
