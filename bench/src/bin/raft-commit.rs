//! Raft commit latency, throughput and leader failover of a 3-server `sched server` cluster on
//! loopback, beside etcd's documented figures.
//!
//! How to run:
//!
//! ```text
//! cargo build --release -p sched -p sched-bench
//! target/release/raft-commit                  # 2000 sequential writes, 64 writers for 5 s, 3 failovers
//! ```
//!
//! Every write is a `ServiceApi.Scale` (a real state-machine command: proposed, appended and
//! fsynced on a majority, applied, answered) sent over gRPC:
//! - sequential latency, one client, to the leader and (forwarded) to a follower;
//! - throughput: 64 concurrent clients spread over all servers for 5 s;
//! - failover: SIGKILL the leader, time until a write succeeds again, restart; 3 rounds. The
//!   servers run with etcd's default timing (100 ms heartbeat, 1 s election timeout).
//!
//! etcd's figures are from its documentation (op-guide/performance: "a three member etcd cluster
//! finishes a request in less than one millisecond under light load, and can complete more than
//! 30,000 requests per second under heavy load", on GCE n-4 class machines; tuning: 100 ms
//! heartbeat, 1000 ms election timeout); they were not measured on this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use sched_tests::cluster::{Cluster, ClusterOptions, apply_anywhere};
use tonic::transport::Channel;
use transport::{Profile, Transport};

const SEQUENTIAL: usize = 2000;
const FORWARDED: usize = 500;
const WRITERS: usize = 64;
const LOAD_TIME: Duration = Duration::from_secs(5);
const FAILOVERS: usize = 3;

/// A client of `address` over mutual TLS with the admin's credentials, as `sched` calls.
async fn connect(admin: &Transport, address: &str) -> Result<ServiceApiClient<Channel>> {
    let channel = admin.connect(address, Profile::CLI_STREAM).await?;
    Ok(ServiceApiClient::new(channel))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn sequential(admin: &Transport, address: &str, n: usize) -> Result<Vec<Duration>> {
    let mut client = connect(admin, address).await?;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        client.scale(pb::ScaleRequest { name: "bench".into(), count: 1 + (i % 2) as u32 }).await.context("scale")?;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

async fn throughput(admin: &Transport, addresses: &[String]) -> Result<f64> {
    for w in 0..WRITERS {
        if !apply_anywhere(admin, addresses, &format!("bench-{w}")).await {
            bail!("could not create service bench-{w}");
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = connect(admin, &addresses[w % addresses.len()]).await?;
        let (done, stop) = (done.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if client.scale(pb::ScaleRequest { name: format!("bench-{w}"), count: 1 + i % 2 }).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(LOAD_TIME).await;
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for w in writers {
        w.await?;
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions { tick_ms: 100, ..Default::default() });
    let runtime = tokio::runtime::Runtime::new()?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = *cluster.servers.keys().find(|id| **id != leader).context("a follower")?;
    let leader_address = cluster.servers[&leader].address.clone();
    let follower_address = cluster.servers[&follower].address.clone();
    let addresses: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let admin = cluster.admin_transport();

    let (direct, forwarded, rate) = runtime.block_on(async {
        if !apply_anywhere(&admin, &addresses, "bench").await {
            bail!("could not create the bench service");
        }
        let direct = sequential(&admin, &leader_address, SEQUENTIAL).await?;
        let forwarded = sequential(&admin, &follower_address, FORWARDED).await?;
        let rate = throughput(&admin, &addresses).await?;
        Ok((direct, forwarded, rate))
    })?;

    let mut failovers = Vec::new();
    for round in 0..FAILOVERS {
        let leader = cluster.wait_for_leader(Duration::from_secs(10));
        cluster.kill(leader);
        let killed = Instant::now();
        let others: Vec<String> = cluster.servers.values().filter(|s| s.id != leader).map(|s| s.address.clone()).collect();
        if !runtime.block_on(apply_anywhere(&admin, &others, &format!("failover-{round}"))) {
            bail!("no write succeeded after killing leader {leader}");
        }
        failovers.push(killed.elapsed());
        cluster.restart(leader);
        std::thread::sleep(Duration::from_secs(2));
    }
    failovers.sort();

    println!("Raft commit on a 3-server sched cluster (separate processes, 127.0.0.1, raft-engine fsync per Ready)");
    println!();
    println!("| measure | sched | etcd (documented) |");
    println!("|---|---|---|");
    println!("| write latency p50, 1 client, to the leader (ms) | {} | < 1 (light load) |", ms(percentile(&direct, 0.5)));
    println!("| write latency p99, 1 client, to the leader (ms) | {} | — |", ms(percentile(&direct, 0.99)));
    println!("| write latency p50, 1 client, via a follower (ms) | {} | — |", ms(percentile(&forwarded, 0.5)));
    println!("| write latency p99, 1 client, via a follower (ms) | {} | — |", ms(percentile(&forwarded, 0.99)));
    println!("| writes/s, {WRITERS} clients over all servers | {rate:.0} | > 30,000 (heavy load, n-4 class VMs) |");
    println!(
        "| leader failover: kill -9 to next acknowledged write, median of {FAILOVERS} (ms) | {} | election timeout 1000 (default) |",
        ms(failovers[failovers.len() / 2])
    );
    println!("| leader failover: min / max (ms) | {} / {} | — |", ms(failovers[0]), ms(failovers[failovers.len() - 1]));
    Ok(())
}
