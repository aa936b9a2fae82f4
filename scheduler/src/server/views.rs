//! Domain records -> `sched.v1` wire messages, for API answers.

use std::collections::BTreeMap;

use proto::sched::v1 as pb;

use crate::autoscale;
use crate::controller::CpuSample;
use crate::state::{ClusterState, Event, Node, Revision, ServiceRecord, ServiceSummary, Task, TaskState};

pub fn revision(r: &Revision) -> pb::Revision {
    pb::Revision {
        revision: r.revision,
        spec: Some(r.spec.to_proto()),
        image_digest: r.image_digest.clone(),
        created_unix_ms: r.created_ms,
        rolled_back_from: r.rolled_back_from.unwrap_or(0),
    }
}

/// A service as written (no task counts known to the writer).
pub fn summary(s: &ServiceSummary) -> pb::Service {
    pb::Service {
        name: s.name.clone(),
        revision: s.current.revision,
        current: Some(revision(&s.current)),
        desired_count: s.desired_count,
        created_unix_ms: s.created_ms,
        updated_unix_ms: s.updated_ms,
        running_count: 0,
        cpu_percent: None,
        autoscale: None,
    }
}

/// A service as read: the number of its tasks observed running, their average CPU from `cpu`
/// (the samples this server holds, at `now_ms`) and, when it autoscales, the autoscaler's view.
pub fn service(state: &ClusterState, s: &ServiceRecord, cpu: &BTreeMap<String, Vec<CpuSample>>, now_ms: u64) -> pb::Service {
    let running = state.tasks_of(&s.name).filter(|t| t.observed == TaskState::Running).count();
    let reading = autoscale::read_service(state, &s.name, cpu, now_ms);
    let autoscale = s.current_revision().spec.autoscale.as_ref().map(|bounds| pb::AutoscaleStatus {
        counted_tasks: reading.counted,
        uncounted_tasks: reading.uncounted,
        recommended_count: autoscale::recommend(&reading, bounds, s.desired_count).unwrap_or(0),
        deploying: reading.deploying,
        last_decision: s.autoscale.last_decision.as_ref().map(|d| pb::ScaleDecision {
            unix_ms: d.unix_ms,
            from: d.from,
            to: d.to,
            reason: d.reason.clone(),
        }),
        next_scale_out_unix_ms: autoscale::next_scale_out_ms(bounds, &s.autoscale),
        earliest_scale_in_unix_ms: autoscale::earliest_scale_in_ms(bounds, &s.autoscale),
    });
    pb::Service { running_count: running as u32, cpu_percent: reading.average().map(|a| a * 100.0), autoscale, ..summary(&s.summary()) }
}

pub fn task(t: &Task) -> pb::Task {
    pb::Task {
        id: t.id.clone(),
        service: t.service.clone(),
        revision: t.revision,
        node_id: t.node_id,
        desired_state: pb::DesiredState::from(t.desired) as i32,
        observed_state: pb::TaskState::from(t.observed) as i32,
        endpoints: t.endpoints.clone(),
        exit_code: t.exit_code,
        health: pb::HealthStatus::from(t.health) as i32,
        message: t.message.clone(),
        created_unix_ms: t.created_ms,
        updated_unix_ms: t.updated_ms,
        cpu_fraction: 0.0,
        memory_bytes: 0,
        metrics_unix_ms: 0,
    }
}

pub fn node(n: &Node) -> pb::Node {
    pb::Node {
        id: n.id,
        name: n.name.clone(),
        address: n.address.clone(),
        cpu_millis: n.cpu_millis,
        memory_mib: n.memory_mib,
        labels: n.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        status: pb::NodeStatus::from(n.status) as i32,
        last_heartbeat_unix_ms: n.status_ms,
        registered_unix_ms: n.registered_ms,
    }
}

pub fn event(service: &str, e: &Event) -> pb::Event {
    pb::Event { unix_ms: e.unix_ms, service: service.to_string(), message: e.message.clone() }
}
