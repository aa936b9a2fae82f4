//! The Vagrant lab end to end (vagrant/README.md): `vagrant/lab up` brings up 3 VMs, each with
//! a `sched server`, a `sched-agent` and its ingress under systemd, and
//! - from the host, `sched get nodes` shows 3 ready nodes and the servers agree on a leader;
//! - `vagrant/lab apply` runs the quotes example with one task per VM, and each VM's ingress
//!   answers with a quote while the route has 3 healthy targets, one per VM;
//! - the guests run pure cgroup v2, and a task's `cpu.max` there is its `cpu = 250`;
//! - a VM forced off (`virsh destroy`; not the Raft leader's) has its task running on another VM
//!   within 15 s;
//! - `vagrant/lab down` (`vagrant destroy -f`) leaves no domain, no volume of a VM and no
//!   network; then nothing of the run is left on the machine.
//!
//! libvirtd, its networks, the VMs and vagrant run in a network namespace this test makes (see
//! `sched_tests::vagrant_lab`): the lab's traffic never leaves the machine. The box is built
//! with debootstrap by vagrant/build-box.sh when it is not cached yet. Prints the times of the
//! box build, up, failover and destroy. About 6-8 minutes under software emulation.
//!
//! Needs vagrant, vagrant-libvirt, libvirt, debootstrap (scripts/install-test-deps.sh), the
//! release binaries the VMs run (`cargo build --release -p sched -p agent -p runtime --bins`:
//! debug ones are too slow for emulated guests) and the debug `sched` the test calls the lab
//! with. Alone: `cargo test -p sched-tests --test vagrant_lab -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sched_tests::vagrant_lab::{NODES, VagrantLab, ensure_box, repo};
use sched_tests::wait::wait_until;
use serde_json::Value;

/// Node id -> name.
fn node_names(lab: &VagrantLab) -> BTreeMap<u64, String> {
    let nodes = lab.sched_json(&["get", "nodes"]).unwrap_or_default();
    nodes.as_array().into_iter().flatten().filter_map(|n| Some((n["id"].as_u64()?, n["name"].as_str()?.to_owned()))).collect()
}

/// The quotes tasks that run: (node name, task).
fn running_quotes(lab: &VagrantLab) -> Vec<(String, Value)> {
    let names = node_names(lab);
    let tasks = lab.sched_json(&["get", "tasks"]).unwrap_or_default();
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["service"] == "quotes" && t["desired_state"] == "running" && t["observed_state"] == "running")
        .map(|t| (t["node_id"].as_u64().and_then(|n| names.get(&n).cloned()).unwrap_or_default(), t.clone()))
        .collect()
}

/// The node addresses of the quotes route's healthy targets.
fn healthy_targets(lab: &VagrantLab) -> BTreeSet<String> {
    let routes = lab.sched_json(&["get", "routes"]).unwrap_or_default();
    routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["service"] == "quotes")
        .flat_map(|r| r["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["healthy"] == true)
        .filter_map(|t| t["address"].as_str().map(|a| a.split(':').next().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn a_three_vm_vagrant_lab_runs_the_quotes_example_and_survives_a_lost_vm() {
    let started = Instant::now();
    let box_build = ensure_box();
    let mut lab = VagrantLab::start();

    let up = Instant::now();
    assert!(lab.lab(&["up"]), "vagrant/lab up failed");
    let up = up.elapsed();
    // `lab up` saw 3 ready nodes once; a node whose heartbeats stalled while the emulated guests
    // were busy starting is ready again with its next heartbeat.
    let all: BTreeSet<String> = NODES.iter().map(|(n, _)| n.to_string()).collect();
    let ready = || -> BTreeSet<String> {
        let nodes = lab.sched_json(&["get", "nodes"]).unwrap_or_default();
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"] == "ready")
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until(
        "3 ready nodes",
        Duration::from_secs(60),
        || ready() == all,
        || format!("{:#}", lab.sched_json(&["get", "nodes"]).unwrap_or_default()),
    );
    let members = lab.sched_json(&["cluster", "members"]).expect("sched cluster members");
    assert!(members["leader_id"].as_u64().is_some_and(|id| id != 0), "a leader: {members:#}");

    // The quotes example, one task per VM, served by every VM's ingress.
    assert!(lab.lab(&["apply"]), "vagrant/lab apply failed");
    let context = || {
        format!(
            "tasks: {:#}\nroutes: {:#}",
            lab.sched_json(&["get", "tasks"]).unwrap_or_default(),
            lab.sched_json(&["get", "routes"]).unwrap_or_default()
        )
    };
    wait_until(
        "3 running quotes tasks, one per VM, each a healthy target",
        Duration::from_secs(120),
        || {
            let on: BTreeSet<String> = running_quotes(&lab).into_iter().map(|(node, _)| node).collect();
            on.len() == 3 && healthy_targets(&lab).len() == 3
        },
        context,
    );
    let quotes = std::fs::read_to_string(repo().join("examples/quotes/quotes.txt")).expect("examples/quotes/quotes.txt");
    for (_, ip) in NODES {
        for _ in 0..3 {
            let body = lab.http_get(&format!("{ip}:8080")).unwrap_or_else(|e| panic!("the ingress on {ip}:8080: {e}"));
            assert!(quotes.lines().any(|q| q == body.trim_end()), "the ingress on {ip} answered {body:?}, not a quote");
        }
    }

    // Pure cgroup v2 in the guests, and the task's limit where the kernel reads it.
    let tasks = running_quotes(&lab);
    let (node, task) = tasks.iter().find(|(node, _)| node == "node1").expect("a task on node1");
    let id = task["id"].as_str().expect("a task id");
    let fs_type = lab.ssh(node, "stat -fc %T /sys/fs/cgroup");
    assert_eq!(String::from_utf8_lossy(&fs_type.stdout).trim(), "cgroup2fs", "pure cgroup v2 on {node}");
    let cpu_max = lab.ssh(node, &format!("cat /sys/fs/cgroup/sched/{id}/cpu.max"));
    assert_eq!(
        String::from_utf8_lossy(&cpu_max.stdout).trim(),
        "25000 100000",
        "cpu = 250 is a quarter of a CPU: {}",
        String::from_utf8_lossy(&cpu_max.stderr)
    );

    // Node loss: a VM is powered off; its task runs on another VM. The VM of the Raft leader is
    // spared: losing it adds an election, and a new leader judges heartbeats only after a whole
    // node timeout of its own (docs/control-plane.md).
    let leader = lab.sched_json(&["cluster", "members"]).and_then(|m| m["leader_id"].as_u64()).expect("a leader");
    let victim = NODES.iter().rev().map(|(n, _)| *n).find(|n| *n != format!("node{leader}")).expect("a node that does not lead");
    let victim_task = tasks.iter().find(|(node, _)| node == victim).map(|(_, t)| t["id"].clone()).expect("a task on the victim");
    lab.force_off(victim);
    let lost = Instant::now();
    wait_until(
        "3 running quotes tasks, none on the VM that was forced off",
        Duration::from_secs(60),
        || {
            let running = running_quotes(&lab);
            running.len() == 3 && running.iter().all(|(node, t)| node != victim && t["id"] != victim_task)
        },
        context,
    );
    let failover = lost.elapsed();
    println!("{victim} forced off: its task runs elsewhere after {:.1} s", failover.as_secs_f64());
    assert!(failover <= Duration::from_secs(15), "the task of {victim} took {failover:?} to run elsewhere (at most 15 s)");
    let body = lab.http_get(&format!("{}:8080", NODES[0].1)).expect("node1's ingress after the loss");
    assert!(quotes.lines().any(|q| q == body.trim_end()), "node1's ingress answered {body:?}");

    // Tear down: no domain, no VM volume, no network; then nothing of the run on the machine.
    let destroy = Instant::now();
    assert!(lab.lab(&["down"]), "vagrant/lab down failed");
    let destroy = destroy.elapsed();
    assert_eq!(lab.domains(), Vec::<String>::new(), "domains after vagrant destroy -f");
    let volumes: Vec<String> = lab.volumes().into_iter().filter(|v| v.starts_with("sched-lab-")).collect();
    assert_eq!(volumes, Vec::<String>::new(), "the VMs' volumes after vagrant destroy -f");
    assert_eq!(lab.networks(), Vec::<String>::new(), "libvirt networks after vagrant destroy -f");
    assert!(!lab.state().exists(), "vagrant/lab down removes the lab's state");
    let left = lab.teardown();
    assert!(left.is_empty(), "left on the machine: {left:#?}");
    println!(
        "vagrant lab: box build {}, up {:.0} s, failover {:.1} s, destroy {:.0} s, whole test {:.0} s",
        box_build.map(|d| format!("{:.0} s", d.as_secs_f64())).unwrap_or_else(|| "cached".into()),
        up.as_secs_f64(),
        failover.as_secs_f64(),
        destroy.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
