//! Named network namespaces: a netns kept alive by a bind mount on a file, like `ip netns add`.
//!
//! [`create`] unshares a new network namespace on a short-lived dedicated thread (a network
//! namespace belongs to a thread, so the agent's own threads never change namespace) and
//! bind-mounts `/proc/thread-self/ns/net` onto the file; the namespace then lives until the file
//! is unmounted and no process or open fd is inside. A container runtime joins it by path (OCI
//! `linux.namespaces[{type: network, path}]`). [`run_in`] runs async work on a thread that has
//! entered a namespace, with its own single-threaded tokio runtime, so that netlink sockets
//! opened there talk to that namespace.
//!
//! The directory holding the files is made a shared mount point (as iproute2 does for
//! /run/netns): an unmount then propagates to mount namespaces cloned from ours meanwhile, so they
//! do not keep a destroyed task's namespace alive.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use tokio::sync::oneshot;

use super::error::{NetworkError, Result};

/// Creates a new network namespace and pins it at `path` (which must not exist yet; its
/// directory must). Undoes itself on failure.
pub async fn create(path: &Path) -> Result<()> {
    let path = path.to_owned();
    on_dedicated_thread("netns-create", move || create_on_this_thread(&path)).await
}

fn create_on_this_thread(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| NetworkError::io(format!("create netns file {}", path.display()), e))?;
    let pinned = unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::errno("unshare a new network namespace", e)).and_then(|()| {
        mount(Some("/proc/thread-self/ns/net"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| NetworkError::errno(format!("bind-mount the netns onto {}", path.display()), e))
    });
    pinned.map_err(|error| error.with_cleanup(remove(path)))
}

/// Unmounts and deletes the namespace file; a missing or unmounted file is fine. The namespace
/// itself ends when the last process in it exits.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::errno(format!("unmount netns {}", path.display()), e));
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetworkError::io(format!("remove netns file {}", path.display()), e)),
        _ => Ok(()),
    }
}

/// Opens the namespace file (to pass its fd to netlink or `setns`).
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| NetworkError::io(format!("open netns {}", path.display()), e))
}

/// Runs `work` on a new thread inside the namespace at `path`, on a single-threaded tokio
/// runtime of its own, and returns its result.
pub async fn run_in<F, Fut, T>(path: &Path, work: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let namespace = open(path)?;
    let shown = path.display().to_string();
    on_dedicated_thread("netns-worker", move || {
        setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::errno(format!("enter netns {shown}"), e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetworkError::io("start a tokio runtime inside a netns", e))?;
        runtime.block_on(work())
    })
    .await
}

/// Runs `job` on a fresh OS thread (which may change namespaces and then ends).
async fn on_dedicated_thread<T: Send + 'static>(name: &str, job: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (done, result) = oneshot::channel();
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = done.send(job());
        })
        .map_err(|e| NetworkError::io(format!("spawn thread {name}"), e))?;
    result.await.map_err(|_| NetworkError::io(format!("thread {name}"), io::Error::other("it panicked before reporting a result")))?
}

/// Creates `dir` and makes it a shared mount point (bind-mounting it onto itself first if it
/// is not a mount point yet), like iproute2 does for /run/netns.
pub fn ensure_shared_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| NetworkError::io(format!("create netns dir {}", dir.display()), e))?;
    let make_shared = || mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    let action = || format!("make {} a shared mount point", dir.display());
    match make_shared() {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| NetworkError::errno(action(), e))?;
            make_shared().map_err(|e| NetworkError::errno(action(), e))
        }
        Err(e) => Err(NetworkError::errno(action(), e)),
    }
}

/// Unmounts and removes the netns dir made by [`ensure_shared_dir`]; it must hold no namespace
/// files any more. A missing dir is fine.
pub fn remove_shared_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| NetworkError::io(format!("list netns dir {}", dir.display()), e))?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    if !left.is_empty() {
        return Err(NetworkError::io(
            format!("remove netns dir {}", dir.display()),
            io::Error::other(format!("it still holds {left:?}: destroy those task networks first")),
        ));
    }
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(NetworkError::errno(format!("unmount {}", dir.display()), e)),
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetworkError::io(format!("remove netns dir {}", dir.display()), e)),
        _ => Ok(()),
    }
}
