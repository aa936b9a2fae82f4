//! Entering the namespaces a spec asks for: joining the ones given by path, creating the others;
//! then what configures them (hostname, domainname, sysctls, oom score).

use std::fs::File;

use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::LinuxNamespaceType;

use crate::bundle::Bundle;
use crate::error::{Context, Error, Result};

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

/// Opens the namespaces the spec joins by path (all but pid, which the parent enters itself).
pub fn open_joins(bundle: &Bundle) -> Result<Vec<NamespaceJoin>> {
    let mut joins = Vec::new();
    for ns in bundle.namespaces() {
        if let Some(path) = ns.path() {
            let file = File::open(path).context(|| format!("open {} namespace {}", ns.typ(), path.display()))?;
            joins.push(NamespaceJoin { typ: ns.typ(), file });
        }
    }
    Ok(joins)
}

/// In the child: joins the namespaces given by path, then creates the new ones in one `unshare`.
/// The pid namespace was handled by the parent before the fork.
pub fn enter(bundle: &Bundle, joins: &[NamespaceJoin]) -> Result<()> {
    for join in joins.iter().filter(|j| j.typ != LinuxNamespaceType::Pid) {
        setns(&join.file, flag(join.typ)).context(|| format!("join the {} namespace", join.typ))?;
    }
    let mut new = CloneFlags::empty();
    for ns in bundle.namespaces() {
        if ns.path().is_none() && ns.typ() != LinuxNamespaceType::Pid {
            new |= flag(ns.typ());
        }
    }
    if !new.is_empty() {
        unshare(new).context(|| "create the container's namespaces (unshare)".into())?;
    }
    Ok(())
}

/// Hostname, domainname, sysctls and oom_score_adj: written while /proc is still the host's, which
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
    if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).context(|| format!("set oomScoreAdj {adj}"))?;
    }
    Ok(())
}
