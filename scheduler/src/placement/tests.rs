use std::collections::BTreeMap;

use super::*;

fn node(id: u64, cpu: u32, mem: u32) -> NodeView {
    NodeView {
        id,
        ready: true,
        cpu_millis: cpu,
        memory_mib: mem,
        labels: BTreeMap::new(),
        used_cpu_millis: 0,
        used_memory_mib: 0,
        tasks_per_service: BTreeMap::new(),
    }
}

fn ask(count: u32, cpu: u32, mem: u32) -> Ask {
    Ask { service: "web".into(), cpu_millis: cpu, memory_mib: mem, constraints: BTreeMap::new(), count }
}

fn per_node(p: &Placement) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for n in &p.nodes {
        *m.entry(*n).or_insert(0) += 1;
    }
    m
}

#[test]
fn six_tasks_spread_two_two_two() {
    let mut placer = Placer::new(vec![node(1, 4000, 8192), node(2, 4000, 8192), node(3, 4000, 8192)]);
    let p = placer.place(&ask(6, 250, 128));
    assert_eq!(p.unplaced, 0);
    assert_eq!(per_node(&p), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn spread_counts_tasks_already_running() {
    let mut busy = node(1, 4000, 8192);
    busy.tasks_per_service.insert("web".into(), 2);
    let mut placer = Placer::new(vec![busy, node(2, 4000, 8192)]);
    let p = placer.place(&ask(2, 100, 64));
    assert_eq!(p.nodes, vec![2, 2]);
}

#[test]
fn down_nodes_and_label_mismatches_take_nothing() {
    let mut down = node(1, 4000, 8192);
    down.ready = false;
    let mut ssd = node(3, 4000, 8192);
    ssd.labels.insert("disk".into(), "ssd".into());
    let mut placer = Placer::new(vec![down, node(2, 4000, 8192), ssd]);
    let mut a = ask(3, 100, 64);
    a.constraints.insert("disk".into(), "ssd".into());
    let p = placer.place(&a);
    assert_eq!(p.nodes, vec![3, 3, 3]);
}

#[test]
fn tasks_that_fit_nowhere_stay_unplaced_with_the_reason() {
    let mut placer = Placer::new(vec![node(1, 1000, 1024), node(2, 300, 4096)]);
    let p = placer.place(&ask(3, 500, 512));
    assert_eq!(p.nodes.len(), 2, "two fit on node 1");
    assert_eq!(p.unplaced, 1);
    let reason = p.reason.unwrap();
    assert!(reason.contains("2 lack 500m CPU (most free: 300m, on node 2)"), "{reason}");
}

#[test]
fn a_constraint_no_node_satisfies_names_the_labels() {
    let mut placer = Placer::new(vec![node(1, 1000, 1024)]);
    let mut a = ask(1, 100, 64);
    a.constraints.insert("disk".into(), "ssd".into());
    let p = placer.place(&a);
    assert_eq!(p.unplaced, 1);
    assert_eq!(p.reason.as_deref(), Some("no node fits (1 nodes: 1 without the required labels disk=ssd)"));
}

#[test]
fn memory_is_a_limit_too() {
    let mut placer = Placer::new(vec![node(1, 8000, 256)]);
    let p = placer.place(&ask(3, 100, 128));
    assert_eq!(p.nodes.len(), 2);
    assert!(p.reason.unwrap().contains("lack 128 MiB memory"));
}

#[test]
fn an_empty_cluster_says_so() {
    let p = Placer::new(vec![]).place(&ask(1, 100, 64));
    assert_eq!(p.reason.as_deref(), Some("no nodes have registered"));
}

#[test]
fn placement_is_deterministic() {
    let nodes: Vec<_> = (1..=20).map(|i| node(i, 2000 + (i as u32 % 3) * 500, 4096)).collect();
    let a = Placer::new(nodes.clone()).place(&ask(50, 150, 100));
    let mut reversed = nodes;
    reversed.reverse();
    let b = Placer::new(reversed).place(&ask(50, 150, 100));
    assert_eq!(a, b);
}
