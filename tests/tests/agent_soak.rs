//! A seeded soak (issue 15 point 4): a bounded loop of applies, scales and deletes of two
//! services on one `sched-agent` with task networking (in a node network namespace of the
//! test's own, [`NodeLab`]), with `kill -9` restarts of the agent at random moments between
//! them — also while tasks start and stop. After every step settles, each service runs exactly
//! its count of tasks and the host holds exactly the running tasks ([`Holdings`]: nothing left
//! over, nothing running twice); after the last, with everything deleted, the host holds
//! nothing. The seed is printed: `SCHED_SOAK_SEED=N` replays a run, `SCHED_SOAK_STEPS=N` makes
//! it longer (12 by default).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions};
use sched_tests::cpu_service::{NetworkedAgent, tasks_at};
use sched_tests::netlab::NodeLab;
use sched_tests::node_holdings::Holder;
use sched_tests::registry::Registry;
use sched_tests::wait::wait_until;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const SERVICES: [&str; 2] = ["soak-a", "soak-b"];

/// xorshift64*: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn a_seeded_loop_of_applies_scales_deletes_and_agent_kills_leaves_exactly_the_running_tasks() {
    let seed = env_number("SCHED_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    let steps = env_number("SCHED_SOAK_STEPS").unwrap_or(12);
    eprintln!("soak: SCHED_SOAK_SEED={seed} SCHED_SOAK_STEPS={steps}");
    let lab = NodeLab::new(228);
    lab.run(|| async { soak(&lab, seed, steps) });
}

fn soak(lab: &NodeLab, seed: u64, steps: u64) {
    let mut rng = Rng(seed.max(1));
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let flags = ["--reap-interval-secs", "1"];
    let mut agent = NetworkedAgent::start_with(&cluster, lab, "node1", &flags);
    let holder = agent.holder(lab);
    let image = push_busybox(cluster.dir(), &registry.addr(), "soak:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let command = json!(["sh", "-c", "mkdir -p /www && echo soak > /www/index.html && exec httpd -f -p 8080 -h /www"]);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut history = Vec::new();

    for step in 0..steps {
        let service = SERVICES[rng.below(2) as usize];
        let action = match rng.below(4) {
            0 | 1 => {
                let count = 1 + rng.below(3);
                let file = cluster.dir().join(format!("{service}.toml"));
                std::fs::write(
                    &file,
                    format!("name = \"{service}\"\nimage = \"{image}\"\ncommand = {command}\nports = [8080]\ncpu = 50\nmemory = 16\ncount = {count}\n"),
                )
                .unwrap();
                if counts.contains_key(service) && rng.below(2) == 0 {
                    cluster.sched_ok(&["scale", service, &count.to_string()]);
                    counts.insert(service, count);
                    format!("scale {service} {count}")
                } else {
                    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
                    counts.insert(service, count);
                    format!("apply {service} count={count}")
                }
            }
            2 if counts.contains_key(service) => {
                cluster.sched_ok(&["delete", service]);
                counts.remove(service);
                format!("delete {service}")
            }
            _ => "none".to_string(),
        };
        // A kill -9 of the agent right after the change (while its tasks start or stop), or
        // once it settled, or none.
        let restart = rng.below(3);
        if restart == 0 {
            agent.restart_with(&cluster, lab, &flags);
        }
        history.push(format!("{step}: {action}{}", if restart == 0 { " + agent kill -9" } else { "" }));
        settle(&cluster, &holder, &counts, &history);
        if restart == 1 {
            agent.restart_with(&cluster, lab, &flags);
            history.push(format!("{step}: agent kill -9 (settled)"));
            settle(&cluster, &holder, &counts, &history);
        }
    }
    for service in counts.keys().copied().collect::<Vec<_>>() {
        cluster.sched_ok(&["delete", service]);
        counts.remove(service);
    }
    history.push("delete everything".into());
    settle(&cluster, &holder, &counts, &history);
}

/// Waits until each service runs exactly its count of tasks (and the servers list no other
/// task) and the host holds exactly the running tasks.
fn settle(cluster: &Cluster, holder: &Holder, counts: &BTreeMap<&str, u64>, history: &[String]) {
    let look = || -> Result<(), String> {
        let tasks: Vec<Value> = tasks_at(&cluster.cli()).ok_or("the servers do not answer")?;
        let mut running: BTreeMap<String, u64> = BTreeMap::new();
        let (mut ids, mut exited) = (BTreeSet::new(), BTreeSet::new());
        for t in &tasks {
            let id = t["id"].as_str().unwrap_or_default().to_string();
            let observed = t["observed_state"].as_str().unwrap_or_default();
            if t["desired_state"] != "running" {
                // Stopped by a scale-in: listed until the servers drop it, exited meanwhile.
                if !matches!(observed, "exited" | "failed" | "stopped") {
                    return Err(format!("task {id}, wanted stopped, is {observed}"));
                }
                exited.insert(id);
                continue;
            }
            if observed != "running" {
                return Err(format!("task {id} is {observed}"));
            }
            *running.entry(t["service"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            ids.insert(id);
        }
        let wanted: BTreeMap<String, u64> = counts.iter().map(|(s, c)| (s.to_string(), *c)).collect();
        if running != wanted {
            return Err(format!("running {running:?}, wanted {wanted:?}"));
        }
        let beyond = holder.holdings().beyond_keeping(&ids, &exited);
        if beyond.is_empty() { Ok(()) } else { Err(format!("the host holds more or less than {ids:?}: {beyond:?}")) }
    };
    wait_until(
        "the node settles on exactly the running tasks",
        TIMEOUT,
        || look().is_ok(),
        || {
            let log = std::fs::read_to_string(cluster.dir().join("agent-node1.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            format!(
                "{}\nsteps so far:\n{}\nagent log (last lines):\n{}",
                look().err().unwrap_or_default(),
                history.join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        },
    );
}
