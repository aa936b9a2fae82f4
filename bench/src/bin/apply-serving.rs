//! Time from "run N copies of this web service" to all N answering HTTP on their published
//! ports: `sched apply` (server + agent) beside `podman run -d -p` (CNI bridge + portmap, runc),
//! measured in one run, with the image already on the node for both.
//!
//! How to run (as root; apt: docker-registry podman skopeo busybox-static):
//!
//! ```text
//! cargo build --release -p sched -p agent -p runtime -p sched-bench
//! target/release/apply-serving                      # counts 1 and 30, 3 rounds
//! target/release/apply-serving --counts 1,10,30 --rounds 5
//! ```
//!
//! Everything happens inside a private network namespace the program makes (a loopback
//! registry, a one-server `sched server`, a `sched-agent` with task networking, podman's CNI
//! bridge), so the host's network is never touched; all of it is removed at the end.
//!
//! - **sched**: write a service.toml with `count = N` (busybox httpd, 50 millicores, 32 MiB,
//!   port 8080; each task in a user namespace of its own, the default), start the clock, `sched apply`, poll `sched get tasks -o json` until N tasks
//!   run with an endpoint, then GET `/index.html` from every endpoint until all answer 200. The
//!   clock stops at the last answer. Then `sched delete` and wait until the node is empty.
//! - **sched, userns host**: the same with `[security] userns = "host"` (tasks in the host's
//!   user namespace, as before issue 16): what the user namespaces cost end to end.
//! - **podman**: start the clock, run N `podman run -d -p 127.0.0.1:PORT:8080 --cpus 0.05
//!   --memory 32m` at once (as a deploy script would), wait for them, then GET every published
//!   port until all answer. Then `podman rm -af`.
//!
//! The sides alternate inside every round (and swap who goes first each round). It prints each
//! measurement and the median per count with the ratio sched/podman.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sched_tests::bundle::{remove_cgroup_parent, unique_name};
use sched_tests::busybox_image::push_busybox;
use sched_tests::netlab::{NodeLab, http_get};
use sched_tests::oci_image::Entry;
use sched_tests::registry::{Registry, free_port};
use serde_json::{Value, json};

/// How long one side may take to serve before the benchmark gives up.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The page every replica serves.
const PAGE: &str = "serving\n";

struct Options {
    counts: Vec<usize>,
    rounds: usize,
    bin_dir: PathBuf,
}

fn parse_options() -> Result<Options> {
    let exe = std::env::current_exe().context("find the benchmark's own path")?;
    let bin_dir = exe.parent().context("the benchmark lives in target/<profile>/")?.to_path_buf();
    let mut options = Options { counts: vec![1, 30], rounds: 3, bin_dir };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--counts" => {
                options.counts = value("--counts")?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>().context("--counts takes numbers like 1,30"))
                    .collect::<Result<_>>()?;
            }
            "--rounds" | "-n" => options.rounds = value("--rounds")?.parse().context("--rounds takes a positive number")?,
            "--bin-dir" => options.bin_dir = PathBuf::from(value("--bin-dir")?),
            "--help" | "-h" => {
                println!(
                    "usage: apply-serving [--counts N,N (1,30)] [--rounds N (3)] [--bin-dir DIR \
                     (where sched, sched-agent and sched-runtime are; default: beside this program)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    ensure!(options.counts.iter().all(|&c| (1..=90).contains(&c)), "--counts must be between 1 and 90 (the node's port range)");
    for binary in ["sched", "sched-agent", "sched-runtime"] {
        let path = options.bin_dir.join(binary);
        ensure!(
            path.exists(),
            "{} does not exist: build with `cargo build --release -p sched -p agent -p runtime -p sched-bench`",
            path.display()
        );
    }
    let euid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").context("read /proc/self")?);
    ensure!(euid == 0, "run as root: the benchmark starts containers and a network namespace");
    ensure!(
        Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()),
        "podman is missing: run `bash scripts/install-test-deps.sh`"
    );
    Ok(options)
}

fn main() -> Result<()> {
    let options = parse_options()?;
    // A tag of its own for the private namespace (the tests use small tags).
    let lab = NodeLab::new(231);
    let mut outcome = Err(anyhow::anyhow!("the benchmark body did not run"));
    lab.run(|| async { outcome = run(&options, lab.data_dir()) });
    outcome
}

/// The sides: sched with its default (a user namespace per task), sched with tasks in the host's
/// user namespace, podman.
const SCHED: &str = "sched";
const SCHED_HOST: &str = "sched, userns host";
const PODMAN: &str = "podman";

/// Which user namespace the service's tasks run in (`[security] userns`).
#[derive(Clone, Copy)]
enum Userns {
    Auto,
    Host,
}

/// One measurement: which side, how many tasks, how long until all served.
struct Sample {
    side: &'static str,
    count: usize,
    elapsed: Duration,
}

fn run(options: &Options, work: &Path) -> Result<()> {
    Command::new("ip").args(["link", "set", "lo", "up"]).status().context("set lo up")?;
    let registry = Registry::start();
    let image = push_busybox(
        work,
        &registry.addr(),
        "web:1",
        vec![Entry::dir("www"), Entry::file("www/index.html", PAGE)],
        json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]}),
    );
    let sched = SchedSide::start(options, work)?;
    let podman = PodmanSide::new(work, &image)?;
    println!("warming up: the image onto the node for both sides");
    sched.measure(&image, 1, "warmup", Userns::Auto).context("sched warm-up")?;
    podman.measure(1).context("podman warm-up")?;

    let mut samples = Vec::new();
    for round in 0..options.rounds {
        for &count in &options.counts {
            let sched_first = round % 2 == 0;
            let sides = if sched_first { [SCHED, SCHED_HOST, PODMAN] } else { [PODMAN, SCHED_HOST, SCHED] };
            for side in sides {
                let elapsed = match side {
                    SCHED => sched.measure(&image, count, &format!("r{round}"), Userns::Auto)?,
                    SCHED_HOST => sched.measure(&image, count, &format!("r{round}-host"), Userns::Host)?,
                    _ => podman.measure(count)?,
                };
                println!("round {} {side:>18} {count:>3} tasks: {:>8.0} ms", round + 1, ms(elapsed));
                samples.push(Sample { side, count, elapsed });
            }
        }
    }
    print_table(options, &samples);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn print_table(options: &Options, samples: &[Sample]) {
    println!();
    println!(
        "| tasks | sched apply → all serving (userns auto) | sched, userns host | userns auto/host | podman run -d -p ×N → all serving | sched/podman |"
    );
    println!("|---|---|---|---|---|---|");
    for &count in &options.counts {
        let of = |side: &str| median(samples.iter().filter(|s| s.side == side && s.count == count).map(|s| s.elapsed).collect());
        let (sched, host, podman) = (of(SCHED), of(SCHED_HOST), of(PODMAN));
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {count} | {:.0} ms | {:.0} ms | {:.2}x | {:.0} ms | **{:.2}x** |",
            ms(sched),
            ms(host),
            ratio(sched, host),
            ms(podman),
            ratio(sched, podman)
        );
    }
    println!("\nmedians of {} rounds; ratios: lower is faster", options.rounds);
}

/// Waits until every endpoint answers `GET /index.html` with the page.
fn wait_serving(endpoints: &[String], deadline: Instant) -> Result<()> {
    let mut waiting: Vec<std::net::SocketAddr> =
        endpoints.iter().map(|e| e.parse().with_context(|| format!("endpoint {e:?} is not IP:PORT"))).collect::<Result<_>>()?;
    while !waiting.is_empty() {
        waiting.retain(|addr| !http_get(*addr, Duration::from_secs(1)).is_ok_and(|body| body == PAGE));
        ensure!(Instant::now() < deadline, "{} endpoints did not serve in time: {waiting:?}", waiting.len());
        if !waiting.is_empty() {
            sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// A one-server cluster and one agent with task networking, in the lab namespace.
struct SchedSide {
    sched: PathBuf,
    server_addr: String,
    dir: PathBuf,
    cgroup_parent: String,
    agent_data: PathBuf,
    runtime: PathBuf,
    children: Vec<Child>,
}

impl SchedSide {
    fn start(options: &Options, work: &Path) -> Result<Self> {
        let dir = work.join("sched");
        fs::create_dir_all(&dir)?;
        let server_addr = format!("127.0.0.1:{}", free_port());
        let log = |name: &str| -> Result<Stdio> { Ok(fs::File::create(dir.join(name))?.into()) };
        let mut side = SchedSide {
            sched: options.bin_dir.join("sched"),
            server_addr: server_addr.clone(),
            cgroup_parent: format!("/sched-bench-{}", unique_name()),
            agent_data: dir.join("agent"),
            runtime: options.bin_dir.join("sched-runtime"),
            dir: dir.clone(),
            children: Vec::new(),
        };
        let server = Command::new(&side.sched)
            .args(["server", "--id", "1", "--listen", &server_addr])
            .arg("--data-dir")
            .arg(dir.join("server"))
            .arg("--admin-credentials")
            .arg(dir.join("admin.toml"))
            .stdin(Stdio::null())
            .stdout(log("server.log")?)
            .stderr(log("server.log.err")?)
            .spawn()
            .context("start sched server")?;
        side.children.push(server);
        // The agent joins with a token, as on a real cluster: made once the server leads.
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            if let Ok(out) = side.cli(&["token", "create", "--role", "agent"])
                && out.status.success()
            {
                break String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            ensure!(Instant::now() < deadline, "the server made no join token within 30 s (logs in {})", dir.display());
            sleep(Duration::from_millis(100));
        };
        let agent = Command::new(options.bin_dir.join("sched-agent"))
            .args(["--server", &server_addr, "--name", "bench", "--stop-grace", "1", "--api-listen", "127.0.0.1:0"])
            .args(["--join", &token])
            .arg("--data-dir")
            .arg(&side.agent_data)
            .args(["--cgroup-parent", &side.cgroup_parent])
            .arg("--netns-dir")
            .arg(dir.join("netns"))
            .arg("--runtime")
            .arg(&side.runtime)
            .stdin(Stdio::null())
            .stdout(log("agent.log")?)
            .stderr(log("agent.log.err")?)
            .spawn()
            .context("start sched-agent")?;
        side.children.push(agent);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = side.cli(&["get", "nodes", "-o", "json"]).ok().and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
            if nodes.as_ref().and_then(Value::as_array).is_some_and(|n| !n.is_empty()) {
                break;
            }
            ensure!(Instant::now() < deadline, "the agent did not register within 30 s (logs in {})", dir.display());
            sleep(Duration::from_millis(100));
        }
        Ok(side)
    }

    fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.sched)
            .args(["--server", &self.server_addr])
            .arg("--config")
            .arg(self.dir.join("admin.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run sched")
    }

    fn tasks_of(&self, service: &str) -> Result<Vec<Value>> {
        let out = self.cli(&["get", "tasks", "-o", "json"])?;
        ensure!(out.status.success(), "sched get tasks: {}", String::from_utf8_lossy(&out.stderr));
        let all: Value = serde_json::from_slice(&out.stdout).context("parse sched get tasks -o json")?;
        Ok(all.as_array().cloned().unwrap_or_default().into_iter().filter(|t| t["service"] == service).collect())
    }

    /// Applies `count` replicas, times until all serve, then deletes them and waits for an
    /// empty node.
    fn measure(&self, image: &str, count: usize, tag: &str, userns: Userns) -> Result<Duration> {
        let name = format!("web-{count}-{tag}");
        let file = self.dir.join(format!("{name}.toml"));
        let security = match userns {
            Userns::Auto => "",
            Userns::Host => "\n[security]\nuserns = \"host\"\n",
        };
        fs::write(
            &file,
            format!("name = \"{name}\"\nimage = \"{image}\"\ncpu = 50\nmemory = 32\nports = [8080]\ncount = {count}\n{security}"),
        )?;
        let start = Instant::now();
        let deadline = start + SERVE_TIMEOUT;
        let out = self.cli(&["apply", &file.to_string_lossy()])?;
        ensure!(out.status.success(), "sched apply: {}", String::from_utf8_lossy(&out.stderr));
        let endpoints = loop {
            let tasks = self.tasks_of(&name)?;
            let running: Vec<String> = tasks
                .iter()
                .filter(|t| t["observed_state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("running")))
                .filter_map(|t| t["endpoints"].as_array().and_then(|e| e.first()).and_then(Value::as_str).map(str::to_owned))
                .collect();
            if running.len() == count {
                break running;
            }
            ensure!(Instant::now() < deadline, "{count} tasks did not run in time: {tasks:?}");
            sleep(Duration::from_millis(20));
        };
        wait_serving(&endpoints, deadline)?;
        let elapsed = start.elapsed();

        let out = self.cli(&["delete", &name])?;
        ensure!(out.status.success(), "sched delete: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(60);
        let running = |t: &Value| t["observed_state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("running"));
        while !self.containers()?.is_empty() || self.tasks_of(&name)?.iter().any(running) {
            ensure!(
                Instant::now() < deadline,
                "the tasks of {name} were not removed within 60 s: containers {:?}, tasks {:?}",
                self.containers()?,
                self.tasks_of(&name)?
            );
            sleep(Duration::from_millis(100));
        }
        Ok(elapsed)
    }

    fn containers(&self) -> Result<Vec<Value>> {
        let out = Command::new(&self.runtime)
            .arg("--root")
            .arg(self.agent_data.join("runtime"))
            .args(["list", "--format", "json"])
            .output()
            .context("sched-runtime list")?;
        Ok(serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }
}

impl Drop for SchedSide {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(list) = self.containers() {
            for c in list {
                let id = c["id"].as_str().unwrap_or_default();
                let _ =
                    Command::new(&self.runtime).arg("--root").arg(self.agent_data.join("runtime")).args(["delete", "--force", id]).output();
            }
        }
        for m in sched_tests::bundle::mounts_under(&self.dir).iter().rev() {
            let _ = Command::new("umount").args(["--lazy", m]).output();
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// podman with private storage and run root, the image pulled from the lab registry.
struct PodmanSide {
    root: PathBuf,
    image: String,
    cgroup_parent: String,
}

impl PodmanSide {
    fn new(work: &Path, image: &str) -> Result<Self> {
        let side = PodmanSide {
            root: work.join("podman"),
            image: image.to_owned(),
            cgroup_parent: format!("/sched-bench-podman-{}", unique_name()),
        };
        let out = side.podman().args(["pull", "--quiet", "--tls-verify=false", image]).output()?;
        ensure!(out.status.success(), "podman pull {image}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(side)
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `count` replicas at once, times until all serve, then removes them.
    fn measure(&self, count: usize) -> Result<Duration> {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let start = Instant::now();
        let runs: Vec<Child> = ports
            .iter()
            .map(|port| {
                self.podman()
                    .args(["run", "-d", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
                    .args(["--cgroup-parent", &self.cgroup_parent, "--cpus", "0.05", "--memory", "32m"])
                    .args(["-p", &format!("127.0.0.1:{port}:8080"), &self.image])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("start podman run")
            })
            .collect::<Result<_>>()?;
        for run in runs {
            let out = run.wait_with_output()?;
            ensure!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
        }
        let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        if let Err(e) = wait_serving(&endpoints, start + SERVE_TIMEOUT) {
            let ps = self.podman().args(["ps", "--all"]).output()?;
            bail!("{e}\npodman ps --all:\n{}", String::from_utf8_lossy(&ps.stdout));
        }
        let elapsed = start.elapsed();
        let out = self.podman().args(["rm", "--all", "--force", "--time", "0"]).output()?;
        ensure!(out.status.success(), "podman rm: {}", String::from_utf8_lossy(&out.stderr));
        Ok(elapsed)
    }
}

impl Drop for PodmanSide {
    fn drop(&mut self) {
        let _ = self.podman().args(["rm", "--all", "--force", "--time", "0"]).output();
        let _ = self.podman().args(["rmi", "--all", "--force"]).output();
        for m in sched_tests::bundle::mounts_under(&self.root).iter().rev() {
            let _ = Command::new("umount").args(["--lazy", m]).output();
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}
