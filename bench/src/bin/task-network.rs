//! Task network setup latency: `agent::network` beside the CNI reference plugins (`bridge` +
//! `host-local` IPAM + `portmap`, what podman and containerd run), interleaved in one run.
//!
//! How to run (as root):
//!
//! ```text
//! cargo build --release -p sched-bench --bin task-network
//! target/release/task-network                  # 30 iterations
//! target/release/task-network --iterations 100
//! ```
//!
//! Per iteration and per implementation it times:
//! - `create+publish`: a new pinned network namespace, a veth pair onto the bridge, the address,
//!   `lo` up, the default route, outbound NAT, and one published TCP port. sched:
//!   `TaskNetwork::create` + `NodeNetwork::publish`; CNI: the same namespace creation +
//!   `bridge ADD` (isGateway, ipMasq, hairpinMode, host-local IPAM) + `portmap ADD`.
//! - `destroy`: the reverse (`TaskNetwork::destroy`; `portmap DEL` + `bridge DEL` + unpinning).
//!
//! Both run inside one throwaway node network namespace (from `sched_tests::netlab`), on
//! separate bridges and subnets, alternating who goes first. It prints min / median / max in
//! milliseconds and the ratio of medians sched/CNI. Needs Debian's containernetworking-plugins
//! (in /usr/lib/cni) and iptables, which portmap and ipMasq drive.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::network::{NodeNetwork, TaskNetwork, netns};
use anyhow::{Context, Result, bail, ensure};
use sched_tests::netlab::NodeLab;
use serde_json::{Value, json};

const CNI_PATH: &str = "/usr/lib/cni";
const CONTAINER_PORT: u16 = 8080;

#[derive(Default)]
struct Samples {
    sched_create: Vec<Duration>,
    sched_destroy: Vec<Duration>,
    cni_create: Vec<Duration>,
    cni_destroy: Vec<Duration>,
}

fn main() -> Result<()> {
    let mut iterations = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" | "-n" => {
                iterations = args.next().context("--iterations needs a value")?.parse().context("--iterations takes a number")?
            }
            other => bail!("unknown argument {other:?} (expected --iterations N)"),
        }
    }
    ensure!(
        Path::new(CNI_PATH).join("bridge").exists(),
        "{CNI_PATH}/bridge is missing: run `bash scripts/install-test-deps.sh` \
         (containernetworking-plugins)"
    );
    let lab = NodeLab::new(250);
    let cni = Cni { netns_dir: lab.config().netns_dir, ipam_dir: lab.data_dir().join("cni-ipam") };
    let mut samples = Samples::default();
    let mut failure = None;
    lab.run(|| async {
        if let Err(e) = measure(&lab, &cni, iterations, &mut samples).await {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    println!("task network setup, {iterations} iterations (ms)");
    println!("| operation | sched min | sched median | sched max | CNI min | CNI median | CNI max | sched/CNI |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, ours, theirs) in
        [("create+publish", &samples.sched_create, &samples.cni_create), ("destroy", &samples.sched_destroy, &samples.cni_destroy)]
    {
        let (a, b) = (stats(ours), stats(theirs));
        println!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |", a.0, a.1, a.2, b.0, b.1, b.2, a.1 / b.1);
    }
    Ok(())
}

async fn measure(lab: &NodeLab, cni: &Cni, iterations: usize, samples: &mut Samples) -> Result<()> {
    let node = NodeNetwork::new(lab.config()).await?;
    for i in 0..iterations {
        let id = format!("bench-{i}");
        let sched_first = i % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == sched_first {
                let started = Instant::now();
                let task = TaskNetwork::create(&node, &id).await?;
                node.publish(task.ip, CONTAINER_PORT).await?;
                samples.sched_create.push(started.elapsed());
                let started = Instant::now();
                task.destroy(&node).await?;
                samples.sched_destroy.push(started.elapsed());
            } else {
                let host_port = 41000 + i as u16;
                let started = Instant::now();
                let result = cni.add(&id, host_port).await?;
                samples.cni_create.push(started.elapsed());
                let started = Instant::now();
                cni.del(&id, host_port, &result).await?;
                samples.cni_destroy.push(started.elapsed());
            }
        }
    }
    node.teardown().await?;
    Ok(())
}

/// The CNI reference plugins driven the way libcni does for a two-plugin conflist.
struct Cni {
    netns_dir: PathBuf,
    ipam_dir: PathBuf,
}

impl Cni {
    fn bridge_config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "schedbench", "type": "bridge",
            "bridge": "cnibr250", "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": "10.199.251.0/24" }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.ipam_dir,
            },
        })
    }

    fn portmap_config(host_port: u16, prev_result: &Value) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "schedbench", "type": "portmap",
            "capabilities": { "portMappings": true },
            "runtimeConfig": { "portMappings": [
                { "hostPort": host_port, "containerPort": CONTAINER_PORT, "protocol": "tcp" },
            ]},
            "prevResult": prev_result,
        })
    }

    async fn add(&self, id: &str, host_port: u16) -> Result<Value> {
        let path = self.netns_dir.join(id);
        netns::create(&path).await?;
        let output = plugin("ADD", id, &path, &self.bridge_config())?;
        let result: Value = serde_json::from_str(&output).context("bridge ADD result")?;
        plugin("ADD", id, &path, &Self::portmap_config(host_port, &result))?;
        Ok(result)
    }

    async fn del(&self, id: &str, host_port: u16, result: &Value) -> Result<()> {
        let path = self.netns_dir.join(id);
        plugin("DEL", id, &path, &Self::portmap_config(host_port, result))?;
        plugin("DEL", id, &path, &self.bridge_config())?;
        netns::remove(&path)?;
        Ok(())
    }
}

/// Runs one CNI plugin command with `config` on stdin; its stdout.
fn plugin(command: &str, id: &str, netns: &Path, config: &Value) -> Result<String> {
    use std::io::Write;
    let kind = config["type"].as_str().unwrap_or("?");
    let mut child = Command::new(Path::new(CNI_PATH).join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start CNI plugin {kind}"))?;
    child.stdin.take().context("plugin stdin")?.write_all(config.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "CNI {kind} {command} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// (min, median, max) in milliseconds.
fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (ms[0], ms[ms.len() / 2], ms[ms.len() - 1])
}
