//! The runtime's half of a user namespace (`create`): once the init has entered its user
//! namespace and asks, write the namespace's maps (a new namespace) and make the rootfs and the
//! `idmap` volumes usable by the mapped ids.
//!
//! - The maps are written by us, the privileged parent, into `/proc/PID/uid_map` and `gid_map`,
//!   each in one write as the kernel requires; `setgroups` is set to `deny` first only when we
//!   lack `CAP_SETGID` (an unprivileged writer must, and then may map only itself).
//! - The rootfs becomes an **idmapped mount** (`open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)` with the container's user namespace): files owned by id N
//!   on disk show to the container as its id N, so one unpacked image serves containers with
//!   different mappings and nothing is copied or changed. Only a process privileged over the
//!   filesystem can make one, which is why the parent does and hands the detached mount over.
//! - Where the kernel or the filesystem cannot (overlayfs before it gained support, ramfs,
//!   kernels before 5.12) the rootfs is **chowned** instead ([`crate::idmap::shift_tree`]): every
//!   id is shifted into the host range, and the mappings used are recorded beside the rootfs so
//!   that a later container neither shifts it twice nor misreads it.
//! - A bind mount with the `idmap` (or `ridmap`) option becomes an idmapped mount the same way;
//!   if its filesystem cannot, `create` fails naming the mount (a volume's data is never chowned).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::mount::OpenTreeFlags;

use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};
use crate::idmap::{IdMap, IdMapError, MapKind, Mappings, ShiftedBy};
use crate::init::is_bind;
use crate::sync::MappedLayout;
use crate::sys;

/// How the rootfs was made usable by the container's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsIds {
    /// An idmapped mount: nothing on disk changed.
    Idmapped,
    /// Chowned now (the fallback), this many inodes changed.
    Chowned(u64),
    /// Chowned for these mappings by an earlier container: used as it is.
    ChownedBefore,
    /// An overlay of idmapped layers made for these mappings (the agent's image service):
    /// used as it is, nothing on disk changed.
    IdmappedLayers,
}

/// What the init receives in answer to its map request.
pub struct Mapped {
    pub layout: MappedLayout,
    pub fds: Vec<OwnedFd>,
    pub rootfs: RootfsIds,
}

/// Writes the maps of `pid`'s new user namespace (when `mappings` is given) and makes the
/// idmapped mounts.
pub fn map_and_mount(pid: i32, bundle: &Bundle, mappings: Option<&Mappings>) -> Result<Mapped> {
    let new_namespace = bundle.namespaces().iter().any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::User && ns.path().is_none());
    if new_namespace {
        write_maps(pid, mappings.expect("validated: a new user namespace has mappings"))?;
    }
    let userns_path = format!("/proc/{pid}/ns/user");
    let userns = File::open(&userns_path).context(|| format!("open {userns_path}"))?;
    let actual = namespace_mappings(pid)?;
    let mut layout = MappedLayout::default();
    let mut fds = Vec::new();

    let rootfs = match crate::idmap::read_shift_record(&bundle.rootfs)? {
        Some(recorded) if recorded.mappings == actual => match recorded.by {
            ShiftedBy::Chown => RootfsIds::ChownedBefore,
            ShiftedBy::IdmappedLayers => RootfsIds::IdmappedLayers,
        },
        // Chowned for other mappings: only another chown can put it right.
        Some(_) => RootfsIds::Chowned(crate::idmap::shift_tree(&bundle.rootfs, &actual)?),
        None => match idmapped_tree(&bundle.rootfs, &userns, true, true) {
            Ok(tree) => {
                layout.rootfs = true;
                fds.push(tree);
                RootfsIds::Idmapped
            }
            Err(e) if unsupported(e) => {
                tracing::info!("rootfs {} cannot be mounted idmapped ({e}); chowning it", bundle.rootfs.display());
                RootfsIds::Chowned(crate::idmap::shift_tree(&bundle.rootfs, &actual)?)
            }
            Err(e) => return Err(Error::Sys { what: format!("idmapped mount of the rootfs {}", bundle.rootfs.display()), source: e }),
        },
    };

    for (index, m) in bundle.spec.mounts().iter().flatten().enumerate() {
        let options = m.options().as_deref().unwrap_or(&[]);
        let recursive_attr = options.iter().any(|o| o == "ridmap");
        if !is_bind(m) || !(recursive_attr || options.iter().any(|o| o == "idmap")) {
            continue;
        }
        let recursive_clone = options.iter().any(|o| o == "rbind");
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| Error::ConfigInvalid(format!("bind mount on {} has no source", m.destination().display())))?;
        let source = if source.is_absolute() { source.clone() } else { bundle.dir.join(source) };
        let tree = idmapped_tree(&source, &userns, recursive_clone, recursive_attr).map_err(|e| Error::Sys {
            what: format!("idmapped mount of {} for {} (the idmap option)", source.display(), m.destination().display()),
            source: e,
        })?;
        layout.mounts.push(index);
        fds.push(tree);
    }
    Ok(Mapped { layout, fds, rootfs })
}

/// Whether an idmapped mount failed because the kernel or the filesystem cannot make one.
fn unsupported(e: nix::Error) -> bool {
    matches!(e, nix::Error::EINVAL | nix::Error::EOPNOTSUPP | nix::Error::ENOSYS | nix::Error::EPERM)
}

/// A detached clone of the mount at `path` made idmapped through `userns`.
fn idmapped_tree(path: &Path, userns: &File, recursive_clone: bool, recursive_attr: bool) -> nix::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive_clone {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(rustix::fs::CWD, path, flags).map_err(|e| nix::Error::from_raw(e.raw_os_error()))?;
    sys::mount_set_idmap(tree.as_fd(), userns.as_fd(), recursive_attr && recursive_clone)?;
    Ok(tree)
}

/// A user namespace with `mappings`, held by its file: for idmapped mounts made before any
/// container exists (the image service mounts a task's overlay on idmapped snapshots). A child
/// made for it ([`sys::spawn_user_namespace_holder`]) holds the namespace while we write its maps
/// and open it, and is killed and reaped before this returns; the file keeps the namespace.
pub fn user_namespace_with(mappings: &Mappings) -> Result<OwnedFd> {
    let pid = sys::spawn_user_namespace_holder()?;
    let opened = write_maps(pid.as_raw(), mappings).and_then(|()| {
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path).map(OwnedFd::from).context(|| format!("open {path}"))
    });
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    opened
}

/// Writes `setgroups` (when needed), `uid_map` and `gid_map` of `pid`.
fn write_maps(pid: i32, mappings: &Mappings) -> Result<()> {
    if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false) {
        let path = format!("/proc/{pid}/setgroups");
        std::fs::write(&path, "deny").context(|| format!("write deny to {path}"))?;
    }
    for map in [&mappings.uid, &mappings.gid] {
        let file = if map.kind == MapKind::Uid { "uid_map" } else { "gid_map" };
        let path = Path::new("/proc").join(pid.to_string()).join(file);
        let text = map.proc_text();
        std::fs::write(&path, &text).map_err(|source| IdMapError::Write {
            kind: map.kind,
            path: path.clone(),
            lines: map.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            source,
        })?;
    }
    Ok(())
}

/// The maps of `pid`'s user namespace as the kernel has them (for a joined namespace, the only
/// truth there is).
fn namespace_mappings(pid: i32) -> Result<Mappings> {
    let read = |kind: MapKind, file: &str| -> Result<IdMap> {
        let path = format!("/proc/{pid}/{file}");
        let text = std::fs::read_to_string(&path).context(|| format!("read {path}"))?;
        IdMap::parse_proc(kind, &text).ok_or_else(|| Error::Init(format!("the user namespace has no usable {file}: {text:?}")))
    };
    Ok(Mappings { uid: read(MapKind::Uid, "uid_map")?, gid: read(MapKind::Gid, "gid_map")? })
}
