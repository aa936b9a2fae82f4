//! `sched logs NAME [--task ID] [-f] [--tail N] [--since D] [-t] [-o json]`: what a service's
//! tasks print, read from their nodes through any server (`sched.v1.LogApi`).
//!
//! Text output writes each task's stdout lines to stdout and its stderr lines to stderr (as
//! `docker logs` does, so `2>/dev/null` keeps only stdout). For a whole service every line starts
//! with the task's short id (its id without the leading `NAME-`, which `--task` also accepts),
//! as `docker service logs` does. `-o json` prints one JSON object per line instead. A task
//! whose node cannot be reached is named on stderr and makes the exit code 1, after every other
//! line has been printed.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::sched::v1::log_api_client::LogApiClient;
use proto::sched::v1::{LogLine, LogStream, LogsRequest};
use serde_json::{Value, json};

use super::client::Servers;
use super::{CliError, Format};
use crate::spec::parse_duration_ms;

/// What `sched logs` is asked.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The service whose tasks' output to show.
    pub name: String,
    /// Only this task: its id from `sched get tasks` (the leading "NAME-" may be left out).
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Keep printing new lines as the tasks write them, also of tasks started later, until
    /// interrupted (Ctrl-C). With --task, stop when that task has exited.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task (default: all the node keeps, up to 2 x 10 MiB per
    /// task). --tail 0 --follow prints only new lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Only lines written within this long before now: 30s, 10m, 2h.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Start each line with the time the node read it (RFC 3339, UTC).
    #[arg(short, long)]
    pub timestamps: bool,
    /// table: the lines as written (stdout on stdout, stderr on stderr; prefixed with the short
    /// task id for a whole service); json: one object per line with task_id, node, stream
    /// (stdout or stderr), time and text, or error for a task whose log could not be read.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Streams the logs; returns once the stream ends (never, for a followed service).
pub async fn run(servers: Servers, args: LogsArgs) -> Result<(), CliError> {
    let since_unix_ms = match &args.since {
        Some(text) => {
            let ago = parse_duration_ms(text).map_err(|e| CliError::BadInput(format!("--since: {e}")))?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            Some(now.saturating_sub(ago))
        }
        None => None,
    };
    let request = LogsRequest {
        service: args.name.clone(),
        task_id: args.task.clone().unwrap_or_default(),
        follow: args.follow,
        tail: args.tail,
        since_unix_ms,
    };
    let mut stream = servers
        .call_streaming(|c| {
            let request = request.clone();
            async move { LogApiClient::new(c).logs(request).await.map(|r| r.into_inner()) }
        })
        .await?;
    let format = LineFormat {
        service: args.name.clone(),
        prefix: args.task.is_none(),
        timestamps: args.timestamps,
        json: args.output == Format::Json,
    };
    let mut failed = Vec::new();
    loop {
        let line = match stream.message().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(status) => return Err(CliError::Unreachable(format!("the log stream broke: {}", status.message()))),
        };
        if !line.error.is_empty() {
            failed.push(line.task_id.clone());
        }
        let (text, to_stderr) = format.render(&line);
        let written = if to_stderr { writeln!(std::io::stderr().lock(), "{text}") } else { writeln!(std::io::stdout().lock(), "{text}") };
        // A closed pipe (`| head`) ends the command quietly.
        if written.is_err() {
            return Ok(());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        failed.dedup();
        Err(CliError::Rejected(format!("the log of {} could not be read (see above)", failed.join(", "))))
    }
}

/// How lines are printed.
#[derive(Debug, Clone)]
pub struct LineFormat {
    pub service: String,
    /// Start lines with the short task id (a whole service is shown).
    pub prefix: bool,
    pub timestamps: bool,
    pub json: bool,
}

impl LineFormat {
    /// The printed text of a line, and whether it goes to stderr.
    pub fn render(&self, line: &LogLine) -> (String, bool) {
        if self.json {
            return (line_json(line).to_string(), false);
        }
        let short = short_task_id(&self.service, &line.task_id);
        if !line.error.is_empty() {
            return (format!("sched: task {short}: {}", line.error), true);
        }
        let mut text = String::new();
        if self.prefix {
            text.push_str(short);
            text.push_str(" | ");
        }
        if self.timestamps {
            text.push_str(&line.time);
            text.push(' ');
        }
        text.push_str(&line.text);
        (text, line.stream == LogStream::Stderr as i32)
    }
}

/// A task id without the leading "SERVICE-" (every task of a service has it).
pub fn short_task_id<'a>(service: &str, task_id: &'a str) -> &'a str {
    task_id.strip_prefix(service).and_then(|rest| rest.strip_prefix('-')).filter(|rest| !rest.is_empty()).unwrap_or(task_id)
}

/// The JSON form of a line (`-o json`).
pub fn line_json(line: &LogLine) -> Value {
    if !line.error.is_empty() {
        return json!({"task_id": line.task_id, "node": line.node, "error": line.error});
    }
    let stream = match LogStream::try_from(line.stream) {
        Ok(LogStream::Stderr) => "stderr",
        _ => "stdout",
    };
    json!({"task_id": line.task_id, "node": line.node, "stream": stream, "time": line.time, "text": line.text})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task: &str, stream: LogStream, text: &str) -> LogLine {
        LogLine {
            task_id: task.into(),
            stream: stream as i32,
            time: "2026-01-01T00:00:00.000000001Z".into(),
            text: text.into(),
            node: "n1".into(),
            error: String::new(),
        }
    }

    fn format(prefix: bool, timestamps: bool, json: bool) -> LineFormat {
        LineFormat { service: "web".into(), prefix, timestamps, json }
    }

    #[test]
    fn short_ids_drop_the_service_name() {
        assert_eq!(short_task_id("web", "web-3-1764-7"), "3-1764-7");
        assert_eq!(short_task_id("web", "webapp-1"), "webapp-1", "another service's prefix is kept");
        assert_eq!(short_task_id("web", "web-"), "web-");
        assert_eq!(short_task_id("web", "other"), "other");
    }

    #[test]
    fn a_service_prefixes_lines_with_the_short_task_id_and_keeps_the_stream() {
        let f = format(true, false, false);
        assert_eq!(f.render(&line("web-1-2-3", LogStream::Stdout, "hello")), ("1-2-3 | hello".to_string(), false));
        assert_eq!(f.render(&line("web-1-2-3", LogStream::Stderr, "oops")), ("1-2-3 | oops".to_string(), true));
        let one = format(false, true, false);
        assert_eq!(one.render(&line("web-1-2-3", LogStream::Stdout, "hi")).0, "2026-01-01T00:00:00.000000001Z hi");
    }

    #[test]
    fn errors_name_the_task_and_go_to_stderr() {
        let mut l = line("web-1-2-3", LogStream::Unspecified, "");
        l.error = "cannot reach node n2".into();
        assert_eq!(format(true, false, false).render(&l), ("sched: task 1-2-3: cannot reach node n2".to_string(), true));
        let json: Value = serde_json::from_str(&format(true, false, true).render(&l).0).unwrap();
        assert_eq!(json, json!({"task_id": "web-1-2-3", "node": "n1", "error": "cannot reach node n2"}));
    }

    #[test]
    fn json_lines_carry_task_node_stream_time_and_text() {
        let (text, to_stderr) = format(true, false, true).render(&line("web-1-2-3", LogStream::Stderr, "oops"));
        assert!(!to_stderr, "JSON goes to stdout whatever the stream");
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            json!({"task_id": "web-1-2-3", "node": "n1", "stream": "stderr", "time": "2026-01-01T00:00:00.000000001Z", "text": "oops"})
        );
    }
}
