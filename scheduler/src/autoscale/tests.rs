//! The autoscaler stepped through minutes of cluster time in microseconds: a simulated node
//! starts and stops the tasks the reconciler asks for and reports their CPU every second, as
//! agents do, under a demand the test sets (in task limits' worth of CPU, spread evenly over the
//! running tasks and capped at each task's limit, like a CPU-bound service behind a balancer).

use std::collections::BTreeMap;

use super::{Autoscaler, Reading, Round, Stabilization, decide, recommend};
use crate::controller::{Controller, CpuSample, Reconcile, Snapshot, run_controllers};
use crate::spec::{Autoscale, ServiceSpec};
use crate::state::{AutoscaleStatus, ClusterState, Command, DesiredState, Outcome, RejectionKind, TaskState};
use crate::test_fixtures::{cluster, report, spec};

const STEP_MS: u64 = 500;
const SAMPLE_EVERY_MS: u64 = 1_000;
/// From placement to running, as a task start with a cached image takes here.
const START_MS: u64 = 1_000;

fn bounds(min: u32, max: u32, out_ms: u64, in_ms: u64) -> Autoscale {
    Autoscale { min, max, target_cpu_percent: 70, scale_out_cooldown_ms: out_ms, scale_in_cooldown_ms: in_ms }
}

fn autoscaled(image: &str, auto: Autoscale) -> ServiceSpec {
    ServiceSpec { count: auto.min, autoscale: Some(auto), ..spec(image, 0, 100) }
}

/// A one-node cluster, the autoscaler and the reconciler as the leader runs them.
struct Sim {
    state: ClusterState,
    controllers: Vec<Box<dyn Controller>>,
    cpu: BTreeMap<String, Vec<CpuSample>>,
    now_ms: u64,
    /// Total CPU wanted, in task limits (2.5 = two and a half tasks' worth).
    demand: f64,
    /// Tasks whose agent sends no metrics (a silent or broken sampler).
    silent: Vec<String>,
    /// Whether the agent reports at all (a node that stopped heartbeating).
    sampling: bool,
    /// (time, desired count) after every step.
    counts: Vec<(u64, u32)>,
}

impl Sim {
    fn new(auto: Autoscale) -> Sim {
        let mut state = cluster(1, 64_000);
        state
            .apply(Command::ApplyService {
                spec: autoscaled("odds:1", auto),
                image_digest: String::new(),
                now_ms: 0,
                unresolved_reason: String::new(),
            })
            .unwrap();
        let mut sim = Sim {
            state,
            controllers: fresh_leader(),
            cpu: BTreeMap::new(),
            now_ms: 0,
            demand: 0.0,
            silent: Vec::new(),
            sampling: true,
            counts: Vec::new(),
        };
        // Let the first tasks start and report a few samples.
        sim.run_for(5_000);
        sim
    }

    fn desired(&self) -> u32 {
        self.state.service("quotes").unwrap().desired_count
    }

    fn running(&self) -> Vec<String> {
        self.state
            .tasks()
            .filter(|t| t.desired == DesiredState::Running && t.observed == TaskState::Running)
            .map(|t| t.id.clone())
            .collect()
    }

    /// The node: starts placed tasks after [`START_MS`], stops the ones told to stop, and
    /// reports CPU every second.
    fn node(&mut self) {
        let tasks: Vec<_> = self.state.tasks().cloned().collect();
        for t in tasks {
            if t.desired == DesiredState::Running && t.observed == TaskState::Assigned && self.now_ms >= t.created_ms + START_MS {
                report(&mut self.state, &t, TaskState::Running, None, "", self.now_ms);
            }
            if t.desired == DesiredState::Stopped && !matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost) {
                report(&mut self.state, &t, TaskState::Exited, Some(0), "", self.now_ms);
                self.cpu.remove(&t.id);
            }
        }
        if self.sampling && self.now_ms.is_multiple_of(SAMPLE_EVERY_MS) {
            let running = self.running();
            let each = (self.demand / running.len().max(1) as f64).min(1.0);
            for id in running.iter().filter(|id| !self.silent.contains(id)) {
                let samples = self.cpu.entry(id.clone()).or_default();
                samples.push(CpuSample { at_ms: self.now_ms, cpu_fraction: each });
                if samples.len() > 30 {
                    samples.remove(0);
                }
            }
        }
    }

    fn step(&mut self) -> Vec<Command> {
        self.now_ms += STEP_MS;
        self.node();
        let snapshot = Snapshot {
            state: self.state.clone(),
            now_ms: self.now_ms,
            term: 1,
            leading_for_ms: self.now_ms,
            heartbeat_age_ms: BTreeMap::new(),
            cpu: self.cpu.clone(),
            ingress: BTreeMap::new(),
        };
        let commands = run_controllers(&mut self.controllers, snapshot);
        for c in &commands {
            self.state.apply(c.clone()).unwrap();
        }
        self.counts.push((self.now_ms, self.desired()));
        commands
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        while self.now_ms < until {
            self.step();
        }
    }

    /// Steps until the desired count differs from `from`; the time it took.
    fn until_count_changes(&mut self, from: u32, within_ms: u64) -> u64 {
        let start = self.now_ms;
        while self.desired() == from {
            assert!(self.now_ms - start <= within_ms, "the count stayed {from} for {within_ms} ms: {:?}", self.events());
            self.step();
        }
        self.now_ms - start
    }

    /// The desired counts seen from `from_ms` on.
    fn counts_since(&self, from_ms: u64) -> Vec<u32> {
        self.counts.iter().filter(|(at, _)| *at >= from_ms).map(|(_, c)| *c).collect()
    }

    fn events(&self) -> Vec<String> {
        self.state.service("quotes").unwrap().events.iter().map(|e| e.message.clone()).collect()
    }
}

fn fresh_leader() -> Vec<Box<dyn Controller>> {
    vec![Box::new(Autoscaler::default()), Box::new(Reconcile::default())]
}

#[test]
fn the_recommendation_is_the_cpu_sum_over_the_target_clamped_with_a_tolerance_band() {
    let b = bounds(2, 8, 1_000, 1_000);
    let reading = |counted: u32, cpu_sum: f64| Reading { counted, uncounted: 0, cpu_sum, deploying: false };
    // (counted tasks, their summed CPU, desired now) -> recommendation
    let table: [(u32, f64, u32, Option<u32>); 10] = [
        (0, 0.0, 2, None),     // no metrics: no opinion
        (2, 2.0, 2, Some(3)),  // 100% of the limit on 2 tasks: ceil(2.0 / 0.7) = 3
        (2, 2.1, 2, Some(3)),  // exactly 3 tasks' worth at 70% stays 3, not 4
        (4, 2.4, 4, Some(4)),  // 60% against 70%: within 10%? no (0.857) -> ceil(2.4/0.7) = 4
        (3, 2.0, 3, Some(3)),  // 67%: within the band, unchanged
        (3, 2.3, 3, Some(3)),  // 77%: at the edge of the band, unchanged
        (2, 0.1, 2, Some(2)),  // idle: never below min
        (5, 0.2, 5, Some(2)),  // idle at 5: min
        (8, 8.0, 8, Some(8)),  // saturated at max: never above it
        (2, 50.0, 2, Some(8)), // absurd demand: max
    ];
    for (counted, sum, desired, want) in table {
        assert_eq!(recommend(&reading(counted, sum), &b, desired), want, "{counted} tasks, cpu {sum}, desired {desired}");
    }
}

#[test]
fn quiet_load_never_moves_the_count() {
    let mut sim = Sim::new(bounds(2, 8, 5_000, 20_000));
    // 20-40% of the two tasks' limits, wobbling, for ten minutes.
    for minute in 0..10u64 {
        sim.demand = 0.4 + 0.4 * ((minute % 3) as f64) / 2.0;
        sim.run_for(60_000);
    }
    assert!(sim.counts.iter().all(|(_, c)| *c == 2), "{:?}", sim.events());
}

#[test]
fn load_near_the_target_does_not_flap() {
    let mut sim = Sim::new(bounds(2, 8, 5_000, 20_000));
    sim.demand = 2.8;
    sim.run_for(60_000);
    let settled = sim.desired();
    let from = sim.now_ms;
    // +-8% around the same demand for five minutes: within the tolerance once settled.
    for i in 0..300u64 {
        sim.demand = 2.8 * if i % 2 == 0 { 1.08 } else { 0.92 };
        sim.run_for(1_000);
    }
    assert!(sim.counts_since(from).iter().all(|c| *c == settled), "settled at {settled}: {:?}", sim.events());
}

#[test]
fn a_spike_scales_out_within_seconds_settles_under_the_target_and_returns_to_min() {
    let mut sim = Sim::new(bounds(2, 8, 5_000, 20_000));
    sim.demand = 0.5;
    sim.run_for(30_000);
    // The match starts: three tasks' worth of CPU.
    sim.demand = 3.0;
    let start = sim.now_ms;
    let first = sim.until_count_changes(2, 10_000);
    assert!(first <= 4_000, "the first scale-out took {first} ms: {:?}", sim.events());
    assert!(sim.events().last().unwrap().starts_with("scaled out 2 -> 3: CPU "), "{:?}", sim.events());
    // Settles within 30 s where the average is at or below the target, never above max.
    sim.run_for(30_000 - (sim.now_ms - start));
    let settled = sim.desired();
    let per_task = 3.0 / f64::from(settled);
    assert!(per_task <= 0.70, "settled at {settled} tasks, {per_task:.2} each: {:?}", sim.events());
    sim.run_for(30_000);
    assert_eq!(sim.desired(), settled, "no change once settled: {:?}", sim.events());
    assert!(sim.counts.iter().all(|(_, c)| *c <= 8));
    // The match ends: back to min within the scale-in cooldown plus a few seconds, never below.
    sim.demand = 0.3;
    let end = sim.now_ms;
    let first_in = sim.until_count_changes(settled, 40_000);
    assert!(first_in >= 20_000, "the first scale-in came {first_in} ms after the load ended: {:?}", sim.events());
    while sim.desired() > 2 {
        assert!(sim.now_ms - end <= 28_000, "not back at min 28 s after the load ended: {:?}", sim.events());
        sim.step();
    }
    sim.run_for(60_000);
    assert!(sim.counts_since(end).iter().all(|c| *c >= 2));
    assert!(sim.events().last().unwrap().contains("no recommendation in the last 20s asked for more than 2"), "{:?}", sim.events());
}

#[test]
fn a_scale_in_step_removes_at_most_half_of_the_tasks_and_waits_for_fresh_metrics() {
    let b = bounds(2, 20, 5_000, 10_000);
    let mut window = Stabilization::default();
    for at in (0..=20_000).step_by(500) {
        window.record(at, 2, b.scale_in_cooldown_ms);
    }
    let idle = |counted: u32| Reading { counted, uncounted: 0, cpu_sum: 0.05 * f64::from(counted), deploying: false };
    let decide_at = |desired: u32, status: &AutoscaleStatus| {
        decide(&Round { bounds: &b, desired, status, reading: idle(desired), recommendation: Some(2), window: &window, now_ms: 20_000 })
    };
    let quiet = AutoscaleStatus::default();
    // desired -> where one step goes (the window asks for 2 throughout)
    for (desired, to) in [(15, 7), (10, 5), (5, 2), (4, 2), (3, 2)] {
        assert_eq!(decide_at(desired, &quiet).map(|d| d.to), Some(to), "from {desired}");
    }
    assert!(decide_at(10, &quiet).unwrap().reason.ends_with("a step removes at most half of the tasks"));
    assert!(!decide_at(4, &quiet).unwrap().reason.contains("at most half"));
    // The next step waits one short window after a scale-in, so the reading shows the load the
    // stopped tasks left behind.
    let just_scaled_in = AutoscaleStatus { last_scale_in_ms: 18_000, ..AutoscaleStatus::default() };
    assert_eq!(decide_at(5, &just_scaled_in), None);
    let a_while_ago = AutoscaleStatus { last_scale_in_ms: 17_000, ..AutoscaleStatus::default() };
    assert_eq!(decide_at(5, &a_while_ago).map(|d| d.to), Some(2));
    // And a whole cooldown after the count was set by an apply, a scale or a scale-out.
    let set_recently = AutoscaleStatus { count_set_ms: 10_001, ..AutoscaleStatus::default() };
    assert_eq!(decide_at(5, &set_recently), None);
}

#[test]
fn missing_or_stale_metrics_never_scale_in() {
    let mut sim = Sim::new(bounds(2, 8, 2_000, 10_000));
    sim.demand = 3.0;
    sim.run_for(30_000);
    let high = sim.desired();
    assert!(high > 2);
    // One task's sampler goes silent; the others go idle.
    sim.silent.push(sim.running()[0].clone());
    sim.demand = 0.1;
    let from = sim.now_ms;
    sim.run_for(120_000);
    assert!(sim.counts_since(from).iter().all(|c| *c == high), "{:?}", sim.events());
    // Its metrics come back: now it may scale in.
    sim.silent.clear();
    sim.until_count_changes(high, 20_000);
    // No metrics at all (the node stopped reporting): never a scale-in.
    let mut sim = Sim::new(bounds(2, 8, 2_000, 10_000));
    sim.demand = 3.0;
    sim.run_for(30_000);
    let high = sim.desired();
    sim.sampling = false;
    let from = sim.now_ms;
    sim.run_for(120_000);
    assert!(sim.counts_since(from).iter().all(|c| *c == high), "{:?}", sim.events());
}

#[test]
fn a_new_leader_keeps_the_cooldowns_and_watches_a_whole_window_before_scaling_in() {
    let mut sim = Sim::new(bounds(2, 8, 30_000, 20_000));
    sim.demand = 5.0;
    sim.until_count_changes(2, 10_000);
    let after_first = sim.desired();
    // A new leader right after the scale-out: the cooldown is in the replicated state.
    sim.controllers = fresh_leader();
    let from = sim.now_ms;
    sim.run_for(20_000);
    assert!(sim.counts_since(from).iter().all(|c| *c == after_first), "{:?}", sim.events());
    sim.until_count_changes(after_first, 15_000);
    let high = sim.desired();
    // Idle long enough for the old leader to scale in, then a leader change: the new leader
    // has watched nothing, so it waits a whole cooldown of its own.
    sim.demand = 0.1;
    sim.run_for(19_000);
    sim.controllers = fresh_leader();
    let from = sim.now_ms;
    let took = sim.until_count_changes(high, 30_000);
    assert!(took >= 20_000, "the new leader scaled in after {took} ms");
    assert!(sim.counts_since(from).iter().all(|c| *c >= 2));
}

#[test]
fn no_scale_in_during_a_rolling_deploy_but_scale_out_goes_on() {
    let mut sim = Sim::new(bounds(2, 8, 2_000, 5_000));
    sim.demand = 3.0;
    sim.run_for(20_000);
    let high = sim.desired();
    // A new revision whose tasks never become healthy keeps the old ones: a deploy that runs on.
    let mut new_spec = autoscaled("odds:2", bounds(2, 8, 2_000, 5_000));
    new_spec.health = Some(crate::spec::HealthCheck {
        kind: crate::spec::HealthKind::Cmd,
        path: String::new(),
        port: 0,
        command: vec!["false".into()],
        interval_ms: 1_000,
        timeout_ms: 1_000,
        retries: 1,
        grace_ms: 0,
    });
    sim.state
        .apply(Command::ApplyService { spec: new_spec, image_digest: String::new(), now_ms: sim.now_ms, unresolved_reason: String::new() })
        .unwrap();
    assert_eq!(sim.desired(), high, "a new revision keeps the autoscaled count");
    sim.demand = 0.1;
    let from = sim.now_ms;
    sim.run_for(60_000);
    assert!(sim.counts_since(from).iter().all(|c| *c >= high), "{:?}", sim.events());
    sim.demand = 12.0;
    sim.until_count_changes(high, 10_000);
    assert!(sim.desired() > high);
}

#[test]
fn a_manual_scale_within_bounds_is_where_the_autoscaler_moves_on_from() {
    let mut sim = Sim::new(bounds(2, 8, 2_000, 10_000));
    sim.demand = 0.2;
    sim.run_for(20_000);
    let outside = sim.state.apply(Command::ScaleService { name: "quotes".into(), count: 9, now_ms: sim.now_ms }).unwrap_err();
    assert!(outside.message.contains("between 2 and 8"), "{}", outside.message);
    sim.state.apply(Command::ScaleService { name: "quotes".into(), count: 6, now_ms: sim.now_ms }).unwrap();
    let took = sim.until_count_changes(6, 20_000);
    assert!(took >= 10_000, "scaled in {took} ms after a manual scale: {:?}", sim.events());
    assert_eq!(sim.desired(), 3, "half of 6 in one step");
}

#[test]
fn a_decision_made_on_an_old_count_is_refused() {
    let mut state = cluster(1, 8_000);
    state
        .apply(Command::ApplyService {
            spec: autoscaled("odds:1", bounds(2, 8, 1_000, 1_000)),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let stale = Command::Autoscale { name: "quotes".into(), from: 3, to: 5, reason: "x".into(), now_ms: 1 };
    assert_eq!(state.apply(stale).unwrap_err().kind, RejectionKind::Conflict);
    let beyond = Command::Autoscale { name: "quotes".into(), from: 2, to: 9, reason: "x".into(), now_ms: 1 };
    assert_eq!(state.apply(beyond).unwrap_err().kind, RejectionKind::Invalid);
    let ok = Command::Autoscale { name: "quotes".into(), from: 2, to: 5, reason: "scaled out 2 -> 5: why".into(), now_ms: 7 };
    assert!(matches!(state.apply(ok).unwrap(), Outcome::Service { changed: true, .. }));
    let s = state.service("quotes").unwrap();
    assert_eq!((s.desired_count, s.autoscale.last_scale_out_ms, s.autoscale.count_set_ms), (5, 7, 7));
    assert_eq!(s.autoscale.last_decision.as_ref().unwrap().reason, "scaled out 2 -> 5: why");
}

#[test]
fn a_service_without_autoscale_is_left_alone() {
    let mut state = cluster(1, 8_000);
    state
        .apply(Command::ApplyService {
            spec: spec("odds:1", 2, 100),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let cpu = BTreeMap::from([("x".to_string(), vec![CpuSample { at_ms: 0, cpu_fraction: 5.0 }])]);
    let snapshot = Snapshot { state, now_ms: 1_000, cpu, ..Snapshot::default() };
    assert!(Autoscaler::default().commands(&snapshot).is_empty());
}
