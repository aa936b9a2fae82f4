//! Reading a task's bounded log (`task.log`, rotated into `task.log.1` by the shim; see
//! `runtime::shim::log`): the lines kept so far, filtered by time and cut to the last N, then,
//! when following, each new line as the shim appends it.
//!
//! Following polls (every [`POLL`]) instead of using inotify: one `read` and one `stat` per
//! follower and poll is nothing next to the work of the task that writes, and it needs no watch
//! descriptors. Rotation is seen by the current file's inode changing: the open handle still
//! reads the renamed file to its end, then the new `task.log` is read from its start, so no line
//! is lost or repeated unless the shim rotates twice within one poll (more than the size bound
//! written in [`POLL`]). Blocking: run it on a blocking thread.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::shim::log::{CURRENT, LogRecord, ROTATED};

/// How often a follower looks for new lines.
pub const POLL: Duration = Duration::from_millis(100);

/// Which lines to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Keep reading new lines until the task has finished (or the reader is told to stop).
    pub follow: bool,
    /// Only the last `tail` of the lines already written; `None`: all of them.
    pub tail: Option<usize>,
    /// Only lines read at or after this time (Unix milliseconds).
    pub since_unix_ms: Option<u64>,
}

/// Where the reader sends lines and learns when to stop.
pub trait LogSink {
    /// Takes one record; false when the reader should stop (the caller went away).
    fn line(&mut self, record: LogRecord) -> bool;
    /// True once the caller went away (checked while waiting for new lines).
    fn gone(&self) -> bool;
    /// True once the task's process has exited and its shim has written its last line.
    fn finished(&self) -> bool;
}

/// Reads the log in `dir` (the task's `logs/` directory) into `sink` as `query` asks; returns
/// when it is read (without `follow`), when the task has finished and its log is read to the end,
/// or when the sink says stop.
pub fn read_log(dir: &Path, query: &LogQuery, sink: &mut dyn LogSink) -> std::io::Result<()> {
    let mut current = Cursor::open(dir)?;
    let mut keep = Filter::new(query);
    // The rotated file, unless a rotation since opening made it the file we already hold.
    let rotated = match open_if_exists(&dir.join(ROTATED))? {
        Some(file) if current.as_ref().is_none_or(|c| c.inode != file.metadata().map_or(0, |m| m.ino())) => Some(file),
        _ => None,
    };
    if let Some(rotated) = rotated {
        let mut old = Cursor { file: rotated, inode: 0, partial: Vec::new() };
        let mut stopped = false;
        old.read_lines(&mut |r| {
            stopped |= !keep.offer(r, sink);
            !stopped
        })?;
        if stopped {
            return Ok(());
        }
    }
    if let Some(c) = current.as_mut() {
        let mut stopped = false;
        c.read_lines(&mut |r| {
            stopped |= !keep.offer(r, sink);
            !stopped
        })?;
        if stopped {
            return Ok(());
        }
    }
    if !keep.flush(sink) || !query.follow {
        return Ok(());
    }
    follow(dir, current, query.since_unix_ms, sink)
}

/// After the kept lines: new lines as they come, across rotations, until the task finished.
fn follow(dir: &Path, mut current: Option<Cursor>, since: Option<u64>, sink: &mut dyn LogSink) -> std::io::Result<()> {
    loop {
        // Asked before reading: lines written before the exit are all read below.
        let finished = sink.finished();
        let mut stopped = false;
        let mut deliver = |r: LogRecord| {
            if since.is_none_or(|s| unix_ms(&r.time).is_none_or(|t| t >= s)) {
                stopped |= !sink.line(r);
            }
            !stopped
        };
        if let Some(c) = current.as_mut() {
            c.read_lines(&mut deliver)?;
        }
        if stopped {
            return Ok(());
        }
        // A different task.log than the one held: it rotated (or appeared). The held file was
        // read to its end just above; go on with the new one from its start.
        let now = open_if_exists(&dir.join(CURRENT))?;
        let rotated = match (&current, &now) {
            (Some(c), Some(f)) => c.inode != f.metadata()?.ino(),
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated && let Some(file) = now {
            current = Some(Cursor { inode: file.metadata()?.ino(), file, partial: Vec::new() });
            continue;
        }
        if finished || sink.gone() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// An open log file and the unfinished line read from it so far.
struct Cursor {
    file: File,
    inode: u64,
    /// Bytes after the last newline (a record the shim is writing right now).
    partial: Vec<u8>,
}

impl Cursor {
    /// The current `task.log`, if there is one yet.
    fn open(dir: &Path) -> std::io::Result<Option<Cursor>> {
        let Some(file) = open_if_exists(&dir.join(CURRENT))? else { return Ok(None) };
        Ok(Some(Cursor { inode: file.metadata()?.ino(), file, partial: Vec::new() }))
    }

    /// Reads to the end of the file, handing each complete record to `each` until it returns
    /// false. Lines that are not records (damaged) are skipped.
    fn read_lines(&mut self, each: &mut dyn FnMut(LogRecord) -> bool) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.partial.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = self.partial[start..].iter().position(|b| *b == b'\n') {
                let line = &self.partial[start..start + pos];
                start += pos + 1;
                if let Some(record) = parse_line(line)
                    && !each(record)
                {
                    self.partial.drain(..start);
                    return Ok(());
                }
            }
            self.partial.drain(..start);
        }
    }
}

fn open_if_exists(path: &PathBuf) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// One line of the log file as a record; `None` for a damaged line.
pub fn parse_line(line: &[u8]) -> Option<LogRecord> {
    serde_json::from_slice(line).ok()
}

/// The kept lines' filter: `since`, then the last `tail`.
struct Filter {
    since: Option<u64>,
    tail: Option<usize>,
    /// The last `tail` records (only when `tail` is set).
    last: VecDeque<LogRecord>,
}

impl Filter {
    fn new(query: &LogQuery) -> Filter {
        Filter { since: query.since_unix_ms, tail: query.tail, last: VecDeque::new() }
    }

    /// Takes a record; false when the sink said stop.
    fn offer(&mut self, record: LogRecord, sink: &mut dyn LogSink) -> bool {
        if let Some(since) = self.since
            && unix_ms(&record.time).is_some_and(|t| t < since)
        {
            return true;
        }
        match self.tail {
            None => sink.line(record),
            Some(0) => true,
            Some(n) => {
                if self.last.len() == n {
                    self.last.pop_front();
                }
                self.last.push_back(record);
                true
            }
        }
    }

    /// Sends what the tail kept; false when the sink said stop.
    fn flush(&mut self, sink: &mut dyn LogSink) -> bool {
        self.last.drain(..).all(|r| sink.line(r))
    }
}

/// Unix milliseconds of an RFC 3339 UTC time as the shim writes it
/// (`2026-01-02T03:04:05.123456789Z`); `None` when it is not one.
pub fn unix_ms(time: &str) -> Option<u64> {
    let b = time.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || !time.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let millis = match &time[19..time.len() - 1] {
        "" => 0,
        frac if frac.starts_with('.') && frac.len() > 1 && frac[1..].bytes().all(|c| c.is_ascii_digit()) => {
            let digits: String = frac[1..].chars().chain("000".chars()).take(3).collect();
            digits.parse::<i64>().ok()?
        }
        _ => return None,
    };
    // Days since 1970-01-01 from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use runtime::shim::log::{RotatingLog, Stream};

    use super::*;

    /// Collects lines; stops after `limit` of them; "finished" when the flag says so.
    struct Collect {
        lines: Vec<String>,
        limit: usize,
        finished: Arc<AtomicBool>,
        /// How many lines arrived (for a writer that waits for the reader).
        count: Arc<AtomicUsize>,
    }

    impl Collect {
        fn new() -> Collect {
            Collect { lines: Vec::new(), limit: usize::MAX, finished: Arc::new(AtomicBool::new(true)), count: Arc::default() }
        }
    }

    impl LogSink for Collect {
        fn line(&mut self, record: LogRecord) -> bool {
            self.lines.push(format!("{} {}", record.stream, record.line));
            self.count.fetch_add(1, Ordering::SeqCst);
            self.lines.len() < self.limit
        }
        fn gone(&self) -> bool {
            false
        }
        fn finished(&self) -> bool {
            self.finished.load(Ordering::SeqCst)
        }
    }

    fn write_lines(dir: &Path, max_bytes: u64, lines: std::ops::Range<usize>, time: &str) {
        let mut log = RotatingLog::open(dir, max_bytes).unwrap();
        for i in lines {
            let stream = if i.is_multiple_of(2) { Stream::Stdout } else { Stream::Stderr };
            log.write(stream, format!("line {i}\n").as_bytes(), time);
        }
    }

    fn read(dir: &Path, query: LogQuery) -> Vec<String> {
        let mut sink = Collect::new();
        read_log(dir, &query, &mut sink).unwrap();
        sink.lines
    }

    const T: &str = "2026-01-01T00:00:00.000000000Z";

    #[test]
    fn every_kept_line_is_read_oldest_first_across_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 600, 0..40, T);
        assert!(dir.path().join(ROTATED).exists(), "the test needs a rotation");
        let lines = read(dir.path(), LogQuery::default());
        let numbers: Vec<usize> = lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps: {numbers:?}");
        assert_eq!(numbers.last(), Some(&39));
        assert_eq!(lines[0].split(' ').next(), Some(if numbers[0].is_multiple_of(2) { "stdout" } else { "stderr" }));
    }

    #[test]
    fn tail_keeps_the_last_lines_even_when_they_span_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 600, 0..40, T);
        let current = std::fs::read_to_string(dir.path().join(CURRENT)).unwrap().lines().count();
        let tail = current + 2;
        let lines = read(dir.path(), LogQuery { tail: Some(tail), ..Default::default() });
        let expected: Vec<String> =
            (40 - tail..40).map(|i| format!("{} line {i}", if i.is_multiple_of(2) { "stdout" } else { "stderr" })).collect();
        assert_eq!(lines, expected);
        assert!(read(dir.path(), LogQuery { tail: Some(0), ..Default::default() }).is_empty());
    }

    #[test]
    fn since_drops_older_lines() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 1 << 20, 0..3, "2026-01-01T00:00:00.000000000Z");
        write_lines(dir.path(), 1 << 20, 3..5, "2026-01-01T00:00:02.500000000Z");
        let since = unix_ms("2026-01-01T00:00:02.500Z").unwrap();
        let lines = read(dir.path(), LogQuery { since_unix_ms: Some(since), ..Default::default() });
        assert_eq!(lines, vec!["stderr line 3", "stdout line 4"]);
    }

    #[test]
    fn an_unfinished_or_damaged_line_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 1 << 20, 0..1, T);
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(CURRENT)).unwrap();
        std::io::Write::write_all(&mut f, b"not json\n{\"time\":\"x\",\"stream\":\"stdout\",\"li").unwrap();
        assert_eq!(read(dir.path(), LogQuery::default()), vec!["stdout line 0"]);
        assert!(parse_line(br#"{"time":"t","stream":"stderr","line":"a b"}"#).is_some_and(|r| r.line == "a b"));
    }

    #[test]
    fn a_missing_log_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("logs"), LogQuery::default()).is_empty());
    }

    #[test]
    fn following_sees_new_lines_through_rotations_and_ends_when_the_task_finished() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 700, 0..3, T);
        let finished = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (dir, finished, count) = (dir.path().to_path_buf(), finished.clone(), count.clone());
            std::thread::spawn(move || {
                // Only once the reader sent the kept lines, so "the last 2" is exact.
                while count.load(Ordering::SeqCst) < 2 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let mut log = RotatingLog::open(&dir, 700).unwrap();
                for i in 3..60 {
                    log.write(Stream::Stdout, format!("line {i}\n").as_bytes(), T);
                    std::thread::sleep(Duration::from_millis(15));
                }
                finished.store(true, Ordering::SeqCst);
            })
        };
        let mut sink = Collect { lines: Vec::new(), limit: usize::MAX, finished, count };
        read_log(dir.path(), &LogQuery { follow: true, tail: Some(2), ..Default::default() }, &mut sink).unwrap();
        writer.join().unwrap();
        assert!(dir.path().join(ROTATED).exists(), "the test needs rotations");
        let numbers: Vec<usize> = sink.lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(numbers, (1..60).collect::<Vec<_>>(), "the 2 kept lines, then every new one once");
    }

    #[test]
    fn following_stops_when_the_sink_says_so() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 1 << 20, 0..10, T);
        let mut sink = Collect { lines: Vec::new(), limit: 3, finished: Arc::new(AtomicBool::new(false)), count: Arc::default() };
        read_log(dir.path(), &LogQuery { follow: true, ..Default::default() }, &mut sink).unwrap();
        assert_eq!(sink.lines.len(), 3);
    }

    #[test]
    fn rfc3339_times_become_unix_milliseconds() {
        assert_eq!(unix_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_ms("2026-11-26T11:57:26.123456789Z"), Some(1_795_694_246_123));
        assert_eq!(unix_ms("2000-02-29T23:59:59.9Z"), Some(951_868_799_900));
        assert_eq!(unix_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(unix_ms("yesterday"), None);
        assert_eq!(unix_ms("2026-01-01T00:00:00+01:00"), None);
    }
}
