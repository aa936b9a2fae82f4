//! `sched dev`: a one-server cluster and an agent on this machine, in one process.
//!
//! The embedded default for trying sched on one host. Server 1 of a single-member cluster
//! (Raft log in `DATA_DIR/server`) serves the API on `--listen`, and an agent (images, tasks and
//! runtime state in `DATA_DIR/agent`) registers with it over that same address, exactly as a
//! separate `sched-agent` would. Both run on one tokio runtime until Ctrl-C or SIGTERM; then
//! the agent stops first (tasks keep running under their shims, as with `sched-agent`) and the
//! server after it. The next `sched dev` on the same data dir finds the service state in the
//! log and adopts the running tasks.
//!
//! The agent also runs the ingress, on 127.0.0.1:8080 unless `--ingress-listen` or
//! `--no-ingress` say otherwise: every service's `[[route]]` is served there.
//!
//! It refuses to start (exit 1, before anything is created) when not run as root — tasks are
//! containers — or when the listen address or the ingress address is taken.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agent::node::{AgentConfig, DEFAULT_CGROUP_PARENT, NodeCredentials};
use anyhow::{Context, Result, bail};
use scheduler::cli::DEFAULT_ADDRESS;
use scheduler::credentials_file::DEFAULT_CREDENTIALS_FILE;
use scheduler::raft::RaftOptions;
use scheduler::server::ServerConfig;
use scheduler::server::cluster_pki::{self, ServerTls};
use scheduler::server::image_pin::RegistryAccess;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The server's Raft id: the only member.
const SERVER_ID: u64 = 1;
/// Ticks (100 ms) before the only member elects itself: nobody else can lead, so waiting
/// longer only delays the start.
const ELECTION_TICKS: usize = 3;
/// The agent's task-log API (the server calls it for `sched logs`): loopback, any free port,
/// which the agent registers. Nothing off this machine needs it, and a `sched-agent` on the
/// same host keeps its default port.
const AGENT_API_LISTEN: &str = "127.0.0.1:0";
/// How long the agent's certificate (issued on every start) is valid.
const AGENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the server gets to finish open requests once the agent has stopped.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Run a one-server cluster and an agent on this machine, in one process.
///
/// The embedded default for trying sched: the server keeps its Raft log in DATA_DIR/server, the
/// agent its images, tasks and runtime state in DATA_DIR/agent. Ctrl-C stops both; tasks keep
/// running and the next `sched dev` adopts them. Needs root.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the server's Raft log (DIR/server) and the agent's images, tasks and runtime state
    /// (DIR/agent) are kept.
    #[arg(long, default_value = "/var/lib/sched/dev")]
    pub data_dir: PathBuf,
    /// The API address, HOST:PORT. The default is where the other sched commands look, so
    /// `sched apply FILE` needs no --server.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub listen: String,
    /// CPU offered to tasks in millicores (default: all cores).
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory offered to tasks in MiB (default: all memory).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Run tasks without a network (loopback only): no bridge, no published ports.
    #[arg(long)]
    pub no_network: bool,
    /// The cgroup every task's cgroup is made under.
    #[arg(long, default_value = DEFAULT_CGROUP_PARENT)]
    pub cgroup_parent: String,
    /// The host ids tasks' user namespaces come from, as FIRST:COUNT (as `sched-agent
    /// --userns-ids`): 65,536 per task. Beside another agent on this host, give each a pool of
    /// its own (an overlapping one is refused at start).
    #[arg(long, default_value_t = agent::task::IdPool::default())]
    pub userns_ids: agent::task::IdPool,
    /// A registry (HOST:PORT) spoken to over plain HTTP, by the server resolving tags to
    /// digests and by the agent pulling; repeatable. Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Docker's config.json with registry credentials (default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json, when it exists).
    #[arg(long, value_name = "PATH")]
    pub docker_config: Option<PathBuf>,
    /// The ingress listens on 127.0.0.1:8080 unless --ingress-listen says otherwise.
    #[command(flatten)]
    pub ingress: agent::ingress_node::IngressArgs,
    /// Run no ingress.
    #[arg(long, conflicts_with = "ingress_listen")]
    pub no_ingress: bool,
    /// Where to write the admin credentials file (mode 0600) that `sched` reads; the default
    /// is where `sched` looks, so the other commands need no flags.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CREDENTIALS_FILE)]
    pub admin_credentials: PathBuf,
}

/// Where `sched dev`'s ingress listens unless told otherwise.
pub const DEFAULT_INGRESS_LISTEN: &str = "127.0.0.1:8080";

/// Runs the server and the agent until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("tasks are containers, which need root: run it as root (sudo sched dev)");
    }
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| listen_error(&args.listen, e))?;
    // `--listen 127.0.0.1:0` picks a free port; peers and the agent need the real one.
    let address = match listener.local_addr() {
        Ok(bound) if args.listen.ends_with(":0") => bound.to_string(),
        _ => args.listen.clone(),
    };
    let mut ingress = if args.no_ingress { None } else { args.ingress.settings(Some(DEFAULT_INGRESS_LISTEN))? };
    // Bind the ingress's address here, before anything runs, so that a taken port is refused
    // like a taken API address; the agent serves on it.
    let ingress_url = match &ingress {
        Some(settings) => {
            let bound = std::net::TcpListener::bind(&settings.listen).map_err(|e| ingress_listen_error(&settings.listen, e))?;
            let local = bound.local_addr().context("the ingress address")?;
            drop(bound);
            let scheme = if settings.config.tls.is_some() { "https" } else { "http" };
            Some(format!("{scheme}://{local}"))
        }
        None => None,
    };
    if let (Some(settings), Some(url)) = (&mut ingress, &ingress_url) {
        // Port 0 picked a free port above: keep it, so the printed URL is where it serves.
        settings.listen = url.rsplit("://").next().unwrap_or(&settings.listen).to_string();
    }

    let server_dir = args.data_dir.join("server");
    let agent_dir = args.data_dir.join("agent");
    for dir in [&server_dir, &agent_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {} (choose another --data-dir)", dir.display()))?;
    }

    // The cluster CA (made on the first start, kept in DATA_DIR/server/pki) issues the agent's
    // certificate here, so the agent needs no join token; the server issues its own and the
    // admin's when it starts.
    let ca_dir = server_dir.join("pki");
    let ca = match cluster_pki::load_ca(&ca_dir)? {
        Some(ca) => ca,
        None => {
            let ca = cluster_pki::create_ca()?;
            cluster_pki::save_ca(&ca, &ca_dir)?;
            ca
        }
    };
    let tls = ServerTls {
        ca_dir: None,
        admin_credentials: Some(args.admin_credentials.clone()),
        node_certificate_ttl: AGENT_CERTIFICATE_VALIDITY,
    };
    let server = ServerConfig {
        raft: RaftOptions { election_ticks: ELECTION_TICKS, ..RaftOptions::new(SERVER_ID) },
        data_dir: server_dir,
        advertise: address.clone(),
        initial_cluster: BTreeMap::from([(SERVER_ID, address.clone())]),
        node_timeout: Duration::from_secs(10),
        registries: RegistryAccess { insecure_registries: args.insecure_registries, docker_config: args.docker_config },
        tls: Some(tls),
    };
    let mut agent = AgentConfig::for_this_host(vec![address.clone()], agent_dir)?;
    let agent_identity = pki::Identity::new(pki::Role::Agent, &agent.name)?;
    let agent_names = [transport::AGENT_NAME.to_string(), "127.0.0.1".to_string()];
    let agent_credentials = cluster_pki::issue(&ca, &agent_identity, &agent_names, AGENT_CERTIFICATE_VALIDITY)?;
    agent.cpu_millis = args.cpu.unwrap_or(agent.cpu_millis);
    agent.memory_mib = args.memory.unwrap_or(agent.memory_mib);
    agent.cgroup_parent = args.cgroup_parent;
    agent.userns_ids = args.userns_ids;
    // The agent reaches the server in this process like any other: mutual TLS.
    agent.credentials = NodeCredentials::Given(transport::Security::MutualTls(agent_credentials));
    agent.api_listen = Some(AGENT_API_LISTEN.into());
    agent.insecure_registries = server.registries.insecure_registries.clone();
    if args.no_network {
        agent.network = None;
    }
    agent.ingress = ingress;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let (stop_agent, agent_stopped) = watch::channel(());
    let (stop_server, server_stopped) = watch::channel(());
    let server_run = scheduler::server::run(server, listener, stopped(server_stopped));
    let agent_run = agent::node::run(agent, stopped(agent_stopped));
    tokio::pin!(server_run, agent_run);

    // The credentials file names this server: only a file other than the default needs saying.
    let client = if args.admin_credentials.as_os_str() == DEFAULT_CREDENTIALS_FILE {
        "sched".to_string()
    } else {
        format!("SCHED_CONFIG={} sched", args.admin_credentials.display())
    };
    println!(
        "sched dev: a one-server cluster and this machine's agent serve on {address} (data in {}); \
         deploy with `{client} apply FILE` (e.g. examples/quotes/service.toml), look with `{client} get tasks`; Ctrl-C stops",
        args.data_dir.display()
    );
    if let Some(url) = &ingress_url {
        println!("sched dev: the ingress serves every service's [[route]] on {url} (`{client} get routes` lists them)");
    }

    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping the agent, then the server; tasks keep running"),
        _ = terminate.recv() => tracing::info!("terminated: stopping the agent, then the server; tasks keep running"),
        ended = &mut server_run => {
            let _ = stop_agent.send(());
            let _ = agent_run.await;
            ended.context("the server stopped")?;
            bail!("the server stopped on its own");
        }
        ended = &mut agent_run => {
            let _ = stop_server.send(());
            let _ = tokio::time::timeout(SERVER_STOP_TIMEOUT, server_run).await;
            ended.context("the agent stopped")?;
            bail!("the agent stopped on its own");
        }
    }
    // The agent first: its assignment stream to the server would hold the server's graceful
    // shutdown open.
    let _ = stop_agent.send(());
    let agent_result = agent_run.await;
    let _ = stop_server.send(());
    let server_result = match tokio::time::timeout(SERVER_STOP_TIMEOUT, server_run).await {
        Ok(result) => result.context("the server failed while stopping"),
        Err(_) => {
            tracing::warn!("the server did not stop within {SERVER_STOP_TIMEOUT:?}; leaving anyway");
            Ok(())
        }
    };
    agent_result.context("the agent failed while stopping")?;
    server_result
}

/// Resolves when `stop` sends (or its sender is dropped).
async fn stopped(mut stop: watch::Receiver<()>) {
    let _ = stop.changed().await;
}

fn ingress_listen_error(address: &str, error: std::io::Error) -> anyhow::Error {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "the ingress cannot listen on {address}: the address is already in use; pick another with --ingress-listen HOST:PORT, or run none with --no-ingress"
        ),
        _ => anyhow::anyhow!(
            "the ingress cannot listen on {address}: {error} (pass --ingress-listen HOST:PORT with an address of this machine)"
        ),
    }
}

fn listen_error(address: &str, error: std::io::Error) -> anyhow::Error {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {address}: the address is already in use (is another `sched dev` or `sched server` running?); \
             stop it, or pick another address with --listen HOST:PORT and pass the same to the other commands with --server"
        ),
        _ => anyhow::anyhow!("cannot listen on {address}: {error} (pass --listen HOST:PORT with an address of this machine)"),
    }
}
