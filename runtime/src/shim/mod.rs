//! The task shim: what the agent starts for each task, like containerd's shim or conmon.
//!
//! `sched-runtime shim --bundle B --task-dir D ID` forks a small daemon and returns once the
//! container runs (printing its pid) or failed to start (printing the real error). The daemon:
//! - is the container init's parent, so it alone learns the exit status, and writes it to
//!   `D/exit.json` (atomically) when the container ends: exit codes survive agent restarts;
//! - reads the container's stdout and stderr through pipes into a size-bounded log in `D/logs/`
//!   ([`log`]); stdin is /dev/null;
//! - survives a full disk: log lines that cannot be written are dropped and counted (in the exit
//!   record), and the exit record's space is reserved before the container starts
//!   (`D/.exit.json.tmp`, padded with spaces that JSON ignores) and overwritten in place, so it
//!   is written even when the disk filled up meanwhile (on filesystems that overwrite in place:
//!   tmpfs, ext4, xfs; not on copy-on-write ones);
//! - deletes the container (cgroup, state) after it exits, then exits itself;
//! - sits in its own session with terminal signals blocked, so stopping the agent or closing a
//!   terminal does not take it (or the task's exit code) down.
//!
//! The agent stops a task with `kill` on the container (the shim notices the exit), and adopts
//! running tasks after a restart from `D/shim.pid`, the runtime state and `D/exit.json`.

pub mod log;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::container::{Container, CreateOptions};
use crate::error::{Context, Error, Result};
use crate::state::StateRoot;
use crate::sys;

/// The file the exit status is written to.
pub const EXIT_FILE: &str = "exit.json";
/// The file holding the shim daemon's pid.
pub const PID_FILE: &str = "shim.pid";
/// The log directory inside the task dir.
pub const LOG_DIR: &str = "logs";
/// The exit record's reserved space, renamed to [`EXIT_FILE`] once written.
const EXIT_RESERVED: &str = ".exit.json.tmp";
/// Bytes reserved for the exit record (a record is about 100).
const EXIT_RESERVED_BYTES: usize = 4096;

/// What the shim needs.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    pub id: String,
    pub bundle: PathBuf,
    /// Per-task directory for the exit status, the shim's pid and the logs.
    pub task_dir: PathBuf,
    /// Size at which the log rotates (two files at most are kept).
    pub max_log_bytes: u64,
}

/// How a task ended, as written to `exit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, 128+N if signal N killed it.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// RFC 3339 time the exit was seen.
    pub finished_at: String,
    /// Log lines the shim could not write (the disk was full). Absent in older records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lines_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads a task's exit record, if it has ended.
pub fn read_exit(task_dir: &Path) -> Result<Option<ExitRecord>> {
    match std::fs::read(task_dir.join(EXIT_FILE)) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::ConfigMalformed { path: task_dir.join(EXIT_FILE), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { what: format!("read {}", task_dir.join(EXIT_FILE).display()), source: e }),
    }
}

/// Starts the shim daemon and the container; returns the container's pid once it runs.
pub fn spawn(root: &StateRoot, opts: &ShimOptions) -> Result<i32> {
    std::fs::create_dir_all(&opts.task_dir).context(|| format!("create {}", opts.task_dir.display()))?;
    let _ = std::fs::remove_file(opts.task_dir.join(EXIT_FILE));
    let (mut report_rx, report_tx) = UnixStream::pair().context(|| "create the shim report socket".into())?;
    match sys::fork()? {
        ForkResult::Child => {
            drop(report_rx);
            let code = daemon(root, opts, report_tx);
            sys::exit_now(code)
        }
        ForkResult::Parent { child: _ } => {
            drop(report_tx);
            let mut report = String::new();
            let _ = report_rx.read_to_string(&mut report);
            match report.split_once(' ') {
                Some(("started", pid)) => pid.trim().parse().map_err(|_| Error::Init(format!("bad shim report {report:?}"))),
                Some(("failed", msg)) => Err(Error::Init(msg.to_string())),
                _ => Err(Error::Init("the shim died before the container started".into())),
            }
        }
    }
}

/// The shim daemon: returns its own exit code.
fn daemon(root: &StateRoot, opts: &ShimOptions, mut report: UnixStream) -> i32 {
    let started = start_container(root, opts);
    let (container, out, err) = match started {
        Ok(parts) => parts,
        Err(e) => {
            let text = match e {
                Error::Init(m) => m,
                other => other.to_string(),
            };
            let _ = report.write_all(format!("failed {text}").as_bytes());
            return 1;
        }
    };
    let _ = report.write_all(format!("started {}", container.pid()).as_bytes());
    drop(report);
    match supervise(&container, opts, out, err) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("shim for {}: {e}", opts.id);
            1
        }
    }
}

/// Creates and starts the container with stdout/stderr on pipes we read.
fn start_container(root: &StateRoot, opts: &ShimOptions) -> Result<(Container, OwnedFd, OwnedFd)> {
    nix::unistd::setsid().context(|| "setsid".into())?;
    let original_mask = SigSet::thread_get_mask().context(|| "read the signal mask".into())?;
    let mut terminal = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM, Signal::SIGQUIT, Signal::SIGPIPE] {
        terminal.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&terminal), None).context(|| "block terminal signals".into())?;
    std::fs::write(opts.task_dir.join(PID_FILE), std::process::id().to_string()).context(|| "write shim.pid".into())?;
    std::fs::write(opts.task_dir.join(EXIT_RESERVED), [b' '; EXIT_RESERVED_BYTES]).context(|| "reserve the space of exit.json".into())?;

    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "create the stdout pipe".into())?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "create the stderr pipe".into())?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context(|| "open /dev/null".into())?;
    // The container inherits fds 0-2: /dev/null and the two pipes.
    nix::unistd::dup2(null.as_raw_fd(), 0).context(|| "stdin".into())?;
    nix::unistd::dup2(out_w.as_raw_fd(), 1).context(|| "stdout".into())?;
    nix::unistd::dup2(err_w.as_raw_fd(), 2).context(|| "stderr".into())?;
    let create = CreateOptions { id: opts.id.clone(), bundle: opts.bundle.clone(), pid_file: None, console_socket: None };
    let container = Container::create(root, &create, original_mask);
    // Only the container keeps the write ends: we must see end-of-file when it is gone.
    nix::unistd::dup2(null.as_raw_fd(), 1).context(|| "stdout".into())?;
    nix::unistd::dup2(null.as_raw_fd(), 2).context(|| "stderr".into())?;
    drop(out_w);
    drop(err_w);
    let container = container?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e);
    }
    Ok((container, out_r, err_r))
}

/// Copies output into the log until the container exits, then records the exit and deletes it.
fn supervise(container: &Container, opts: &ShimOptions, out: OwnedFd, err: OwnedFd) -> Result<()> {
    let log_dir = opts.task_dir.join(LOG_DIR);
    let mut log = log::RotatingLog::open(&log_dir, opts.max_log_bytes).unwrap_or_else(|e| {
        tracing::warn!("shim for {}: cannot open the task log ({e}); its lines are dropped until it can be", opts.id);
        log::RotatingLog::unopened(&log_dir, opts.max_log_bytes)
    });
    let pid = Pid::from_raw(container.pid());
    let mut streams = vec![(std::fs::File::from(out), log::Stream::Stdout), (std::fs::File::from(err), log::Stream::Stderr)];
    let mut status = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !streams.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = streams.iter().map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
            // The timeout lets us notice an exited init whose pipes a leftover process still holds.
            let _ = poll(&mut fds, PollTimeout::from(200u16));
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let now = crate::time::now_rfc3339();
        let mut closed = Vec::new();
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let (file, stream) = &mut streams[i];
            match file.read(&mut buf) {
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => log.write(*stream, &buf[..n], &now),
            }
        }
        for i in closed.into_iter().rev() {
            streams.remove(i);
        }
        if status.is_none() {
            status = reap(pid)?;
            if status.is_some() {
                // The init is gone; its pid namespace took its children along. Give a process that
                // still holds the pipes (no pid namespace) a moment, then stop reading.
                std::thread::sleep(Duration::from_millis(50));
                drain(&mut streams, &mut log, &mut buf);
                break;
            }
        }
    }
    let (code, signal) = match status {
        Some(s) => s,
        None => loop {
            if let Some(s) = reap(pid)? {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        },
    };
    let now = crate::time::now_rfc3339();
    log.flush_partial(&now);
    let record = ExitRecord { code, signal, finished_at: now, log_lines_dropped: log.dropped() };
    write_exit(&opts.task_dir, &record)?;
    container.delete(true)
}

/// Writes `exit.json` into the space reserved at start (overwriting the padding, so no new
/// blocks are needed), then renames it into place.
fn write_exit(task_dir: &Path, record: &ExitRecord) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let text = serde_json::to_vec(record).expect("an exit record serializes");
    let reserved = task_dir.join(EXIT_RESERVED);
    let written = match std::fs::OpenOptions::new().write(true).open(&reserved) {
        Ok(file) if text.len() <= EXIT_RESERVED_BYTES => file.write_all_at(&text, 0),
        _ => std::fs::write(&reserved, &text),
    };
    written.context(|| format!("write {}", reserved.display()))?;
    std::fs::rename(&reserved, task_dir.join(EXIT_FILE)).context(|| "write exit.json".into())
}

/// Reads whatever is immediately available on the remaining streams.
fn drain(streams: &mut [(std::fs::File, log::Stream)], log: &mut log::RotatingLog, buf: &mut [u8]) {
    let now = crate::time::now_rfc3339();
    for (file, stream) in streams.iter_mut() {
        loop {
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0 {
                break;
            }
            match file.read(buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.write(*stream, &buf[..n], &now),
            }
        }
    }
}

/// The exit of our child `pid`, if it has exited: (code, killing signal).
fn reap(pid: Pid) -> Result<Option<(i32, Option<i32>)>> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)).context(|| format!("wait for {pid}"))? {
        WaitStatus::Exited(_, code) => Ok(Some((code, None))),
        WaitStatus::Signaled(_, signal, _) => Ok(Some((128 + signal as i32, Some(signal as i32)))),
        _ => Ok(None),
    }
}
