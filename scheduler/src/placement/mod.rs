//! Placement: which node each new task goes to. Pure logic over a snapshot of the nodes, in
//! Nomad's split: feasibility (is the node ready, do its labels match the constraints, do the
//! task's CPU and memory fit in what is free) then ranking (spread a service across nodes: the
//! node with the fewest tasks of this service wins; ties go to the node with the most CPU free,
//! then the lowest id, so the result is deterministic). Each placement updates the snapshot, so
//! one call places many tasks consistently.
//!
//! A task that fits nowhere is not placed; [`Placement::reason`] says why, per cause, so
//! `sched describe` can show it ("3 lack 500m CPU (most free: 200m, on node 2)").

mod reason;

use std::collections::BTreeMap;

pub use reason::Rejections;

/// What placement needs to know about a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: u64,
    /// Only ready nodes take tasks.
    pub ready: bool,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub labels: BTreeMap<String, String>,
    /// CPU and memory already promised to tasks on the node.
    pub used_cpu_millis: u32,
    pub used_memory_mib: u32,
    /// Tasks per service on the node.
    pub tasks_per_service: BTreeMap<String, u32>,
}

/// Tasks to place for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub service: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Node labels a node must have (`key` = `value`).
    pub constraints: BTreeMap<String, String>,
    pub count: u32,
}

/// The result of one ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The node of each placed task, in order.
    pub nodes: Vec<u64>,
    /// How many tasks fit nowhere.
    pub unplaced: u32,
    /// Why the unplaced ones did not fit.
    pub reason: Option<String>,
}

/// A snapshot of the cluster's nodes that placements consume.
#[derive(Debug, Clone)]
pub struct Placer {
    nodes: Vec<NodeView>,
}

impl Placer {
    /// A placer over `nodes` (in any order).
    pub fn new(mut nodes: Vec<NodeView>) -> Placer {
        nodes.sort_by_key(|n| n.id);
        Placer { nodes }
    }

    /// The nodes as placements have left them.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Places `ask.count` tasks, updating the snapshot.
    pub fn place(&mut self, ask: &Ask) -> Placement {
        // Per-ask, the only changing inputs are usage and this service's task counts: keep the
        // counts in a vector aligned with the nodes instead of a map lookup per candidate.
        let mut counts: Vec<u32> = self.nodes.iter().map(|n| n.tasks_per_service.get(&ask.service).copied().unwrap_or(0)).collect();
        let matches: Vec<bool> = self.nodes.iter().map(|n| n.ready && labels_match(n, &ask.constraints)).collect();
        let mut placed = Vec::with_capacity(ask.count as usize);
        for _ in 0..ask.count {
            let mut best: Option<(usize, (u32, u32))> = None;
            for (i, node) in self.nodes.iter().enumerate() {
                if !matches[i] || !fits(node, ask) {
                    continue;
                }
                let free_cpu = node.cpu_millis - node.used_cpu_millis;
                // Lower is better: fewer tasks of this service, then more CPU free.
                let score = (counts[i], u32::MAX - free_cpu);
                if best.is_none_or(|(_, s)| score < s) {
                    best = Some((i, score));
                }
            }
            let Some((i, _)) = best else { break };
            let node = &mut self.nodes[i];
            node.used_cpu_millis += ask.cpu_millis;
            node.used_memory_mib += ask.memory_mib;
            *node.tasks_per_service.entry(ask.service.clone()).or_insert(0) += 1;
            counts[i] += 1;
            placed.push(node.id);
        }
        let unplaced = ask.count - placed.len() as u32;
        let reason = (unplaced > 0).then(|| Rejections::explain(&self.nodes, ask).to_string());
        Placement { nodes: placed, unplaced, reason }
    }
}

fn labels_match(node: &NodeView, constraints: &BTreeMap<String, String>) -> bool {
    constraints.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

fn fits(node: &NodeView, ask: &Ask) -> bool {
    node.cpu_millis.saturating_sub(node.used_cpu_millis) >= ask.cpu_millis
        && node.memory_mib.saturating_sub(node.used_memory_mib) >= ask.memory_mib
}

#[cfg(test)]
mod tests;
