//! Durability and availability on a real 3-server cluster: kill -9 the leader during a stream
//! of applies (a new leader takes writes within 2 s, every acknowledged apply survives), then
//! kill -9 every server and restart them (nothing acknowledged is lost).

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sched_tests::cluster::{Cluster, ClusterOptions, apply_anywhere, service_names};

#[test]
fn leader_killed_during_applies_loses_no_acknowledged_write_and_all_survive_full_restart() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let addresses: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let admin = cluster.admin_transport();

    // The writer acknowledges each apply on a channel, with the time it was acknowledged.
    let (acked_tx, acked_rx) = mpsc::channel::<(String, Instant)>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for i in 0..400 {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            let name = format!("svc-{i}");
            if runtime.block_on(apply_anywhere(&admin, &addresses, &name)) {
                acked_tx.send((name, Instant::now())).unwrap();
            }
        }
    });

    let mut acked = BTreeSet::new();
    while acked.len() < 20 {
        let (name, _) = acked_rx.recv_timeout(Duration::from_secs(10)).expect("applies are acknowledged");
        acked.insert(name);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    cluster.kill(leader);
    let killed_at = Instant::now();
    let mut first_after_kill = None;
    let mut after_kill = 0;
    while after_kill < 20 {
        let (name, at) = acked_rx.recv_timeout(Duration::from_secs(10)).expect("the cluster takes writes again after losing its leader");
        if at > killed_at {
            first_after_kill.get_or_insert(at - killed_at);
            after_kill += 1;
        }
        acked.insert(name);
    }
    stop_tx.send(()).unwrap();
    writer.join().unwrap();
    acked.extend(acked_rx.try_iter().map(|(name, _)| name));
    let recovery = first_after_kill.unwrap();
    assert!(recovery < Duration::from_secs(2), "the first write after the leader died took {recovery:?}");

    let new_leader = cluster.wait_for_leader(Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    let survivors = cluster.addresses();
    let present = service_names(&cluster, &survivors, false).expect("the survivors answer");
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged applies missing after failover: {lost:?}");

    // Everything dies at once, then comes back from disk.
    let ids: Vec<u64> = cluster.servers.keys().copied().collect();
    for id in &ids {
        cluster.kill(*id);
    }
    for id in &ids {
        cluster.restart(*id);
    }
    cluster.wait_for_leader(Duration::from_secs(10));
    for server in cluster.servers.values() {
        let present = service_names(&cluster, &server.address, false).expect("every restarted server answers");
        let lost: Vec<_> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "server {} lost acknowledged applies after a full restart: {lost:?}", server.id);
    }
}

#[test]
fn frozen_leader_is_replaced_and_rejoins_as_follower_without_losing_writes() {
    let cluster = Cluster::start(ClusterOptions::default());
    let admin = cluster.admin_transport();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let all: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    assert!(runtime.block_on(apply_anywhere(&admin, &all, "before")));
    let old = cluster.wait_for_leader(Duration::from_secs(5));
    let others: Vec<String> = cluster.servers.values().filter(|s| s.id != old).map(|s| s.address.clone()).collect();

    // SIGSTOP: the leader is cut off without knowing it; its sockets stay open.
    cluster.pause(old, true);
    let frozen_at = Instant::now();
    assert!(runtime.block_on(apply_anywhere(&admin, &others, "during")), "the majority takes writes without the frozen leader");
    let took = frozen_at.elapsed();
    assert!(took < Duration::from_secs(2), "the first write without the frozen leader took {took:?}");

    cluster.pause(old, false);
    // Back, it learns the new term and follows; its own copy catches up.
    let address = cluster.servers[&old].address.clone();
    let start = Instant::now();
    loop {
        let seen = service_names(&cluster, &address, true).unwrap_or_default();
        if seen.contains("before") && seen.contains("during") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "server {old} did not catch up after SIGCONT: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(runtime.block_on(apply_anywhere(&admin, std::slice::from_ref(&address), "after")), "writes through the old leader work again");
    let names = service_names(&cluster, &cluster.addresses(), false).unwrap();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["after", "before", "during"]);
}
