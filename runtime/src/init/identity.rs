//! Who the container's process is: rlimits, uid/gid/additional gids, and the five capability
//! sets. The order is the kernel's: drop the bounding set while still privileged, keep the
//! capabilities across the uid change, then set permitted, inheritable, effective and ambient.

use std::collections::HashSet;

use caps::{CapSet, Capability as Cap};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};

/// Applies `process.rlimits`.
pub fn apply_rlimits(process: &Process) -> Result<()> {
    for limit in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(limit.typ());
        setrlimit(resource, limit.soft(), limit.hard())
            .context(|| format!("set {:?} to {}/{}", limit.typ(), limit.soft(), limit.hard()))?;
    }
    Ok(())
}

fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Switches to the spec's user and groups and sets the capability sets.
pub fn switch_user_and_capabilities(process: &Process) -> Result<()> {
    let user = process.user();
    let wanted = process.capabilities().as_ref();
    // Probed once: each probe is one prctl per capability.
    let supported = caps::runtime::thread_all_supported();
    let to_caps = |set: Option<&Capabilities>| to_caps(set, &supported);
    let bounding = to_caps(wanted.and_then(|c| c.bounding().as_ref()))?;
    // The bounding set can only shrink, and only while we hold CAP_SETPCAP.
    for cap in supported.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| cap_error("drop from the bounding set", *cap, e))?;
    }
    nix::sys::prctl::set_keepcaps(true).context(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    let gids: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    // In a user namespace mapped by an unprivileged writer setgroups is denied (and the groups
    // are the namespace's already); only a wish for additional gids must then fail.
    let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    if !(denied && gids.is_empty()) {
        setgroups(&gids).context(|| format!("set additional gids {:?}", user.additional_gids()))?;
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).context(|| format!("set gid {}", user.gid()))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).context(|| format!("set uid {}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).context(|| "prctl(PR_SET_KEEPCAPS)".into())?;

    let permitted = to_caps(wanted.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = to_caps(wanted.and_then(|c| c.inheritable().as_ref()))?;
    let effective = to_caps(wanted.and_then(|c| c.effective().as_ref()))?;
    let ambient = to_caps(wanted.and_then(|c| c.ambient().as_ref()))?;
    // Inheritable first, while CAP_SETPCAP is still effective; then effective before permitted,
    // because the kernel refuses a permitted set smaller than the effective one.
    set(CapSet::Inheritable, &inheritable)?;
    set(CapSet::Effective, &effective)?;
    set(CapSet::Permitted, &permitted)?;
    caps::clear(None, CapSet::Ambient).map_err(|e| Error::Init(format!("clear ambient capabilities: {e}")))?;
    // The kernel only raises an ambient capability that is also permitted and inheritable;
    // like runc, skip the others (runc's default spec lists ambient caps but no inheritable ones).
    for cap in ambient.intersection(&permitted).filter(|c| inheritable.contains(c)) {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|e| cap_error("raise in the ambient set", *cap, e))?;
    }
    Ok(())
}

fn set(set: CapSet, value: &HashSet<Cap>) -> Result<()> {
    caps::set(None, set, value).map_err(|e| Error::Init(format!("set {set:?} capabilities {value:?}: {e}")))
}

fn cap_error(what: &str, cap: Cap, e: caps::errors::CapsError) -> Error {
    Error::Init(format!("{what} {cap}: {e}"))
}

/// Converts the spec's capability names to the `caps` crate's, keeping only those this kernel
/// knows (a spec may name newer ones; runc ignores those too).
pub fn to_caps(set: Option<&Capabilities>, supported: &HashSet<Cap>) -> Result<HashSet<Cap>> {
    let mut out = HashSet::new();
    for cap in set.into_iter().flatten() {
        let name = serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let parsed: Cap = name.parse().map_err(|_| Error::ConfigInvalid(format!("unknown capability {name:?}")))?;
        if supported.contains(&parsed) {
            out.insert(parsed);
        }
    }
    Ok(out)
}
