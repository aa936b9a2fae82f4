//! Servers are removed and added at runtime with `sched cluster leave|join`.

use std::time::{Duration, Instant};

use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions, service_names, stderr};

fn member_ids(cluster: &Cluster) -> Vec<u64> {
    let members = cluster.sched_json(&["cluster", "members"]);
    members["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect()
}

#[test]
fn remove_a_server_then_add_it_back_empty_and_it_catches_up() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let example = cluster.example_service_file();
    cluster.sched_ok(&["apply", example.to_str().unwrap()]);
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    let gone = *cluster.servers.keys().find(|id| **id != leader).unwrap();

    assert_eq!(cluster.sched_ok(&["cluster", "leave", &gone.to_string()]).trim(), format!("server {gone} removed from the cluster"));
    let mut expected: Vec<u64> = cluster.servers.keys().copied().filter(|id| *id != gone).collect();
    assert_eq!(member_ids(&cluster), expected);
    cluster.kill(gone);
    // Two voters of two still commit.
    let second = cluster.service_file("second", &format!("{CLOSED_REGISTRY}/busybox:1.36"), 1);
    cluster.sched_ok(&["apply", second.to_str().unwrap()]);

    let out = cluster.sched(&["cluster", "leave", "42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("server 42 is not a member"), "{}", stderr(&out));
    let out = cluster.sched(&["cluster", "join", "7", "not-an-address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not HOST:PORT"), "{}", stderr(&out));

    // The same id comes back as a new, empty server at a new address.
    let address = cluster.spawn_joining(gone);
    let joined = cluster.sched_ok(&["cluster", "join", &gone.to_string(), &address]);
    assert_eq!(joined.trim(), format!("server {gone} at {address} is a member"));
    expected.push(gone);
    expected.sort();
    assert_eq!(member_ids(&cluster), expected);
    let start = Instant::now();
    loop {
        let seen = service_names(&cluster, &address, true).unwrap_or_default();
        if seen.contains("quotes") && seen.contains("second") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the re-added server did not catch up: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It is a full voter: with another server gone, the cluster still commits.
    let other = *cluster.servers.keys().find(|id| **id != gone && **id != cluster.wait_for_leader(Duration::from_secs(5))).unwrap();
    cluster.kill(other);
    let third = cluster.service_file("third", &format!("{CLOSED_REGISTRY}/busybox:1.36"), 1);
    cluster.sched_ok(&["apply", third.to_str().unwrap()]);
    assert!(service_names(&cluster, &address, false).unwrap().contains("third"));
}

#[test]
fn removing_the_leader_lets_the_others_elect_a_new_one() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    assert_eq!(cluster.sched_ok(&["cluster", "leave", &leader.to_string()]).trim(), format!("server {leader} removed from the cluster"));
    // The removed server keeps running but goes quiet; the other two elect a leader and commit.
    let start = Instant::now();
    let file = cluster.service_file("after-leave", &format!("{CLOSED_REGISTRY}/busybox:1.36"), 1);
    loop {
        let out = cluster.sched(&["apply", file.to_str().unwrap()]);
        if out.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no write after removing the leader: {}", stderr(&out));
    }
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    let remaining: Vec<u64> = cluster.servers.keys().copied().filter(|id| *id != leader).collect();
    assert_eq!(member_ids(&cluster), remaining);
    cluster.kill(leader);
}
