//! A CPU-bound HTTP service for the autoscaling test and benchmark, and the node it runs on.
//!
//! - [`push_cpu_service`]: a busybox image whose `httpd` serves `/cgi-bin/burn`, a CGI script
//!   that spins a shell arithmetic loop until its process has used `BURN_MS` (env; default
//!   [`BURN_MS`], 30) milliseconds of CPU, read from `/proc/$$/schedstat`, and answers 200
//!   `burned N ms`, and a static `/health` file that costs next to nothing.
//! - [`CpuServiceSpec`]: the service.toml of the scenario (`cpu`, `[autoscale]` with short
//!   cooldowns, an HTTP health check on `/health`, port [`PORT`]).
//! - [`NetworkedAgent`]: a `sched-agent` *with* task networking (published ports, so tasks have
//!   endpoints), meant to run inside a [`crate::netlab::NodeLab`]'s namespace so its bridge, nft
//!   table and task namespaces exist only there. Dropping it kills the agent, force-deletes its
//!   containers, unmounts what is left and removes its cgroups.
//! - [`endpoints_source`]: the closure [`crate::load::Load`] follows: the endpoints of a
//!   service's running tasks, from `sched get tasks -o json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent_process::AgentLaunch;
use crate::bundle::unique_name;
use crate::busybox_image::push_busybox;
use crate::cluster::{Cluster, SchedCli, sched_binary};
use crate::netlab::NodeLab;
use crate::oci_image::Entry;

/// The container port httpd listens on.
pub const PORT: u16 = 8080;

/// Milliseconds of CPU a request burns unless the service sets `BURN_MS`. The script counts
/// its own CPU time (the first field of `/proc/$$/schedstat`, in ns) instead of iterations:
/// one iteration's CPU time varies 1.1-1.9 µs with what else the two cores run, so a fixed
/// count of 15,000 cost 24-36 ms a request from one minute to the next, and a load sized in
/// the quiet phase was worth a task more under the match (the e2e test's count then rose late).
pub const BURN_MS: u32 = 30;

/// The path that burns CPU.
pub const BURN_PATH: &str = "/cgi-bin/burn";

/// The cheap path (a static file).
pub const HEALTH_PATH: &str = "/health";

/// The CGI script: spin in steps of 100 iterations (about 0.2 ms) until the process has used
/// its milliseconds of CPU, then answer. httpd passes its environment on to CGI children.
const BURN_SCRIPT: &str = "#!/bin/sh\n\
ms=${BURN_MS:-DEFAULT}\n\
end=$((ms * 1000000))\n\
t=0\n\
while [ \"$t\" -lt \"$end\" ]; do\n\
  i=0\n\
  while [ $i -lt 100 ]; do i=$((i + 1)); done\n\
  read t rest < /proc/$$/schedstat\n\
done\n\
printf 'Content-Type: text/plain\\r\\n\\r\\nburned %s ms\\n' \"$ms\"\n";

/// Builds the CPU service image under `work` and pushes it to `registry_addr` as `repo_tag`;
/// returns the reference to pull.
pub fn push_cpu_service(work: &Path, registry_addr: &str, repo_tag: &str) -> String {
    let script = BURN_SCRIPT.replace("DEFAULT", &BURN_MS.to_string());
    let extra = vec![
        Entry::dir("www"),
        Entry::file("www/health", "ok\n"),
        Entry::dir("www/cgi-bin"),
        Entry::File { path: "www/cgi-bin/burn".into(), content: script.into_bytes(), mode: 0o755, uid: 0, gid: 0 },
    ];
    let process = json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["/bin/httpd", "-f", "-p", PORT.to_string(), "-h", "/www"],
    });
    push_busybox(work, registry_addr, repo_tag, extra, process)
}

/// `[autoscale]` of the scenario.
#[derive(Clone, Debug)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub target_cpu_percent: u32,
    /// A service.toml duration, e.g. `"5s"`.
    pub scale_out_cooldown: String,
    pub scale_in_cooldown: String,
}

/// The service.toml of a CPU service.
#[derive(Clone, Debug)]
pub struct CpuServiceSpec {
    pub name: String,
    pub image: String,
    /// Millicores per task (the limit the CPU fraction is measured against).
    pub cpu: u32,
    /// MiB per task.
    pub memory: u32,
    /// Tasks at the start (with autoscale: its min).
    pub count: u32,
    pub autoscale: Option<Autoscale>,
    /// Overrides [`BURN_MS`] through the env.
    pub burn_ms: Option<u32>,
}

impl CpuServiceSpec {
    /// The betting-odds service of issue #9: 100 millicores, 32 MiB, autoscaled between 2 and
    /// 8 at 70% with the given cooldowns.
    pub fn betting_odds(name: &str, image: &str, scale_out_cooldown: &str, scale_in_cooldown: &str) -> Self {
        CpuServiceSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            cpu: 100,
            memory: 32,
            count: 2,
            autoscale: Some(Autoscale {
                min: 2,
                max: 8,
                target_cpu_percent: 70,
                scale_out_cooldown: scale_out_cooldown.to_owned(),
                scale_in_cooldown: scale_in_cooldown.to_owned(),
            }),
            burn_ms: None,
        }
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        let mut text = format!(
            "name = \"{}\"\nimage = \"{}\"\ncpu = {}\nmemory = {}\nports = [{PORT}]\ncount = {}\n",
            self.name, self.image, self.cpu, self.memory, self.count
        );
        if let Some(ms) = self.burn_ms {
            text.push_str(&format!("env = {{ BURN_MS = \"{ms}\" }}\n"));
        }
        if let Some(a) = &self.autoscale {
            text.push_str(&format!(
                "\n[autoscale]\nmin = {}\nmax = {}\ntarget_cpu_percent = {}\nscale_out_cooldown = \"{}\"\nscale_in_cooldown = \"{}\"\n",
                a.min, a.max, a.target_cpu_percent, a.scale_out_cooldown, a.scale_in_cooldown
            ));
        }
        text.push_str(&format!(
            "\n[health]\nkind = \"http\"\npath = \"{HEALTH_PATH}\"\nport = {PORT}\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 3\n"
        ));
        text
    }

    /// Writes `NAME.toml` into `dir`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, self.toml()).expect("write the service.toml");
        path
    }
}

/// The runtime beside `sched` (tests live in target/<profile>/deps/, benchmark programs in
/// target/<profile>/), unless `SCHED_TEST_RUNTIME` names another.
fn runtime() -> PathBuf {
    std::env::var_os("SCHED_TEST_RUNTIME").map_or_else(|| sched_binary().with_file_name("sched-runtime"), PathBuf::from)
}

/// A `sched-agent` with task networking, inside the namespace of the thread that starts it
/// (a [`NodeLab::run`] body), using the lab's bridge, subnet and netns dir.
pub struct NetworkedAgent {
    child: Child,
    name: String,
    data_dir: PathBuf,
    cgroup_parent: String,
    /// More flags, kept for a restart.
    extra_args: Vec<String>,
}

impl NetworkedAgent {
    /// Starts agent `name` against every server of `cluster`, data under the cluster's dir.
    pub fn start(cluster: &Cluster, lab: &NodeLab, name: &str) -> NetworkedAgent {
        Self::start_with(cluster, lab, name, &[])
    }

    /// Starts an agent with more flags than the usual ones (e.g. `--ingress-listen`; an
    /// `--api-listen` replaces the usual `127.0.0.1:0`).
    pub fn start_with(cluster: &Cluster, lab: &NodeLab, name: &str, extra_args: &[&str]) -> NetworkedAgent {
        let data_dir = cluster.dir().join(format!("agent-{name}"));
        let cgroup_parent = format!("/sched-test-{}", unique_name());
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let child = spawn_networked(cluster, lab, name, &data_dir, &cgroup_parent, &extra_args);
        NetworkedAgent { child, name: name.to_owned(), data_dir, cgroup_parent, extra_args }
    }

    /// SIGKILL to the agent alone, reaped; its tasks keep running.
    pub fn kill(&mut self) {
        crate::agent_process::kill_agent(&mut self.child);
    }

    /// Kills the agent and starts it again with the same name, data dir and cgroup parent, and
    /// `extra_args` in place of the flags it had; its log goes on in the same file.
    pub fn restart_with(&mut self, cluster: &Cluster, lab: &NodeLab, extra_args: &[&str]) {
        self.kill();
        self.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        self.child = spawn_networked(cluster, lab, &self.name, &self.data_dir, &self.cgroup_parent, &self.extra_args);
    }

    /// Whether the agent process has ended (reaped if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The agent's data dir (its runtime root is `runtime/` in it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cgroup every task's cgroup is made under.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The agent's network layout: the lab's bridge, subnet and netns dir, the defaults (nft
    /// table, host ports) inside the lab's node namespace, state under its data dir.
    pub fn network_config(&self, lab: &NodeLab) -> agent::network::NodeNetworkConfig {
        networked_config(lab, &self.data_dir)
    }

    /// Where the agent keeps what it holds on its host.
    pub fn holder(&self, lab: &NodeLab) -> crate::node_holdings::Holder {
        crate::node_holdings::Holder {
            data_dir: self.data_dir.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            network: self.network_config(lab),
        }
    }

    /// The containers the node's runtime knows: `(id, status)`.
    pub fn containers(&self) -> Vec<(String, String)> {
        crate::agent_process::node_containers(&runtime(), &self.data_dir)
    }
}

/// The network layout of a networked agent with `data_dir` in `lab`.
fn networked_config(lab: &NodeLab, data_dir: &Path) -> agent::network::NodeNetworkConfig {
    let lab_config = lab.config();
    let mut config = agent::network::NodeNetworkConfig::new(data_dir);
    config.bridge = lab_config.bridge;
    config.subnet = lab_config.subnet;
    config.netns_dir = lab_config.netns_dir;
    config
}

/// Starts `sched-agent` with the lab's network layout, appending to `agent-NAME.log` in the
/// cluster dir.
fn spawn_networked(cluster: &Cluster, lab: &NodeLab, name: &str, data_dir: &Path, cgroup_parent: &str, extra_args: &[String]) -> Child {
    let config = networked_config(lab, data_dir);
    let network_args: Vec<String> = vec![
        "--bridge".into(),
        config.bridge.clone(),
        "--subnet".into(),
        config.subnet.to_string(),
        "--netns-dir".into(),
        config.netns_dir.display().to_string(),
    ];
    let launch = AgentLaunch { servers: None, name, data_dir, cgroup_parent, runtime: &runtime(), network_args: &network_args };
    launch.spawn(cluster, extra_args)
}

impl Drop for NetworkedAgent {
    fn drop(&mut self) {
        crate::agent_process::print_log_when_failing(&self.data_dir, &self.name);
        crate::agent_process::kill_agent(&mut self.child);
        crate::agent_process::remove_node_leftovers(&runtime(), &self.data_dir, &self.cgroup_parent);
    }
}

/// `sched --server SERVERS get tasks -o json`, or None if the CLI failed.
pub fn tasks_at(servers: &SchedCli) -> Option<Vec<Value>> {
    let out = servers.command().args(["get", "tasks", "-o", "json"]).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout).ok()?.as_array().cloned()
}

/// The endpoints of `service`'s running tasks in a task list.
pub fn running_endpoints(tasks: &[Value], service: &str) -> Vec<String> {
    tasks
        .iter()
        .filter(|t| t["service"] == service && t["observed_state"] == "running")
        .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

/// The closure a [`crate::load::Load`] follows: `service`'s running endpoints as the servers at
/// `servers` report them (None when the CLI fails, so the load keeps its list).
pub fn endpoints_source(servers: SchedCli, service: String) -> impl FnMut() -> Option<Vec<String>> + Send + 'static {
    move || tasks_at(&servers).map(|tasks| running_endpoints(&tasks, &service))
}

/// One look at a service: its desired count and its tasks.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When it was taken, from the load's start.
    pub at: Duration,
    pub desired_count: u64,
    /// Tasks the servers want running (`desired_state == "running"`).
    pub live_tasks: usize,
    /// Running tasks: id, endpoints, CPU fraction of the limit.
    pub running: Vec<(String, Vec<String>, f64)>,
}

impl Observation {
    /// The mean CPU fraction of the running tasks (None without any).
    pub fn mean_cpu(&self) -> Option<f64> {
        (!self.running.is_empty()).then(|| self.running.iter().map(|(_, _, cpu)| cpu).sum::<f64>() / self.running.len() as f64)
    }
}

/// `name`'s desired count and tasks as the servers at `servers` report them (None if the CLI
/// failed or the service is unknown).
pub fn observe(servers: &SchedCli, name: &str, since: std::time::Instant) -> Option<Observation> {
    let out = servers.command().args(["get", "services", "-o", "json"]).env_remove("SCHED_SERVER").stdin(Stdio::null()).output().ok()?;
    let services: Value = serde_json::from_slice(&out.stdout).ok()?;
    let service = services.as_array()?.iter().find(|s| s["name"] == name)?.clone();
    let tasks = tasks_at(servers)?;
    let mine: Vec<&Value> = tasks.iter().filter(|t| t["service"] == name).collect();
    let running = mine
        .iter()
        .filter(|t| t["observed_state"] == "running")
        .map(|t| {
            let endpoints =
                t["endpoints"].as_array().map(|e| e.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect()).unwrap_or_default();
            (t["id"].as_str().unwrap_or_default().to_owned(), endpoints, t["cpu_fraction"].as_f64().unwrap_or(0.0))
        })
        .collect();
    Some(Observation {
        at: since.elapsed(),
        desired_count: service["desired_count"].as_u64()?,
        live_tasks: mine.iter().filter(|t| t["desired_state"] == "running").count(),
        running,
    })
}

/// How fast a service reacted to a load, each from the load's start.
#[derive(Clone, Debug, Default)]
pub struct Reaction {
    /// The desired count was first seen above where it was (polled).
    pub decision: Option<Duration>,
    /// The first service event saying "scale" after the load started, on the servers' clock.
    pub decision_event: Option<(Duration, String)>,
    /// A task that was not there before was first seen running (polled).
    pub running: Option<Duration>,
    /// An endpoint not seen before answered its first 200 (the load's own clock).
    pub serving: Option<Duration>,
}

impl Reaction {
    /// `load start -> decision 1.2 s (event 1.1 s) -> running 2.3 s -> serving 2.4 s`.
    pub fn line(&self) -> String {
        let s = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        format!(
            "load start -> decision {} (event {}) -> new task running {} -> new task serving {}",
            s(self.decision),
            s(self.decision_event.as_ref().map(|(d, _)| *d)),
            s(self.running),
            s(self.serving)
        )
    }
}

/// The first event of `name` whose message mentions scaling, at or after `after` (wall
/// clock), as (time since `after`, message).
pub fn scale_event_after(servers: &SchedCli, name: &str, after: std::time::SystemTime) -> Option<(Duration, String)> {
    let out = servers
        .command()
        .args(["describe", "service", name, "-o", "json"])
        .env_remove("SCHED_SERVER")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let described: Value = serde_json::from_slice(&out.stdout).ok()?;
    let after_ms = after.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    described["events"]
        .as_array()?
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("scale")))
        .filter_map(|e| Some((e["unix_ms"].as_u64()?, e["message"].as_str()?.to_owned())))
        .filter(|(ms, _)| *ms >= after_ms)
        .min_by_key(|(ms, _)| *ms)
        .map(|(ms, message)| (Duration::from_millis(ms - after_ms), message))
}
