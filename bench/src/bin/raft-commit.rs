//! Raft commit latency, throughput and leader failover of a 3-server `sched server` cluster
//! beside a 3-member etcd cluster, both on loopback and on the same disk, measured in one run.
//!
//! How to run (`scripts/install-bench-deps.sh` installs etcd-server):
//!
//! ```text
//! cargo build --release -p sched -p sched-bench
//! target/release/raft-commit                    # 3 rounds of 5 s per point, 3 failovers each
//! target/release/raft-commit --rounds 1 --seconds 3 --failovers 1
//! ```
//!
//! A sched write is a `ServiceApi.Scale` (a real state-machine command: proposed, appended and
//! fsynced on a majority, applied, answered) over gRPC with mutual TLS, as `sched` calls; an
//! etcd write is a `KV.Put` of a 16-byte key over etcd's gRPC API, by default with mutual TLS
//! too (clients and peers, certificates from a CA made for the run; `--etcd-plaintext` runs it
//! as etcd's default, plain HTTP/2). A sched client either scales its service to the count it
//! has, one Raft entry per write like a put, or flips it between 1 and 2 tasks, so that the
//! leader's reconciler follows each write with commands of its own. By default both are
//! measured, each point of each round beside the same etcd measurement (`--sched-write
//! same|flip` runs one of them).
//! Both run with etcd's default timing (100 ms heartbeat, 1 s election timeout). The points:
//! - 1 client to the leader, 1 client through a follower (which forwards, in both systems);
//! - 64 and 256 concurrent clients spread over the three members;
//!
//! each a closed loop (a client sends its next write when the last is answered) for the
//! round's seconds, every client on its own HTTP/2 connection. The rounds alternate which
//! system goes first; the table gives each point's median over the rounds. Then failover:
//! SIGKILL the leader, time until a write through another member succeeds, restart it.
//!
//! Beside each point's writes/s it gives the CPU time the three servers (or members) spent per
//! write, read from `/proc`: on a machine where both are CPU-bound that is what sets the ratio.
//! `--clients N` (repeatable) runs only the points with N clients.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use sched_bench::etcd::{self, EtcdCluster, KvClient};
use sched_bench::process::cpu_seconds_of;
use sched_bench::stats::{ms, percentile};
use sched_tests::cluster::{Cluster, ClusterOptions, apply_anywhere};
use tonic::transport::Channel;
use transport::{Profile, Transport};

/// Concurrent clients of the throughput points.
const MANY: [usize; 2] = [64, 256];

/// One client of one system: sends a write and waits for its answer.
trait Writer: Send + 'static {
    fn write(&mut self, i: u64) -> impl Future<Output = Result<()>> + Send;
}

/// Which `Scale` a sched client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SchedWrite {
    /// Between 1 and 2 tasks: the leader's reconciler follows each write with a command of
    /// its own (a pending task created or stopped), so a write costs about two Raft entries.
    Flip,
    /// To the count the service has (1): committed, applied and answered like any write, and
    /// nothing for the controllers to do after it, so one Raft entry per write, as an etcd put.
    Same,
}

impl SchedWrite {
    fn count(self, i: u64) -> u32 {
        match self {
            SchedWrite::Flip => 1 + (i % 2) as u32,
            SchedWrite::Same => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            SchedWrite::Flip => "Scale between 1 and 2 tasks (with the reconciler's follow-up: about 2 Raft entries per write)",
            SchedWrite::Same => "Scale to the current count (1 Raft entry per write, no follow-up)",
        }
    }

    /// Its name in the table.
    fn label(self) -> &'static str {
        match self {
            SchedWrite::Flip => "scale 1<->2 + reconciler",
            SchedWrite::Same => "one entry per write",
        }
    }
}

struct SchedWriter {
    client: ServiceApiClient<Channel>,
    service: String,
    kind: SchedWrite,
}

impl Writer for SchedWriter {
    async fn write(&mut self, i: u64) -> Result<()> {
        let request = pb::ScaleRequest { name: self.service.clone(), count: self.kind.count(i) };
        self.client.scale(request).await.context("scale")?;
        Ok(())
    }
}

struct EtcdWriter {
    client: KvClient<Channel>,
    id: usize,
}

impl Writer for EtcdWriter {
    async fn write(&mut self, i: u64) -> Result<()> {
        self.client.put(etcd::put_request(self.id, i)).await.context("put")?;
        Ok(())
    }
}

/// What one point of one system gave.
#[derive(Clone, Debug)]
struct Point {
    writes_per_sec: f64,
    p50: Duration,
    p99: Duration,
    failed: u64,
    /// CPU time of the system's three processes per acknowledged write.
    cpu_per_write: Duration,
    /// CPU time of this program (the clients) per acknowledged write.
    client_cpu_per_write: Duration,
}

impl Point {
    /// The point in one line, for the progress output.
    fn line(&self) -> String {
        format!(
            "{:.0}/s p50 {} p99 {} cpu/write {} µs, clients {} µs ({} failed)",
            self.writes_per_sec,
            ms(self.p50),
            ms(self.p99),
            self.cpu_per_write.as_micros(),
            self.client_cpu_per_write.as_micros(),
            self.failed
        )
    }
}

/// Runs `writers` in a closed loop for `time`; `pids` are the system's processes, whose CPU
/// time is counted over the loop.
async fn closed_loop<W: Writer>(writers: Vec<W>, time: Duration, pids: &[u32]) -> Result<Point> {
    let cpu_before = cpu_seconds_of(pids);
    let client_cpu_before = cpu_seconds_of(&[std::process::id()]);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut writer in writers {
        let (stop, failed) = (stop.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match writer.write(i).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds_of(pids) - cpu_before;
    let client_cpu = cpu_seconds_of(&[std::process::id()]) - client_cpu_before;
    latencies.sort();
    let per_write = |seconds: f64| Duration::from_secs_f64(seconds.max(0.0) / latencies.len().max(1) as f64);
    Ok(Point {
        cpu_per_write: per_write(cpu),
        client_cpu_per_write: per_write(client_cpu),
        writes_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        failed: failed.load(Ordering::Relaxed),
    })
}

/// The points measured, in table order: (label, clients, where they connect).
#[derive(Clone, Copy, Debug)]
enum Target {
    Leader,
    Follower,
    All,
}

fn points(only: &[usize]) -> Vec<(String, usize, Target)> {
    let mut points =
        vec![("1 client, to the leader".to_string(), 1, Target::Leader), ("1 client, via a follower".to_string(), 1, Target::Follower)];
    points.extend(MANY.iter().map(|&n| (format!("{n} clients over the 3 members"), n, Target::All)));
    points.retain(|(_, clients, _)| only.is_empty() || only.contains(clients));
    points
}

/// The members a point's clients connect to, in turn.
fn targets(all: &[String], leader: usize, target: Target) -> Vec<String> {
    match target {
        Target::Leader => vec![all[leader].clone()],
        Target::Follower => vec![all[(leader + 1) % all.len()].clone()],
        Target::All => all.to_vec(),
    }
}

struct Sched {
    cluster: Cluster,
    admin: Transport,
    addresses: Vec<String>,
}

impl Sched {
    fn leader(&self) -> usize {
        let id = self.cluster.wait_for_leader(Duration::from_secs(10));
        self.addresses.iter().position(|a| *a == self.cluster.servers[&id].address).expect("the leader is a member")
    }

    async fn point(&self, clients: usize, target: Target, time: Duration, kind: SchedWrite) -> Result<Point> {
        let to = targets(&self.addresses, self.leader(), target);
        let mut writers = Vec::new();
        for c in 0..clients {
            let channel = self.admin.connect(&to[c % to.len()], Profile::CLI_STREAM).await?;
            writers.push(SchedWriter { client: ServiceApiClient::new(channel), service: format!("bench-{c}"), kind });
        }
        let pids: Vec<u32> = self.cluster.servers.keys().filter_map(|id| self.cluster.pid(*id)).collect();
        closed_loop(writers, time, &pids).await
    }
}

async fn etcd_point(etcd: &EtcdCluster, clients: usize, target: Target, time: Duration) -> Result<Point> {
    let to = targets(&etcd.client_urls(), etcd.leader(Duration::from_secs(10)).await?, target);
    let mut writers = Vec::new();
    for c in 0..clients {
        writers.push(EtcdWriter { client: etcd.connect(&to[c % to.len()]).await?, id: c });
    }
    closed_loop(writers, time, &etcd.pids()).await
}

/// Kills sched's leader, times the next write acknowledged by another server, restarts it.
fn sched_failover(sched: &mut Sched, runtime: &tokio::runtime::Runtime, round: usize) -> Result<Duration> {
    let leader = sched.cluster.wait_for_leader(Duration::from_secs(10));
    sched.cluster.kill(leader);
    let killed = Instant::now();
    let others: Vec<String> = sched.cluster.servers.values().filter(|s| s.id != leader).map(|s| s.address.clone()).collect();
    if !runtime.block_on(apply_anywhere(&sched.admin, &others, &format!("failover-{round}"))) {
        bail!("no sched write succeeded after killing leader {leader}");
    }
    let took = killed.elapsed();
    sched.cluster.restart(leader);
    sched.cluster.wait_for_leader(Duration::from_secs(10));
    Ok(took)
}

/// Kills etcd's leader, times the next put acknowledged by another member, restarts it.
async fn etcd_failover(etcd: &mut EtcdCluster) -> Result<Duration> {
    let leader = etcd.leader(Duration::from_secs(10)).await?;
    let urls = etcd.client_urls();
    etcd.kill(leader);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    'retry: loop {
        for (i, url) in urls.iter().enumerate() {
            if i == leader {
                continue;
            }
            let put = async { etcd.connect(url).await?.put(etcd::put_request(0, 1)).await.map_err(anyhow::Error::from) };
            if tokio::time::timeout(Duration::from_millis(500), put).await.is_ok_and(|r| r.is_ok()) {
                break 'retry;
            }
        }
        if Instant::now() > deadline {
            bail!("no etcd put succeeded within 30 s of killing its leader");
        }
    }
    let took = killed.elapsed();
    etcd.restart(leader).await?;
    etcd.leader(Duration::from_secs(10)).await?;
    Ok(took)
}

fn median<T: Clone, K: PartialOrd>(values: &[T], key: impl Fn(&T) -> K) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| key(a).partial_cmp(&key(b)).expect("comparable"));
    sorted[sorted.len() / 2].clone()
}

struct Options {
    rounds: usize,
    seconds: u64,
    failovers: usize,
    etcd_security: etcd::Security,
    /// Run only the points with these many clients (all when empty).
    clients: Vec<usize>,
    /// The sched writes measured, each beside the same etcd measurement.
    sched_writes: Vec<SchedWrite>,
}

fn options() -> Result<Options> {
    let mut options = Options {
        rounds: 3,
        seconds: 5,
        failovers: 3,
        etcd_security: etcd::Security::MutualTls,
        clients: Vec::new(),
        sched_writes: vec![SchedWrite::Same, SchedWrite::Flip],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--etcd-plaintext" {
            options.etcd_security = etcd::Security::Plaintext;
            continue;
        }
        if flag == "--sched-write" {
            options.sched_writes = match args.next().as_deref() {
                Some("flip") => vec![SchedWrite::Flip],
                Some("same") => vec![SchedWrite::Same],
                Some("both") => vec![SchedWrite::Same, SchedWrite::Flip],
                other => bail!("--sched-write takes both, flip or same, got {other:?}"),
            };
            continue;
        }
        let mut value = || {
            args.next().with_context(|| format!("{flag} needs a value"))?.parse::<u64>().with_context(|| format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--rounds" => options.rounds = value()?.max(1) as usize,
            "--seconds" => options.seconds = value()?.max(1),
            "--failovers" => options.failovers = value()? as usize,
            "--clients" => {
                let clients = value()? as usize;
                if clients != 1 && !MANY.contains(&clients) {
                    bail!("--clients {clients}: the points have 1, {} clients", MANY.map(|n| n.to_string()).join(", "));
                }
                options.clients.push(clients);
            }
            "-h" | "--help" => {
                println!(
                    "raft-commit [--rounds N (3)] [--seconds S per point (5)] [--failovers N (3)] [--etcd-plaintext] [--clients N ...] [--sched-write both|flip|same]\n\n\
                     \x20 --rounds N       rounds of every point; the table gives medians\n\
                     \x20 --seconds S      how long each point of each round runs\n\
                     \x20 --failovers N    leader kills per system after the points (0: none)\n\
                     \x20 --etcd-plaintext etcd without TLS (its default); sched always uses mutual TLS\n\
                     \x20 --clients N      run only the points with N clients (1, 64 or 256; repeatable)\n\
                     \x20 --sched-write    same: Scale to the current count, one Raft entry per write (as an etcd\n\
                     \x20                  put); flip: Scale between 1 and 2 tasks, each followed by the\n\
                     \x20                  reconciler's own command; both (default): each beside the same etcd run"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}: see --help"),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    let time = Duration::from_secs(options.seconds);
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = Cluster::start(ClusterOptions { tick_ms: 100, ..Default::default() });
    let addresses: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let admin = cluster.admin_transport();
    let mut sched = Sched { cluster, admin, addresses };
    sched.leader();
    let mut etcd = runtime.block_on(EtcdCluster::start(&std::env::temp_dir(), options.etcd_security))?;
    let clients = MANY.iter().copied().max().unwrap_or(1);
    runtime.block_on(async {
        for c in 0..clients {
            if !apply_anywhere(&sched.admin, &sched.addresses, &format!("bench-{c}")).await {
                bail!("could not create service bench-{c}");
            }
        }
        Ok(())
    })?;

    let points = points(&options.clients);
    let kinds = &options.sched_writes;
    // Per point: each sched write's rounds, and etcd's.
    let mut results: Vec<(Vec<Vec<Point>>, Vec<Point>)> = vec![(vec![Vec::new(); kinds.len()], Vec::new()); points.len()];
    for round in 0..options.rounds {
        for (p, (label, clients, target)) in points.iter().enumerate() {
            let (s, e) = runtime.block_on(async {
                // The rounds alternate which system goes first.
                let etcd_first = if round % 2 == 1 { Some(etcd_point(&etcd, *clients, *target, time).await?) } else { None };
                let mut s = Vec::new();
                for kind in kinds {
                    s.push(sched.point(*clients, *target, time, *kind).await?);
                }
                let e = match etcd_first {
                    Some(e) => e,
                    None => etcd_point(&etcd, *clients, *target, time).await?,
                };
                Ok::<_, anyhow::Error>((s, e))
            })?;
            for (kind, s) in kinds.iter().zip(&s) {
                eprintln!("round {}: {label}, {}: sched {}", round + 1, kind.label(), s.line());
            }
            eprintln!("round {}: {label}: etcd {}", round + 1, e.line());
            for (k, s) in s.into_iter().enumerate() {
                results[p].0[k].push(s);
            }
            results[p].1.push(e);
        }
    }

    let mut failovers = (Vec::new(), Vec::new());
    for round in 0..options.failovers {
        failovers.0.push(sched_failover(&mut sched, &runtime, round)?);
        failovers.1.push(runtime.block_on(etcd_failover(&mut etcd))?);
        eprintln!("failover {}: sched {} ms, etcd {} ms", round + 1, ms(failovers.0[round]), ms(failovers.1[round]));
    }

    println!(
        "Raft writes: 3 sched servers (mutual TLS) beside 3 etcd {} members ({}), 127.0.0.1, same disk; medians of {} rounds of {} s",
        etcd::version(),
        match options.etcd_security {
            etcd::Security::MutualTls => "mutual TLS for clients and peers",
            etcd::Security::Plaintext => "plaintext gRPC",
        },
        options.rounds,
        options.seconds
    );
    for kind in kinds {
        println!("sched write, {}: {}", kind.label(), kind.describe());
    }
    println!();
    println!(
        "| point | sched writes/s | etcd writes/s | sched/etcd | sched p50 ms | etcd p50 ms | sched p99 ms | etcd p99 ms | sched CPU/write µs | etcd CPU/write µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((label, _, _), (by_kind, e)) in points.iter().zip(&results) {
        for (kind, s) in kinds.iter().zip(by_kind) {
            let (sw, ew) = (median(s, |p| p.writes_per_sec), median(e, |p| p.writes_per_sec));
            let (s50, e50) = (median(s, |p| p.p50).p50, median(e, |p| p.p50).p50);
            let (s99, e99) = (median(s, |p| p.p99).p99, median(e, |p| p.p99).p99);
            let (scpu, ecpu) = (median(s, |p| p.cpu_per_write).cpu_per_write, median(e, |p| p.cpu_per_write).cpu_per_write);
            println!(
                "| {label}, {} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} |",
                kind.label(),
                sw.writes_per_sec,
                ew.writes_per_sec,
                sw.writes_per_sec / ew.writes_per_sec,
                ms(s50),
                ms(e50),
                ms(s99),
                ms(e99),
                scpu.as_micros(),
                ecpu.as_micros()
            );
        }
    }
    if options.failovers > 0 {
        let (mut s, mut e) = failovers;
        s.sort();
        e.sort();
        let cell = |v: &[Duration]| format!("{} ({}-{})", ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]));
        println!();
        println!(
            "| leader kill -9 to the next write acknowledged by another member, median of {} (min-max) ms | sched | etcd |",
            options.failovers
        );
        println!("|---|---:|---:|");
        println!("| failover | {} | {} |", cell(&s), cell(&e));
    }
    Ok(())
}
