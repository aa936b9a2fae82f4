//! `sched server`: one Raft member and the gRPC API on one port.
//!
//! [`run`] opens the durable log, starts the Raft loop, and serves on the given listener until
//! `shutdown` resolves: `sched.v1.ServiceApi`, `ClusterApi`, `LogApi` (the public API; logs are
//! read from the nodes' agents) and `RouteApi` (the route table ingresses watch), `agent.v1.AgentApi`
//! (the agents' side), `raft.v1.RaftPeer`
//! (peer traffic), the standard gRPC health service and server reflection, v1 and v1alpha (so
//! `grpcurl` and older clients such as Python's grpcio-reflection list and call everything).
//! Tests bind port 0 and pass the listener in.
//!
//! Every connection the server accepts or makes (to its peers, to the leader, to the nodes'
//! agents) goes through one [`transport::Transport`], made from [`ServerConfig::security`].

mod agent_api;
mod applied_stream;
pub mod authorize;
mod cluster_api;
pub mod cluster_pki;
mod errors;
mod heartbeats;
pub mod image_pin;
mod leader;
mod log_api;
mod look_thread;
mod peer_api;
pub mod pki_api;
mod route_api;
mod service_api;
mod to_leader;
mod views;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::agent::v1::agent_api_server::AgentApiServer;
use proto::raft::v1::raft_peer_server::RaftPeerServer;
use proto::sched::v1::cluster_api_server::ClusterApiServer;
use proto::sched::v1::log_api_server::LogApiServer;
use proto::sched::v1::pki_api_server::PkiApiServer;
use proto::sched::v1::route_api_server::RouteApiServer;
use proto::sched::v1::service_api_server::ServiceApiServer;
use tokio::net::TcpListener;

use crate::raft::grpc_transport::{GrpcTransport, MAX_PEER_MESSAGE_BYTES};
use crate::raft::storage::{Bootstrap, DiskStorage, StorageFailure};
use crate::raft::{Consensus, RaftNode, RaftOptions};

/// Everything `sched server` is started with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub raft: RaftOptions,
    /// Where the raft log and snapshots live.
    pub data_dir: PathBuf,
    /// The address peers and clients use to reach this server (HOST:PORT).
    pub advertise: String,
    /// The first start's voters (id -> address); empty for a server that will be joined.
    pub initial_cluster: BTreeMap<u64, String>,
    /// A node whose heartbeats stop for this long is marked down and its tasks placed elsewhere.
    pub node_timeout: std::time::Duration,
    /// How image tags are resolved to digests at apply time (insecure registries, credentials).
    pub registries: image_pin::RegistryAccess,
    /// Mutual TLS (the cluster PKI in `DATA_DIR/pki`); `None` serves plaintext, where every
    /// caller is anonymous (in-process tests only: no binary offers it).
    pub tls: Option<cluster_pki::ServerTls>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--initial-cluster does not list this server's id {0}: list every initial server as ID=HOST:PORT, this one included")]
    NotInInitialCluster(u64),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    #[error("raft: {0}")]
    Node(#[from] crate::raft::node::NodeError),
    #[error("registry access: {0}")]
    Registry(#[from] registry::RegistryError),
    #[error("connections: {0}")]
    Transport(#[from] transport::TransportError),
    #[error("cluster PKI: {0}")]
    Pki(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Milliseconds since the Unix epoch, stamped into commands by the server that proposes them.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the server on `listener` until `shutdown` resolves or the Raft loop fails.
pub async fn run(config: ServerConfig, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let id = config.raft.id;
    let bootstrap = if config.initial_cluster.is_empty() {
        Bootstrap::Join
    } else if !config.initial_cluster.contains_key(&id) {
        return Err(ServerError::NotInInitialCluster(id));
    } else {
        Bootstrap::InitialCluster(config.initial_cluster.clone())
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let storage = tokio::task::block_in_place(|| DiskStorage::open(&config.data_dir.join("raft"), bootstrap))?;
    let first_server = config.initial_cluster.len() == 1 && config.initial_cluster.contains_key(&id);
    let pki = match &config.tls {
        Some(tls) => {
            Some(tokio::task::block_in_place(|| cluster_pki::prepare(tls, &config.data_dir, id, &config.advertise, first_server))?)
        }
        None => None,
    };
    let security = pki.as_ref().map_or(transport::Security::Plaintext, |p| transport::Security::MutualTls(p.credentials.clone()));
    let connections = transport::Transport::new(security)?;
    let peers = Arc::new(GrpcTransport::new(id, config.advertise.clone(), connections.clone()));
    let (node, handle) = RaftNode::new(config.raft.clone(), storage, peers)?;
    let raft = Arc::new(handle);
    let consensus = Arc::new(Consensus::new((*raft).clone(), connections.clone()));
    tracing::info!(id, address = %config.advertise, data_dir = %config.data_dir.display(), "sched server starting");

    let heartbeats = Arc::new(heartbeats::Heartbeats::default());
    let to_leader = Arc::new(to_leader::ToLeader::new(consensus.clone(), connections.clone()));
    let pinner = Arc::new(image_pin::ImagePinner::new(&config.registries)?);
    let leader_duties = tokio::spawn(leader::run(consensus.clone(), heartbeats.clone(), config.node_timeout));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ServiceApiServer<service_api::ServiceApiService>>().await;
    health.set_serving::<ClusterApiServer<cluster_api::ClusterApiService>>().await;
    health.set_serving::<LogApiServer<log_api::LogApiService>>().await;
    health.set_serving::<RouteApiServer<route_api::RouteApiService>>().await;
    health.set_serving::<PkiApiServer<pki_api::PkiApiService>>().await;
    // Reflection in both versions: v1, and v1alpha for the clients that speak only it
    // (Python's grpcio-reflection, grpcurl before 1.8.8, Postman's older importers).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);

    let policy = Arc::new(authorize::ServerPolicy::new(consensus.clone()));
    // Certificates are issued only with a CA: a plaintext server (tests) offers no PkiApi.
    let pki_api =
        pki.map(|pki| PkiApiServer::new(pki_api::PkiApiService::new(consensus.clone(), Arc::new(pki.ca), pki.node_certificate_ttl)));
    let router = connections
        .server()
        .layer(transport::AuthorizeLayer::new(policy))
        .add_optional_service(pki_api)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ServiceApiServer::new(service_api::ServiceApiService::new(
            consensus.clone(),
            heartbeats.clone(),
            pinner,
            to_leader.clone(),
        )))
        .add_service(ClusterApiServer::new(cluster_api::ClusterApiService::new(consensus.clone())))
        .add_service(LogApiServer::new(log_api::LogApiService::new(consensus.clone(), connections.clone())))
        .add_service(RouteApiServer::new(route_api::RouteApiService::new(consensus.clone())))
        .add_service(AgentApiServer::new(agent_api::AgentApiService::new(consensus.clone(), heartbeats.clone(), to_leader)))
        .add_service(
            RaftPeerServer::new(peer_api::RaftPeerService::new(raft.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        );
    let serve = router.serve_with_incoming_shutdown(connections.incoming(listener)?, shutdown);
    // The Raft loop runs on a thread of its own: each Ready ends in an fsync that blocks it, and
    // a runtime worker would have to hand its other tasks to another thread for each
    // (`block_in_place`), a few context switches every time. Tasks it spawns (peer senders) go
    // to the runtime's workers. Dropping its future (on `stop_raft`) closes the log.
    let (stop_raft, raft_stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let mut node_task = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            tokio::select! {
                result = node.run() => result,
                _ = raft_stopped => Ok(()),
            }
        })
    });
    tokio::select! {
        served = serve => {
            // Stop the loop and wait until it is gone, so the log is closed (and its directory
            // lock released) when this returns.
            leader_duties.abort();
            let _ = stop_raft.send(());
            let _ = node_task.await;
            served?;
            Ok(())
        }
        stopped = &mut node_task => {
            leader_duties.abort();
            match stopped {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(join) => panic!("the raft loop panicked: {join}"),
            }
        }
    }
}
