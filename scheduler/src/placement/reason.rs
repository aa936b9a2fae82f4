//! Why a task fits nowhere, counted per cause over every node.

use std::fmt;

use super::{Ask, NodeView, fits, labels_match};

/// Nodes that rejected an ask, by the first cause that ruled each out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rejections {
    pub nodes: usize,
    pub down: usize,
    pub constraints: usize,
    pub cpu: usize,
    pub memory: usize,
    pub most_free_cpu: u32,
    pub most_free_memory: u32,
    /// The nodes with that most free CPU and memory (0: none lacked it), so a reason names one.
    pub most_free_cpu_node: u64,
    pub most_free_memory_node: u64,
    /// The labels the ask requires, `k=v` comma-separated.
    pub required_labels: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

impl Rejections {
    /// Counts why each node cannot take one more task of `ask`.
    pub fn explain(nodes: &[NodeView], ask: &Ask) -> Rejections {
        let mut r = Rejections {
            nodes: nodes.len(),
            cpu_millis: ask.cpu_millis,
            memory_mib: ask.memory_mib,
            required_labels: ask.constraints.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            ..Default::default()
        };
        for n in nodes {
            if !n.ready {
                r.down += 1;
            } else if !labels_match(n, &ask.constraints) {
                r.constraints += 1;
            } else if !fits(n, ask) {
                let free_cpu = n.cpu_millis.saturating_sub(n.used_cpu_millis);
                let free_mem = n.memory_mib.saturating_sub(n.used_memory_mib);
                if r.most_free_cpu_node == 0 || free_cpu > r.most_free_cpu {
                    (r.most_free_cpu, r.most_free_cpu_node) = (free_cpu, n.id);
                }
                if r.most_free_memory_node == 0 || free_mem > r.most_free_memory {
                    (r.most_free_memory, r.most_free_memory_node) = (free_mem, n.id);
                }
                if free_cpu < ask.cpu_millis {
                    r.cpu += 1;
                } else {
                    r.memory += 1;
                }
            }
        }
        r
    }
}

impl fmt::Display for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes have registered");
        }
        let mut parts = Vec::new();
        if self.down > 0 {
            parts.push(format!("{} down", self.down));
        }
        if self.constraints > 0 {
            parts.push(format!("{} without the required labels {}", self.constraints, self.required_labels));
        }
        if self.cpu > 0 {
            parts.push(format!(
                "{} lack {}m CPU (most free: {}m, on node {})",
                self.cpu, self.cpu_millis, self.most_free_cpu, self.most_free_cpu_node
            ));
        }
        if self.memory > 0 {
            parts.push(format!(
                "{} lack {} MiB memory (most free: {} MiB, on node {})",
                self.memory, self.memory_mib, self.most_free_memory, self.most_free_memory_node
            ));
        }
        write!(f, "no node fits ({} nodes: {})", self.nodes, parts.join(", "))
    }
}
