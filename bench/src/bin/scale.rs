//! The control plane at scale (issue 17 point 3): 3 real `sched server` processes (production
//! timing: 100 ms ticks, 1 s election timeout) and N simulated nodes speaking the real agent
//! protocol over mutual TLS (`sched_tests::sim_nodes`: no containers), on this machine.
//!
//! ```text
//! cargo build --release -p sched -p sched-bench
//! target/release/scale --nodes 1000 --services 100 --tasks 100   # --cutoff-secs 300 by default
//! target/release/scale --nodes 200 --services 20 --tasks 100 --cutoff-secs 30
//! ```
//!
//! It prints: how long N nodes take to be ready; services x tasks applied (over gRPC, 8 at
//! once) until every task is reported running, and the rate; each server's CPU (share of one
//! core) and resident memory over 20 s of steady heartbeats with everything running; a
//! follower cut off (SIGSTOP) for `--cutoff-secs` while every service is scaled down by a tenth
//! and back, over and over, then let back (SIGCONT): time until it has applied all the leader
//! had committed, and whether a snapshot (its size) or the log brought it there (the servers
//! snapshot every 10,000 entries here, not every 100,000 as by default, so that 5 minutes of
//! churn outrun the kept log and the snapshot path is the one measured); a leader
//! kill: time to the next leader, and whether any node is marked down within a node timeout
//! after it. Nomad's published 2-million-container run placed about 1,500 tasks/s end to end;
//! the issue's goal is 10,000 tasks on 1,000 nodes in under 10 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use proto::sched::v1 as pb;
use proto::sched::v1::cluster_api_client::ClusterApiClient;
use proto::sched::v1::service_api_client::ServiceApiClient;
use sched_bench::process::{cpu_seconds, rss_mib};
use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions};
use sched_tests::sim_nodes::{SimNodes, SimOptions};
use transport::{Profile, Transport};

struct Options {
    nodes: usize,
    services: usize,
    tasks: usize,
    heartbeat: Duration,
    /// How long a follower is cut off (SIGSTOP) under churn; zero skips that part.
    cutoff: Duration,
}

fn parse_options() -> Result<Options> {
    let mut options =
        Options { nodes: 1000, services: 100, tasks: 100, heartbeat: Duration::from_secs(2), cutoff: Duration::from_secs(300) };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--nodes" => options.nodes = value("--nodes")?.parse().context("--nodes takes a number")?,
            "--services" => options.services = value("--services")?.parse().context("--services takes a number")?,
            "--tasks" => options.tasks = value("--tasks")?.parse().context("--tasks takes a number")?,
            "--heartbeat-ms" => options.heartbeat = Duration::from_millis(value("--heartbeat-ms")?.parse().context("--heartbeat-ms")?),
            "--cutoff-secs" => {
                options.cutoff = Duration::from_secs(value("--cutoff-secs")?.parse().context("--cutoff-secs takes seconds")?)
            }
            "--help" | "-h" => {
                println!(
                    "usage: scale [--nodes N (1000)] [--services N (100)] [--tasks N per service (100)] [--heartbeat-ms MS (2000)] \
                     [--cutoff-secs S: a follower stopped under churn, then its catch-up (300; 0 skips it)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    ensure!(options.nodes > 0 && options.services > 0 && options.tasks > 0, "counts must be positive");
    Ok(options)
}

async fn count_running(admin: &Transport, address: &str) -> Result<(usize, usize)> {
    let channel = admin.connect(address, Profile::CLI_CALL).await?;
    let tasks =
        ServiceApiClient::new(channel).list_tasks(pb::ListTasksRequest { service: String::new(), stale: true }).await?.into_inner().tasks;
    let running = tasks.iter().filter(|t| t.observed_state == pb::TaskState::Running as i32).count();
    Ok((tasks.len(), running))
}

/// A server's own view of the cluster (`ClusterApi.Members`, answered after a read-index
/// round: its applied index is at least the leader's commit index when it was asked).
async fn member_view(admin: &Transport, address: &str) -> Result<pb::MembersResponse> {
    let channel = admin.connect(address, Profile::CLI_CALL).await?;
    Ok(ClusterApiClient::new(channel).members(pb::MembersRequest {}).await?.into_inner())
}

/// Sets every service's count (8 scales at once, spread over `servers`); the number of scales.
async fn scale_all(admin: &Transport, servers: &[String], services: usize, count: impl Fn(usize) -> u32) -> Result<u64> {
    let mut scales = tokio::task::JoinSet::new();
    for s in 0..services {
        let (admin, address, count) = (admin.clone(), servers[s % servers.len()].clone(), count(s));
        scales.spawn(async move {
            let channel = admin.connect(&address, Profile::CLI_CALL).await?;
            ServiceApiClient::new(channel).scale(pb::ScaleRequest { name: format!("svc-{s}"), count }).await?;
            anyhow::Ok(())
        });
        while scales.len() >= 8 {
            scales.join_next().await.context("a scale")???;
        }
    }
    while let Some(done) = scales.join_next().await {
        done??;
    }
    Ok(services as u64)
}

/// `kill -SIG PID` (SIGSTOP and SIGCONT cut a server off and let it back).
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// The `bytes=N` of the last snapshot a server's log says it installed.
fn installed_snapshot_bytes(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("installed a snapshot from the leader"))?;
    line.split_whitespace().find_map(|field| field.strip_prefix("bytes=")?.parse().ok())
}

fn main() -> Result<()> {
    let options = parse_options()?;
    // Snapshots often enough that the cut-off follower needs one (see the module doc).
    let mut cluster = Cluster::start(ClusterOptions { tick_ms: 100, snapshot_every: 10_000, keep_entries: 1_000, ..Default::default() });
    let runtime = tokio::runtime::Runtime::new()?;
    let servers: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let admin = cluster.admin_transport();
    let sim_options = SimOptions { heartbeat: options.heartbeat, ..Default::default() };
    let mut rows: Vec<(String, String)> = Vec::new();

    let started = Instant::now();
    let sim = runtime.block_on(async { SimNodes::start(&servers, &cluster.dir().join("ca"), options.nodes, sim_options) });
    loop {
        let nodes = cluster.sched_json(&["get", "nodes", "--stale"]);
        let ready = nodes.as_array().map_or(0, |n| n.iter().filter(|n| n["status"] == "ready").count());
        if ready == options.nodes {
            break;
        }
        ensure!(started.elapsed() < Duration::from_secs(300), "only {ready} of {} nodes ready after 5 minutes", options.nodes);
        std::thread::sleep(Duration::from_millis(200));
    }
    rows.push((format!("{} nodes registered and ready", options.nodes), format!("{:.2} s", started.elapsed().as_secs_f64())));

    let total = options.services * options.tasks;
    let applied = Instant::now();
    runtime.block_on(async {
        let mut applies = tokio::task::JoinSet::new();
        for s in 0..options.services {
            let (admin, address, tasks) = (admin.clone(), servers[s % servers.len()].clone(), options.tasks as u32);
            applies.spawn(async move {
                let spec = pb::ServiceSpec {
                    name: format!("svc-{s}"),
                    image: format!("{CLOSED_REGISTRY}/busybox:1.36"),
                    cpu_millis: 10,
                    memory_mib: 16,
                    count: tasks,
                    ..Default::default()
                };
                let channel = admin.connect(&address, Profile::CLI_CALL).await?;
                ServiceApiClient::new(channel).apply(pb::ApplyRequest { spec: Some(spec) }).await?;
                anyhow::Ok(())
            });
            while applies.len() >= 8 {
                applies.join_next().await.context("an apply")???;
            }
        }
        while let Some(done) = applies.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let leader_address = cluster.servers[&leader].address.clone();
    loop {
        let (placed, running) = runtime.block_on(count_running(&admin, &leader_address))?;
        if placed == total && running == total {
            break;
        }
        ensure!(applied.elapsed() < Duration::from_secs(600), "{running} of {total} tasks running after 10 minutes ({placed} placed)");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = applied.elapsed();
    rows.push((
        format!("{} services x {} tasks applied -> all {total} running", options.services, options.tasks),
        format!("{:.2} s ({:.0} tasks/s)", took.as_secs_f64(), total as f64 / took.as_secs_f64()),
    ));

    // Steady state: every node heartbeating with its tasks' metrics.
    let window = Duration::from_secs(20);
    let pids: BTreeMap<u64, u32> = cluster.servers.keys().filter_map(|id| cluster.pid(*id).map(|pid| (*id, pid))).collect();
    let before: BTreeMap<u64, f64> = pids.iter().filter_map(|(id, pid)| cpu_seconds(*pid).map(|c| (*id, c))).collect();
    std::thread::sleep(window);
    for (id, pid) in &pids {
        let cpu = cpu_seconds(*pid).zip(before.get(id)).map(|(after, before)| (after - before) / window.as_secs_f64());
        let role = if *id == leader { "leader" } else { "follower" };
        rows.push((
            format!("server {id} ({role}), {} nodes heartbeating every {:?}", options.nodes, options.heartbeat),
            format!("CPU {:.2} cores, RSS {:.0} MiB", cpu.unwrap_or(f64::NAN), rss_mib(*pid).unwrap_or(f64::NAN)),
        ));
    }

    // A follower cut off under churn, then its catch-up.
    if !options.cutoff.is_zero() {
        let follower = *cluster.servers.keys().find(|id| **id != leader).context("a follower")?;
        let follower_address = cluster.servers[&follower].address.clone();
        let others: Vec<String> = servers.iter().filter(|a| **a != follower_address).cloned().collect();
        let pid = cluster.pid(follower).context("the follower runs")?;
        let before = runtime.block_on(member_view(&admin, &leader_address))?;
        let snapshots_before = cluster.log_of(follower).matches("installed a snapshot from the leader").count();
        signal(pid, "STOP")?;
        let cut = Instant::now();
        // Churn: every pass scales each service down by a tenth, the next pass back up.
        let (mut scales, mut pass) = (0, 0);
        while cut.elapsed() < options.cutoff || pass % 2 == 1 {
            let count = if pass % 2 == 0 { options.tasks - options.tasks / 10 } else { options.tasks } as u32;
            scales += runtime.block_on(scale_all(&admin, &others, options.services, |_| count))?;
            pass += 1;
        }
        let at_resume = runtime.block_on(member_view(&admin, &leader_address))?;
        signal(pid, "CONT")?;
        let stopped = cut.elapsed();
        let resumed = Instant::now();
        loop {
            let view =
                runtime.block_on(async { tokio::time::timeout(Duration::from_secs(2), member_view(&admin, &follower_address)).await });
            if view.is_ok_and(|v| v.is_ok_and(|v| v.applied_index >= at_resume.commit_index)) {
                break;
            }
            ensure!(resumed.elapsed() < Duration::from_secs(300), "follower {follower} not caught up 5 minutes after it was let back");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caught_up = resumed.elapsed();
        let log = cluster.log_of(follower);
        let how = if log.matches("installed a snapshot from the leader").count() > snapshots_before {
            let bytes = installed_snapshot_bytes(&log).unwrap_or(0);
            format!("by a snapshot of {:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
        } else {
            "from the log (no snapshot needed)".to_owned()
        };
        rows.push((
            format!(
                "follower {follower} stopped {:.0} s under churn ({scales} scales, {} log entries)",
                stopped.as_secs_f64(),
                at_resume.commit_index - before.commit_index
            ),
            format!("caught up {:.2} s after it was let back, {how}", caught_up.as_secs_f64()),
        ));
    }

    // A leader kill.
    let killed = Instant::now();
    cluster.kill(leader);
    let new = cluster.wait_for_leader(Duration::from_secs(30));
    let elected = killed.elapsed();
    let mut down = 0;
    while killed.elapsed() < Duration::from_secs(13) {
        let nodes = cluster.sched_json(&["get", "nodes", "--stale"]);
        down = down.max(nodes.as_array().map_or(0, |n| n.iter().filter(|n| n["status"] != "ready").count()));
        std::thread::sleep(Duration::from_millis(500));
    }
    rows.push((
        format!("leader {leader} killed -> leader {new}"),
        format!("{:.2} s; nodes marked down within 13 s: {down}", elected.as_secs_f64()),
    ));
    drop(sim);

    let width = rows.iter().map(|(what, _)| what.len()).max().unwrap_or(0);
    println!("{:width$}  result", "measure");
    for (what, result) in rows {
        println!("{what:width$}  {result}");
    }
    Ok(())
}
