//! `linux.maskedPaths` and `linux.readonlyPaths`.
//!
//! A masked file gets the host's /dev/null bound over it (the host's, opened before the pivot, so
//! a container cannot swap it for something else); a masked directory gets an empty read-only
//! tmpfs. A read-only path is bound onto itself and remounted read-only. Paths that do not exist
//! in the container are skipped, as runc does.

use std::path::Path;

use super::in_root::RootDir;
use nix::mount::{MsFlags, mount};

use super::mounts::{Target, remount};
use crate::error::{Context, Result};

/// Resolves `path` inside the rootfs; `None` if it does not exist.
fn existing(root: &RootDir, path: &Path) -> Result<Option<(Target, bool)>> {
    match super::mounts::resolve(root, path) {
        Ok(target) => {
            let is_dir = std::fs::metadata(target.as_str()).context(|| format!("stat {}", path.display()))?.is_dir();
            Ok(Some((target, is_dir)))
        }
        Err(_) => Ok(None),
    }
}

/// Makes `path` unreadable inside the container.
pub fn mask(root: &RootDir, path: &Path) -> Result<()> {
    let Some((target, is_dir)) = existing(root, path)? else { return Ok(()) };
    if is_dir {
        mount(Some("tmpfs"), target.as_str(), Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0k"))
            .context(|| format!("mask {} with a tmpfs", path.display()))
    } else {
        mount(Some("/dev/null"), target.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .context(|| format!("mask {} with /dev/null", path.display()))
    }
}

/// Makes `path` read-only inside the container.
pub fn make_readonly(root: &RootDir, path: &Path) -> Result<()> {
    let Some((target, _)) = existing(root, path)? else { return Ok(()) };
    mount(Some(target.as_str()), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .context(|| format!("bind {} onto itself", path.display()))?;
    drop(target);
    remount(root, path, MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
}
