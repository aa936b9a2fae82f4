//! `sched-agent`: the node daemon. Thin: flags, logging, then `agent::node::run` until SIGINT or
//! SIGTERM. Tasks keep running when the agent stops; a restarted agent adopts them.

use std::path::PathBuf;
use std::time::Duration;

use agent::network::Ipv4Subnet;
use agent::node::{AgentConfig, run};
use anyhow::{Context, Result, bail};
use clap::Parser;

/// Runs the tasks the sched servers assign to this node.
#[derive(Parser)]
#[command(name = "sched-agent", version, about)]
struct Cli {
    /// Server addresses HOST:PORT, comma-separated; tried in turn.
    #[arg(long, env = "SCHED_SERVER", value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// Where images, task dirs and runtime state are kept.
    #[arg(long, default_value = "/var/lib/sched")]
    data_dir: PathBuf,
    /// The node's name in the cluster (default: the hostname). Its certificate is bound to it.
    #[arg(long)]
    name: Option<String>,
    /// A join token (`sched token create --role agent` on a server), needed on the first start
    /// only: the node gets its certificate with it and keeps it in DATA_DIR/pki.
    #[arg(long, env = "SCHED_JOIN_TOKEN", value_name = "TOKEN")]
    join: Option<String>,
    /// Labels for placement constraints, k=v comma-separated.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// The address tasks' published ports are reached on (default: 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Where the agent API listens (task logs for `sched logs`; the servers call it): HOST:PORT,
    /// port 0 for any free port (default: the --address, port 7071). Serves what tasks print:
    /// keep it on the nodes' network.
    #[arg(long)]
    api_listen: Option<String>,
    /// Log follows (`sched logs -f`) the agent API serves at once; one more is refused.
    #[arg(long, default_value_t = agent::logs::DEFAULT_MAX_FOLLOWS)]
    max_log_follows: usize,
    /// CPU offered to tasks in millicores (default: all cores).
    #[arg(long)]
    cpu: Option<u32>,
    /// Memory offered to tasks in MiB (default: all memory).
    #[arg(long)]
    memory: Option<u32>,
    /// The sched-runtime binary (default: next to sched-agent, else on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// The cgroup every task's cgroup is made under.
    #[arg(long, default_value = agent::node::DEFAULT_CGROUP_PARENT)]
    cgroup_parent: String,
    /// The host ids tasks' user namespaces come from, as FIRST:COUNT (an /etc/subuid line's
    /// numbers): each task gets 65,536 of them that no other task of this node holds, for uids
    /// and gids alike. Two agents on one host need pools that do not overlap: a second one on
    /// an overlapping pool is refused at start.
    #[arg(long, default_value_t = agent::task::IdPool::default())]
    userns_ids: agent::task::IdPool,
    /// Seconds a stopped task gets between its stop signal and SIGKILL.
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// Seconds between the reaper's rounds, which remove what no task of the node owns
    /// (containers, shims, cgroups, mounts, netns pins, veths, ports, task dirs); it also runs
    /// once the first assignments arrive.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    reap_interval_secs: u64,
    /// The node bridge tasks are attached to.
    #[arg(long, default_value = agent::network::DEFAULT_BRIDGE)]
    bridge: String,
    /// The node's task subnet in CIDR form (prefix 8 to 30); the bridge takes its `.1`. Move it
    /// when the node's own network already uses the default range.
    #[arg(long, default_value = agent::network::DEFAULT_SUBNET)]
    subnet: Ipv4Subnet,
    /// Run tasks without a network (loopback only): no bridge, no published ports.
    #[arg(long)]
    no_network: bool,
    /// Where task network namespaces are pinned (one file per task).
    #[arg(long, default_value = agent::network::DEFAULT_NETNS_DIR)]
    netns_dir: PathBuf,
    /// A registry (HOST[:PORT]) pulled from over plain HTTP; loopback ones always are.
    /// Repeat or comma-separate for several.
    #[arg(long = "insecure-registry", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// The most bytes one image's layers may unpack to (`16GiB`, `512MiB`); a bigger image
    /// (or a "gzip bomb" layer) fails to pull and leaves nothing on the disk.
    #[arg(long, value_parser = runtime::image::parse_size, default_value = "16GiB")]
    max_image_bytes: u64,
    /// Seconds an image no task on the node uses is kept (default: a day).
    #[arg(long, default_value_t = 86_400)]
    image_gc_unused_secs: u64,
    /// Disk use (percent of the data dir's filesystem) from which unused images are removed
    /// whatever their age, least recently used first.
    #[arg(long, default_value_t = 85)]
    image_gc_high_percent: u8,
    /// Removals under disk pressure go on until the disk use is below this percentage.
    #[arg(long, default_value_t = 80)]
    image_gc_low_percent: u8,
    /// Seconds between looks for unused images.
    #[arg(long, default_value_t = 60)]
    image_gc_interval_secs: u64,
    #[command(flatten)]
    ingress: agent::ingress_node::IngressArgs,
    /// For crash tests only: kill the agent (SIGKILL) when it reaches this point of a task's
    /// start, stop or removal (see agent/src/crash_point.rs).
    #[arg(long, hide = true, value_name = "POINT")]
    crash_at: Option<String>,
    /// Log debug records.
    #[arg(long)]
    debug: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(point) = &cli.crash_at {
        agent::crash_point::arm(point).map_err(anyhow::Error::msg).context("--crash-at")?;
    }
    let level = if cli.debug { tracing::Level::DEBUG } else { tracing::Level::INFO };
    tracing_subscriber::fmt().with_max_level(level).with_target(false).init();
    let config = config(cli)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping; tasks keep running");
        };
        run(config, shutdown).await
    })?;
    Ok(())
}

/// The host's defaults ([`AgentConfig::for_this_host`]) with the flags applied.
fn config(cli: Cli) -> Result<AgentConfig> {
    let mut config = AgentConfig::for_this_host(cli.server, cli.data_dir)?;
    for l in &cli.labels {
        let Some((k, v)) = l.split_once('=') else { bail!("--labels {l:?}: use key=value") };
        config.labels.insert(k.to_string(), v.to_string());
    }
    if let Some(name) = cli.name {
        config.name = name;
    }
    if let Some(runtime) = cli.runtime {
        config.runtime_binary = runtime;
    }
    config.address = cli.address;
    config.credentials = agent::node::NodeCredentials::Stored { join_token: cli.join };
    config.api_listen = cli.api_listen;
    config.max_log_follows = cli.max_log_follows;
    config.cpu_millis = cli.cpu.unwrap_or(config.cpu_millis);
    config.memory_mib = cli.memory.unwrap_or(config.memory_mib);
    config.cgroup_parent = cli.cgroup_parent;
    config.userns_ids = cli.userns_ids;
    config.stop_grace = Duration::from_secs(cli.stop_grace);
    config.reap_interval = Duration::from_secs(cli.reap_interval_secs);
    config.insecure_registries = cli.insecure_registries;
    config.ingress = cli.ingress.settings(None)?;
    config.max_image_bytes = cli.max_image_bytes;
    config.image_gc = agent::node::ImageGcPolicy {
        unused_age: Duration::from_secs(cli.image_gc_unused_secs),
        high_percent: cli.image_gc_high_percent,
        low_percent: cli.image_gc_low_percent,
        interval: Duration::from_secs(cli.image_gc_interval_secs),
    };
    config.image_gc.validate().map_err(anyhow::Error::msg)?;
    match &mut config.network {
        Some(_) if cli.no_network => config.network = None,
        Some(net) => {
            net.bridge = cli.bridge;
            net.subnet = cli.subnet;
            net.netns_dir = cli.netns_dir;
        }
        None => {}
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["sched-agent", "--server", "127.0.0.1:7400"].iter().chain(args))
    }

    #[test]
    fn the_subnet_defaults_to_the_network_default() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.subnet, agent::network::DEFAULT_SUBNET.parse::<Ipv4Subnet>().unwrap());
    }

    #[test]
    fn a_subnet_flag_moves_the_task_subnet() {
        let cli = parse(&["--subnet", "10.99.4.0/22", "--name", "n1"]).unwrap();
        assert_eq!(cli.subnet.to_string(), "10.99.4.0/22");
        let config = config(cli).unwrap();
        if let Some(net) = &config.network {
            assert_eq!(net.subnet.to_string(), "10.99.4.0/22");
        }
    }

    #[test]
    fn image_flags_reach_the_config_and_bad_thresholds_are_refused() {
        let applied = config(parse(&["--max-image-bytes", "2GiB", "--image-gc-unused-secs", "60", "--name", "n1"]).unwrap()).unwrap();
        assert_eq!(applied.max_image_bytes, 2 << 30);
        assert_eq!(applied.image_gc.unused_age, Duration::from_secs(60));
        assert_eq!(parse(&[]).unwrap().max_image_bytes, runtime::image::DEFAULT_MAX_IMAGE_BYTES, "the flag's default is the library's");
        let err = config(parse(&["--image-gc-high-percent", "70", "--name", "n1"]).unwrap()).err().unwrap().to_string();
        assert!(err.contains("--image-gc-low-percent"), "{err}");
        assert!(parse(&["--max-image-bytes", "lots"]).is_err());
    }

    #[test]
    fn an_invalid_subnet_is_refused_naming_the_flag() {
        for bad in ["10.99.4.1/22", "10.99.4.0", "10.99.4.0/31", "banana/24"] {
            let err = parse(&["--subnet", bad]).err().unwrap_or_else(|| panic!("{bad} was accepted")).to_string();
            assert!(err.contains("--subnet"), "{bad}: {err}");
        }
    }
}
