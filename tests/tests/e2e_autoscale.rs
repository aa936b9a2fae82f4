//! Issue #9 point 5, the "betting odds" scenario end to end with real processes: one `sched
//! server`, one `sched-agent` with task networking and a loopback registry, all inside a
//! network namespace of the test's own (a [`NodeLab`]), and a CPU-bound HTTP service (each
//! request to `/cgi-bin/burn` costs about 30 ms of CPU) with `cpu = 100` millicores and
//! `[autoscale] min = 2, max = 8, target_cpu_percent = 70`, cooldowns 5 s out and 20 s in.
//! The load generator (`sched_tests::load`, open loop, loopback only) follows the service's
//! running endpoints.
//!
//! - quiet: 2 requests/s (about 60 millicores, 30% of two tasks) for 60 s: the desired count
//!   stays 2 at every look (every 500 ms), and every request is answered;
//! - the match: 3.5 tasks' worth of CPU at 70% (about 9 requests/s; the rate is set from what a
//!   request cost in the quiet phase, so the right count, 4, is half a task away from both 3
//!   and 5 whatever a request costs on the machine of the day) for 45 s: a task
//!   that was not there before answers a 200 within 10 s of the load starting; the desired
//!   count stops rising within 30 s, with the tasks' mean CPU then at most the target plus its
//!   tolerance; once it falls (correcting an overshoot) it never rises again; it is never
//!   above 8;
//! - the end: the load stops; the desired count is back at 2 within scale_in_cooldown + 15 s,
//!   never below 2, and stays there.
//!
//! It prints the measured times (load start -> decision -> new task running -> new task
//! serving). The service is deleted at the end and the node must be left without a container;
//! the fixtures remove processes, containers, cgroups and namespaces also when it fails.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::cpu_service::{
    BURN_MS, BURN_PATH, CpuServiceSpec, HEALTH_PATH, NetworkedAgent, Observation, Reaction, endpoints_source, observe, push_cpu_service,
    scale_event_after,
};
use sched_tests::load::{AllowList, Load, LoadOptions, get};
use sched_tests::netlab::NodeLab;
use sched_tests::registry::Registry;

/// The lab namespace's tag (bridge, subnet); each test binary that uses a NodeLab has its own.
const LAB_TAG: u8 = 233;
const SERVICE: &str = "odds";
const MIN: u64 = 2;
const MAX: u64 = 8;
const SCALE_IN_COOLDOWN: Duration = Duration::from_secs(20);

const QUIET_RATE: f64 = 2.0;
const QUIET_FOR: Duration = Duration::from_secs(60);
/// The match's load in tasks' worth of CPU at the target: half a task from either neighbour,
/// so the count the autoscaler should settle on (4) is not a coin toss on measuring noise.
const MATCH_TASKS: f64 = 3.5;
const TASK_CPU_CORES: f64 = 0.1;
const TARGET: f64 = 0.70;
const MATCH_FOR: Duration = Duration::from_secs(45);
/// The new task must serve within this of the load starting.
const SERVE_WITHIN: Duration = Duration::from_secs(10);
/// The desired count must stop rising within this.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// Margin on top of scale_in_cooldown for the count to be back at min.
const SCALE_IN_MARGIN: Duration = Duration::from_secs(15);

#[test]
fn betting_odds_quiet_match_and_end() {
    let lab = NodeLab::new(LAB_TAG);
    lab.run(|| async { scenario(&lab) });
}

fn scenario(lab: &NodeLab) {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_cpu_service(cluster.dir(), &registry.addr(), "odds:1");
    let agent = NetworkedAgent::start(&cluster, lab, "node1");
    let servers = cluster.cli();
    let spec = CpuServiceSpec::betting_odds(SERVICE, &image, "5s", "20s");
    let file = spec.write(cluster.dir());
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#}\ncontainers: {:?}", cluster.sched_json(&["get", "tasks"]), agent.containers());

    // Two tasks run and answer on their endpoints.
    let setup = Instant::now();
    let two_serving = loop {
        let o = observe(&servers, SERVICE, setup);
        let endpoints: Vec<SocketAddr> =
            o.iter().flat_map(|o| o.running.iter().flat_map(|(_, e, _)| e.iter().filter_map(|e| e.parse().ok()))).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        if endpoints.len() == 2 && endpoints.iter().all(|e| get(*e, HEALTH_PATH, deadline).is_ok()) {
            break o.unwrap();
        }
        assert!(setup.elapsed() < Duration::from_secs(60), "2 tasks did not serve within 60 s: {}", context());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(two_serving.desired_count, MIN, "the service starts at min");
    let endpoint: SocketAddr = two_serving.running[0].1[0].parse().expect("IP:PORT");
    let body = get(endpoint, BURN_PATH, Instant::now() + Duration::from_secs(5)).expect("the CGI answers");
    assert_eq!(body.trim(), format!("burned {BURN_MS} ms"), "the CGI script runs its loop");
    eprintln!("setup: 2 tasks serving {:.1} s after apply", setup.elapsed().as_secs_f64());

    let options = |rate: f64, duration: Duration| {
        let mut o = LoadOptions::new(rate, BURN_PATH, duration);
        o.allow = AllowList::loopback();
        o
    };

    // Quiet: light load for a minute, the count never moves.
    let quiet = Load::start(options(QUIET_RATE, QUIET_FOR), endpoints_source(servers.clone(), SERVICE.into()));
    let mut cpu = Vec::new();
    let mut looks = 0;
    while !quiet.schedule_done() {
        if let Some(o) = observe(&servers, SERVICE, quiet.snapshot().started) {
            assert_eq!(o.desired_count, MIN, "quiet load moved the count at {:.1} s: {o:?}", o.at.as_secs_f64());
            cpu.extend(o.mean_cpu());
            looks += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let quiet = quiet.wait();
    eprintln!("quiet: {}", quiet.summary());
    let quiet_cpu = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
    eprintln!("quiet: desired count 2 at all {looks} looks; mean task CPU {:.0}% of the limit", quiet_cpu * 100.0);
    assert!(looks >= 60, "the count was looked at only {looks} times in 60 s");
    assert_eq!(quiet.failures + quiet.no_endpoint, 0, "every quiet request is answered: {}", quiet.summary());
    assert!(quiet.successes as f64 >= QUIET_RATE * QUIET_FOR.as_secs_f64() - 1.0, "{}", quiet.summary());
    assert!(quiet.refused.is_empty(), "endpoints are on loopback: {:?}", quiet.refused);

    // The match: 3.5 tasks' worth of CPU at the target, from what a request cost while quiet
    // (the burn's own CPU time is fixed; httpd's fork and the shell's start add a little that
    // varies with the machine; bounded so a bad reading cannot make the load absurd).
    let per_request_cores_s = quiet_cpu * MIN as f64 * TASK_CPU_CORES / QUIET_RATE;
    let match_rate = (MATCH_TASKS * TARGET * TASK_CPU_CORES / per_request_cores_s.max(1e-3)).clamp(6.0, 14.0);
    eprintln!("match: a request costs {:.1} ms of CPU: {match_rate:.1} requests/s", per_request_cores_s * 1000.0);
    let before = observe(&servers, SERVICE, Instant::now()).expect("the service is there");
    let known_tasks: BTreeSet<String> = before.running.iter().map(|(id, _, _)| id.clone()).collect();
    let known_endpoints: BTreeSet<SocketAddr> =
        before.running.iter().flat_map(|(_, e, _)| e.iter().filter_map(|e| e.parse().ok())).collect();
    assert_eq!((before.desired_count, known_tasks.len()), (MIN, 2), "{before:?}");
    let load = Load::start(options(match_rate, MATCH_FOR), endpoints_source(servers.clone(), SERVICE.into()));
    let started = load.snapshot().started;
    let started_wall = load.snapshot().started_wall;
    let mut reaction = Reaction::default();
    let mut history: Vec<Observation> = Vec::new();
    // When the count last rose, and when it first fell (a fall corrects an overshoot; a rise
    // after a fall would be flapping).
    let mut last_rise = Duration::ZERO;
    let mut first_fall: Option<Duration> = None;
    while !load.schedule_done() {
        std::thread::sleep(Duration::from_millis(250));
        let Some(o) = observe(&servers, SERVICE, started) else { continue };
        assert!(o.desired_count <= MAX && o.live_tasks as u64 <= MAX, "above max at {:.1} s: {o:?}", o.at.as_secs_f64());
        assert!(o.desired_count >= MIN, "below min at {:.1} s: {o:?}", o.at.as_secs_f64());
        if let Some(previous) = history.last().map(|p| p.desired_count).filter(|&p| p != o.desired_count) {
            if o.desired_count > previous {
                last_rise = o.at;
                assert!(first_fall.is_none(), "the count rose again after it fell (flapping) at {:.1} s: {o:?}", o.at.as_secs_f64());
            } else {
                first_fall.get_or_insert(o.at);
            }
            eprintln!(
                "match: desired count {} at {:.1} s (mean CPU {:.0}%)",
                o.desired_count,
                o.at.as_secs_f64(),
                o.mean_cpu().unwrap_or(0.0) * 100.0
            );
        }
        if reaction.decision.is_none() && o.desired_count > MIN {
            reaction.decision = Some(o.at);
        }
        if reaction.running.is_none() && o.running.iter().any(|(id, _, _)| !known_tasks.contains(id)) {
            reaction.running = Some(o.at);
        }
        if reaction.serving.is_none() {
            reaction.serving = load.snapshot().first_success_outside(&known_endpoints).map(|(_, d)| d);
        }
        history.push(o);
    }
    let matched = load.wait();
    reaction.decision_event = scale_event_after(&servers, SERVICE, started_wall);
    if reaction.serving.is_none() {
        reaction.serving = matched.first_success_outside(&known_endpoints).map(|(_, d)| d);
    }
    eprintln!("match: {}", matched.summary());
    eprintln!("match: {}", reaction.line());
    // Every decision is a service event that says why.
    let (_, message) = reaction.decision_event.clone().unwrap_or_else(|| panic!("no scale event after the load started: {}", context()));
    eprintln!("match: the decision's event: {message}");
    assert!(message.starts_with("scaled out 2 -> ") && message.contains("CPU"), "the event says what and why: {message}");
    let history_text = || {
        history
            .iter()
            .map(|o| {
                format!(
                    "{:.1}s desired {} running {} cpu {:.2}",
                    o.at.as_secs_f64(),
                    o.desired_count,
                    o.running.len(),
                    o.mean_cpu().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let serving = reaction
        .serving
        .unwrap_or_else(|| panic!("no new task served during the match; {}\n{}\n{}", reaction.line(), history_text(), context()));
    assert!(
        serving <= SERVE_WITHIN,
        "a new task served {:.1} s after the load started (at most {SERVE_WITHIN:?}): {}",
        serving.as_secs_f64(),
        reaction.line()
    );
    let settled = history.last().expect("looked during the match").desired_count;
    assert!(settled > MIN, "the match scaled out: {}", history_text());
    assert!(
        last_rise <= SETTLE_WITHIN,
        "the count still rose {:.1} s after the load started (settles within {SETTLE_WITHIN:?}):\n{}",
        last_rise.as_secs_f64(),
        history_text()
    );
    let tail: Vec<f64> = history.iter().filter(|o| o.at >= SETTLE_WITHIN).filter_map(Observation::mean_cpu).collect();
    let tail_cpu = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    let peak = history.iter().map(|o| o.desired_count).max().unwrap_or(0);
    eprintln!(
        "match: rose to {peak} tasks by {:.1} s, {} at the end; mean task CPU after 30 s {:.0}% of the limit",
        last_rise.as_secs_f64(),
        settled,
        tail_cpu * 100.0
    );
    assert!(tail_cpu <= 0.7 * 1.1 + 0.05, "settled CPU {:.0}% is not at the 70% target:\n{}", tail_cpu * 100.0, history_text());

    // The end: the count returns to min, never below.
    let ended = Instant::now();
    let mut back_at_min = None;
    let mut count = settled;
    loop {
        if let Some(o) = observe(&servers, SERVICE, ended) {
            if o.desired_count != count {
                count = o.desired_count;
                eprintln!("end: desired count {count} at {:.1} s after the load stopped", o.at.as_secs_f64());
            }
            assert!(o.desired_count >= MIN, "below min at {:.1} s after the load stopped: {o:?}", o.at.as_secs_f64());
            assert!(o.desired_count <= settled, "it scaled out with no load: {o:?}");
            match back_at_min {
                None if o.desired_count == MIN => {
                    back_at_min = Some(o.at);
                    eprintln!("end: back at {MIN} tasks {:.1} s after the load stopped", o.at.as_secs_f64());
                }
                // Stays at min for 5 s more.
                Some(at) if o.at > at + Duration::from_secs(5) => break,
                _ => {}
            }
        }
        assert!(
            back_at_min.is_some() || ended.elapsed() < SCALE_IN_COOLDOWN + SCALE_IN_MARGIN,
            "not back at {MIN} tasks within {:?} of the load stopping: {:?}",
            SCALE_IN_COOLDOWN + SCALE_IN_MARGIN,
            observe(&servers, SERVICE, ended)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let described = cluster.sched_json(&["describe", "service", SERVICE]);
    let scaled_in: Vec<&str> = described["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["message"].as_str()).filter(|m| m.starts_with("scaled in")).collect())
        .unwrap_or_default();
    assert!(scaled_in.iter().any(|m| m.contains("-> 2")), "describe names the scale-in to min and why: {scaled_in:?}");
    eprintln!("end: the last scale-in's event: {}", scaled_in.last().unwrap_or(&"-"));

    cluster.sched_ok(&["delete", SERVICE]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.containers().is_empty() {
        assert!(Instant::now() < deadline, "containers left after delete: {}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}
