//! The default seccomp profile of tasks: Docker's default profile, shipped as data
//! (`default_seccomp.json`, OCI `linux.seccomp` form) and compiled by the runtime like any other.
//!
//! What it is: `defaultAction` ERRNO(EPERM) and Docker's allow list (moby's
//! `profiles/seccomp/default.json`, Apache-2.0), with its argument-conditioned entries:
//! `personality` only with the personas Docker allows (0, PER_LINUX32, UNAME26 and both, and the
//! 0xffffffff query); `socket` for every family but AF_VSOCK; `clone` only without namespace
//! flags (`CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP` masked to zero), so plain
//! `fork`, `vfork` and threads work and `unshare -U` by way of clone does not; `clone3` answers
//! ENOSYS (its flags live in memory that BPF cannot read, so C libraries fall back to `clone`).
//! Names an architecture does not have (the 32-bit `*_time64` calls on x86_64) are skipped.
//!
//! One simplification: Docker renders its profile for the container's capabilities, allowing
//! e.g. `mount`, `unshare`, `setns` and `bpf` with CAP_SYS_ADMIN, `ptrace` and
//! `process_vm_readv` with CAP_SYS_PTRACE, `chroot` with CAP_SYS_CHROOT. A task here always runs
//! with the runtime's default three capabilities (AUDIT_WRITE, KILL, NET_BIND_SERVICE), none of
//! which Docker ties a syscall to, so the file is Docker's profile as rendered for that set.
//! Refused (EPERM): what Docker refuses outright (`keyctl`, `add_key`, `request_key`,
//! `userfaultfd`, `kexec_load`, `init_module`, `reboot`, `swapon`, `acct`, ...) and what it ties
//! to a capability these tasks lack (`unshare`, `setns`, `mount`, `umount2`, `pivot_root`, `bpf`,
//! `perf_event_open`, `ptrace`, `process_vm_readv`, `settimeofday`, `chroot`, ...). If tasks ever
//! get more capabilities, this file must grow the matching entries.

use std::sync::OnceLock;

use oci_spec::runtime::LinuxSeccomp;

/// The profile's text, as shipped.
const PROFILE: &str = include_str!("default_seccomp.json");

/// Docker's default seccomp profile, ready to set as a spec's `linux.seccomp`.
pub fn default_seccomp() -> LinuxSeccomp {
    static PARSED: OnceLock<LinuxSeccomp> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(PROFILE).expect("default_seccomp.json is a valid OCI seccomp profile")).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profile_parses_and_lists_no_syscall_twice_unconditionally() {
        let profile = default_seccomp();
        let mut unconditional: Vec<&String> =
            profile.syscalls().iter().flatten().filter(|s| s.args().as_ref().is_none_or(Vec::is_empty)).flat_map(|s| s.names()).collect();
        let listed = unconditional.len();
        unconditional.sort();
        unconditional.dedup();
        assert_eq!(unconditional.len(), listed, "a name is listed twice");
        assert!(listed > 300, "Docker's allow list has ~350 names, got {listed}");
    }
}
