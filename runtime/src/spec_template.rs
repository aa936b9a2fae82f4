//! The default `config.json` that `sched-runtime spec` writes: oci-spec's runc-like defaults
//! (pid, mount, ipc, uts, network and cgroup namespaces; /proc, /dev, /dev/pts, /dev/shm,
//! /dev/mqueue, /sys and cgroup mounts; runc's masked and read-only paths and capabilities), with
//! our hostname and an optional command.

use oci_spec::runtime::Spec;

/// A default spec running `args` (or `sh` when empty).
pub fn default_spec(args: &[String]) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("sched".into()));
    if !args.is_empty()
        && let Some(process) = spec.process_mut().as_mut()
    {
        process.set_args(Some(args.to_vec()));
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_runs_the_given_command_in_new_namespaces() {
        let spec = default_spec(&["echo".into(), "hi".into()]);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_deref(), Some(&["echo".to_string(), "hi".to_string()][..]));
        assert_eq!(process.terminal(), Some(false));
        let ns = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(ns.len() >= 5, "{ns:?}");
    }
}
