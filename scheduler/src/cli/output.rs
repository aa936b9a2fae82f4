//! How answers are printed: tables for people, JSON (`-o json`) for scripts. The JSON keys
//! are the proto field names; enums are their short lowercase names.

use proto::sched::v1 as pb;
use serde_json::{Value, json};

use super::age::{age, until};
use super::table;
use crate::spec::format_duration_ms;
use crate::state::{DesiredState, HealthStatus, NodeStatus, TaskState};

pub fn task_state(v: i32) -> &'static str {
    TaskState::try_from(v).map_or("unknown", TaskState::name)
}

fn desired_state(v: i32) -> &'static str {
    DesiredState::try_from(v).map_or("unknown", DesiredState::name)
}

/// "-" for no check (or no result yet).
fn health(v: i32) -> &'static str {
    match HealthStatus::from(v) {
        HealthStatus::Unknown => "-",
        known => known.name(),
    }
}

fn node_status(v: i32) -> &'static str {
    NodeStatus::try_from(v).map_or("unknown", NodeStatus::name)
}

fn role(v: i32) -> &'static str {
    match pb::MemberRole::try_from(v) {
        Ok(pb::MemberRole::Leader) => "leader",
        Ok(pb::MemberRole::Follower) => "follower",
        Ok(pb::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

fn image(service: &pb::Service) -> String {
    service.current.as_ref().and_then(|r| r.spec.as_ref()).map_or_else(String::new, |s| s.image.clone())
}

pub fn spec_json(s: &pb::ServiceSpec) -> Value {
    json!({
        "name": s.name, "image": s.image, "command": s.command, "env": s.env,
        "cpu_millis": s.cpu_millis, "memory_mib": s.memory_mib, "ports": s.ports, "count": s.count,
        "autoscale": s.autoscale.as_ref().map(|a| json!({
            "min": a.min, "max": a.max, "target_cpu_percent": a.target_cpu_percent,
            "scale_out_cooldown_ms": a.scale_out_cooldown_ms, "scale_in_cooldown_ms": a.scale_in_cooldown_ms,
        })),
        "health": s.health.as_ref().map(|h| json!({
            "kind": match pb::HealthKind::try_from(h.kind) { Ok(pb::HealthKind::Http) => "http", Ok(pb::HealthKind::Tcp) => "tcp", Ok(pb::HealthKind::Cmd) => "cmd", _ => "unknown" },
            "path": h.path, "port": h.port, "command": h.command, "interval_ms": h.interval_ms,
            "timeout_ms": h.timeout_ms, "retries": h.retries, "grace_ms": h.grace_ms,
        })),
        "deploy": s.deploy.as_ref().map(|d| json!({"min_healthy_percent": d.min_healthy_percent, "max_percent": d.max_percent})),
        "routes": s.routes.iter().map(|r| json!({"path_prefix": r.path_prefix, "host": r.host, "port": r.port})).collect::<Vec<_>>(),
        "constraints": s.constraints.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

pub fn revision_json(r: &pb::Revision) -> Value {
    json!({
        "revision": r.revision, "spec": r.spec.as_ref().map(spec_json), "image_digest": r.image_digest,
        "created_unix_ms": r.created_unix_ms, "rolled_back_from": r.rolled_back_from,
    })
}

pub fn service_json(s: &pb::Service) -> Value {
    json!({
        "name": s.name, "revision": s.revision, "current": s.current.as_ref().map(revision_json),
        "desired_count": s.desired_count, "running_count": s.running_count,
        "created_unix_ms": s.created_unix_ms, "updated_unix_ms": s.updated_unix_ms,
        "cpu_percent": s.cpu_percent, "autoscale": s.autoscale.as_ref().map(|a| autoscale_json(s, a)),
    })
}

/// The autoscaler's view with the bounds it works within.
fn autoscale_json(s: &pb::Service, a: &pb::AutoscaleStatus) -> Value {
    let bounds = s.current.as_ref().and_then(|r| r.spec.as_ref()).and_then(|spec| spec.autoscale).unwrap_or_default();
    json!({
        "min": bounds.min, "max": bounds.max, "target_cpu_percent": bounds.target_cpu_percent,
        "counted_tasks": a.counted_tasks, "uncounted_tasks": a.uncounted_tasks,
        "recommended_count": a.recommended_count, "deploying": a.deploying,
        "last_decision": a.last_decision.as_ref().map(|d| json!({"unix_ms": d.unix_ms, "from": d.from, "to": d.to, "reason": d.reason})),
        "next_scale_out_unix_ms": a.next_scale_out_unix_ms, "earliest_scale_in_unix_ms": a.earliest_scale_in_unix_ms,
    })
}

pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "id": t.id, "service": t.service, "revision": t.revision, "node_id": t.node_id,
        "desired_state": desired_state(t.desired_state), "observed_state": task_state(t.observed_state),
        "endpoints": t.endpoints, "exit_code": t.exit_code, "health": health(t.health), "message": t.message,
        "created_unix_ms": t.created_unix_ms, "updated_unix_ms": t.updated_unix_ms,
        "cpu_fraction": t.cpu_fraction, "memory_bytes": t.memory_bytes, "metrics_unix_ms": t.metrics_unix_ms,
    })
}

pub fn node_json(n: &pb::Node) -> Value {
    json!({
        "id": n.id, "name": n.name, "address": n.address, "cpu_millis": n.cpu_millis, "memory_mib": n.memory_mib,
        "labels": n.labels, "status": node_status(n.status), "last_heartbeat_unix_ms": n.last_heartbeat_unix_ms,
        "registered_unix_ms": n.registered_unix_ms,
    })
}

pub fn route_json(r: &pb::RouteRule) -> Value {
    json!({
        "service": r.service, "host": r.host, "path_prefix": r.path_prefix, "port": r.port, "timeout_ms": r.timeout_ms,
        "targets": r.targets.iter().map(|t| json!({"task_id": t.task_id, "address": t.address, "healthy": t.healthy})).collect::<Vec<_>>(),
    })
}

pub fn routes_table(rules: &[pb::RouteRule]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            let healthy = r.targets.iter().filter(|t| t.healthy).count();
            vec![
                if r.host.is_empty() { "*".into() } else { r.host.clone() },
                r.path_prefix.clone(),
                r.service.clone(),
                r.port.to_string(),
                format!("{healthy}/{}", r.targets.len()),
            ]
        })
        .collect();
    table::render(&["HOST", "PATH", "SERVICE", "PORT", "HEALTHY"], &rows)
}

pub fn member_json(m: &pb::Member) -> Value {
    json!({"id": m.id, "address": m.address, "role": role(m.role)})
}

pub fn services_table(services: &[pb::Service]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let bounds = s.current.as_ref().and_then(|r| r.spec.as_ref()).and_then(|spec| spec.autoscale.as_ref());
            vec![
                s.name.clone(),
                s.revision.to_string(),
                format!("{}/{}", s.running_count, s.desired_count),
                s.cpu_percent.map_or_else(|| "-".into(), |c| format!("{c:.0}%")),
                bounds.map_or_else(|| "-".into(), |a| format!("{}-{} @{}%", a.min, a.max, a.target_cpu_percent)),
                image(s),
            ]
        })
        .collect();
    table::render(&["NAME", "REVISION", "RUNNING", "CPU", "AUTOSCALE", "IMAGE"], &rows)
}

/// The `describe` lines of the autoscaler: what it sees, what it last did, what may come next.
fn autoscaler_text(a: &pb::AutoscaleStatus) -> String {
    let mut out = String::new();
    let sees = match (a.counted_tasks, a.recommended_count) {
        (0, _) => "no task has metrics yet: no change".to_string(),
        (counted, recommended) => format!("{counted} task(s) counted; the CPU asks for {recommended}"),
    };
    let uncounted = match a.uncounted_tasks {
        0 => String::new(),
        n => format!(", {n} not counted (starting, or metrics missing): no scale-in until they are"),
    };
    let deploying = if a.deploying { ", a deploy is in progress: no scale-in" } else { "" };
    out.push_str(&format!("Autoscaler:  {sees}{uncounted}{deploying}\n"));
    match &a.last_decision {
        Some(d) => out.push_str(&format!("             last: {} ({} ago)\n", d.reason, age(d.unix_ms))),
        None => out.push_str("             last: no change yet\n"),
    }
    out.push_str(&format!(
        "             next scale-out: {}; scale-in: not before {}\n",
        until(a.next_scale_out_unix_ms),
        until(a.earliest_scale_in_unix_ms)
    ));
    out
}

pub fn tasks_table(tasks: &[pb::Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.service.clone(),
                t.revision.to_string(),
                if t.node_id == 0 { "-".into() } else { t.node_id.to_string() },
                desired_state(t.desired_state).into(),
                match t.exit_code {
                    // Like `docker ps`' "Exited (3)": the code without a detour through JSON.
                    Some(code) => format!("{} ({code})", task_state(t.observed_state)),
                    None => task_state(t.observed_state).into(),
                },
                health(t.health).into(),
                if t.metrics_unix_ms == 0 { "-".into() } else { format!("{:.0}%", t.cpu_fraction * 100.0) },
                if t.endpoints.is_empty() { "-".into() } else { t.endpoints.join(",") },
                t.message.clone(),
            ]
        })
        .collect();
    table::render(&["ID", "SERVICE", "REV", "NODE", "DESIRED", "STATE", "HEALTH", "CPU", "ENDPOINTS", "MESSAGE"], &rows)
}

pub fn nodes_table(nodes: &[pb::Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.address.clone(),
                n.cpu_millis.to_string(),
                n.memory_mib.to_string(),
                node_status(n.status).into(),
                labels.join(","),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "ADDRESS", "CPU(m)", "MEMORY(MiB)", "STATUS", "LABELS"], &rows)
}

pub fn history_table(revisions: &[pb::Revision], current: u64) -> String {
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let spec = r.spec.clone().unwrap_or_default();
            vec![
                format!("{}{}", r.revision, if r.revision == current { "*" } else { "" }),
                spec.image,
                short_digest(&r.image_digest),
                spec.count.to_string(),
                if r.rolled_back_from == 0 { "-".into() } else { format!("rollback to {}", r.rolled_back_from) },
                age(r.created_unix_ms),
            ]
        })
        .collect();
    table::render(&["REVISION", "IMAGE", "DIGEST", "COUNT", "NOTE", "AGE"], &rows)
}

/// `sha256:` and the first 12 hex digits (like docker's short ids); `-` when not resolved.
fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None if digest.is_empty() => "-".into(),
        None => digest.into(),
    }
}

pub fn members_table(members: &pb::MembersResponse) -> String {
    let rows: Vec<Vec<String>> = members.members.iter().map(|m| vec![m.id.to_string(), m.address.clone(), role(m.role).into()]).collect();
    format!(
        "{}\nterm {}, commit index {}, applied index {} (answered by server {})",
        table::render(&["ID", "ADDRESS", "ROLE"], &rows),
        members.term,
        members.commit_index,
        members.applied_index,
        members.answered_by
    )
}

pub fn describe_text(d: &pb::DescribeServiceResponse) -> String {
    let mut out = String::new();
    let service = d.service.clone().unwrap_or_default();
    let current = service.current.clone().unwrap_or_default();
    let spec = current.spec.clone().unwrap_or_default();
    out.push_str(&format!("Name:        {}\n", service.name));
    out.push_str(&format!("Revision:    {} (of {})\n", service.revision, d.revisions.len()));
    out.push_str(&format!("Image:       {}\n", spec.image));
    out.push_str(&format!(
        "Digest:      {}\n",
        if current.image_digest.is_empty() { "(not resolved: tasks pull by tag; see Events)" } else { &current.image_digest }
    ));
    if !spec.command.is_empty() {
        out.push_str(&format!("Command:     {:?}\n", spec.command));
    }
    out.push_str(&format!("Tasks:       {} running / {} desired\n", service.running_count, service.desired_count));
    if let Some(cpu) = service.cpu_percent {
        out.push_str(&format!("CPU:         {cpu:.0}% of the limit (average of the running tasks, last 3s)\n"));
    }
    out.push_str(&format!("Resources:   {}m CPU, {} MiB memory\n", spec.cpu_millis, spec.memory_mib));
    if !spec.ports.is_empty() {
        out.push_str(&format!("Ports:       {:?}\n", spec.ports));
    }
    for (k, v) in &spec.env {
        out.push_str(&format!("Env:         {k}={v}\n"));
    }
    if !spec.constraints.is_empty() {
        let mut labels: Vec<String> = spec.constraints.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        out.push_str(&format!("Constraints: {} (node labels)\n", labels.join(", ")));
    }
    if let Some(a) = &spec.autoscale {
        out.push_str(&format!(
            "Autoscale:   {}-{} tasks at {}% CPU (cooldowns out {}, in {})\n",
            a.min,
            a.max,
            a.target_cpu_percent,
            format_duration_ms(a.scale_out_cooldown_ms),
            format_duration_ms(a.scale_in_cooldown_ms)
        ));
        if let Some(status) = &service.autoscale {
            out.push_str(&autoscaler_text(status));
        }
    }
    if let Some(h) = &spec.health {
        out.push_str(&format!(
            "Health:      {} every {}, timeout {}, {} retries, grace {}\n",
            match pb::HealthKind::try_from(h.kind) {
                Ok(pb::HealthKind::Http) => format!("http {} on {}", h.path, h.port),
                Ok(pb::HealthKind::Tcp) => format!("tcp {}", h.port),
                _ => format!("cmd {:?}", h.command),
            },
            format_duration_ms(h.interval_ms),
            format_duration_ms(h.timeout_ms),
            h.retries,
            format_duration_ms(h.grace_ms)
        ));
    }
    for r in &spec.routes {
        out.push_str(&format!("Route:       {}{} -> {}\n", if r.host.is_empty() { "*" } else { &r.host }, r.path_prefix, r.port));
    }
    out.push_str("\nRevisions:\n");
    out.push_str(&indent(&history_table(&d.revisions, service.revision)));
    out.push_str("\n\nTasks:\n");
    out.push_str(&indent(&if d.tasks.is_empty() { "(none)".to_string() } else { tasks_table(&d.tasks) }));
    out.push_str("\n\nEvents:\n");
    if d.events.is_empty() {
        out.push_str("  (none)\n");
    }
    let ages: Vec<String> = d.events.iter().map(|e| format!("{} ago", age(e.unix_ms))).collect();
    let width = ages.iter().map(String::len).max().unwrap_or(0);
    for (e, at) in d.events.iter().zip(&ages) {
        out.push_str(&format!("  {at:>width$}  {}\n", e.message));
    }
    out.trim_end().to_string()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}
