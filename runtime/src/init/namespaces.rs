//! Entering the namespaces a spec asks for: joining the ones given by path, creating the others;
//! then what configures them (hostname, domainname, sysctls, oom score).

use std::fs::File;

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::LinuxNamespaceType;

use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};
use crate::sync::{ChildChannel, IdmappedTrees};

/// A namespace to join, opened before the fork.
pub struct NamespaceJoin {
    pub typ: LinuxNamespaceType,
    pub file: File,
}

/// The clone flag of a namespace type.
pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name a namespace type has in /proc/PID/ns and in messages.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Opens the namespaces the spec joins by path (all but pid, which the parent enters itself),
/// refusing a file that is not a namespace or is a namespace of another type.
pub fn open_joins(bundle: &Bundle) -> Result<Vec<NamespaceJoin>> {
    let mut joins = Vec::new();
    for ns in bundle.namespaces() {
        if let Some(path) = ns.path() {
            let file = File::open(path).context(|| format!("open {} namespace {}", ns.typ(), path.display()))?;
            check_type(&file, ns.typ(), path)?;
            joins.push(NamespaceJoin { typ: ns.typ(), file });
        }
    }
    Ok(joins)
}

/// Fails unless `file` is a namespace of type `typ` (`NS_GET_NSTYPE`).
fn check_type(file: &File, typ: LinuxNamespaceType, path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsFd;
    let found = match crate::sys::namespace_type(file.as_fd()) {
        Ok(found) => found,
        Err(nix::Error::ENOTTY | nix::Error::EINVAL) => {
            return Err(Error::ConfigInvalid(format!("{typ} namespace path {} is not a namespace file", path.display())));
        }
        Err(e) => return Err(Error::Sys { what: format!("read the type of namespace {}", path.display()), source: e }),
    };
    if found == flag(typ).bits() {
        return Ok(());
    }
    let actual = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Time,
    ]
    .into_iter()
    .find(|t| flag(*t).bits() == found)
    .map(|t| format!("a {} namespace", proc_name(t)))
    .unwrap_or_else(|| format!("a namespace of type {found:#x}"));
    Err(Error::ConfigInvalid(format!("{typ} namespace path {} is {actual}, not a {} namespace", path.display(), proc_name(typ))))
}

/// Whether the container's pid namespace is created by the init rather than by the runtime:
/// a new pid namespace must belong to the container's user namespace (or /proc cannot be mounted
/// in it), so it is made after the init entered that user namespace, and the init forks the
/// container's pid 1 into it.
pub fn pid_namespace_in_init(bundle: &Bundle) -> bool {
    bundle.has_user_namespace() && bundle.namespaces().iter().any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
}

/// In the child: joins the namespaces given by path (the user namespace last, so that the host's
/// privileges still reach the others), enters the user namespace (joined, or new and then mapped
/// by the parent), becomes its root, and creates the other new namespaces in one `unshare`, which
/// makes them belong to the user namespace. The pid namespace was handled by the parent before
/// the fork, except with a user namespace: then the init makes it and forks the container's pid 1
/// ([`pid_namespace_in_init`]); the process that returns from here is that pid 1.
pub fn enter(bundle: &Bundle, joins: &[NamespaceJoin], channel: &mut ChildChannel) -> Result<IdmappedTrees> {
    // Lowering the score needs CAP_SYS_RESOURCE in the host's user namespace: before ours.
    if let Some(adj) = bundle.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).context(|| format!("set oomScoreAdj {adj}"))?;
    }
    for join in joins.iter().filter(|j| j.typ != LinuxNamespaceType::Pid && j.typ != LinuxNamespaceType::User) {
        setns(&join.file, flag(join.typ)).context(|| format!("join the {} namespace", join.typ))?;
    }
    let mut trees = IdmappedTrees::default();
    if bundle.has_user_namespace() {
        // The rootfs may sit below directories only host root may search (an agent's data dir
        // and its rootfs dir are 0700): from here on it is reached relative to its parent,
        // entered while the host's privileges still hold. A new mount namespace carries the
        // working directory over to its copy of the mount ([`super::rootfs::prepare`]).
        if let Some(parent) = bundle.rootfs.parent() {
            nix::unistd::chdir(parent).context(|| format!("chdir to {}", parent.display()))?;
        }
        match joins.iter().find(|j| j.typ == LinuxNamespaceType::User) {
            Some(join) => setns(&join.file, CloneFlags::CLONE_NEWUSER).context(|| "join the user namespace".into())?,
            None => unshare(CloneFlags::CLONE_NEWUSER).context(|| "create the user namespace".into())?,
        }
        trees = channel.request_mapping()?;
        become_namespace_root()?;
    }
    let pid_here = pid_namespace_in_init(bundle);
    let mut new = CloneFlags::empty();
    for ns in bundle.namespaces() {
        if ns.path().is_none() && ns.typ() != LinuxNamespaceType::User && (ns.typ() != LinuxNamespaceType::Pid || pid_here) {
            new |= flag(ns.typ());
        }
    }
    if !new.is_empty() {
        unshare(new).context(|| "create the container's namespaces (unshare)".into())?;
    }
    if pid_here {
        match crate::sys::fork_as_sibling()? {
            ForkResult::Child => channel.wait_ack()?,
            ForkResult::Parent { child } => {
                let sent = channel.send_pid(child.as_raw());
                crate::sys::exit_now(if sent.is_ok() { 0 } else { 1 });
            }
        }
    }
    Ok(trees)
}

/// Becomes root of the user namespace just entered (its uid and gid 0), keeping the
/// capabilities it grants: files the setup creates must be owned by a mapped id.
fn become_namespace_root() -> Result<()> {
    if std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow") {
        setgroups(&[]).context(|| "drop the host's supplementary groups in the user namespace".into())?;
    }
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).context(|| "become gid 0 of the user namespace (is container gid 0 mapped?)".into())?;
    let root_uid = Uid::from_raw(0);
    setresuid(root_uid, root_uid, root_uid).context(|| "become uid 0 of the user namespace (is container uid 0 mapped?)".into())
}

/// Hostname, domainname and sysctls: written while /proc is still the host's, which
/// is fine because /proc/sys follows the namespaces of the writer.
pub fn configure(bundle: &Bundle) -> Result<()> {
    let spec = &bundle.spec;
    if let Some(hostname) = spec.hostname() {
        if !bundle.has_namespace(LinuxNamespaceType::Uts) {
            return Err(Error::ConfigInvalid("hostname is set but there is no uts namespace to set it in".into()));
        }
        nix::unistd::sethostname(hostname).context(|| format!("set hostname {hostname:?}"))?;
    }
    if let Some(domain) = spec.domainname() {
        std::fs::write("/proc/sys/kernel/domainname", domain).context(|| format!("set domainname {domain:?}"))?;
    }
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (key, value) in sysctls {
            if key.contains("..") || key.starts_with('/') {
                return Err(Error::ConfigInvalid(format!("sysctl name {key:?} is not valid")));
            }
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).context(|| format!("set sysctl {key}={value}"))?;
        }
    }
    Ok(())
}
