//! Mounting `/sys/fs/cgroup` inside the container.
//!
//! On a pure cgroup v2 host this is one cgroup2 mount. On v1 and hybrid hosts (one hierarchy per
//! controller, like this project's own machines) it is a tmpfs holding one mount per host
//! hierarchy, named as on the host. With a cgroup namespace each mount shows the container's own
//! cgroup as its root; without one, the container's cgroup directories are bind-mounted instead,
//! so the host's tree is never visible. A container in a user namespace whose kernel refuses it
//! a cgroup mount (EPERM, EBUSY: e.g. a cgroup2 superblock with other options than the host's)
//! gets its cgroup (the spec's `cgroupsPath`) bind-mounted the same way, as runc does.

use std::path::{Path, PathBuf};

use super::in_root::RootDir;
use nix::mount::{MsFlags, mount};

use super::mounts::{MountContext, MountOptions, ensure_target, remount};
use crate::cgroups::{Hierarchy, host_hierarchies, membership};
use crate::error::{Context, Result};

/// Mounts the cgroup filesystem(s) at `dest`.
pub fn mount_cgroup(root: &RootDir, dest: &Path, opts: &MountOptions, ctx: &MountContext<'_>) -> Result<()> {
    let hierarchies = host_hierarchies()?;
    let flags = opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let unified = hierarchies.iter().find(|h| h.mount_point == Path::new("/sys/fs/cgroup"));
    if let Some(h) = unified {
        return mount_hierarchy(root, dest, h, flags, ctx);
    }
    let target = ensure_target(root, dest, true)?;
    mount(Some("tmpfs"), target.as_str(), Some("tmpfs"), flags - MsFlags::MS_RDONLY, Some("mode=755"))
        .context(|| format!("mount tmpfs on {}", dest.display()))?;
    drop(target);
    for h in &hierarchies {
        let name = h.mount_point.strip_prefix("/sys/fs/cgroup").expect("filtered by prefix");
        mount_hierarchy(root, &dest.join(name), h, flags, ctx)?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount(root, dest, flags | MsFlags::MS_BIND)?;
    }
    Ok(())
}

fn mount_hierarchy(root: &RootDir, dest: &Path, h: &Hierarchy, flags: MsFlags, ctx: &MountContext<'_>) -> Result<()> {
    let target = ensure_target(root, dest, true)?;
    if ctx.has_cgroupns {
        let data = (h.fstype == "cgroup").then_some(h.controllers.as_str());
        match mount(Some("cgroup"), target.as_str(), Some(h.fstype.as_str()), flags, data) {
            Ok(()) => return Ok(()),
            // In a user namespace that does not own the cgroup namespace, or where the kernel
            // will not make a cgroup2 superblock with other options than the host's, the
            // mount is refused (EPERM, EBUSY): bind our own cgroup instead, as runc does.
            Err(e @ (nix::Error::EPERM | nix::Error::EBUSY)) if ctx.bundle.has_user_namespace() => {
                // Inside the cgroup namespace /proc/self/cgroup says "/": the container's
                // cgroup on the host comes from the spec.
                let path = ctx.bundle.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
                let Some(path) = path else {
                    return Err(e)
                        .context(|| format!("mount {} ({}) on {} (and no cgroupsPath to bind)", h.fstype, h.controllers, dest.display()));
                };
                let own = h.mount_point.join(path.strip_prefix("/").unwrap_or(&path));
                tracing::debug!(error = %e, own = %own.display(), "cannot mount {} in the user namespace; binding the container's cgroup", h.fstype);
                return bind_cgroup(root, &target, &own, dest, flags);
            }
            Err(e) => return Err(e).context(|| format!("mount {} ({}) on {}", h.fstype, h.controllers, dest.display())),
        }
    }
    bind_cgroup(root, &target, &own_cgroup_dir(h)?, dest, flags)
}

/// Binds the host directory `own` (a container's cgroup) on `target` with `flags`.
fn bind_cgroup(root: &RootDir, target: &super::mounts::Target, own: &Path, dest: &Path, flags: MsFlags) -> Result<()> {
    mount(Some(own), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .context(|| format!("bind {} on {}", own.display(), dest.display()))?;
    remount(root, dest, flags | MsFlags::MS_BIND)
}

/// The directory of our own cgroup in hierarchy `h` (we already sit in the container's cgroup).
fn own_cgroup_dir(h: &Hierarchy) -> Result<PathBuf> {
    let own = membership("self")?.into_iter().find(|(ctrls, _)| h.matches(ctrls));
    Ok(match own {
        Some((_, path)) => h.mount_point.join(path.trim_start_matches('/')),
        None => h.mount_point.clone(),
    })
}
