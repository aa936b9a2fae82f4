//! Paths inside the container's rootfs, resolved by the kernel as if the rootfs were `/`
//! (openat2 with `RESOLVE_IN_ROOT`): a symlink in the image such as `/proc -> /etc` or
//! `dev -> ../../host` can never lead a mount, a device or a directory we create outside the
//! rootfs. Each operation is one or a few system calls, which keeps container start fast.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag, mkdirat, mknodat};

use crate::error::{Error, Result};
use crate::sys;

/// The rootfs, opened once.
pub struct RootDir {
    fd: OwnedFd,
}

/// How a path is resolved: inside the root, never through /proc magic links.
fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

impl RootDir {
    /// Opens the rootfs directory.
    pub fn open(path: &Path) -> Result<RootDir> {
        let fd = sys::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .map_err(|e| sys_error(format!("open rootfs {}", path.display()), e))?;
        Ok(RootDir { fd })
    }

    /// Resolves an existing path inside the root to an `O_PATH` descriptor.
    pub fn resolve(&self, path: &Path) -> Result<OwnedFd> {
        self.resolve_raw(path).map_err(|e| sys_error(format!("resolve {} in the rootfs", path.display()), e))
    }

    fn resolve_raw(&self, path: &Path) -> std::result::Result<OwnedFd, Errno> {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(in_root());
        sys::openat2(self.fd.as_fd(), relative(path).as_path(), how)
    }

    /// Like `mkdir -p` inside the root; returns the directory.
    pub fn mkdir_all(&self, path: &Path, mode: u32) -> Result<OwnedFd> {
        match self.resolve_raw(path) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(sys_error(format!("resolve {} in the rootfs", path.display()), e)),
        }
        let (parent, name) = split(path)?;
        let parent_fd = self.mkdir_all(parent, mode)?;
        match mkdirat(Some(parent_fd.as_raw_fd()), name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys_error(format!("create directory {}", path.display()), e)),
        }
        self.resolve(path)
    }

    /// Creates an empty file (if missing) inside the root, creating its parents.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<OwnedFd> {
        if let Ok(fd) = self.resolve_raw(path) {
            return Ok(fd);
        }
        let (parent, name) = split(path)?;
        let parent_fd = self.mkdir_all(parent, 0o755)?;
        // The last component is created right in the resolved parent and may not be a symlink.
        let how = OpenHow::new()
            .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        sys::openat2(parent_fd.as_fd(), name, how).map_err(|e| sys_error(format!("create file {}", path.display()), e))?;
        self.resolve(path)
    }

    /// Creates a device node or FIFO (an existing one is left alone).
    pub fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> Result<()> {
        let (parent, name) = split(path)?;
        let parent_fd = self.mkdir_all(parent, 0o755)?;
        match mknodat(Some(parent_fd.as_raw_fd()), name, kind, Mode::from_bits_truncate(mode), dev) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(sys_error(format!("create device {}", path.display()), e)),
        }
    }

    /// Creates a symlink (an existing entry is left alone).
    pub fn symlink(&self, path: &Path, target: &str) -> Result<()> {
        let (parent, name) = split(path)?;
        let parent_fd = self.mkdir_all(parent, 0o755)?;
        match nix::unistd::symlinkat(target, Some(parent_fd.as_raw_fd()), name) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(sys_error(format!("create symlink {}", path.display()), e)),
        }
    }
}

/// `/a/b/../c` -> `a/b/../c`: relative to the root descriptor (the kernel clamps `..` at it).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path.components().filter(|c| !matches!(c, Component::RootDir)).collect();
    if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel }
}

/// Splits into parent and a plain last component.
fn split(path: &Path) -> Result<(&Path, &Path)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, Path::new(name))),
        _ => Err(Error::ConfigInvalid(format!("{} does not name a file inside the rootfs", path.display()))),
    }
}

fn sys_error(what: String, source: Errno) -> Error {
    Error::Sys { what, source }
}
