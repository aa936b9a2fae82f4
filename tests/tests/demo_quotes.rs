//! The README's demo, run for real, and `sched dev`'s refusal of a taken port.
//!
//! `scripts/demo.sh` runs with the debug binaries (`SCHED_BIN_DIR`) inside a network and mount
//! namespace of its own: its registry (127.0.0.1:5000) and `sched dev` (127.0.0.1:7700) keep
//! their default ports without meeting another test or a real sched on this machine, and the
//! node bridge, nft table and mounts it makes cannot touch the host's. Each task's answer must
//! be a line of examples/quotes/quotes.txt, and afterwards nothing the demo started may be
//! left: no process, no container, no cgroup, no work dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sched_tests::bundle::{cgroup_hierarchies, remove_cgroup_parent, unique_name};
use sched_tests::cluster::sched_binary;

/// The demo's own waits are bounded (about 2.5 min at worst); this is the backstop.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// What one demo run may leave behind: processes that name its temp dir, and its cgroup
/// parent. Drop kills and removes them, so a failing run leaves nothing either.
struct Leftovers {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

impl Leftovers {
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Pids of processes whose command line names the demo's temp dir (sched dev, the registry,
    /// task shims).
    fn processes(&self) -> Vec<(i32, String)> {
        let needle = self.tmp().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// The cgroup directories of the demo's tasks (and their parent), in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        cgroup_hierarchies().into_iter().map(|h| h.join(self.cgroup_parent.trim_start_matches('/'))).filter(|d| d.exists()).collect()
    }

    /// Pids in the demo's cgroups (the tasks' processes).
    fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.cgroups() {
            for entry in walk(&dir) {
                let procs = std::fs::read_to_string(entry.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let pids: Vec<i32> = self.processes().into_iter().map(|(pid, _)| pid).chain(self.cgroup_pids()).collect();
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// `dir` and every directory below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let children: Vec<PathBuf> =
            std::fs::read_dir(&all[i]).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        all.extend(children);
        i += 1;
    }
    all
}

/// Waits for `child` at most `timeout`; SIGTERM then SIGKILL after it.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn the_demo_serves_a_quote_from_each_task_and_leaves_nothing_behind() {
    let leftovers = Leftovers {
        dir: tempfile::Builder::new().prefix("sched-demo-test-").tempdir().expect("temp dir"),
        cgroup_parent: format!("/{}", unique_name()),
    };
    std::fs::create_dir(leftovers.tmp()).unwrap();
    let log_path = leftovers.dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let bin_dir = sched_binary().parent().expect("target/<profile>").to_path_buf();
    assert!(bin_dir.join("sched-runtime").exists(), "{} has no sched-runtime: cargo build --workspace --bins", bin_dir.display());

    let mut demo = Command::new("unshare")
        .args(["--net", "--mount", "--", "bash", "-c", "ip link set lo up && exec scripts/demo.sh"])
        .current_dir(repo_root())
        .env("SCHED_BIN_DIR", &bin_dir)
        .env("TMPDIR", leftovers.tmp())
        .env("CGROUP_PARENT", &leftovers.cgroup_parent)
        .env("WAIT_SECS", "120")
        .env_remove("KEEP")
        .env_remove("REGISTRY_PORT")
        .env_remove("SCHED_LISTEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("unshare runs (util-linux)");
    let status = wait_bounded(&mut demo, DEMO_TIMEOUT);
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "scripts/demo.sh failed ({status:?}):\n{output}");

    // "  127.0.0.1:PORT   QUOTE": one line per task, each quote from the image's list.
    let quotes = std::fs::read_to_string(repo_root().join("examples/quotes/quotes.txt")).unwrap();
    let quotes: Vec<&str> = quotes.lines().filter(|l| !l.trim().is_empty()).collect();
    let answers: Vec<(&str, &str)> = output
        .lines()
        .filter_map(|l| l.trim_start().split_once(char::is_whitespace))
        .filter(|(endpoint, _)| endpoint.starts_with("127.0.0.1:") && endpoint[10..].parse::<u16>().is_ok())
        .map(|(endpoint, quote)| (endpoint, quote.trim()))
        .collect();
    assert_eq!(answers.len(), 2, "one answer from each of the 2 tasks:\n{output}");
    assert_ne!(answers[0].0, answers[1].0, "two different endpoints:\n{output}");
    for (endpoint, quote) in &answers {
        assert!(quotes.contains(quote), "{endpoint} answered {quote:?}, not a line of examples/quotes/quotes.txt:\n{output}");
    }

    // Nothing is left: processes (sched dev, registry, shims), task processes, cgroups, files.
    assert_eq!(leftovers.processes(), vec![], "processes left behind:\n{output}");
    assert_eq!(leftovers.cgroup_pids(), Vec::<i32>::new(), "task processes left behind:\n{output}");
    assert_eq!(leftovers.cgroups(), Vec::<PathBuf>::new(), "cgroups left behind:\n{output}");
    let files: Vec<_> = std::fs::read_dir(leftovers.tmp()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(files.is_empty(), "the demo left {files:?}:\n{output}");
}

#[test]
fn sched_dev_refuses_a_taken_port_before_it_creates_anything() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let mut child = Command::new(sched_binary())
        .args(["dev", "--listen", &address, "--no-network", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sched dev");
    let status = wait_bounded(&mut child, Duration::from_secs(20)).expect("sched dev must exit at once when its port is taken");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "bad input is exit 1: {stderr}");
    assert!(stderr.contains(&address) && stderr.contains("already in use") && stderr.contains("--listen"), "{stderr}");
    assert!(!data_dir.exists(), "nothing is created before the port is ours");
}

#[test]
fn the_sched_binary_adds_dev_and_keeps_every_other_command() {
    let sched = |args: &[&str]| Command::new(sched_binary()).args(args).output().expect("run sched");
    let help = sched(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["server", "apply", "get", "describe", "scale", "delete", "history", "rollback", "cluster", "dev"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "sched --help lists {command}:\n{help}");
    }
    let dev_help = sched(&["dev", "--help"]);
    assert!(dev_help.status.success());
    let dev_help = String::from_utf8_lossy(&dev_help.stdout);
    for flag in ["--data-dir", "--listen", "--cpu", "--memory", "--no-network"] {
        assert!(dev_help.contains(flag), "sched dev --help shows {flag}:\n{dev_help}");
    }
    // Exit codes stay: bad input 1, an unreachable cluster 2.
    assert_eq!(sched(&["no-such-command"]).status.code(), Some(1));
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    assert_eq!(sched(&["--server", &free, "get", "services"]).status.code(), Some(2));
}
