//! What the replicated state may hold, and the checks every command passes before it changes
//! anything.
//!
//! A command reaches [`ClusterState::apply`] from the Raft log, and the log takes what any
//! proposer sent: the gRPC API validates what it receives, but a forwarded proposal (or a log
//! written by a buggy server) does not pass through it. So `apply` checks again, here, with
//! rules that read nothing but the command and the state: every server applies the same log to
//! the same verdict, and a replay after a restart refuses the same entries. An entry that breaks
//! a rule changes nothing (it becomes a [`Rejection`]); it can neither make a server allocate
//! without bound (a count of `u32::MAX`) nor grow the state, and so every snapshot, past what a
//! cluster of this size needs.
//!
//! Text that agents and the servers themselves write (task messages, events) is cut to its
//! bound instead of refused, so a long error never loses a status report.

use std::collections::BTreeSet;

use super::{ClusterState, Rejection};
use super::{Command, RejectionKind, Task};
use crate::spec::validate::MAX_COUNT;

/// Services the cluster holds at once.
pub const MAX_SERVICES: usize = 10_000;
/// The sum of every service's desired count.
pub const MAX_DESIRED_TASKS: u64 = 100_000;
/// Task records the state holds (running ones and stopped ones not yet forgotten).
pub const MAX_TASK_RECORDS: usize = 200_000;
/// Nodes the cluster holds.
pub const MAX_NODES: usize = 10_000;
/// Revisions a service keeps: older ones are forgotten unless a task still runs them.
pub const MAX_REVISIONS: usize = 100;
/// Labels of one node.
pub const MAX_NODE_LABELS: usize = 64;
/// Longest event, task message or autoscaler reason, in bytes; longer ones are cut.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Published endpoints one task reports.
pub const MAX_ENDPOINTS: usize = 64;
/// Longest node name, address, task id or endpoint.
pub const MAX_NAME_LEN: usize = 253;
/// Join tokens that have not expired (`sched token create` makes one per use; revoke or let
/// them expire).
pub const MAX_TOKENS: usize = 1_000;
/// Holders with a current certificate (agents, servers, admins and readers).
pub const MAX_CERTIFICATES: usize = 20_000;
/// Revoked serials whose certificates have not expired yet.
pub const MAX_REVOKED_SERIALS: usize = 20_000;
/// Longest certificate serial, in hex digits (X.509 allows 20 bytes; ours have 16).
pub const MAX_SERIAL_HEX: usize = 64;
/// A token's digest: SHA-256, in hex digits.
const DIGEST_HEX: usize = 64;

fn invalid(message: String) -> Rejection {
    Rejection { kind: RejectionKind::Invalid, message }
}

/// `text` cut to at most [`MAX_TEXT_BYTES`] on a character boundary, marked with `…` when cut.
pub fn bounded_text(text: String) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A node name, task id or the like: 1 to [`MAX_NAME_LEN`] printable ASCII characters without
/// spaces or '/' (names end up in file names on the nodes).
fn check_name(what: &str, name: &str) -> Result<(), Rejection> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(|c| c.is_ascii_graphic() && c != '/');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{what} {name:?} is not allowed: use 1-{MAX_NAME_LEN} printable characters without spaces or '/'")))
    }
}

/// `len` (or, for `max`, 1 to `max`) lowercase hex digits: the one spelling of a serial or a
/// digest, so that looking one up by its text finds it.
fn check_hex(what: &str, text: &str, len: std::ops::RangeInclusive<usize>) -> Result<(), Rejection> {
    let ok = len.contains(&text.len()) && text.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if ok {
        return Ok(());
    }
    let count = if len.start() == len.end() { len.end().to_string() } else { format!("1 to {}", len.end()) };
    Err(invalid(format!("{what} {text:?} is not {count} lowercase hex digits")))
}

fn full(what: &str, max: usize) -> Rejection {
    Rejection { kind: RejectionKind::Conflict, message: format!("the cluster holds {max} {what}, its limit") }
}

/// `HOST:PORT` with a non-zero port, where HOST is an IP address (IPv6 in brackets) or a DNS
/// name. Nothing that could smuggle a path, a user or a scheme into the URL it becomes.
pub fn check_host_port(what: &str, address: &str) -> Result<(), Rejection> {
    let bad = || invalid(format!("{what} {address:?} is not HOST:PORT (an IP address or DNS name, and a port from 1 to 65535)"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0) && port.chars().all(|c| c.is_ascii_digit());
    if !port_ok || check_host(host).is_err() {
        return Err(bad());
    }
    Ok(())
}

/// An IP address (IPv6 in brackets) or a DNS name.
fn check_host(host: &str) -> Result<(), ()> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| ());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= MAX_NAME_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok { Ok(()) } else { Err(()) }
}

impl ClusterState {
    /// The rules a command must meet before [`ClusterState::apply`] lets it change anything.
    /// Deterministic: it reads only the command and the state.
    pub(super) fn check(&self, command: &Command) -> Result<(), Rejection> {
        match command {
            Command::ApplyService { spec, image_digest, .. } => {
                if let Err(errors) = crate::spec::validate(spec) {
                    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Err(invalid(format!("the spec of {:?} is not valid: {}", spec.name, all.join("; "))));
                }
                let digest_ok = image_digest.is_empty()
                    || image_digest.strip_prefix("sha256:").is_some_and(|hex| {
                        (1..=64).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                    });
                if !digest_ok {
                    return Err(invalid(format!("image digest {image_digest:?} is not sha256: and up to 64 lowercase hex digits")));
                }
                let existing = self.services.get(&spec.name);
                if existing.is_none() && self.services.len() >= MAX_SERVICES {
                    return Err(Rejection {
                        kind: RejectionKind::Conflict,
                        message: format!("the cluster holds {MAX_SERVICES} services, its limit: delete one first"),
                    });
                }
                let before = existing.map_or(0, |s| s.desired_count);
                self.check_desired_total(before, spec.count)
            }
            Command::ScaleService { name, count, .. } => {
                if *count > MAX_COUNT {
                    return Err(invalid(format!("count must be 0 to {MAX_COUNT}, got {count}")));
                }
                let before = self.services.get(name).map_or(0, |s| s.desired_count);
                self.check_desired_total(before, *count)
            }
            Command::Autoscale { name, to, .. } => {
                let before = self.services.get(name).map_or(0, |s| s.desired_count);
                self.check_desired_total(before, *to)
            }
            Command::RegisterNode { name, address, cpu_millis, memory_mib, labels, api_address, .. } => {
                check_name("node name", name)?;
                if address.parse::<std::net::IpAddr>().is_err() && check_host(address).is_err() {
                    return Err(invalid(format!("node address {address:?} is not an IP address or DNS name")));
                }
                if !api_address.is_empty() {
                    check_host_port("agent API address", api_address)?;
                }
                if *cpu_millis == 0 || *memory_mib == 0 {
                    return Err(invalid("a node needs cpu_millis and memory_mib above 0".into()));
                }
                if labels.len() > MAX_NODE_LABELS {
                    return Err(invalid(format!("a node may have {MAX_NODE_LABELS} labels, got {}", labels.len())));
                }
                for (key, value) in labels {
                    crate::spec::check_label(key, value).map_err(invalid)?;
                }
                let known = self.nodes.values().any(|n| &n.name == name);
                if !known && self.nodes.len() >= MAX_NODES {
                    return Err(Rejection {
                        kind: RejectionKind::Conflict,
                        message: format!("the cluster holds {MAX_NODES} nodes, its limit"),
                    });
                }
                Ok(())
            }
            Command::PutTasks { tasks, .. } => {
                let new = tasks.iter().filter(|t| !self.tasks.contains_key(&t.id)).map(|t| &t.id).collect::<BTreeSet<_>>().len();
                if self.tasks.len() + new > MAX_TASK_RECORDS {
                    return Err(Rejection {
                        kind: RejectionKind::Conflict,
                        message: format!(
                            "the cluster holds {} task records; {new} more would pass its limit of {MAX_TASK_RECORDS}",
                            self.tasks.len()
                        ),
                    });
                }
                tasks.iter().try_for_each(|task| self.check_task(task))
            }
            Command::ReportTaskStatus { task_id, endpoints, .. } => {
                check_name("task id", task_id)?;
                if endpoints.len() > MAX_ENDPOINTS {
                    return Err(invalid(format!("a task may report {MAX_ENDPOINTS} endpoints, got {}", endpoints.len())));
                }
                endpoints.iter().try_for_each(|e| check_host_port("endpoint", e))
            }
            Command::RecordEvents { events, .. } => {
                if events.len() > MAX_SERVICES {
                    return Err(invalid(format!("{} events in one command, more than {MAX_SERVICES}", events.len())));
                }
                Ok(())
            }
            Command::RemoveNode { name, now_ms } => {
                check_name("node name", name)?;
                let revokes = self.node_named(name).is_some()
                    && self.certificate_of(pki::Role::Agent, name).is_some_and(|c| c.not_after_ms >= *now_ms);
                if revokes && self.credentials.live_revoked(*now_ms) >= MAX_REVOKED_SERIALS {
                    return Err(full("revoked certificates", MAX_REVOKED_SERIALS));
                }
                Ok(())
            }
            Command::AddToken { id, digest_hex, expires_ms, now_ms, .. } => {
                check_name("token id", id)?;
                check_hex("token digest", digest_hex, DIGEST_HEX..=DIGEST_HEX)?;
                if expires_ms.is_some_and(|end| end <= *now_ms) {
                    return Err(invalid(format!("token {id} would have expired already (at {} unix ms)", expires_ms.unwrap_or(0))));
                }
                if self.credentials.live_tokens(*now_ms) >= MAX_TOKENS {
                    return Err(full("join tokens", MAX_TOKENS));
                }
                Ok(())
            }
            Command::RevokeToken { id, .. } => check_name("token id", id),
            Command::RecordCertificate { role, name, serial, not_after_ms, now_ms, .. } => {
                check_name("certificate name", name)?;
                check_hex("certificate serial", serial, 1..=MAX_SERIAL_HEX)?;
                if not_after_ms < now_ms {
                    return Err(invalid(format!("certificate {serial} of {role} {name} expired at {not_after_ms} (unix ms) already")));
                }
                let replaces = self.certificate_of(*role, name).is_some_and(|c| c.not_after_ms >= *now_ms);
                if !replaces && self.credentials.live_certificates(*now_ms) >= MAX_CERTIFICATES {
                    return Err(full("certificates", MAX_CERTIFICATES));
                }
                Ok(())
            }
            Command::RevokeCertificate { serial, not_after_ms, now_ms } => {
                check_hex("certificate serial", serial, 1..=MAX_SERIAL_HEX)?;
                let adds = not_after_ms >= now_ms && !self.is_revoked(serial);
                if adds && self.credentials.live_revoked(*now_ms) >= MAX_REVOKED_SERIALS {
                    return Err(full("revoked certificates", MAX_REVOKED_SERIALS));
                }
                Ok(())
            }
            Command::DeleteService { .. }
            | Command::RollbackService { .. }
            | Command::SetNodeStatus { .. }
            | Command::DrainTasks { .. }
            | Command::SetTaskDesiredState { .. }
            | Command::RemoveTasks { .. } => Ok(()),
        }
    }

    /// Refuses a count change that would take the sum of desired counts past its limit.
    fn check_desired_total(&self, before: u32, after: u32) -> Result<(), Rejection> {
        if after <= before {
            // No more tasks than before: within the limit whatever the others want.
            return Ok(());
        }
        let after_total = self.services.desired_total() - u64::from(before) + u64::from(after);
        if after_total > MAX_DESIRED_TASKS {
            return Err(Rejection {
                kind: RejectionKind::Conflict,
                message: format!("the cluster would want {after_total} tasks, more than its limit of {MAX_DESIRED_TASKS}"),
            });
        }
        Ok(())
    }

    /// A placed or pending task: a known service and revision, bounded text.
    fn check_task(&self, task: &Task) -> Result<(), Rejection> {
        check_name("task id", &task.id)?;
        let service = self.services.get(&task.service).ok_or_else(|| Rejection {
            kind: RejectionKind::NotFound,
            message: format!("task {} belongs to unknown service {}", task.id, task.service),
        })?;
        if service.revision(task.revision).is_none() {
            return Err(Rejection {
                kind: RejectionKind::NotFound,
                message: format!("task {} runs revision {} of {}, which the service does not have", task.id, task.revision, task.service),
            });
        }
        if task.endpoints.len() > MAX_ENDPOINTS || task.message.len() > MAX_TEXT_BYTES {
            return Err(invalid(format!(
                "task {} carries more than {MAX_ENDPOINTS} endpoints or {MAX_TEXT_BYTES} bytes of message",
                task.id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded_text("short".into()), "short");
        let long = "é".repeat(MAX_TEXT_BYTES);
        let cut = bounded_text(long);
        assert!(cut.len() <= MAX_TEXT_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn host_ports() {
        for good in ["10.0.0.1:7071", "node-1.example:7071", "[::1]:7071", "localhost:1"] {
            assert!(check_host_port("a", good).is_ok(), "{good}");
        }
        for bad in
            ["", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:99999", "evil@host:80", "host/path:80", "::1:80", "h:+80", "a b:80", "http://x:80"]
        {
            assert!(check_host_port("a", bad).is_err(), "{bad}");
        }
    }
}
