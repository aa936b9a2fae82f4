//! A follower cut off while the others commit and compact their logs rejoins and catches up
//! through a snapshot, since the entries it misses are gone. (It is killed rather than
//! SIGSTOPped: a stopped process still has the leader's in-flight appends buffered in its
//! sockets and would catch up from those.)

use std::time::{Duration, Instant};

use sched_tests::cluster::{Cluster, ClusterOptions, apply_anywhere, service_names};

#[test]
fn partitioned_follower_catches_up_by_snapshot_after_compaction() {
    let mut cluster = Cluster::start(ClusterOptions { servers: 3, snapshot_every: 20, keep_entries: 5, ..Default::default() });
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    let follower = *cluster.servers.keys().find(|id| **id != leader).unwrap();
    let others: Vec<String> = cluster.servers.values().filter(|s| s.id != follower).map(|s| s.address.clone()).collect();

    cluster.kill(follower);
    let admin = cluster.admin_transport();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let names: Vec<String> = (0..80).map(|i| format!("svc-{i}")).collect();
    for name in &names {
        assert!(runtime.block_on(apply_anywhere(&admin, &others, name)), "apply {name} with one follower stopped");
    }
    assert!(cluster.log_of(leader).contains("saved a snapshot and compacted the log"), "the leader compacted its log");
    cluster.restart(follower);

    let address = cluster.servers[&follower].address.clone();
    let start = Instant::now();
    loop {
        // A stale read shows what the follower itself has applied.
        let seen = service_names(&cluster, &address, true).unwrap_or_default();
        if names.iter().all(|n| seen.contains(n)) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "server {follower} did not catch up: it has {} of {}", seen.len(), names.len());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cluster.log_of(follower).contains("installed a snapshot from the leader"),
        "server {follower} caught up without a snapshot, so the test did not prove snapshot catch-up"
    );
    // And it keeps following the log after the snapshot.
    assert!(runtime.block_on(apply_anywhere(&admin, std::slice::from_ref(&address), "after-snapshot")));
    let start = Instant::now();
    while !service_names(&cluster, &address, true).unwrap_or_default().contains("after-snapshot") {
        assert!(start.elapsed() < Duration::from_secs(5), "server {follower} stopped following after the snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
}
