//! A task's size-bounded log: what its process writes to stdout and stderr, one JSON record per
//! line (`{"time":"...","stream":"stdout","line":"..."}`, like docker's json-file driver), in
//! `task.log`; when that passes its size limit it becomes `task.log.1` (replacing the older one),
//! so a task never holds more than twice the limit on disk.
//!
//! A record that cannot be written (a full disk: ENOSPC, EDQUOT) is dropped and counted, never an
//! error: the shim must go on reading the task's pipes (or the task blocks on a full pipe) and
//! record its exit. A partly written record is cut off again, so the file stays one whole record
//! per line; writing resumes with the next record once there is room.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The current log file's name inside the log directory.
pub const CURRENT: &str = "task.log";
/// The rotated (older) log file's name.
pub const ROTATED: &str = "task.log.1";

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 time the line was read.
    pub time: String,
    /// "stdout" or "stderr".
    pub stream: String,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
}

/// Which output a byte chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writes records, splitting chunks into lines and rotating at the size limit.
pub struct RotatingLog {
    dir: PathBuf,
    max_bytes: u64,
    /// `None` after the current file could not be (re)opened; opening is tried again per record.
    file: Option<File>,
    written: u64,
    /// Bytes of an unfinished line per stream, kept until its newline arrives.
    partial: [Vec<u8>; 2],
    /// Records that could not be written.
    dropped: u64,
}

/// Longest line kept whole; longer ones are split (a process printing without newlines must not
/// grow our memory).
const MAX_LINE: usize = 16 * 1024;

impl RotatingLog {
    /// Opens (appending to) `dir/task.log`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<RotatingLog> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join(CURRENT))?;
        let written = file.metadata()?.len();
        Ok(RotatingLog { dir: dir.to_path_buf(), max_bytes, file: Some(file), written, partial: [Vec::new(), Vec::new()], dropped: 0 })
    }

    /// A log whose directory could not be opened: every record is dropped until it can be.
    pub fn unopened(dir: &Path, max_bytes: u64) -> RotatingLog {
        RotatingLog { dir: dir.to_path_buf(), max_bytes, file: None, written: 0, partial: [Vec::new(), Vec::new()], dropped: 0 }
    }

    /// How many records could not be written (the disk was full).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Adds a chunk read from `stream`.
    pub fn write(&mut self, stream: Stream, chunk: &[u8], now: &str) {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            self.record(stream, &buf[start..start + pos], now);
            start += pos + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() > MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.record(stream, &rest, now);
            rest = tail;
        }
        self.partial[idx] = rest;
    }

    /// Writes out unfinished lines (at the end of the task).
    pub fn flush_partial(&mut self, now: &str) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.record(stream, &rest, now);
            }
        }
    }

    fn record(&mut self, stream: Stream, line: &[u8], now: &str) {
        let record =
            LogRecord { time: now.to_string(), stream: stream.name().to_string(), line: String::from_utf8_lossy(line).into_owned() };
        let mut text = serde_json::to_vec(&record).expect("a log record serializes");
        text.push(b'\n');
        if let Err(e) = self.append(&text) {
            if self.dropped == 0 {
                tracing::warn!(dir = %self.dir.display(), "task log lines are being dropped: {e}");
            }
            self.dropped += 1;
        }
    }

    fn append(&mut self, text: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new().create(true).append(true).open(self.dir.join(CURRENT))?;
                self.written = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        if let Err(e) = file.write_all(text) {
            // Cut a partial record off again, so the next one starts on its own line.
            if file.set_len(self.written).is_err() {
                self.file = None;
            }
            return Err(e);
        }
        self.written += text.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.file = None;
        match std::fs::rename(self.dir.join(CURRENT), self.dir.join(ROTATED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.file = Some(OpenOptions::new().create(true).append(true).open(self.dir.join(CURRENT))?);
        self.written = 0;
        Ok(())
    }
}

/// Reads every record of a task's log, oldest first (rotated file, then current).
pub fn read_all(dir: &Path) -> std::io::Result<Vec<LogRecord>> {
    let mut out = Vec::new();
    for name in [ROTATED, CURRENT] {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dir: &Path) -> Vec<(String, String)> {
        read_all(dir).unwrap().into_iter().map(|r| (r.stream, r.line)).collect()
    }

    #[test]
    fn chunks_become_lines_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), 1 << 20).unwrap();
        log.write(Stream::Stdout, b"hel", "t");
        log.write(Stream::Stderr, b"oops\n", "t");
        log.write(Stream::Stdout, b"lo\nworld\npart", "t");
        log.flush_partial("t");
        assert_eq!(
            lines(dir.path()),
            vec![
                ("stderr".into(), "oops".into()),
                ("stdout".into(), "hello".into()),
                ("stdout".into(), "world".into()),
                ("stdout".into(), "part".into()),
            ]
        );
    }

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), 1000).unwrap();
        for i in 0..500 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes(), "2026-01-01T00:00:00Z");
        }
        let current = std::fs::metadata(dir.path().join(CURRENT)).unwrap().len();
        let rotated = std::fs::metadata(dir.path().join(ROTATED)).unwrap().len();
        assert!(current <= 1000 && rotated <= 1000, "{current} {rotated}");
        let all = lines(dir.path());
        assert_eq!(all.last().unwrap().1, "line 499", "the newest lines are kept");
    }

    #[test]
    fn records_that_cannot_be_written_are_dropped_and_counted_until_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        // Every write to /dev/full fails with ENOSPC, like a full disk.
        std::os::unix::fs::symlink("/dev/full", dir.path().join(CURRENT)).unwrap();
        let mut log = RotatingLog::open(dir.path(), 1 << 20).unwrap();
        log.write(Stream::Stdout, b"lost 1\nlost 2\npart", "t");
        assert_eq!(log.dropped(), 2);
        // Room again: the next records are written, each whole on its own line.
        std::fs::remove_file(dir.path().join(CURRENT)).unwrap();
        log.write(Stream::Stdout, b"ial\n", "t");
        log.write(Stream::Stderr, b"kept\n", "t");
        assert_eq!(lines(dir.path()), vec![("stdout".into(), "partial".into()), ("stderr".into(), "kept".into())]);
        assert_eq!(log.dropped(), 2);
    }

    #[test]
    fn endless_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), 1 << 20).unwrap();
        log.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 5], "t");
        log.flush_partial("t");
        let sizes: Vec<usize> = lines(dir.path()).iter().map(|l| l.1.len()).collect();
        assert_eq!(sizes, vec![MAX_LINE, MAX_LINE, 5]);
    }
}
