//! Mounting `/sys/fs/cgroup` inside the container.
//!
//! On a pure cgroup v2 host this is one cgroup2 mount. On v1 and hybrid hosts (one hierarchy per
//! controller, like this project's own machines) it is a tmpfs holding one mount per host
//! hierarchy, named as on the host. With a cgroup namespace each mount shows the container's own
//! cgroup as its root; without one, the container's cgroup directories are bind-mounted instead,
//! so the host's tree is never visible.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use super::in_root::RootDir;

use super::mounts::{MountContext, MountOptions, ensure_target, remount};
use crate::error::{Context, Result};

/// One cgroup hierarchy mounted on the host.
struct Hierarchy {
    /// Where the host mounts it, e.g. /sys/fs/cgroup/memory.
    mount_point: PathBuf,
    /// "cgroup" (v1) or "cgroup2".
    fstype: String,
    /// The v1 super options that name the controllers, e.g. "memory" or "name=systemd".
    controllers: String,
}

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
        mount(Some("cgroup"), target.as_str(), Some(h.fstype.as_str()), flags, data)
            .context(|| format!("mount {} ({}) on {}", h.fstype, h.controllers, dest.display()))?;
    } else {
        let own = own_cgroup_dir(h)?;
        mount(Some(&own), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .context(|| format!("bind {} on {}", own.display(), dest.display()))?;
        remount(root, dest, flags | MsFlags::MS_BIND)?;
    }
    Ok(())
}

/// The directory of our own cgroup in hierarchy `h` (we already sit in the container's cgroup).
fn own_cgroup_dir(h: &Hierarchy) -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context(|| "read /proc/self/cgroup".into())?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let matches = if h.fstype == "cgroup2" {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| h.controllers.split(',').any(|hc| hc == c))
        };
        if matches {
            return Ok(h.mount_point.join(path.trim_start_matches('/')));
        }
    }
    Ok(h.mount_point.clone())
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup on the host, from /proc/self/mountinfo.
fn host_hierarchies() -> Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context(|| "read /proc/self/mountinfo".into())?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        let (Some(fstype), _, Some(super_opts)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        if !(fstype == "cgroup" || fstype == "cgroup2") || !mount_point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let controllers = super_opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro" | "nsdelegate" | "memory_recursiveprot" | "xattr" | "clone_children") && !o.starts_with("release_agent="))
            .collect::<Vec<_>>()
            .join(",");
        out.push(Hierarchy { mount_point: PathBuf::from(mount_point), fstype: fstype.into(), controllers });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo_lists_every_hierarchy() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
40 25 0:40 / /proc rw - proc proc rw";
        let h = parse_mountinfo(text);
        let names: Vec<_> = h.iter().map(|h| (h.mount_point.display().to_string(), h.controllers.clone())).collect();
        assert_eq!(
            names,
            vec![
                ("/sys/fs/cgroup/unified".into(), "".into()),
                ("/sys/fs/cgroup/systemd".into(), "name=systemd".into()),
                ("/sys/fs/cgroup/memory".into(), "memory".into()),
                ("/sys/fs/cgroup/cpu,cpuacct".into(), "cpu,cpuacct".into()),
            ]
        );
    }
}
