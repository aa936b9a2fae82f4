//! `/dev` inside the container: the default character devices every container gets (null, zero,
//! full, random, urandom, tty), the spec's `linux.devices`, and the standard symlinks.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::makedev;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use pathrs::{InodeType, Root};

use super::mounts::resolve;
use super::rootfs::pathrs_error;
use crate::error::{Context, Error, Result};

/// (path, major, minor) of the devices every container gets, all mode 0666 and owned by root.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Creates the default devices and the spec's devices with mknod.
pub fn create_default(root: &Root, extra: &[LinuxDevice]) -> Result<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        if extra.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        mknod(root, Path::new(path), InodeType::CharacterDevice(Permissions::from_mode(0o666), makedev(major, minor)))?;
    }
    for d in extra {
        let perm = Permissions::from_mode(d.file_mode().unwrap_or(0o666) & 0o7777);
        let dev = makedev(d.major() as u64, d.minor() as u64);
        let inode = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => InodeType::CharacterDevice(perm, dev),
            LinuxDeviceType::B => InodeType::BlockDevice(perm, dev),
            LinuxDeviceType::P => InodeType::Fifo(perm),
            LinuxDeviceType::A => {
                return Err(Error::ConfigInvalid(format!(
                    "device {} has type 'a', which is only valid in cgroup rules",
                    d.path().display()
                )));
            }
        };
        mknod(root, d.path(), inode)?;
        if d.uid().is_some() || d.gid().is_some() {
            let target = resolve(root, d.path())?;
            nix::unistd::chown(
                target.as_str(),
                d.uid().map(nix::unistd::Uid::from_raw),
                d.gid().map(nix::unistd::Gid::from_raw),
            )
            .context(|| format!("chown device {}", d.path().display()))?;
        }
    }
    Ok(())
}

fn mknod(root: &Root, path: &Path, inode: InodeType) -> Result<()> {
    if let Some(parent) = path.parent() {
        root.mkdir_all(parent, &Permissions::from_mode(0o755))
            .map_err(|e| pathrs_error(format!("create {}", parent.display()), e))?;
    }
    match root.create(path, &inode) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => Ok(()),
        Err(e) => Err(pathrs_error(format!("create device {}", path.display()), e)),
    }
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx (when /dev/pts is mounted) and /dev/core (when /proc
/// is). An existing entry is left alone.
pub fn create_symlinks(root: &Root, mounts: &[Mount]) -> Result<()> {
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
        match root.create(link, &InodeType::Symlink(PathBuf::from(target))) {
            Ok(()) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => return Err(pathrs_error(format!("create symlink {link}"), e)),
        }
    }
    Ok(())
}
