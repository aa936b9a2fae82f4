//! `exec`, `pause`/`resume` and terminals through `--console-socket`: what podman, conmon and the
//! agent's command health checks need beyond create/start.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_exec`.

use std::io::{IoSliceMut, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use sched_tests::bundle::{BusyboxBundle, process_alive};
use sched_tests::wait::{holds_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A container running `sleep 1000`, created and started.
fn sleeping() -> BusyboxBundle {
    let bundle = BusyboxBundle::new().hostname("exec-box").args(&["sleep", "1000"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    bundle
}

#[test]
fn exec_runs_in_the_containers_namespaces() {
    let bundle = sleeping();
    let out = bundle.cli(&["exec", bundle.id(), "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /sys/class/net"]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "exec-box", "uts namespace: {out:#?}");
    assert_eq!(lines[1].trim(), "sleep 1000", "pid namespace: pid 1 is the container's init: {out:#?}");
    assert_eq!(lines[2], "lo", "network namespace: {out:#?}");
}

#[test]
fn exec_flags_set_env_user_cwd_and_the_exit_code() {
    let bundle = sleeping();
    let out = bundle.cli(&[
        "exec",
        "-e",
        "GREETING=hi",
        "-u",
        "1000:1001",
        "--cwd",
        "/tmp",
        bundle.id(),
        "sh",
        "-c",
        "echo $GREETING; id -u; id -g; pwd; exit 7",
    ]);
    assert_eq!(out.code(), 7, "{out:#?}");
    assert_eq!(out.stdout, "hi\n1000\n1001\n/tmp\n", "{out:#?}");
}

#[test]
fn exec_of_a_missing_program_is_one_clear_line() {
    let bundle = sleeping();
    let out = bundle.cli(&["exec", bundle.id(), "no-such-program"]);
    let line = out.assert_one_line_failure();
    assert!(line.contains("no-such-program"), "the error names the program: {line}");
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let bundle = BusyboxBundle::new().args(&["true"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    bundle.wait_for_status("stopped", TIMEOUT);
    let out = bundle.cli(&["exec", bundle.id(), "true"]);
    let line = out.assert_one_line_failure();
    assert!(line.contains("stopped"), "{line}");
}

#[test]
fn detached_exec_joins_the_containers_cgroup() {
    let bundle = sleeping();
    let pid_file = bundle.dir().join("exec.pid");
    bundle.cli(&["exec", "--detach", "--pid-file", &pid_file.to_string_lossy(), bundle.id(), "sleep", "1000"]).assert_success();
    let pid: i32 = std::fs::read_to_string(&pid_file).expect("pid file").trim().parse().expect("a pid");
    assert!(process_alive(pid));
    let procs = std::fs::read_to_string(bundle.cgroup_dir("pids").join("cgroup.procs")).expect("cgroup.procs");
    assert!(procs.lines().any(|l| l.trim() == pid.to_string()), "pid {pid} not in {procs}");
    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    wait_until("delete --force kills exec'd processes too", TIMEOUT, || !process_alive(pid), || format!("pid {pid} lives"));
    bundle.assert_nothing_left(None);
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let bundle = BusyboxBundle::new().shell("i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done").mount(
        "/tmp",
        "tmpfs",
        "tmpfs",
        &["nosuid"],
    );
    bundle.create().assert_success();
    bundle.start().assert_success();
    // exec into a frozen cgroup would freeze the exec'd process too: read through /proc instead.
    let root = format!("/proc/{}/root/tmp/count", bundle.state()["pid"]);
    let count = || std::fs::read_to_string(&root).unwrap_or_default();
    let no_context = String::new;
    wait_until("the loop counts", TIMEOUT, || !count().is_empty(), no_context);
    bundle.cli(&["pause", bundle.id()]).assert_success();
    assert_eq!(bundle.status(), "paused");
    // Over 0.5 s, ten turns of the loop.
    let before = count();
    holds_for("a paused container does not run", Duration::from_millis(500), || count() == before, || format!("count was {before}"));
    bundle.cli(&["resume", bundle.id()]).assert_success();
    assert_eq!(bundle.status(), "running");
    wait_until("a resumed container runs again", TIMEOUT, || count() != before, || format!("count stays {before}"));
    let exec = bundle.cli(&["exec", bundle.id(), "cat", "/tmp/count"]);
    exec.assert_success();
    bundle.cli(&["pause", bundle.id()]).assert_success();
    bundle.cli(&["delete", "--force", bundle.id()]).assert_success();
    bundle.assert_nothing_left(None);
}

// Taking ownership of an fd received with SCM_RIGHTS has no safe wrapper in nix.
#[allow(unsafe_code)]
#[test]
fn terminal_master_goes_to_the_console_socket() {
    let bundle = BusyboxBundle::new().shell("tty; echo tty-ok");
    let mut bundle = bundle;
    bundle.config_mut()["process"]["terminal"] = serde_json::Value::Bool(true);
    let socket_path = bundle.dir().join("console.sock");
    let listener = UnixListener::bind(&socket_path).expect("bind the console socket");
    bundle.write_config();
    let create = bundle.spawn_cli(&[
        "create",
        "--bundle",
        &bundle.bundle_dir().to_string_lossy(),
        "--console-socket",
        &socket_path.to_string_lossy(),
        bundle.id(),
    ]);
    let (stream, _) = listener.accept().expect("the runtime connects to the console socket");
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(std::os::fd::AsRawFd::as_raw_fd(&stream), &mut iov, Some(&mut space), MsgFlags::empty())
        .expect("receive the pty master");
    let fd = msg
        .cmsgs()
        .expect("control messages")
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("an fd was passed with SCM_RIGHTS");
    // SAFETY: the fd was just received with SCM_RIGHTS and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    create.wait(TIMEOUT).assert_success();
    bundle.start().assert_success();
    let mut master = std::fs::File::from(master);
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&out).contains("tty-ok") && Instant::now() < deadline {
        let mut chunk = [0u8; 256];
        match master.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/0"), "the process's stdio is the pty: {text:?}");
    assert!(text.contains("tty-ok"), "{text:?}");
    bundle.wait_for_status("stopped", TIMEOUT);
    bundle.delete().assert_success();
    bundle.assert_nothing_left(None);
}

/// The ignored-signal mask a process spawned straight from this test gets (what the environment
/// passes down, e.g. glibc-reserved real-time signals).
fn baseline_sig_ign() -> u64 {
    let out = std::process::Command::new("grep").args(["SigIgn", "/proc/self/status"]).output().expect("run grep");
    parse_sig_ign(&String::from_utf8_lossy(&out.stdout))
}

fn parse_sig_ign(line: &str) -> u64 {
    let hex = line.trim().strip_prefix("SigIgn:").expect("a SigIgn line").trim();
    u64::from_str_radix(hex, 16).expect("hex mask")
}

#[track_caller]
fn assert_ignores_no_more(out: &sched_tests::bundle::Outcome, baseline: u64) {
    out.assert_success();
    let ignored = parse_sig_ign(&out.stdout);
    assert_eq!(ignored & !baseline, 0, "signals ignored beyond the caller's {baseline:#x}: {out:#?}");
}

#[test]
fn container_and_exec_ignore_no_more_signals_than_their_caller() {
    // Rust ignores SIGPIPE in the runtime itself; the container's program must not inherit that.
    let baseline = baseline_sig_ign();
    let bundle = BusyboxBundle::new().args(&["grep", "SigIgn", "/proc/self/status"]);
    assert_ignores_no_more(&bundle.run(), baseline);
    let bundle = sleeping();
    assert_ignores_no_more(&bundle.cli(&["exec", bundle.id(), "grep", "SigIgn", "/proc/self/status"]), baseline);
}

/// A command after `--` is a program and its arguments, never `exec`'s own flags: a health
/// check of `["--cap", "CAP_SYS_ADMIN", "sh"]` or `["--help"]` must not become options (issue
/// 11: the agent passes its checks this way).
#[test]
fn a_command_after_the_double_dash_is_never_read_as_options() {
    let bundle = sleeping();
    let out = bundle.cli(&["exec", bundle.id(), "--", "--help"]);
    assert_ne!(out.code(), 0, "--help ran as a program, which does not exist: {out:#?}");
    assert!(!out.stdout.contains("Usage"), "the usage was printed: {out:#?}");
    let out = bundle.cli(&["exec", bundle.id(), "--", "--cap", "CAP_SYS_ADMIN", "sh", "-c", "exit 0"]);
    assert_ne!(out.code(), 0, "--cap ran as a program, which does not exist: {out:#?}");
    // And a real program after `--` runs with its own dashes.
    let out = bundle.cli(&["exec", bundle.id(), "--", "sh", "-c", "echo -n ok"]);
    out.assert_success();
    assert_eq!(out.stdout, "ok");
}
