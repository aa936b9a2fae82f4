//! The access log: one JSON object per line for every request, written by a dedicated thread
//! so a slow disk never stalls the proxy (when 4096 lines are waiting, new lines are dropped
//! and counted in a warning).
//!
//! Fields: `time` (when the request arrived, RFC 3339 UTC), `client` (address:port), `method`,
//! `host` (as sent), `path`, `service` and `target` (null when no rule or target), `status`,
//! `bytes` (response body bytes sent to the client), `duration_ms` (arrival to the last byte),
//! `target_ms` (arrival to the target's response head), `attempts` (targets tried) and `error`
//! (null, or why the request failed: e.g. `connect failed`, `timeout`, `target failed
//! mid-response`, `client went away`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::Error;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// Where access log lines go. Cheap to clone; the writer thread ends when the last clone is
/// dropped, after writing what was queued.
#[derive(Debug, Clone)]
pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

/// One line of the access log.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    pub time: String,
    pub client: SocketAddr,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub service: Option<String>,
    pub target: Option<SocketAddr>,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub target_ms: Option<f64>,
    pub attempts: u32,
    pub error: Option<&'static str>,
}

impl AccessLog {
    /// Appends to the file at `path`, creating it.
    pub fn to_file(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::AccessLog { path: path.to_path_buf(), source })?;
        Ok(Self::to_writer(file))
    }

    /// Writes to `writer` (stdout, a pipe, a test buffer).
    pub fn to_writer(writer: impl Write + Send + 'static) -> Self {
        let (lines, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("ingress-access-log".into())
            .spawn(move || write_lines(rx, writer))
            .map(drop)
            .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start the access log writer"));
        AccessLog { lines, dropped: Arc::new(AtomicU64::new(0)) }
    }

    fn write(&self, record: &AccessRecord) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "access log writer is behind; lines dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_lines(rx: Receiver<String>, writer: impl Write) {
    let mut out = BufWriter::new(writer);
    while let Ok(line) = rx.recv() {
        let mut result = out.write_all(line.as_bytes());
        while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
            result = out.write_all(line.as_bytes());
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot write the access log");
        }
    }
}

/// The line of a request in progress: filled in as the request goes, written once. Without
/// an access log it holds nothing (no field is copied or formatted).
#[derive(Debug)]
pub struct PendingLog {
    arrived: Instant,
    line: Option<Box<Line>>,
}

#[derive(Debug)]
struct Line {
    log: AccessLog,
    /// The arrival on the wall clock, formatted only when the line is written.
    wall: SystemTime,
    record: AccessRecord,
}

impl PendingLog {
    /// A request that arrived at `arrived`.
    pub fn start(
        log: Option<&AccessLog>,
        arrived: Instant,
        client: SocketAddr,
        method: &http::Method,
        host: Option<&str>,
        path: &str,
    ) -> Self {
        let line = log.map(|log| {
            Box::new(Line {
                log: log.clone(),
                wall: SystemTime::now(),
                record: AccessRecord {
                    time: String::new(),
                    client,
                    method: method.to_string(),
                    host: host.map(str::to_string),
                    path: path.to_string(),
                    service: None,
                    target: None,
                    status: 0,
                    bytes: 0,
                    duration_ms: 0.0,
                    target_ms: None,
                    attempts: 0,
                    error: None,
                },
            })
        });
        PendingLog { arrived, line }
    }

    /// When the request arrived.
    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    /// The service whose route matched.
    pub fn service(&mut self, service: &str) {
        if let Some(line) = &mut self.line {
            line.record.service = Some(service.to_string());
        }
    }

    /// An attempt to `target` begins.
    pub fn attempt(&mut self, target: SocketAddr) {
        if let Some(line) = &mut self.line {
            line.record.target = Some(target);
            line.record.attempts += 1;
        }
    }

    /// Notes that the target's response head arrived now, with this status.
    pub fn answered(&mut self, status: u16) {
        if let Some(line) = &mut self.line {
            line.record.status = status;
            line.record.target_ms = Some(millis(self.arrived.elapsed()));
        }
    }

    /// The status of an answer the ingress gives itself.
    pub fn status(&mut self, status: u16) {
        if let Some(line) = &mut self.line {
            line.record.status = status;
        }
    }

    /// Writes the line: `bytes` sent to the client, and why it failed if it did.
    pub fn finish(mut self, bytes: u64, error: Option<&'static str>) {
        let Some(mut line) = self.line.take() else {
            return;
        };
        let record = &mut line.record;
        record.time = DateTime::<Utc>::from(line.wall).to_rfc3339_opts(SecondsFormat::Millis, true);
        record.bytes = bytes;
        record.duration_ms = millis(self.arrived.elapsed());
        if error.is_some() {
            record.error = error;
        }
        line.log.write(record);
    }
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_request_is_one_json_line() {
        let buffer = Shared::default();
        let log = AccessLog::to_writer(buffer.clone());
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut pending = PendingLog::start(Some(&log), Instant::now(), client, &http::Method::GET, Some("a.example"), "/x");
        pending.service("quotes");
        pending.answered(200);
        pending.finish(42, None);
        PendingLog::start(Some(&log), Instant::now(), client, &http::Method::POST, None, "/y").finish(0, Some("timeout"));
        PendingLog::start(None, Instant::now(), client, &http::Method::GET, None, "/z").finish(0, None);
        let mut text = String::new();
        for _ in 0..200 {
            text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["service"], "quotes");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["bytes"], 42);
        assert_eq!(lines[0]["client"], "127.0.0.1:5000");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["error"], "timeout");
        assert_eq!(lines[1]["host"], serde_json::Value::Null);
    }
}
