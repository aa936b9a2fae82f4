//! A small static program (`syscall_probe/probe.c`) that calls the syscalls a seccomp profile
//! decides on (`keyctl`, `clone` with CLONE_NEWUSER, plain `fork`) and prints what each returned,
//! for images whose busybox has no applet that makes those calls. Built with the system's C
//! compiler (`cc -static`; gcc and libc6-dev from scripts/install-test-deps.sh).

use std::path::Path;

/// The probe's source.
const SOURCE: &str = include_str!("syscall_probe/probe.c");

/// Compiles the probe in `work` and returns the static binary.
pub fn build(work: &Path) -> Vec<u8> {
    let source = work.join("probe.c");
    let binary = work.join("probe");
    std::fs::write(&source, SOURCE).expect("write probe.c");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run cc (gcc and libc6-dev: scripts/install-test-deps.sh)");
    assert!(out.status.success(), "cc -static probe.c failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&binary).expect("read the probe binary")
}
