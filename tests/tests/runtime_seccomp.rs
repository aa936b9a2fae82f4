//! `linux.seccomp` applied to real containers: errno rules (default and custom errno), argument
//! conditions, kill actions, an allow-list profile with a deny default, with and without
//! `noNewPrivileges` (without it the filter must go in before the capabilities are dropped), and
//! a profile the runtime cannot apply (SCMP_ACT_NOTIFY), which must fail `create` and leave
//! nothing behind.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_seccomp`. runc 1.1 fails `notify_is_refused_by_create_and_leaves_nothing` on
//! the message only: it supports user notification and refuses the profile with "listenerPath is
//! not set" instead of naming the action (exit 1, nothing left behind, like ours).

use sched_tests::bundle::BusyboxBundle;
use serde_json::{Value, json};

/// SIGSYS, the signal a seccomp kill or trap ends the process with.
const SIGSYS: i32 = 31;

/// Enough syscalls for busybox's shell, its applets and the runtime's last steps before `execve`
/// on x86_64 and aarch64 (names an architecture does not have are skipped by runtimes). Without
/// noNewPrivileges the filter is in place while the runtime reports "ready" (`sendto`).
const ALLOWED: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "clone3",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fchdir",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getsid",
    "gettid",
    "getuid",
    "ioctl",
    "kill",
    "lseek",
    "lstat",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "sched_getaffinity",
    "sched_yield",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setresgid",
    "setresuid",
    "setrlimit",
    "setsid",
    "setuid",
    "sigaltstack",
    "stat",
    "statfs",
    "statx",
    "sysinfo",
    "tgkill",
    "umask",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// `linux.seccomp` = `profile`.
fn with_profile(mut bundle: BusyboxBundle, profile: Value) -> BusyboxBundle {
    bundle.config_mut()["linux"]["seccomp"] = profile;
    bundle
}

/// Allow everything but `mkdir` and `mkdirat`, which fail with `errno_ret` (EPERM if `None`).
fn deny_mkdir(errno_ret: Option<u32>) -> Value {
    let mut rule = json!({ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" });
    if let Some(errno) = errno_ret {
        rule["errnoRet"] = json!(errno);
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [rule],
    })
}

const MKDIR_SCRIPT: &str = "echo before; mkdir /tmp/x; echo \"mkdir exit $?\"; test -e /tmp/x || echo absent; grep Seccomp: /proc/1/status";

#[track_caller]
fn assert_mkdir_refused(bundle: &BusyboxBundle, message: &str) {
    let outcome = bundle.run();
    outcome.assert_success();
    let out = &outcome.stdout;
    assert!(out.contains("before\n"), "echo works under the filter: {outcome:#?}");
    assert!(out.contains("mkdir exit 1\n") && out.contains("absent\n"), "mkdir must fail: {outcome:#?}");
    assert!(outcome.stderr.contains(message), "mkdir must report {message:?}: {outcome:#?}");
    // Mode 2 is "filter": the container's own process (pid 1, the shell) runs under it.
    assert!(out.contains("Seccomp:\t2"), "pid 1 is filtered: {outcome:#?}");
    assert!(!bundle.rootfs().join("tmp/x").exists(), "nothing was created on the host");
}

#[test]
fn errno_rule_fails_mkdir_while_echo_works() {
    let bundle = with_profile(BusyboxBundle::new().shell(MKDIR_SCRIPT), deny_mkdir(None));
    assert_mkdir_refused(&bundle, "Operation not permitted");
}

#[test]
fn errno_rule_applies_without_no_new_privileges_for_an_unprivileged_user() {
    // Without noNewPrivileges installing a filter needs CAP_SYS_ADMIN, which the switch to uid
    // 1000 with three capabilities drops: the runtime must install it before that.
    let bundle = BusyboxBundle::new().no_new_privileges(false).user(1000, 1000, &[]).shell(MKDIR_SCRIPT);
    let bundle = with_profile(bundle, deny_mkdir(None));
    assert_mkdir_refused(&bundle, "Operation not permitted");
    let root = with_profile(BusyboxBundle::new().no_new_privileges(false).shell(MKDIR_SCRIPT), deny_mkdir(None));
    assert_mkdir_refused(&root, "Operation not permitted");
}

#[test]
fn errno_ret_is_the_error_the_program_sees() {
    let bundle = with_profile(BusyboxBundle::new().shell(MKDIR_SCRIPT), deny_mkdir(Some(38)));
    assert_mkdir_refused(&bundle, "Function not implemented");
}

#[test]
fn argument_condition_blocks_only_the_matching_value() {
    // personality(PER_LINUX32 = 8) is refused, personality(PER_LINUX = 0) is not.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                       "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }] }],
    });
    let script = "linux64 echo per_linux ok; linux32 echo per_linux32 ok; echo \"linux32 exit $?\"";
    let bundle = with_profile(BusyboxBundle::new().shell(script), profile);
    let outcome = bundle.run();
    outcome.assert_success();
    assert!(outcome.stdout.contains("per_linux ok\n"), "{outcome:#?}");
    assert!(!outcome.stdout.contains("per_linux32 ok"), "{outcome:#?}");
    assert!(outcome.stdout.contains("linux32 exit 1\n"), "{outcome:#?}");
    assert!(outcome.stderr.contains("Permission denied"), "EACCES (13) is reported: {outcome:#?}");
}

#[test]
fn kill_and_trap_actions_end_the_container_with_sigsys() {
    for action in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["uname"], "action": action }],
        });
        let bundle = with_profile(BusyboxBundle::new().args(&["uname", "-a"]), profile);
        let outcome = bundle.run();
        assert_eq!(outcome.code(), 128 + SIGSYS, "{action}: the container dies of SIGSYS: {outcome:#?}");
        assert!(outcome.stdout.is_empty(), "{action}: uname printed nothing: {outcome:#?}");
        bundle.assert_nothing_left(None);
    }
}

#[test]
fn allow_list_with_a_deny_default_runs_a_shell() {
    // Docker's shape: refuse by default (EPERM), allow a list. mkdir is not on the list.
    for no_new_privileges in [true, false] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [{ "names": ALLOWED, "action": "SCMP_ACT_ALLOW" }],
        });
        let bundle = BusyboxBundle::new().no_new_privileges(no_new_privileges).shell(MKDIR_SCRIPT);
        let bundle = with_profile(bundle, profile);
        assert_mkdir_refused(&bundle, "Operation not permitted");
    }
}

#[test]
fn mixed_actions_each_reach_their_syscalls() {
    // Three outcomes in one profile, installed as one filter: allowed (the shell), a custom errno
    // (mkdir: ENOSYS) and the default errno for everything unlisted (rmdir: EPERM, where an
    // allowed rmdir of the /proc mount point would fail with EBUSY instead). Both install paths:
    // right before execve (noNewPrivileges) and before the capability drop (without it).
    for no_new_privileges in [true, false] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                { "names": ALLOWED, "action": "SCMP_ACT_ALLOW" },
                { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 },
            ],
        });
        let script = "mkdir /tmp/x; echo \"mkdir exit $?\"; rmdir /proc; echo \"rmdir exit $?\"; \
                      grep Seccomp_filters: /proc/1/status";
        let bundle = BusyboxBundle::new().no_new_privileges(no_new_privileges).shell(script);
        let outcome = with_profile(bundle, profile).run();
        outcome.assert_success();
        let out = &outcome.stdout;
        assert!(out.contains("mkdir exit 1\n"), "{outcome:#?}");
        assert!(out.contains("rmdir exit 1\n"), "{outcome:#?}");
        assert!(out.contains("Seccomp_filters:\t1\n"), "one filter: {outcome:#?}");
        let line_of = |applet: &str| {
            let line = outcome.stderr.lines().find(|l| l.contains(applet));
            line.unwrap_or_default().to_owned()
        };
        assert!(line_of("mkdir").contains("Function not implemented"), "{outcome:#?}");
        assert!(line_of("rmdir").contains("Operation not permitted"), "{outcome:#?}");
    }
}

#[test]
fn notify_is_refused_by_create_and_leaves_nothing() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }],
    });
    let bundle = with_profile(BusyboxBundle::new(), profile);
    let outcome = bundle.create();
    let line = outcome.assert_one_line_failure();
    assert!(line.contains("SCMP_ACT_NOTIFY"), "the error names the action: {line}");
    bundle.assert_nothing_left(None);
}

#[test]
fn exec_processes_run_under_the_containers_filter() {
    let bundle = with_profile(BusyboxBundle::new().args(&["sleep", "1000"]), deny_mkdir(None));
    bundle.create().assert_success();
    bundle.start().assert_success();
    let out = bundle.cli(&["exec", bundle.id(), "sh", "-c", "mkdir /tmp/y; echo \"mkdir exit $?\"; grep Seccomp: /proc/self/status"]);
    out.assert_success();
    assert!(out.stdout.contains("mkdir exit 1\n"), "mkdir must fail in an exec'd process too: {out:#?}");
    assert!(out.stdout.contains("Seccomp:\t2"), "the exec'd process is filtered: {out:#?}");
    assert!(!bundle.rootfs().join("tmp/y").exists());
}
