//! `/dev` inside the container: the default character devices every container gets (null, zero,
//! full, random, urandom, tty), the spec's `linux.devices`, and the standard symlinks.

use std::path::Path;

use nix::sys::stat::{SFlag, makedev};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::in_root::RootDir;
use super::mounts::resolve;
use crate::error::{Context, Error, Result};

/// (path, major, minor) of the devices every container gets, all mode 0666 and owned by root.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] =
    [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)];

/// Creates the default devices and the spec's devices with mknod or, in a user namespace (where
/// mknod is not allowed), by binding the host's node of the same path onto an empty file.
pub fn create_default(root: &RootDir, extra: &[LinuxDevice], bind: bool) -> Result<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        if extra.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        if bind {
            bind_host_node(root, Path::new(path))?;
        } else {
            root.mknod(Path::new(path), SFlag::S_IFCHR, 0o666, makedev(major, minor))?;
        }
    }
    for d in extra.iter().filter(|_| bind) {
        bind_host_node(root, d.path())?;
    }
    for d in extra.iter().filter(|_| !bind) {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::ConfigInvalid(format!(
                    "device {} has type 'a', which is only valid in cgroup rules",
                    d.path().display()
                )));
            }
        };
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        root.mknod(d.path(), kind, mode, makedev(d.major() as u64, d.minor() as u64))?;
        if d.uid().is_some() || d.gid().is_some() {
            let target = resolve(root, d.path())?;
            nix::unistd::chown(target.as_str(), d.uid().map(nix::unistd::Uid::from_raw), d.gid().map(nix::unistd::Gid::from_raw))
                .context(|| format!("chown device {}", d.path().display()))?;
        }
    }
    Ok(())
}

/// Binds the host's device node at `path` onto an empty file at the same path in the rootfs.
fn bind_host_node(root: &RootDir, path: &Path) -> Result<()> {
    let target = super::mounts::ensure_target(root, path, false)?;
    nix::mount::mount(Some(path), target.as_str(), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .context(|| format!("bind the host's {} (no mknod in a user namespace)", path.display()))
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx (when /dev/pts is mounted) and /dev/core (when /proc
/// is). An existing entry is left alone.
pub fn create_symlinks(root: &RootDir, mounts: &[Mount]) -> Result<()> {
    let mounted = |dest: &str| mounts.iter().any(|m| m.destination() == Path::new(dest));
    let mut links: Vec<(&str, &str)> = vec![
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    if mounted("/proc") {
        links.push(("/dev/core", "/proc/kcore"));
    }
    if mounted("/dev/pts") {
        links.push(("/dev/ptmx", "pts/ptmx"));
    }
    for (link, target) in links {
        root.symlink(Path::new(link), target)?;
    }
    Ok(())
}
