//! How fast the autoscaler reacts to a spike: an idle service at 2 tasks gets a CPU-heavy load,
//! and the clock runs from the load's first request to the desired count changing (the
//! decision), a task that was not there before running, and that task answering its first
//! request, over several rounds; printed beside the published figures of ECS target tracking
//! and Kubernetes' HPA (which cannot run here: they are cited, not measured).
//!
//! How to run (as root; apt: docker-registry skopeo busybox-static):
//!
//! ```text
//! cargo build --release -p sched -p agent -p runtime -p sched-bench
//! target/release/autoscale-reaction                  # 5 rounds
//! target/release/autoscale-reaction --rounds 10 --rate 9
//! ```
//!
//! Everything happens inside a private network namespace the program makes (a loopback
//! registry, a one-server `sched server` with its default Raft tick, one `sched-agent` with
//! task networking); all of it is removed at the end.
//!
//! The service is the betting-odds one of issue #9 (`sched_tests::cpu_service`): busybox httpd
//! whose `/cgi-bin/burn` costs about 30 ms of CPU, `cpu = 100` millicores, `[autoscale] min =
//! 2, max = 8, target_cpu_percent = 70`, scale-out cooldown 5 s, scale-in cooldown 20 s. Each
//! round waits until the service is idle at 2 tasks, starts an open-loop load
//! (`sched_tests::load`, default 9 requests/s, about 270 millicores: more than two tasks
//! give), and polls `sched get services/tasks -o json` every 100 ms:
//!
//! - **decision**: the service event of the scale-out (its time is the leader's clock; the
//!   poll's first sight of the new count is printed too);
//! - **running**: a task id not there before is seen with `observed_state == "running"`;
//! - **serving**: the load's first 200 from an endpoint not there before (the load's clock).
//!
//! Then the load stops, and the round times how long until the desired count is back at 2
//! (the scale-in; the next round starts once the 2 tasks have been idle for 3 s).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sched_tests::cluster::{Cluster, ClusterOptions, SchedCli};
use sched_tests::cpu_service::{
    BURN_PATH, CpuServiceSpec, HEALTH_PATH, NetworkedAgent, Reaction, endpoints_source, observe, push_cpu_service, scale_event_after,
};
use sched_tests::load::{AllowList, Load, LoadOptions, get};
use sched_tests::netlab::NodeLab;
use sched_tests::registry::Registry;

const SERVICE: &str = "odds";
/// A round that has not served from a new task by then has failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    rounds: usize,
    rate: f64,
}

fn parse_options() -> Result<Options> {
    let mut options = Options { rounds: 5, rate: 9.0 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" | "-n" => options.rounds = value("--rounds")?.parse().context("--rounds takes a positive number")?,
            "--rate" => options.rate = value("--rate")?.parse().context("--rate takes requests per second")?,
            "--help" | "-h" => {
                println!("usage: autoscale-reaction [--rounds N (5)] [--rate REQUESTS_PER_S (9)]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    ensure!((3.0..=20.0).contains(&options.rate), "--rate must be 3-20 requests/s (2 cores: keep the demand under a core)");
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").context("read /proc/self")?);
    ensure!(euid == 0, "run as root: the benchmark starts containers and a network namespace");
    Ok(options)
}

fn main() -> Result<()> {
    let options = parse_options()?;
    // A tag of its own for the private namespace (apply-serving uses 231, the e2e test 233).
    let lab = NodeLab::new(232);
    let mut outcome = Err(anyhow::anyhow!("the benchmark body did not run"));
    lab.run(|| async { outcome = run(&options, &lab) });
    outcome
}

fn run(options: &Options, lab: &NodeLab) -> Result<()> {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, tick_ms: 100, ..Default::default() });
    let image = push_cpu_service(cluster.dir(), &registry.addr(), "odds:1");
    let _agent = NetworkedAgent::start(&cluster, lab, "node1");
    let servers = cluster.cli();
    let file = CpuServiceSpec::betting_odds(SERVICE, &image, "5s", "20s").write(cluster.dir());
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);

    let mut reactions = Vec::new();
    let mut scale_ins = Vec::new();
    let (mut known_tasks, mut known_endpoints, _) = wait_idle(&servers, cluster.dir(), None)?;
    for round in 1..=options.rounds {
        let reaction = react(options, &servers, &known_tasks, &known_endpoints)?;
        println!("round {round}: {}", reaction.line());
        reactions.push(reaction);
        let stopped = Instant::now();
        let (tasks, endpoints, back) = wait_idle(&servers, cluster.dir(), Some(stopped))?;
        let back = back.context("the count was never seen back at 2")?;
        println!("round {round}: load stop -> desired count back at 2 after {:.1} s", back.as_secs_f64());
        scale_ins.push(back);
        (known_tasks, known_endpoints) = (tasks, endpoints);
    }
    print_table(options, &reactions, &scale_ins);
    Ok(())
}

/// Waits (up to 3 minutes) until the service wants 2 tasks, runs exactly 2, both answer
/// `/health`, and the count has not moved for 3 s; returns their ids and endpoints, and, given
/// when the load stopped, how long after it the desired count was first seen back at 2.
fn wait_idle(
    servers: &SchedCli,
    dir: &Path,
    stopped: Option<Instant>,
) -> Result<(BTreeSet<String>, BTreeSet<SocketAddr>, Option<Duration>)> {
    let start = Instant::now();
    let mut steady_since = None;
    let mut back_at_min = None;
    loop {
        let o = observe(servers, SERVICE, start);
        if let (Some(stopped), None, Some(2)) = (stopped, back_at_min, o.as_ref().map(|o| o.desired_count)) {
            back_at_min = Some(stopped.elapsed());
        }
        let idle = o.as_ref().is_some_and(|o| o.desired_count == 2 && o.live_tasks == 2 && o.running.len() == 2);
        if idle {
            let o = o.as_ref().expect("observed");
            let endpoints: BTreeSet<SocketAddr> = o.running.iter().flat_map(|(_, e, _)| e.iter().filter_map(|e| e.parse().ok())).collect();
            let deadline = Instant::now() + Duration::from_secs(2);
            let serving = endpoints.len() == 2 && endpoints.iter().all(|e| get(*e, HEALTH_PATH, deadline).is_ok());
            let since = *steady_since.get_or_insert_with(Instant::now);
            if serving && since.elapsed() >= Duration::from_secs(3) {
                return Ok((o.running.iter().map(|(id, _, _)| id.clone()).collect(), endpoints, back_at_min));
            }
        } else {
            steady_since = None;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(180),
            "the service was not idle at 2 tasks within 3 min: {o:?} (logs in {})",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One round: the load starts, and the poll follows the service until a new task serves.
fn react(
    options: &Options,
    servers: &SchedCli,
    known_tasks: &BTreeSet<String>,
    known_endpoints: &BTreeSet<SocketAddr>,
) -> Result<Reaction> {
    let mut load_options = LoadOptions::new(options.rate, BURN_PATH, ROUND_TIMEOUT);
    load_options.allow = AllowList::loopback();
    let load = Load::start(load_options, endpoints_source(servers.clone(), SERVICE.into()));
    let (started, started_wall) = {
        let report = load.snapshot();
        (report.started, report.started_wall)
    };
    let mut reaction = Reaction::default();
    while reaction.serving.is_none() {
        ensure!(started.elapsed() < ROUND_TIMEOUT, "no new task served within {ROUND_TIMEOUT:?}: {}", reaction.line());
        std::thread::sleep(Duration::from_millis(100));
        if let Some(o) = observe(servers, SERVICE, started) {
            ensure!(o.desired_count <= 8, "above max: {o:?}");
            if reaction.decision.is_none() && o.desired_count > 2 {
                reaction.decision = Some(o.at);
            }
            if reaction.running.is_none() && o.running.iter().any(|(id, _, _)| !known_tasks.contains(id)) {
                reaction.running = Some(o.at);
            }
        }
        reaction.serving = load.snapshot().first_success_outside(known_endpoints).map(|(_, d)| d);
    }
    let report = load.stop();
    reaction.decision_event = scale_event_after(servers, SERVICE, started_wall);
    println!("  load: {}", report.summary());
    Ok(reaction)
}

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

fn print_table(options: &Options, reactions: &[Reaction], scale_ins: &[Duration]) {
    let column = |pick: &dyn Fn(&Reaction) -> Option<Duration>| -> (String, String) {
        let values: Vec<Duration> = reactions.iter().filter_map(pick).collect();
        let s = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        (s(median(values.clone())), s(values.iter().max().copied()))
    };
    let decision = column(&|r| r.decision_event.as_ref().map(|(d, _)| *d).or(r.decision));
    let running = column(&|r| r.running);
    let serving = column(&|r| r.serving);
    println!();
    println!("| from the load's start to | sched median | sched worst | ECS target tracking | Kubernetes HPA |");
    println!("|---|---:|---:|---:|---:|");
    println!("| decision (desired count changes) | {} | {} | — | every 15 s (sync period) |", decision.0, decision.1);
    println!("| new task running | {} | {} | — | — |", running.0, running.1);
    println!(
        "| new task serving | **{}** | **{}** | 109 s with 20-s metrics; 386 s before (AWS, aws/containers-roadmap#2113) | — |",
        serving.0, serving.1
    );
    let back = (median(scale_ins.to_vec()), scale_ins.iter().max().copied());
    let s = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!(
        "| back at min (2), from the load's stop | {} | {} | — | at least 300 s (default scale-down stabilization) |",
        s(back.0),
        s(back.1)
    );
    println!("\n{} rounds at {} requests/s; scale_in_cooldown 20 s here (the stabilization window)", reactions.len(), options.rate);
}
