//! Which `linux.sysctl` keys a container may set: only those a namespace of its own keeps from
//! the host, each only when the spec has that namespace (runc's rule). Any other key — say
//! `kernel.core_pattern` — would be written to the host's /proc/sys, since the runtime writes
//! sysctls before the pivot: refused, named.

use oci_spec::runtime::LinuxNamespaceType;

/// The IPC namespace's sysctls besides `fs.mqueue.*`.
const IPC_KERNEL_KEYS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace `key` belongs to, or why it may not be set at all.
pub fn namespace_of(key: &str) -> Result<LinuxNamespaceType, String> {
    let well_formed = !key.is_empty()
        && key.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if !well_formed {
        return Err(format!("sysctl {key:?} is not a sysctl name (dot-separated letters, digits, '_' and '-')"));
    }
    if IPC_KERNEL_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        Ok(LinuxNamespaceType::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Ok(LinuxNamespaceType::Uts)
    } else if key.starts_with("net.") {
        Ok(LinuxNamespaceType::Network)
    } else {
        Err(format!(
            "sysctl {key} is not allowed: it is not namespaced, so it would change the host; only kernel.msg*/sem/shm*, fs.mqueue.* (ipc), net.* (network) and kernel.hostname/domainname (uts) may be set"
        ))
    }
}

/// Checks every key of a spec's sysctls against the namespaces it has.
pub fn check<'a>(keys: impl IntoIterator<Item = &'a String>, has_namespace: impl Fn(LinuxNamespaceType) -> bool) -> Result<(), String> {
    for key in keys {
        let namespace = namespace_of(key)?;
        if !has_namespace(namespace) {
            return Err(format!("sysctl {key} needs a {namespace} namespace of the container's own (add it to linux.namespaces)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_keys_with_their_namespace_are_allowed() {
        let all = |_: LinuxNamespaceType| true;
        let no_net = |t: LinuxNamespaceType| t != LinuxNamespaceType::Network;
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // key -> allowed with every namespace?
        let table = [
            ("net.ipv4.ip_default_ttl", true),
            ("net.core.somaxconn", true),
            ("kernel.shmmax", true),
            ("kernel.shm_rmid_forced", true),
            ("fs.mqueue.msg_max", true),
            ("kernel.domainname", true),
            ("kernel.core_pattern", false),
            ("kernel.modprobe", false),
            ("vm.overcommit_memory", false),
            ("kernel.shmmax.x", false),
            ("fs.file-max", false),
            ("net..ipv4", false),
            ("net/ipv4/ip_forward", false),
            ("../../proc/sysrq-trigger", false),
            ("", false),
        ];
        for (key, allowed) in table {
            assert_eq!(check(&keys(&[key]), all).is_ok(), allowed, "{key}");
        }
        let err = check(&keys(&["kernel.core_pattern"]), all).unwrap_err();
        assert!(err.contains("kernel.core_pattern") && err.contains("host"), "{err}");
        let err = check(&keys(&["net.ipv4.ip_forward"]), no_net).unwrap_err();
        assert!(err.contains("net.ipv4.ip_forward") && err.contains("net namespace"), "{err}");
    }
}
