//! The task shim (`sched-runtime shim`), the per-task monitor the agent starts: it returns once
//! the container runs, keeps its stdout/stderr in a bounded log, writes its exit status to
//! `exit.json` when it ends (the CLI that started it is long gone by then, as an agent may be),
//! also when the disk filled up (lines that do not fit are dropped and counted), and deletes the
//! container.

use std::path::Path;
use std::time::{Duration, Instant};

use sched_tests::bundle::{BusyboxBundle, process_alive};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(15);

fn shim(bundle: &BusyboxBundle, extra: &[&str]) -> sched_tests::bundle::Outcome {
    bundle.write_config();
    let task_dir = bundle.dir().join("task");
    let mut args = vec!["shim", "--bundle"];
    let bundle_dir = bundle.bundle_dir().to_string_lossy().into_owned();
    let task_dir = task_dir.to_string_lossy().into_owned();
    args.extend([bundle_dir.as_str(), "--task-dir", task_dir.as_str()]);
    args.extend_from_slice(extra);
    args.push(bundle.id());
    bundle.cli(&args)
}

#[track_caller]
fn wait_for_exit(task_dir: &Path) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(task_dir.join("exit.json")) {
            return serde_json::from_str(&text).expect("exit.json is JSON");
        }
        assert!(Instant::now() < deadline, "no exit.json in {}", task_dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_lines(task_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in ["task.log.1", "task.log"] {
        if let Ok(text) = std::fs::read_to_string(task_dir.join("logs").join(name)) {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).expect("a log record is JSON");
                out.push((v["stream"].as_str().unwrap().to_string(), v["line"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn shim_logs_output_records_the_exit_code_and_deletes_the_container() {
    let bundle = BusyboxBundle::new().shell("echo out1; echo err1 >&2; sleep 0.2; echo out2; exit 3");
    let out = shim(&bundle, &[]);
    out.assert_success();
    let pid: i32 = out.stdout.trim().parse().expect("the shim prints the container pid");
    assert!(pid > 0);
    let task_dir = bundle.dir().join("task");
    let exit = wait_for_exit(&task_dir);
    assert_eq!(exit["code"], 3, "{exit}");
    assert_eq!(exit["signal"], Value::Null);
    assert_eq!(
        log_lines(&task_dir),
        vec![
            ("stdout".to_string(), "out1".to_string()),
            ("stderr".to_string(), "err1".to_string()),
            ("stdout".to_string(), "out2".to_string()),
        ]
    );
    let shim_pid: i32 = std::fs::read_to_string(task_dir.join("shim.pid")).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while process_alive(shim_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!process_alive(shim_pid), "the shim exits after its container");
    bundle.assert_nothing_left(Some(pid));
}

#[test]
fn a_killed_task_records_the_signal() {
    let bundle = BusyboxBundle::new().args(&["sleep", "1000"]);
    shim(&bundle, &[]).assert_success();
    assert_eq!(bundle.status(), "running");
    bundle.kill("KILL").assert_success();
    let exit = wait_for_exit(&bundle.dir().join("task"));
    assert_eq!(exit["code"], 137, "{exit}");
    assert_eq!(exit["signal"], 9, "{exit}");
}

#[test]
fn the_task_log_stays_within_its_bound() {
    let bundle = BusyboxBundle::new().shell("i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done");
    shim(&bundle, &["--max-log-bytes", "4096"]).assert_success();
    let task_dir = bundle.dir().join("task");
    wait_for_exit(&task_dir);
    for name in ["task.log", "task.log.1"] {
        let len = std::fs::metadata(task_dir.join("logs").join(name)).expect(name).len();
        assert!(len <= 4096, "{name} is {len} bytes");
    }
    let lines = log_lines(&task_dir);
    assert_eq!(lines.last().unwrap().1, "line 1999", "the newest output is kept");
}

#[test]
fn a_task_that_cannot_start_fails_the_shim_and_leaves_nothing() {
    let bundle = BusyboxBundle::new().args(&["/no/such/program"]);
    let out = shim(&bundle, &[]);
    let line = out.assert_one_line_failure();
    assert!(line.contains("/no/such/program"), "{line}");
    assert!(!bundle.dir().join("task").join("exit.json").exists());
    bundle.assert_nothing_left(None);
}

/// A small tmpfs mounted on `dir` for the length of a test (unmounted on drop, also on failure).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &Path, size: &str) -> TinyDisk {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size},mode=0700");
        nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(options.as_str()))
            .expect("mount a tmpfs for the task dir");
        TinyDisk(dir.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_drops_log_lines_but_the_exit_is_still_recorded() {
    // About 2 MB of log records into a 256 KiB task dir: the disk fills while the task runs.
    let bundle = BusyboxBundle::new()
        .shell("i=0; while [ $i -lt 20000 ]; do echo line $i of a task that writes more than the disk holds; i=$((i+1)); done; echo last >&2; exit 7");
    let task_dir = bundle.dir().join("task");
    let disk = TinyDisk::mount(&task_dir, "256k");
    let out = shim(&bundle, &["--max-log-bytes", "100000000"]);
    out.assert_success();
    let pid: i32 = out.stdout.trim().parse().expect("the shim prints the container pid");
    let exit = wait_for_exit(&task_dir);
    assert_eq!(exit["code"], 7, "the exit is recorded on the full disk: {exit}");
    let dropped = exit["log_lines_dropped"].as_u64().expect("the drops are counted");
    let lines = log_lines(&task_dir);
    assert!(dropped > 0 && !lines.is_empty(), "{dropped} dropped, {} kept", lines.len());
    assert_eq!(lines.len() as u64 + dropped, 20_001, "every line is either kept whole or counted");
    assert_eq!(lines[0].1, "line 0 of a task that writes more than the disk holds", "the oldest lines are kept");
    drop(disk);
    bundle.assert_nothing_left(Some(pid));
}
