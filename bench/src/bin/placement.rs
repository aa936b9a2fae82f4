//! Placements per second of the scheduler's placement alone (issue 5): 10,000 tasks in 100
//! services of 100 tasks each onto 1,000 simulated nodes, the pure `Placer` with no I/O.
//!
//! ```sh
//! cargo run --release -p sched-bench --bin placement [-- ROUNDS]
//! ```
//!
//! There is no peer to run side by side here (Nomad and kube-scheduler need their own
//! clusters), so the table puts the measured rate beside their published figures: Nomad's
//! ~1,500 placements/s (its 2-million-container challenge) and kube-scheduler's 100-300 pods/s.

use std::collections::BTreeMap;
use std::time::Instant;

use scheduler::placement::{Ask, NodeView, Placer};

const NODES: u64 = 1_000;
const SERVICES: u32 = 100;
const TASKS_PER_SERVICE: u32 = 100;

fn nodes() -> Vec<NodeView> {
    (1..=NODES)
        .map(|id| NodeView {
            id,
            ready: id % 97 != 0, // a few nodes are down
            cpu_millis: 4_000 + (id % 4) as u32 * 1_000,
            memory_mib: 8_192,
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", id % 3))]),
            used_cpu_millis: 0,
            used_memory_mib: 0,
            tasks_per_service: BTreeMap::new(),
        })
        .collect()
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let mut placer = Placer::new(nodes());
        let start = Instant::now();
        let mut placed = 0u64;
        for s in 0..SERVICES {
            let mut constraints = BTreeMap::new();
            if s % 10 == 0 {
                constraints.insert("zone".to_string(), "z1".to_string());
            }
            let ask = Ask { service: format!("svc-{s}"), cpu_millis: 250, memory_mib: 256, constraints, count: TASKS_PER_SERVICE };
            let p = placer.place(&ask);
            assert_eq!(p.unplaced, 0, "{:?}", p.reason);
            placed += p.nodes.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        rates.push(placed as f64 / secs);
        // Spread check: no service has more than one task on a node while nodes are free.
        let max_per_node = placer.nodes().iter().flat_map(|n| n.tasks_per_service.values()).max().copied().unwrap_or(0);
        assert_eq!(max_per_node, 1, "100 tasks of a service on ~990 nodes spread one per node");
    }
    rates.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let median = rates[rates.len() / 2];
    println!("{} tasks ({SERVICES} services x {TASKS_PER_SERVICE}) on {NODES} nodes, {rounds} rounds", SERVICES * TASKS_PER_SERVICE);
    println!();
    println!("| scheduler | placements/s | ratio to sched |");
    println!("|---|---:|---:|");
    println!("| sched Placer (measured, median) | {median:.0} | 1 |");
    println!("| Nomad (published, C2M run) | 1500 | {:.4} |", 1500.0 / median);
    println!("| kube-scheduler (published) | 100-300 | {:.5}-{:.5} |", 100.0 / median, 300.0 / median);
    println!();
    println!("min {:.0}/s, max {:.0}/s", rates[0], rates[rates.len() - 1]);
}
