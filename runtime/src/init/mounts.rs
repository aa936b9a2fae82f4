//! One entry of the spec's `mounts`: option parsing (runc's table of flags, propagation and
//! filesystem data), target creation inside the rootfs, and the mount itself. Cgroup mounts get
//! their own treatment because hybrid and v1 hosts have one hierarchy per controller.

use std::os::fd::OwnedFd;
use std::path::Path;

use super::in_root::RootDir;
use super::rootfs::fd_path;
use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};
use nix::mount::{MsFlags, mount};
use oci_spec::runtime::Mount;

/// What a mount needs to know about the rest of the container.
pub struct MountContext<'a> {
    pub has_cgroupns: bool,
    pub has_netns: bool,
    pub bundle: &'a Bundle,
}

/// A mount's options, split the way mount(2) wants them.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755,size=65536k`).
    pub data: String,
    /// `idmap` or `ridmap`: a bind mount made idmapped (by the runtime, which hands it over).
    pub idmap: bool,
}

/// Splits fstab-style options into flags, propagation and data.
pub fn parse_options(options: &[String]) -> Result<MountOptions> {
    let mut out = MountOptions { flags: MsFlags::empty(), propagation: Vec::new(), data: String::new(), idmap: false };
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable") => {
                out.propagation.push(propagation_flag(p)?);
                continue;
            }
            "idmap" | "ridmap" => {
                out.idmap = true;
                continue;
            }
            "tmpcopyup" => {
                return Err(Error::ConfigInvalid(format!("mount option {opt:?} is not supported")));
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
    }
    out.data = data.join(",");
    Ok(out)
}

/// The mount(2) flags of a propagation name (`rslave`, `private`, ...).
pub fn propagation_flag(name: &str) -> Result<MsFlags> {
    Ok(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(Error::ConfigInvalid(format!(
                "unknown propagation {other:?} (use private, shared, slave or unbindable, \
                 optionally with an r prefix)"
            )));
        }
    })
}

/// Whether the mount is a bind mount (by type or by option).
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// Makes one spec mount inside the rootfs. `idmapped` is the detached idmapped mount the
/// runtime made for it (a bind mount with the `idmap` option in a user namespace).
pub fn mount_one(root: &RootDir, m: &Mount, ctx: &MountContext<'_>, idmapped: Option<OwnedFd>) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    if let Some(tree) = idmapped {
        let is_dir = rustix::fs::fstat(&tree).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(true);
        let target = ensure_target(root, dest, is_dir)?;
        attach(&tree, &target).context(|| format!("attach the idmapped mount on {}", dest.display()))?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount(root, dest, extra | MsFlags::MS_BIND)?;
        }
    } else if opts.idmap {
        return Err(Error::Init(format!("mount {}: no idmapped mount was made for its idmap option", dest.display())));
    } else if is_bind(m) {
        let source = m.source().as_ref().ok_or_else(|| Error::ConfigInvalid(format!("bind mount on {} has no source", dest.display())))?;
        let source = if source.is_absolute() { source.clone() } else { ctx.bundle.dir.join(source) };
        let meta = std::fs::metadata(&source).context(|| format!("bind mount source {}", source.display()))?;
        let target = ensure_target(root, dest, meta.is_dir())?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(Some(&source), target.as_str(), None::<&str>, flags, None::<&str>)
            .context(|| format!("bind {} on {}", source.display(), dest.display()))?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount(root, dest, extra | MsFlags::MS_BIND)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        super::cgroup_mount::mount_cgroup(root, dest, &opts, ctx)?;
    } else if typ == "sysfs" && !ctx.has_netns {
        // A new sysfs needs a network namespace of our own; without one, show the host's.
        bind_host_sys(root, dest, &opts)?;
    } else {
        let target = ensure_target(root, dest, true)?;
        let source = m.source().as_ref().map(|s| s.as_path()).unwrap_or(Path::new(typ));
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        match mount(Some(source), target.as_str(), Some(typ), opts.flags, data) {
            // In a user namespace, a network namespace joined by path (the agent's, made by the
            // host) is not ours to mount a sysfs for: show the host's, as runc does.
            Err(nix::Error::EPERM) if typ == "sysfs" && ctx.bundle.has_user_namespace() => bind_host_sys(root, dest, &opts)?,
            made => made.context(|| format!("mount {typ} on {}", dest.display()))?,
        }
    }
    for p in &opts.propagation {
        let target = resolve(root, dest)?;
        mount(None::<&str>, target.as_str(), None::<&str>, *p, None::<&str>)
            .context(|| format!("set propagation of {}", dest.display()))?;
    }
    Ok(())
}

/// Binds the host's `/sys` on `dest` (nosuid, nodev, noexec, and read-only if the mount asks).
fn bind_host_sys(root: &RootDir, dest: &Path, opts: &MountOptions) -> Result<()> {
    let target = ensure_target(root, dest, true)?;
    mount(Some("/sys"), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .context(|| format!("bind /sys on {}", dest.display()))?;
    remount(root, dest, (opts.flags & MsFlags::MS_RDONLY) | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
}

/// Attaches the detached mount `tree` onto `target` (`move_mount`, target by descriptor).
pub fn attach(tree: &OwnedFd, target: &Target) -> nix::Result<()> {
    use rustix::mount::MoveMountFlags;
    rustix::mount::move_mount(tree, "", &target.fd, "", MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error()))
}

/// A resolved mount target: an `O_PATH` descriptor inside the rootfs, reached by the kernel
/// through its magic link `/proc/self/fd/N` while this value lives.
pub struct Target {
    fd: OwnedFd,
    path: String,
}

impl Target {
    /// The target behind an `O_PATH` descriptor.
    pub fn of(fd: OwnedFd) -> Target {
        Target::new(fd)
    }

    fn new(fd: OwnedFd) -> Target {
        let path = fd_path(&fd);
        Target { fd, path }
    }

    /// The `/proc/self/fd/N` path to hand to mount(2).
    pub fn as_str(&self) -> &str {
        let _ = &self.fd;
        &self.path
    }
}

/// Creates the mount target inside the rootfs if needed (a directory, or an empty file for a bind
/// mount of a file) and resolves it.
pub fn ensure_target(root: &RootDir, dest: &Path, dir: bool) -> Result<Target> {
    let fd = if dir { root.mkdir_all(dest, 0o755)? } else { root.create_file(dest, 0o644)? };
    Ok(Target::new(fd))
}

/// Resolves an existing path inside the rootfs.
pub fn resolve(root: &RootDir, dest: &Path) -> Result<Target> {
    Ok(Target::new(root.resolve(dest)?))
}

/// Remounts the mount at `dest` (resolved anew, so we reach the new mount, not the directory
/// under it) with `flags`.
pub fn remount(root: &RootDir, dest: &Path, flags: MsFlags) -> Result<()> {
    let target = resolve(root, dest)?;
    mount(None::<&str>, target.as_str(), None::<&str>, flags | MsFlags::MS_REMOUNT, None::<&str>)
        .context(|| format!("remount {} ({flags:?})", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(opts(&["rbind", "ro"]).flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
    }

    #[test]
    fn unknown_propagation_is_an_error() {
        assert!(propagation_flag("sideways").is_err());
    }
}
