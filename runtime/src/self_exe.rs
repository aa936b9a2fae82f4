//! The runtime's own executable, kept out of a container's reach (CVE-2019-5736).
//!
//! A container's init is a fork of this process, so until it `execve`s the user's program its
//! `/proc/self/exe` is our binary. An entrypoint of `/proc/self/exe` (or a symlink to it, a
//! `#!/proc/self/exe` script, an ELF whose interpreter is that path) makes the kernel execute
//! our binary inside the container; from then on any process there can open it through
//! `/proc/PID/exe`, keep the descriptor, and write through it as soon as no runtime process
//! executes the binary any more (podman's `create` and `start` exit): the next `sched-runtime`
//! that root runs on the host would run the container's code.
//!
//! As runc does, every process that enters a container runs from a copy of the binary that no
//! container can write: a container's init re-executes itself from it right after the fork
//! ([`crate::init`], overlapped with the parent's cgroup setup), and `exec` re-executes the CLI
//! from it before forking the process it puts into the container ([`reexec_protected`]). The
//! copy is:
//! 1. **a read-only bind mount of the binary**: `open_tree(OPEN_TREE_CLONE)` clones a detached
//!    mount of just the file, `mount_setattr(MOUNT_ATTR_RDONLY)` makes that mount read-only,
//!    and `execveat` runs the file through it. `/proc/self/exe` then names the binary on a
//!    read-only mount that no mount namespace holds: opening it for writing fails with EROFS.
//!    Nothing is copied, so the cost is one `execve` whatever the binary's size (a debug build
//!    is 40 MB; a sealed memfd copy of the 14 MB release build would cost more than a whole
//!    start). Undoing it takes `CAP_SYS_ADMIN`, which a container that has it can use to reach
//!    the host anyway.
//! 2. **a sealed memfd copy**, where the kernel has no `mount_setattr` (before 5.12): the
//!    binary is copied into a memfd sealed against any change (`F_SEAL_SEAL | SHRINK | GROW |
//!    WRITE`), reopened read-only (a descriptor open for writing cannot be executed) and run.
//!
//! A binary that already sits on a read-only mount (an installation on a read-only `/usr`, or
//! the re-executed process itself) or in a sealed memfd needs nothing: that check is also what
//! ends the re-execution. The name the kernel shows for the process (`comm`, which `execveat`
//! sets to the descriptor's number) is set back to the program's name, so tools that look for
//! `sched-runtime` (the agent's shim check, `ps`) still find it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{MemfdFlags, SealFlags, StatVfsMountFlags};
use rustix::mount::OpenTreeFlags;

use crate::error::{Error, Result};
use crate::sys;

const SELF_EXE: &str = "/proc/self/exe";

/// Re-executes this process from a read-only clone (or a sealed copy) of its own binary unless
/// it already runs from one. Returns only when nothing had to be done, or with the error that
/// stopped it.
pub fn reexec_protected() -> Result<()> {
    match protected_copy()? {
        None => {
            restore_name();
            Ok(())
        }
        Some(target) => {
            let args: Vec<CString> = std::env::args_os().filter_map(|a| CString::new(a.as_bytes()).ok()).collect();
            Err(exec_from(&target, &args))
        }
    }
}

/// A descriptor of the binary that no container can write: the read-only clone, else the sealed
/// copy; `None` when the running binary is protected already.
pub fn protected_copy() -> Result<Option<OwnedFd>> {
    let exe = File::open(SELF_EXE).map_err(|e| Error::Io { what: format!("open {SELF_EXE}"), source: e })?;
    if is_protected(&exe) {
        return Ok(None);
    }
    match read_only_clone() {
        Ok(tree) => Ok(Some(tree)),
        Err(clone_err) => {
            tracing::debug!("no read-only clone of the runtime binary ({clone_err}); using a sealed copy");
            sealed_copy(&exe).map(Some)
        }
    }
}

/// Whether writing the binary through `/proc/self/exe` is impossible already: it is on a
/// read-only mount, or it is a memfd sealed against writes.
fn is_protected(exe: &File) -> bool {
    let read_only = rustix::fs::fstatvfs(exe).is_ok_and(|s| s.f_flag.contains(StatVfsMountFlags::RDONLY));
    let sealed = rustix::fs::fcntl_get_seals(exe).is_ok_and(|seals| seals.contains(SealFlags::WRITE));
    read_only || sealed
}

/// A detached, read-only bind mount of the binary (an `O_PATH` descriptor of the file on it).
fn read_only_clone() -> Result<OwnedFd> {
    let tree =
        rustix::mount::open_tree(rustix::fs::CWD, SELF_EXE, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC).map_err(
            |e| Error::Sys { what: format!("open_tree({SELF_EXE}, OPEN_TREE_CLONE)"), source: nix::Error::from_raw(e.raw_os_error()) },
        )?;
    sys::mount_set_read_only(tree.as_fd())
        .map_err(|e| Error::Sys { what: "mount_setattr(MOUNT_ATTR_RDONLY) on the clone of the runtime binary".into(), source: e })?;
    Ok(tree)
}

/// A memfd holding a copy of the binary, sealed against every change, reopened read-only.
fn sealed_copy(exe: &File) -> Result<OwnedFd> {
    let sys_err = |what: &str, e: rustix::io::Errno| Error::Sys { what: what.into(), source: nix::Error::from_raw(e.raw_os_error()) };
    let memfd = rustix::fs::memfd_create("sched-runtime", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| sys_err("memfd_create", e))?;
    let len = exe.metadata().map_err(|e| Error::Io { what: format!("stat {SELF_EXE}"), source: e })?.len();
    let mut copied = 0u64;
    while copied < len {
        let chunk = usize::try_from(len - copied).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::sendfile(&memfd, exe, None, chunk).map_err(|e| sys_err("copy the runtime binary into a memfd", e))? {
            0 => break,
            n => copied += n as u64,
        }
    }
    if copied != len {
        return Err(Error::Init(format!("copied {copied} of the {len} bytes of the runtime binary")));
    }
    let seals = SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    rustix::fs::fcntl_add_seals(&memfd, seals).map_err(|e| sys_err("seal the memfd copy of the runtime binary", e))?;
    // The kernel refuses to execute a file open for writing (ETXTBSY): reopen it read-only.
    let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let read_only = File::open(&path).map_err(|e| Error::Io { what: format!("reopen {path} read-only"), source: e })?;
    Ok(OwnedFd::from(read_only))
}

/// `execveat(fd, "", args, environ, AT_EMPTY_PATH)` with this process's environment. Returns
/// only on failure.
pub fn exec_from(fd: &OwnedFd, args: &[CString]) -> Error {
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(key, value)| {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            CString::new(pair).ok()
        })
        .collect();
    let flags = nix::fcntl::AtFlags::AT_EMPTY_PATH;
    let err = nix::unistd::execveat(Some(fd.as_raw_fd()), c"", args, &env, flags).unwrap_err();
    Error::Sys { what: "re-execute the runtime from its read-only copy".into(), source: err }
}

/// Sets `comm` back to the program's name (the last part of `argv[0]`, 15 bytes at most).
pub fn restore_name() {
    let Some(arg0) = std::env::args_os().next() else { return };
    let name: Vec<u8> = arg0.as_bytes().rsplit(|b| *b == b'/').next().unwrap_or_default().iter().copied().take(15).collect();
    if let Ok(name) = CString::new(name)
        && !name.is_empty()
    {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The read-only clone needs CAP_SYS_ADMIN: its test is in tests/tests/runtime_self_exe.rs.
    #[test]
    fn the_sealed_copy_is_whole_and_cannot_be_written() {
        let exe = File::open(SELF_EXE).unwrap();
        let copy = File::from(sealed_copy(&exe).unwrap());
        assert!(is_protected(&copy), "the copy is sealed");
        assert_eq!(copy.metadata().unwrap().len(), exe.metadata().unwrap().len());
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        if let Ok(mut writer) = std::fs::OpenOptions::new().write(true).open(&path) {
            assert!(std::io::Write::write_all(&mut writer, b"x").is_err(), "a sealed copy took a write");
        }
    }
}
