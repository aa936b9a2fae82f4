//! The `sched` command line: `sched server` and the client commands.
//!
//! Client commands talk to the servers named by `--server ADDR[,ADDR...]` (or `SCHED_SERVER`,
//! else the credentials file's), trying them in turn, over mutual TLS with the credentials in
//! `--config FILE` (or `SCHED_CONFIG`, else `/etc/sched/admin.toml`, which every server writes
//! for its machine's root). Exit codes: 0 done, 1 the request was rejected or the input is bad
//! (fix it; retrying will not help), 2 no server could answer (the cluster is unreachable or
//! has no leader).

mod age;
mod client;
mod logs;
mod output;
mod pki;
mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use proto::sched::v1 as pb;

use crate::credentials_file::{CredentialsFile, DEFAULT_CREDENTIALS_FILE};
use crate::raft::RaftOptions;
use crate::server::cluster_pki::ServerTls;
use crate::server::{ServerConfig, run};
use crate::spec::parse_service_toml;
use client::Servers;

/// The default API address of a server, and of `--server`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7700";

#[derive(Parser, Debug)]
#[command(name = "sched", version, about = "A self-hosted Fargate: servers, and the client to drive them")]
pub struct Cli {
    /// Servers to ask, tried in turn: HOST:PORT[,HOST:PORT...] (default: the credentials
    /// file's, else 127.0.0.1:7700).
    #[arg(long, global = true, env = "SCHED_SERVER")]
    pub server: Option<String>,
    /// The credentials file to connect with (default: /etc/sched/admin.toml, which a server
    /// writes for root on its machine; `sched login` writes others).
    #[arg(long, global = true, env = "SCHED_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Whom a command asks, with which credentials: the global flags.
struct Target {
    server: Option<String>,
    config: Option<PathBuf>,
}

impl Target {
    /// The servers to ask and the credentials to ask with.
    fn servers(&self) -> Result<Servers, CliError> {
        let file = self.credentials_file()?;
        let servers = self.server.clone().unwrap_or_else(|| match file.servers.is_empty() {
            true => DEFAULT_ADDRESS.to_string(),
            false => file.servers.join(","),
        });
        Servers::parse(&servers, transport::Security::MutualTls(file.credentials()))
    }

    /// The credentials file: `--config`, `SCHED_CONFIG`, else the default.
    fn credentials_file(&self) -> Result<CredentialsFile, CliError> {
        let (path, chosen) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CREDENTIALS_FILE), false),
        };
        CredentialsFile::load(&path).map_err(|e| {
            let hint = if chosen {
                ""
            } else {
                " (a server writes it on its machine: run sched as root there, or point --config / SCHED_CONFIG at a \
                 credentials file from `sched login`)"
            };
            CliError::BadInput(format!("{e}{hint}"))
        })
    }

    /// The `--server` list, for commands that ask servers without credentials of their own.
    fn server_list(&self) -> Vec<String> {
        let list = self.server.clone().unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Run one Raft member with the gRPC API.
    Server(ServerArgs),
    /// Create or update a service from a service.toml file.
    Apply { file: PathBuf },
    /// List services, tasks, nodes or routes (the ingress rules).
    Get {
        what: GetWhat,
        /// Only the tasks of this service (get tasks).
        #[arg(long)]
        service: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Answer from the asked server's copy without a ReadIndex round (may lag).
        #[arg(long)]
        stale: bool,
    },
    /// Show one service in full: spec, revisions, tasks, recent events.
    Describe {
        what: DescribeWhat,
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Set the desired task count of a service.
    Scale { name: String, count: u32 },
    /// Delete a service; its tasks are stopped.
    Delete { name: String },
    /// List every revision of a service.
    History {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show what a service's tasks print to stdout and stderr, read from their nodes.
    Logs(logs::LogsArgs),
    /// Make a new revision with the spec of an earlier one.
    Rollback {
        name: String,
        /// The revision to return to (default: the one before the current).
        #[arg(long = "to")]
        to: Option<u64>,
    },
    /// Show or change the servers of the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Create, list and remove join tokens (for agents, servers and users).
    Token {
        #[command(subcommand)]
        command: pki::TokenCommand,
    },
    /// Remove a node: its tasks are placed elsewhere and its certificate is revoked.
    Node {
        #[command(subcommand)]
        command: pki::NodeCommand,
    },
    /// Make a cluster CA before starting an initial cluster of several servers.
    Ca {
        #[command(subcommand)]
        command: pki::CaCommand,
    },
    /// Exchange a reader or admin token for a credentials file.
    Login(pki::LoginArgs),
    /// Use the credentials file with other tools.
    Credentials {
        #[command(subcommand)]
        command: pki::CredentialsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the voters and the leader.
    Members {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Add a server that was started with `sched server --join`.
    Join { id: u64, address: String },
    /// Remove a server from the voters.
    Leave { id: u64 },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GetWhat {
    Services,
    Tasks,
    Nodes,
    /// The ingress rules: host, path, service, port and healthy/total targets.
    Routes,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DescribeWhat {
    Service,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// This server's Raft id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// Where the Raft log and snapshots are kept.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The address to serve on, which peers and clients use: HOST:PORT.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub listen: String,
    /// The servers of a new cluster, this one included: ID=HOST:PORT,... (read on first start
    /// only; default: a one-server cluster of this server).
    #[arg(long, conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Join an existing cluster with a server token (`sched token create --role server`): get
    /// a certificate and the CA from the servers named by --server, start empty, and wait to be
    /// added with `sched cluster join ID ADDRESS`.
    #[arg(long, value_name = "TOKEN")]
    pub join: Option<String>,
    /// On first start, use the CA in DIR (from `sched ca create DIR`): every server of an
    /// initial cluster of several needs the same one. A lone server makes its own.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Where to write an admin credentials file (mode 0600) on every start, for `sched` run
    /// as root on this machine.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CREDENTIALS_FILE)]
    pub admin_credentials: PathBuf,
    /// How long the certificates of joining agents and servers are valid; agents renew theirs
    /// when two thirds have passed.
    #[arg(long, value_name = "DURATION", default_value = "720h", value_parser = parse_duration)]
    pub node_certificate_ttl: Duration,
    /// Length of one Raft tick in milliseconds (heartbeats every tick; elections after 10).
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Ticks without a leader before an election.
    #[arg(long, default_value_t = 10)]
    pub election_ticks: usize,
    /// Applied entries between saved snapshots (each followed by log compaction; etcd's
    /// default). Each snapshot serializes the whole state: fewer cost less CPU, more replay
    /// less log after a restart.
    #[arg(long, default_value_t = crate::raft::node::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for followers that lag a little (etcd's default).
    #[arg(long, default_value_t = crate::raft::node::DEFAULT_KEEP_ENTRIES)]
    pub keep_entries: u64,
    /// Milliseconds without a heartbeat after which a node is marked down and its tasks are
    /// placed elsewhere.
    #[arg(long, default_value_t = 10_000)]
    pub node_timeout_ms: u64,
    /// A registry (HOST:PORT) spoken to over plain HTTP when image tags are resolved to
    /// digests; repeatable. Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Docker's config.json with registry credentials (default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json, when it exists).
    #[arg(long, value_name = "PATH")]
    pub docker_config: Option<PathBuf>,
}

/// A flag's duration: `"30s"`, `"15m"`, `"720h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::spec::parse_duration_ms(text).map(Duration::from_millis)
}

/// What went wrong, and which exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("server: {0}")]
    Server(#[from] crate::server::ServerError),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::BadInput(_) | CliError::Rejected(_) => ExitCode::from(1),
            CliError::Unreachable(_) => ExitCode::from(2),
            CliError::Server(_) => ExitCode::from(1),
        }
    }
}

/// Parses `1=127.0.0.1:7701,2=...`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<u64, String>, CliError> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || CliError::BadInput(format!("--initial-cluster: \"{item}\" is not ID=HOST:PORT (e.g. 1=127.0.0.1:7701)"));
        let (id, address) = item.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || address.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
            return Err(bad());
        }
        if members.insert(id, address.trim().to_string()).is_some() {
            return Err(CliError::BadInput(format!("--initial-cluster lists server {id} twice")));
        }
    }
    Ok(members)
}

/// Runs one command to completion.
pub async fn run_cli(cli: Cli) -> Result<(), CliError> {
    let target = Target { server: cli.server, config: cli.config };
    let servers = || target.servers();
    match &cli.command {
        CliCommand::Server(_) | CliCommand::Ca { .. } | CliCommand::Login(_) | CliCommand::Credentials { .. } => {}
        // Every other command asks the servers: find the credentials first.
        _ => drop(servers()?),
    }
    let server_list = target.server_list();
    match cli.command {
        CliCommand::Server(args) => serve(args, server_list).await,
        CliCommand::Token { command } => pki::token(servers()?, command).await,
        CliCommand::Node { command } => pki::node(servers()?, command).await,
        CliCommand::Ca { command } => pki::ca(command),
        CliCommand::Login(args) => pki::login(args, server_list).await,
        CliCommand::Credentials { command } => pki::credentials(&target.credentials_file()?, command),
        CliCommand::Apply { file } => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| CliError::BadInput(format!("cannot read {name}: {e}")))?;
            let spec = parse_service_toml(&name, &text).map_err(|e| CliError::BadInput(e.to_string()))?;
            let request = pb::ApplyRequest { spec: Some(spec.to_proto()) };
            let answer = servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).apply(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            let service = answer.service.unwrap_or_default();
            if answer.changed {
                println!("service {} applied: revision {}", service.name, service.revision);
            } else {
                println!("service {} unchanged: revision {}", service.name, service.revision);
            }
            Ok(())
        }
        CliCommand::Get { what, service, output, stale } => {
            let servers = servers()?;
            match what {
                GetWhat::Services => {
                    let services = servers
                        .call(|c| async move {
                            client::services(c).list_services(pb::ListServicesRequest { stale }).await.map(|r| r.into_inner().services)
                        })
                        .await?;
                    print(output, || output::services_table(&services), || services.iter().map(output::service_json).collect());
                }
                GetWhat::Tasks => {
                    let request = pb::ListTasksRequest { service: service.unwrap_or_default(), stale };
                    let tasks = servers
                        .call(|c| {
                            let request = request.clone();
                            async move { client::services(c).list_tasks(request).await.map(|r| r.into_inner().tasks) }
                        })
                        .await?;
                    print(output, || output::tasks_table(&tasks), || tasks.iter().map(output::task_json).collect());
                }
                GetWhat::Nodes => {
                    let nodes = servers
                        .call(|c| async move {
                            client::services(c).list_nodes(pb::ListNodesRequest { stale }).await.map(|r| r.into_inner().nodes)
                        })
                        .await?;
                    print(output, || output::nodes_table(&nodes), || nodes.iter().map(output::node_json).collect());
                }
                GetWhat::Routes => {
                    let table = servers
                        .call(
                            |c| async move { client::routes(c).list_routes(pb::ListRoutesRequest { stale }).await.map(|r| r.into_inner()) },
                        )
                        .await?;
                    print(output, || output::routes_table(&table.rules), || table.rules.iter().map(output::route_json).collect());
                }
            }
            Ok(())
        }
        CliCommand::Describe { what: DescribeWhat::Service, name, output } => {
            let request = pb::DescribeServiceRequest { name, stale: false };
            let d = servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).describe_service(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            print_one(
                output,
                || output::describe_text(&d),
                || {
                    serde_json::json!({
                        "service": d.service.as_ref().map(output::service_json),
                        "revisions": d.revisions.iter().map(output::revision_json).collect::<Vec<_>>(),
                        "tasks": d.tasks.iter().map(output::task_json).collect::<Vec<_>>(),
                        "events": d.events.iter().map(|e| serde_json::json!({"unix_ms": e.unix_ms, "message": e.message})).collect::<Vec<_>>(),
                    })
                },
            );
            Ok(())
        }
        CliCommand::Scale { name, count } => {
            let request = pb::ScaleRequest { name, count };
            let answer = servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).scale(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            let service = answer.service.unwrap_or_default();
            println!("service {} scaled to {} task(s)", service.name, service.desired_count);
            Ok(())
        }
        CliCommand::Delete { name } => {
            let request = pb::DeleteRequest { name: name.clone() };
            servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).delete(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            println!("service {name} deleted");
            Ok(())
        }
        CliCommand::History { name, output } => {
            let request = pb::HistoryRequest { name, stale: false };
            let h = servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).history(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            print(output, || output::history_table(&h.revisions, h.current), || h.revisions.iter().map(output::revision_json).collect());
            Ok(())
        }
        CliCommand::Rollback { name, to } => {
            let request = pb::RollbackRequest { name, to_revision: to.unwrap_or(0) };
            let answer = servers()?
                .call(|c| {
                    let request = request.clone();
                    async move { client::services(c).rollback(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            let service = answer.service.unwrap_or_default();
            let from = service.current.as_ref().map_or(0, |r| r.rolled_back_from);
            if from == 0 {
                println!("service {} unchanged: revision {} already has that spec", service.name, service.revision);
            } else {
                println!("service {} rolled back to the spec of revision {from}: revision {}", service.name, service.revision);
            }
            Ok(())
        }
        CliCommand::Logs(args) => logs::run(servers()?, args).await,
        CliCommand::Cluster { command } => cluster(servers()?, command).await,
    }
}

async fn cluster(servers: Servers, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Members { output } => {
            let m =
                servers.call(|c| async move { client::cluster(c).members(pb::MembersRequest {}).await.map(|r| r.into_inner()) }).await?;
            print_one(
                output,
                || output::members_table(&m),
                || {
                    serde_json::json!({
                        "members": m.members.iter().map(output::member_json).collect::<Vec<_>>(),
                        "leader_id": m.leader_id, "term": m.term, "commit_index": m.commit_index,
                        "applied_index": m.applied_index, "answered_by": m.answered_by,
                    })
                },
            );
        }
        ClusterCommand::Join { id, address } => {
            let request = pb::JoinRequest { id, address: address.clone() };
            servers
                .call(|c| {
                    let request = request.clone();
                    async move { client::cluster(c).join(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            println!("server {id} at {address} is a member");
        }
        ClusterCommand::Leave { id } => {
            servers.call(|c| async move { client::cluster(c).leave(pb::LeaveRequest { id }).await.map(|r| r.into_inner()) }).await?;
            println!("server {id} removed from the cluster");
        }
    }
    Ok(())
}

fn print(format: Format, table: impl FnOnce() -> String, json: impl FnOnce() -> Vec<serde_json::Value>) {
    match format {
        Format::Table => println!("{}", table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&json()).expect("json")),
    }
}

fn print_one(format: Format, text: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
    match format {
        Format::Table => println!("{}", text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&json()).expect("json")),
    }
}

async fn serve(args: ServerArgs, servers: Vec<String>) -> Result<(), CliError> {
    if args.id == 0 {
        return Err(CliError::BadInput("--id must be a positive integer".into()));
    }
    let initial_cluster = match (&args.initial_cluster, &args.join) {
        (_, Some(_)) => BTreeMap::new(),
        (Some(text), None) => parse_initial_cluster(text)?,
        (None, None) => [(args.id, args.listen.clone())].into(),
    };
    if let Some(listed) = initial_cluster.get(&args.id)
        && *listed != args.listen
    {
        return Err(CliError::BadInput(format!(
            "--initial-cluster says server {} is at {listed} but --listen is {}: make them the same",
            args.id, args.listen
        )));
    }
    if args.tick_ms == 0 || args.election_ticks < 2 {
        return Err(CliError::BadInput("--tick-ms must be positive and --election-ticks at least 2".into()));
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::BadInput(format!("cannot listen on {}: {e}", args.listen)))?;
    let mut raft = RaftOptions::new(args.id);
    raft.tick = Duration::from_millis(args.tick_ms);
    raft.election_ticks = args.election_ticks;
    raft.heartbeat_ticks = 1;
    raft.snapshot_every = args.snapshot_every.max(1);
    raft.keep_entries = args.keep_entries;
    if let Some(token) = &args.join {
        pki::join_as_server(token, &servers, args.id, &args.listen, &args.data_dir).await?;
    }
    let tls =
        ServerTls { ca_dir: args.ca_dir, admin_credentials: Some(args.admin_credentials), node_certificate_ttl: args.node_certificate_ttl };
    let config = ServerConfig {
        raft,
        data_dir: args.data_dir,
        advertise: args.listen,
        initial_cluster,
        node_timeout: Duration::from_millis(args.node_timeout_ms.max(1)),
        registries: crate::server::image_pin::RegistryAccess {
            insecure_registries: args.insecure_registries,
            docker_config: args.docker_config,
        },
        tls: Some(tls),
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::BadInput(format!("cannot watch for SIGTERM: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
            _ = terminate.recv() => tracing::info!("terminated: shutting down"),
        }
    };
    run(config, listener, shutdown).await?;
    Ok(())
}
