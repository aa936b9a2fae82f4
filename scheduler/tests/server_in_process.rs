//! The fast tier of the control plane's tests: one `sched server` run in-process with
//! `server::run(listener, shutdown)` on port 0, driven over gRPC, then shut down and reopened
//! from its data directory. It serves mutual TLS, as every server does: the client calls with
//! the admin credentials file the server writes. (The multi-process cluster tests are in tests/tests/cluster_*.rs.)

use std::collections::BTreeMap;
use std::time::Duration;

use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use scheduler::credentials_file::CredentialsFile;
use scheduler::raft::RaftOptions;
use scheduler::server::cluster_pki::ServerTls;
use scheduler::server::{ServerConfig, run};
use scheduler::spec::parse_service_toml;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use transport::{Profile, Security, Transport};

async fn start(data_dir: &std::path::Path) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut raft = RaftOptions::new(1);
    raft.tick = Duration::from_millis(10);
    let config = ServerConfig {
        raft,
        data_dir: data_dir.to_path_buf(),
        advertise: address.clone(),
        initial_cluster: BTreeMap::from([(1, address.clone())]),
        node_timeout: Duration::from_secs(10),
        registries: Default::default(),
        tls: Some(ServerTls {
            ca_dir: None,
            admin_credentials: Some(data_dir.join("admin.toml")),
            node_certificate_ttl: Duration::from_secs(3600),
        }),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    (address, stop, task)
}

async fn client(address: &str, data_dir: &std::path::Path) -> ServiceApiClient<tonic::transport::Channel> {
    for _ in 0..100 {
        let Ok(admin) = CredentialsFile::load(&data_dir.join("admin.toml")) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let transport = Transport::new(Security::MutualTls(admin.credentials())).unwrap();
        if let Ok(channel) = transport.connect(address, Profile::CLI_CALL).await {
            return ServiceApiClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the in-process server did not answer at {address}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_applies_and_keeps_state_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../examples/quotes/service.toml");
    let mut spec = parse_service_toml("service.toml", example).unwrap().to_proto();
    // Nothing listens on port 1: the apply resolves no digest and reaches no registry.
    spec.image = "127.0.0.1:1/quotes:1.0".into();

    let (address, stop, task) = start(dir.path()).await;
    let mut api = client(&address, dir.path()).await;
    let applied = api.apply(pb::ApplyRequest { spec: Some(spec.clone()) }).await.unwrap().into_inner();
    assert!(applied.changed);
    assert_eq!(applied.service.unwrap().revision, 1);
    api.scale(pb::ScaleRequest { name: "quotes".into(), count: 7 }).await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();

    let (address, stop, task) = start(dir.path()).await;
    let mut api = client(&address, dir.path()).await;
    let services = api.list_services(pb::ListServicesRequest { stale: false }).await.unwrap().into_inner().services;
    assert_eq!(services.len(), 1);
    assert_eq!((services[0].name.as_str(), services[0].desired_count), ("quotes", 7));
    let again = api.apply(pb::ApplyRequest { spec: Some(spec) }).await.unwrap().into_inner();
    assert!(!again.changed, "the same spec after a restart makes no new revision");
    stop.send(()).unwrap();
    task.await.unwrap();
}
