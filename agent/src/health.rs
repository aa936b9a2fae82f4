//! Health checks from a service's `[health]`: an HTTP GET (2xx or 3xx is healthy), a TCP
//! connect, or a command run inside the container (`sched-runtime exec`, exit 0 is healthy),
//! every `interval`, each bounded by `timeout`. A command probe that times out is killed with
//! everything it started in the container: `sched-runtime exec` runs in a process group of its
//! own, which the exec'd process and its children inherit, and the whole group gets SIGKILL
//! (killing only `sched-runtime exec` would leave the probe running in the container, reparented
//! to the task's init, until the task's pids limit). [`HealthTracker`] turns results into a status:
//! starting until the first success; failures during `grace` after the start do not count;
//! `retries` failures in a row make the task unhealthy; one success makes it healthy again.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What is probed.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Cmd { command: Vec<String> },
}

/// A task's health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub grace: Duration,
}

/// A task's health as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// Consecutive results -> status.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    status: Health,
    failures: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker { status: Health::Starting, failures: 0 }
    }
}

impl HealthTracker {
    /// The status now.
    pub fn status(&self) -> Health {
        self.status
    }

    /// Adds one probe result, `since_start` after the task started.
    pub fn record(&mut self, spec: &HealthSpec, ok: bool, since_start: Duration) -> Health {
        if ok {
            self.failures = 0;
            self.status = Health::Healthy;
        } else if since_start >= spec.grace {
            self.failures += 1;
            if self.failures >= spec.retries.max(1) {
                self.status = Health::Unhealthy;
            }
        }
        self.status
    }
}

/// Where a task can be probed from the node.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub task_id: String,
    /// The task's address on the node bridge (`None` without task networking: then only
    /// command probes can run).
    pub ip: Option<Ipv4Addr>,
    pub runtime_binary: PathBuf,
    pub state_root: PathBuf,
}

/// The `sched-runtime` arguments that run `command` in the task. The `--` ends the runtime's
/// options: a command like `["--cap", "CAP_SYS_ADMIN", "sh"]` or `["--help"]` is a program
/// and its arguments, never flags of `exec`.
fn exec_args(target: &ProbeTarget, command: &[String]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        vec!["--root".into(), target.state_root.clone().into(), "exec".into(), target.task_id.clone().into(), "--".into()];
    args.extend(command.iter().map(Into::into));
    args
}

/// Runs one probe; false on failure or timeout. Without a task address only command probes can
/// run.
pub async fn probe(probe: &Probe, target: &ProbeTarget, timeout: Duration) -> bool {
    match (probe, target.ip) {
        (Probe::Cmd { command }, _) => command_probe(command, target, timeout).await,
        (_, None) => false,
        (Probe::Tcp { port }, Some(ip)) => within(timeout, async { tokio::net::TcpStream::connect((ip, *port)).await.is_ok() }).await,
        (Probe::Http { port, path }, Some(ip)) => within(timeout, http_ok(ip, *port, path)).await,
    }
}

/// `check`'s answer, false if it takes longer than `timeout`.
async fn within(timeout: Duration, check: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(timeout, check).await.unwrap_or(false)
}

/// Runs `command` in the task; on timeout kills it, and whatever it started, before returning.
async fn command_probe(command: &[String], target: &ProbeTarget, timeout: Duration) -> bool {
    let spawned = tokio::process::Command::new(&target.runtime_binary)
        .args(exec_args(target, command))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A group of its own: the exec'd process (forked by it into the container's namespaces)
        // stays in it, so one kill reaches both.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(task = target.task_id, "cannot run {}: {e}", target.runtime_binary.display());
            return false;
        }
    };
    if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
        return status.is_ok_and(|s| s.success());
    }
    // Not reaped yet, so the group id (our child's pid) cannot have been reused.
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.wait().await;
    tracing::debug!(task = target.task_id, ?timeout, "command probe timed out and was killed");
    false
}

/// A minimal HTTP/1.0 GET: healthy when the status is 2xx or 3xx.
async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((ip, port)).await else { return false };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: sched-agent\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    status_is_ok(&head[..read])
}

/// `HTTP/1.x 2xx` or `3xx`.
fn status_is_ok(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    matches!((parts.next(), parts.next()), (Some(v), Some(code)) if v.starts_with("HTTP/") && (code.starts_with('2') || code.starts_with('3')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_probe_can_never_be_read_as_runtime_options() {
        let target = ProbeTarget {
            task_id: "t1".into(),
            ip: None,
            runtime_binary: "sched-runtime".into(),
            state_root: "/var/lib/sched/runtime".into(),
        };
        let command: Vec<String> = ["--cap", "CAP_SYS_ADMIN", "--process", "/etc/x", "sh"].map(String::from).to_vec();
        let args: Vec<String> = exec_args(&target, &command).into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["--root", "/var/lib/sched/runtime", "exec", "t1", "--", "--cap", "CAP_SYS_ADMIN", "--process", "/etc/x", "sh"]);
    }

    fn spec(retries: u32, grace_ms: u64) -> HealthSpec {
        HealthSpec {
            probe: Probe::Tcp { port: 80 },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            grace: Duration::from_millis(grace_ms),
        }
    }

    #[test]
    fn starting_until_the_first_success() {
        let s = spec(3, 10_000);
        let mut t = HealthTracker::default();
        assert_eq!(t.record(&s, false, Duration::from_secs(1)), Health::Starting, "in grace");
        assert_eq!(t.record(&s, true, Duration::from_secs(2)), Health::Healthy);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy_and_one_success_heals() {
        let s = spec(3, 0);
        let mut t = HealthTracker::default();
        t.record(&s, true, Duration::ZERO);
        assert_eq!(t.record(&s, false, Duration::from_secs(1)), Health::Healthy);
        assert_eq!(t.record(&s, false, Duration::from_secs(2)), Health::Healthy);
        assert_eq!(t.record(&s, false, Duration::from_secs(3)), Health::Unhealthy);
        assert_eq!(t.record(&s, true, Duration::from_secs(4)), Health::Healthy);
    }

    #[test]
    fn failures_in_grace_do_not_count() {
        let s = spec(1, 5_000);
        let mut t = HealthTracker::default();
        assert_eq!(t.record(&s, false, Duration::from_secs(4)), Health::Starting);
        assert_eq!(t.record(&s, false, Duration::from_secs(6)), Health::Unhealthy);
    }

    #[test]
    fn http_status_lines() {
        assert!(status_is_ok(b"HTTP/1.0 200 OK\r\n"));
        assert!(status_is_ok(b"HTTP/1.1 302 Found"));
        assert!(!status_is_ok(b"HTTP/1.1 500 Internal"));
        assert!(!status_is_ok(b"garbage"));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").await;
            }
        });
        let target = ProbeTarget { task_id: "t".into(), ip: Some(Ipv4Addr::LOCALHOST), runtime_binary: "x".into(), state_root: "y".into() };
        assert!(probe(&Probe::Tcp { port }, &target, Duration::from_secs(2)).await);
        assert!(probe(&Probe::Http { port, path: "/health".into() }, &target, Duration::from_secs(2)).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(!probe(&Probe::Tcp { port: closed }, &target, Duration::from_secs(2)).await);
    }
}
