//! podman drives sched-runtime (`podman --runtime sched-runtime`): conmon calls create, start,
//! state, exec, kill and delete exactly as it calls runc, so this proves the CLI contract with the
//! real peer. Each test has its own podman storage (vfs driver), run root and cgroup parent in a
//! temp dir, all removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sched_tests::bundle::{BusyboxBundle, runtime_binary, unique_name};

/// One podman with private storage, an imported busybox image and a private cgroup parent.
struct Podman {
    dir: PathBuf,
    image: String,
    cgroup_parent: String,
    /// Keeps the busybox rootfs (the image source) alive and cleaned up.
    _bundle: BusyboxBundle,
}

impl Podman {
    fn new() -> Podman {
        assert!(
            Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()),
            "podman is missing: run `bash scripts/install-test-deps.sh`"
        );
        let bundle = BusyboxBundle::new();
        let name = unique_name();
        let dir = bundle.dir().join("podman");
        std::fs::create_dir_all(&dir).expect("podman dir");
        let podman = Podman {
            dir,
            image: format!("localhost/sched-test:{name}"),
            cgroup_parent: format!("/sched-test-podman-{name}"),
            _bundle: bundle,
        };
        let tar = podman.dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .args(["-C", &podman._bundle.rootfs().to_string_lossy(), "-cf", &tar.to_string_lossy(), "."])
            .status()
            .expect("run tar");
        assert!(ok.success(), "tar the busybox rootfs");
        let out = podman.cmd(&["import", &tar.to_string_lossy(), &podman.image]);
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
        podman
    }

    /// `podman <global flags> ARGS`, stdin from /dev/null.
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .arg("--runtime")
            .arg(runtime_binary())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman run` with the flags this machine needs, then ARGS (image and command included).
    fn run(&self, extra: &[&str], command: &[&str]) -> Output {
        let mut args = vec![
            "run",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        args.extend_from_slice(extra);
        args.push(&self.image);
        args.extend_from_slice(command);
        self.cmd(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.cmd(&["rmi", "--all", "--force"]);
        // podman (vfs) may leave mounts of its own under its run root: detach them all.
        for mount in sched_tests::bundle::mounts_under(&self.dir).iter().rev() {
            let _ = nix::mount::umount2(Path::new(mount), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        sched_tests::bundle::remove_cgroup_parent(&self.cgroup_parent);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn podman_run_streams_output_and_returns_the_exit_code() {
    let podman = Podman::new();
    let out = podman.run(&["--rm"], &["sh", "-c", "echo hello from podman; hostname; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("hello from podman\n"), "stdout: {}", text(&out.stdout));
}

#[test]
fn podman_detached_container_can_be_exec_stopped_and_removed() {
    let podman = Podman::new();
    let name = format!("c{}", unique_name().replace(['-', '.'], ""));
    let out = podman.run(&["-d", "--name", &name], &["sleep", "1000"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let exec = podman.cmd(&["exec", &name, "sh", "-c", "echo exec-ok; cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert!(exec.status.success(), "exec: {}", text(&exec.stderr));
    assert_eq!(text(&exec.stdout), "exec-ok\nsleep 1000 ", "exec sees the container's pid 1");
    let stop = podman.cmd(&["stop", "--time", "1", &name]);
    assert!(stop.status.success(), "stop: {}", text(&stop.stderr));
    let inspect = podman.cmd(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(text(&inspect.stdout).trim(), "exited", "stderr: {}", text(&inspect.stderr));
    let rm = podman.cmd(&["rm", &name]);
    assert!(rm.status.success(), "rm: {}", text(&rm.stderr));
}

#[test]
fn podman_run_with_a_terminal() {
    let podman = Podman::new();
    let out = podman.run(&["--rm", "-t"], &["sh", "-c", "tty; echo tty-ok"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("/dev/pts/0") && stdout.contains("tty-ok"), "stdout: {stdout:?}");
}
