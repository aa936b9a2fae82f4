//! The container's root filesystem: propagation, the spec's mounts, devices, masked and
//! read-only paths, `pivot_root`, and a read-only root.
//!
//! Every target inside the rootfs is resolved with openat2 `RESOLVE_IN_ROOT` ([`super::in_root`]), so a
//! symlink planted in the image (`/proc -> /etc` and the like) can never send a mount onto a host
//! path, and mounts are made onto the resolved file descriptor (`/proc/self/fd/N`), not onto a
//! path that could be swapped in between (runc CVE-2021-30465).

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use super::in_root::RootDir;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use super::{devices, mounts, paths};
use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};
use crate::sync::IdmappedTrees;

/// Sets up the whole root filesystem and pivots into it. `trees` holds the idmapped mounts the
/// runtime made (rootfs and volumes) in a user namespace; `at_hooks` runs once the mounts
/// exist, before the masked paths and `pivot_root` (where runc runs the prestart,
/// createRuntime and createContainer hooks).
pub fn prepare(bundle: &Bundle, trees: &mut IdmappedTrees, at_hooks: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref();
    if !bundle.has_namespace(oci_spec::runtime::LinuxNamespaceType::Mount) {
        return Err(Error::ConfigInvalid("a mount namespace is required".into()));
    }
    // Nothing we mount may propagate back to the host.
    let propagation =
        linux.and_then(|l| l.rootfs_propagation().as_deref()).map(mounts::propagation_flag).transpose()?.unwrap_or(MsFlags::MS_SLAVE);
    mount(None::<&str>, "/", None::<&str>, propagation | MsFlags::MS_REC, None::<&str>).context(|| "make / a slave mount".into())?;
    // pivot_root needs the new root to be a mount point.
    let rootfs = &rootfs_path(bundle);
    match trees.rootfs.take() {
        Some(tree) => {
            let target = mounts::Target::of(RootDir::open(rootfs)?.resolve(Path::new("/"))?);
            mounts::attach(&tree, &target).context(|| format!("attach the idmapped rootfs on {}", rootfs.display()))?;
        }
        None => mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .context(|| format!("bind {} onto itself", rootfs.display()))?,
    }
    let root = RootDir::open(rootfs)?;

    let spec_mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let has_cgroupns = bundle.has_namespace(oci_spec::runtime::LinuxNamespaceType::Cgroup);
    let has_netns = bundle.has_namespace(oci_spec::runtime::LinuxNamespaceType::Network);
    for (index, m) in spec_mounts.iter().enumerate() {
        mounts::mount_one(&root, m, &mounts::MountContext { has_cgroupns, has_netns, bundle }, trees.take_mount(index))?;
    }
    let dev_is_bind = spec_mounts.iter().any(|m| m.destination() == Path::new("/dev") && mounts::is_bind(m));
    if !dev_is_bind {
        let extra = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        // mknod is not allowed in a user namespace: the host's nodes are bound instead (runc).
        devices::create_default(&root, extra, bundle.has_user_namespace())?;
        devices::create_symlinks(&root, spec_mounts)?;
    }
    at_hooks()?;
    if let Some(linux) = linux {
        for p in linux.masked_paths().iter().flatten() {
            paths::mask(&root, Path::new(p))?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            paths::make_readonly(&root, Path::new(p))?;
        }
    }
    drop(root);
    pivot(rootfs)?;
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | lock_flags_of("/")?;
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).context(|| "remount the root read-only".into())?;
    }
    Ok(())
}

/// The nodev, nosuid and noexec flags of the mount at `path`. A bind remount sets a mount's
/// flags to exactly the ones given, so a read-only remount must repeat them (as runc does), or
/// an image rootfs mounted `nodev` would let the container open device nodes from its layers.
fn lock_flags_of(path: &str) -> Result<MsFlags> {
    use nix::sys::statvfs::FsFlags;
    let flags = nix::sys::statvfs::statvfs(path).context(|| format!("statvfs {path}"))?.flags();
    let mut kept = MsFlags::empty();
    for (has, flag) in
        [(FsFlags::ST_NODEV, MsFlags::MS_NODEV), (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID), (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC)]
    {
        if flags.contains(has) {
            kept |= flag;
        }
    }
    Ok(kept)
}

/// How the init reaches the rootfs: by its path, or in a user namespace by its name in the
/// working directory, its parent (entered before the user namespace, see
/// [`super::namespaces::enter`]): the container's root may not search the directories above.
fn rootfs_path(bundle: &Bundle) -> std::path::PathBuf {
    match bundle.rootfs.file_name() {
        Some(name) if bundle.has_user_namespace() && bundle.rootfs.parent().is_some() => std::path::PathBuf::from(name),
        _ => bundle.rootfs.clone(),
    }
}

/// runc's pivot_root dance: pivot the new root over the old one in place, then detach the old
/// root, so no path to the host's filesystem is left.
fn pivot(rootfs: &Path) -> Result<()> {
    let old_root =
        open("/", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).context(|| "open the old root".into())?;
    let new_root = open(rootfs, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open the rootfs {}", rootfs.display()))?;
    nix::unistd::fchdir(new_root).context(|| "chdir to the rootfs".into())?;
    nix::unistd::pivot_root(".", ".").context(|| "pivot_root".into())?;
    nix::unistd::fchdir(old_root).context(|| "chdir to the old root".into())?;
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .context(|| "make the old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "detach the old root".into())?;
    nix::unistd::chdir("/").context(|| "chdir to /".into())?;
    let _ = nix::unistd::close(old_root);
    let _ = nix::unistd::close(new_root);
    Ok(())
}

/// The path through which the kernel reaches the file behind `fd` (a magic link in our /proc).
pub fn fd_path(fd: &impl AsFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}
