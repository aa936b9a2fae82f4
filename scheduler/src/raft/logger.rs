//! raft-rs logs through `slog`; this drain hands its records to `tracing`, so one subscriber
//! (set up in the binary) shows both, with raft-rs's key-values appended to the message.

use std::fmt::{self, Write as _};

use slog::{Drain, KV, Key, Level, OwnedKVList, Record, Serializer};

/// A `slog::Logger` whose records go to `tracing` under the target `raft`.
pub fn raft_logger(server_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("server" => server_id))
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut text = record.msg().to_string();
        let mut kv = KeyValues(&mut text);
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{text}"),
            Level::Warning => tracing::warn!(target: "raft", "{text}"),
            Level::Info => tracing::info!(target: "raft", "{text}"),
            Level::Debug => tracing::debug!(target: "raft", "{text}"),
            Level::Trace => tracing::trace!(target: "raft", "{text}"),
        }
        Ok(())
    }
}

struct KeyValues<'a>(&'a mut String);

impl Serializer for KeyValues<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
