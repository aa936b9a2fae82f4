//! The only place in the crate with `unsafe` code: thin wrappers over the few system calls that
//! nix does not wrap safely. Each wrapper states and checks the invariant it relies on.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::ForkResult;

use crate::error::{Context, Error, Result};

/// Forks the calling process. Refuses if the process has more than one thread, because only the
/// calling thread survives a fork and locks held by the others would stay locked forever.
pub fn fork() -> Result<ForkResult> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Error::ConfigInvalid(format!(
            "internal: cannot fork a process with {threads} threads"
        )));
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
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(Error::Sys {
            what: "mark inherited file descriptors close-on-exec".into(),
            source: nix::Error::last(),
        });
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
