//! Issue 13 on real processes: every port speaks mutual TLS only, roles limit what a
//! certificate may do, bad tokens are refused leaving nothing behind, a removed node's
//! certificate is revoked, and agents renew theirs before they expire.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use proto::agent::v1::TaskLogsRequest;
use proto::agent::v1::task_log_api_client::TaskLogApiClient;
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use sched_tests::agent_process::AgentProcess;
use sched_tests::cluster::{Cluster, ClusterOptions, sched_binary, stderr, stdout};
use sched_tests::wait::{holds_for, wait_until};
use transport::{Profile, Security, Transport};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The address an agent's API listens on, from its log.
fn agent_api_address(cluster: &Cluster, name: &str) -> String {
    let log = cluster.dir().join(format!("agent-{name}.log"));
    let mut address = String::new();
    wait_until(
        "the agent's API listens",
        TIMEOUT,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text.lines().find(|l| l.contains("agent API (task logs) listening")).unwrap_or("");
            address = line.split("advertised").nth(1).and_then(|rest| rest.split('"').nth(1)).unwrap_or("").to_string();
            !address.is_empty()
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    address
}

fn node_status(cluster: &Cluster, name: &str) -> Option<String> {
    let nodes = cluster.sched_json(&["get", "nodes"]);
    nodes.as_array()?.iter().find(|n| n["name"] == name).and_then(|n| n["status"].as_str().map(str::to_string))
}

fn wait_ready(cluster: &Cluster, name: &str) {
    let context = || serde_json::to_string(&cluster.sched_json(&["get", "nodes"])).unwrap_or_default();
    wait_until(&format!("{name} is ready"), TIMEOUT, || node_status(cluster, name).as_deref() == Some("ready"), context);
}

/// The serial of the certificate an agent keeps in its data dir.
fn kept_serial(data_dir: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(data_dir.join("pki").join(transport::CERTIFICATE_FILE)).ok()?;
    pki::CertificateHolder::from_certificate_pem(&pem).ok().map(|h| h.serial)
}

#[test]
fn every_port_refuses_plaintext_and_callers_without_the_role() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let _agent = AgentProcess::start(&cluster, "node-1");
    wait_ready(&cluster, "node-1");
    let server = cluster.servers[&1].address.clone();
    let agent_api = agent_api_address(&cluster, "node-1");
    let ca = pki::Fingerprint::of_pem(&std::fs::read_to_string(cluster.dir().join("ca").join("ca.pem")).unwrap()).unwrap();
    let anonymous = Transport::new(Security::Join(ca)).unwrap();
    let admin = cluster.admin_transport();
    let server_credentials = cluster.server_transport(1);

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // Plaintext: no gRPC answer at all on either port.
        for address in [&server, &agent_api] {
            let plaintext = Transport::plaintext().connect(address, Profile::CLI_CALL).await;
            if let Ok(channel) = plaintext {
                let status = ServiceApiClient::new(channel).list_services(pb::ListServicesRequest::default()).await.unwrap_err();
                // A transport failure, not an answer from a handler or the policy.
                assert!(
                    !matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::Ok),
                    "a plaintext call reached gRPC on {address}: {status:?}"
                );
            }
        }

        // TLS without a certificate: the API, the peer service and the agent API refuse.
        let channel = anonymous.connect(&server, Profile::CLI_CALL).await.expect("TLS without a certificate connects");
        let status = ServiceApiClient::new(channel.clone()).list_services(pb::ListServicesRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("SCHED_CONFIG"), "the refusal says what to do: {}", status.message());
        let peer = RaftPeerClient::new(channel.clone()).propose(proto::raft::v1::ProposeRequest { proposal: b"{}".to_vec() }).await;
        assert_eq!(peer.unwrap_err().code(), tonic::Code::Unauthenticated);
        // Health stays open to probes.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health.check(tonic_health::pb::HealthCheckRequest::default()).await.expect("health answers without a certificate");
        let logs = |transport: Transport| {
            let agent_api = agent_api.clone();
            async move {
                let channel = transport.connect(&agent_api, Profile::SERVER_TO_AGENT).await.expect("connect to the agent API");
                let request = TaskLogsRequest { task_id: "none".into(), follow: false, tail: Some(1), since_unix_ms: None };
                TaskLogApiClient::new(channel).logs(request).await.map(|_| ())
            }
        };
        assert_eq!(logs(anonymous.clone()).await.unwrap_err().code(), tonic::Code::Unauthenticated);

        // The admin is not a server: no Raft messages, no agent API.
        let channel = admin.connect(&server, Profile::SERVER_TO_SERVER).await.unwrap();
        let status = RaftPeerClient::new(channel).propose(proto::raft::v1::ProposeRequest { proposal: b"{}".to_vec() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert_eq!(logs(admin.clone()).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        // A server is: the agent API answers it (the task is unknown, which is an answer).
        assert_eq!(logs(server_credentials).await.unwrap_err().code(), tonic::Code::NotFound);

        // An agent's certificate cannot use the admin API.
        let agent = cluster.agent_transport("intruder").await;
        let channel = agent.connect(&server, Profile::CLI_CALL).await.unwrap();
        let spec = pb::ServiceSpec { name: "evil".into(), image: "127.0.0.1:1/x:1".into(), count: 1, ..Default::default() };
        let status = ServiceApiClient::new(channel).apply(pb::ApplyRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("admin role") && status.message().contains("agent intruder"), "{}", status.message());
    });
    assert_eq!(cluster.sched_json(&["get", "services"]), serde_json::json!([]), "nothing was applied");
}

fn sched_with(config: &Path, cluster: &Cluster, args: &[&str]) -> Output {
    std::process::Command::new(sched_binary())
        .args(["--server", &cluster.addresses(), "--config"])
        .arg(config)
        .args(args)
        .env_remove("SCHED_CONFIG")
        .output()
        .expect("run sched")
}

#[test]
fn a_reader_reads_and_cannot_write() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    cluster.sched_ok(&["apply", &cluster.service_file("web", "127.0.0.1:1/web:1", 1).to_string_lossy()]);
    let token = cluster.join_token("reader");
    let credentials = cluster.dir().join("alice.toml");
    let login = std::process::Command::new(sched_binary())
        .args(["--server", &cluster.addresses(), "login", &token, "--name", "alice", "--out"])
        .arg(&credentials)
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", stderr(&login));
    assert!(stdout(&login).contains("reader alice") && stdout(&login).contains("SCHED_CONFIG"), "{}", stdout(&login));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&credentials).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    for read in [&["get", "services"][..], &["describe", "service", "web"], &["history", "web"], &["get", "nodes"], &["cluster", "members"]]
    {
        let out = sched_with(&credentials, &cluster, read);
        assert!(out.status.success(), "a reader may {read:?}: {}", stderr(&out));
    }
    for write in [
        &["scale", "web", "3"][..],
        &["delete", "web"],
        &["rollback", "web"],
        &["token", "create", "--role", "admin"],
        &["node", "rm", "x"],
    ] {
        let out = sched_with(&credentials, &cluster, write);
        assert_eq!(out.status.code(), Some(1), "a reader may not {write:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("needs the admin role") && stderr(&out).contains("reader alice"), "{write:?}: {}", stderr(&out));
    }
    let web = cluster.sched_json(&["get", "services"]);
    assert_eq!(web[0]["desired_count"], 1, "nothing changed: {web}");

    // The file as PEM files, for grpcurl and friends: a client built from them reads too.
    let pem_dir = cluster.dir().join("alice-pem");
    let export = sched_with(&credentials, &cluster, &["credentials", "export", &pem_dir.to_string_lossy()]);
    assert!(export.status.success() && stdout(&export).contains("grpcurl -cacert"), "{}{}", stdout(&export), stderr(&export));
    let exported = transport::Credentials::load(&pem_dir).unwrap().expect("exported credentials");
    let client = Transport::new(Security::MutualTls(exported)).unwrap();
    let services = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let channel = client.connect(&cluster.servers[&1].address, Profile::CLI_CALL).await.unwrap();
        ServiceApiClient::new(channel).list_services(pb::ListServicesRequest::default()).await.unwrap().into_inner().services
    });
    assert_eq!(services.len(), 1);
}

fn agent_join(cluster: &Cluster, data_dir: &Path, name: &str, token: &str) -> Output {
    let agent = sched_binary().with_file_name("sched-agent");
    std::process::Command::new(agent)
        .args(["--server", &cluster.addresses(), "--name", name, "--no-network", "--api-listen", "127.0.0.1:0", "--join", token])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run sched-agent")
}

#[test]
fn bad_tokens_and_taken_names_are_refused_and_leave_nothing() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let _agent = AgentProcess::start(&cluster, "node-1");
    wait_ready(&cluster, "node-1");
    let other = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let good = cluster.join_token("agent");
    let expiring = cluster.sched_ok(&["token", "create", "--role", "agent", "--ttl", "1s"]).trim().to_string();
    let mut unknown = good.clone();
    unknown.replace_range(unknown.len() - 4.., "0000");
    let cases: [(&str, String, &str, &str); 6] = [
        ("a malformed token", "SCHED1-agent-00".into(), "node-2", "not a join token"),
        ("a token of another cluster", other.join_token("agent"), "node-2", "another cluster"),
        ("a token this cluster never made", unknown, "node-2", "unknown token"),
        ("a reader token for an agent", cluster.join_token("reader"), "node-2", "an agent joins with an agent token"),
        ("a name another node's certificate holds", good.clone(), "node-1", "held by another certificate"),
        ("an expired token", expiring, "node-2", "expired"),
    ];
    std::thread::sleep(Duration::from_millis(1500)); // the 1 s token has expired
    let tokens_before = cluster.sched_json(&["token", "list"]);
    for (i, (what, token, name, expected)) in cases.iter().enumerate() {
        let data_dir = cluster.dir().join(format!("refused-{i}"));
        let out = agent_join(&cluster, &data_dir, name, token);
        assert_eq!(out.status.code(), Some(1), "{what} was not refused: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{what}: expected {expected:?} in {}", stderr(&out));
        assert!(!data_dir.join("pki").exists(), "{what}: nothing kept on the node");
    }
    let names: Vec<String> =
        cluster.sched_json(&["get", "nodes"]).as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["node-1"], "no node was added");
    assert_eq!(cluster.sched_json(&["token", "list"]), tokens_before, "no token was used up or added");
    // A certificate of another cluster does not even finish the handshake.
    let stranger = other.admin_transport();
    let address = cluster.servers[&1].address.clone();
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(async {
        match stranger.connect(&address, Profile::CLI_CALL).await {
            Err(e) => Err(format!("{e:?}")),
            Ok(channel) => ServiceApiClient::new(channel)
                .list_services(pb::ListServicesRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| format!("{s:?}")),
        }
    });
    let refused = refused.expect_err("another cluster's admin was let in");
    assert!(!refused.contains("PermissionDenied") && !refused.contains("Unauthenticated"), "refused by TLS, not by a handler: {refused}");
    // A removed token admits nobody.
    let id = good.parse::<pki::JoinToken>().unwrap().id();
    cluster.sched_ok(&["token", "rm", &id]);
    let data_dir = cluster.dir().join("refused-removed");
    let out = agent_join(&cluster, &data_dir, "node-3", &good);
    assert!(stderr(&out).contains("unknown token"), "a removed token: {}", stderr(&out));
    assert!(!data_dir.join("pki").exists());
}

#[test]
fn a_removed_node_is_refused_and_its_name_can_join_again() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let agent = AgentProcess::start(&cluster, "node-1");
    wait_ready(&cluster, "node-1");
    cluster.sched_ok(&["node", "rm", "node-1"]);
    let log = cluster.dir().join("agent-node-1.log");
    wait_until(
        "the removed agent is told its certificate was revoked",
        TIMEOUT,
        || std::fs::read_to_string(&log).unwrap_or_default().contains("was revoked"),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    // It cannot register again: the node stays gone for longer than its heartbeat period.
    holds_for("the removed node stays gone", Duration::from_secs(3), || node_status(&cluster, "node-1").is_none(), String::new);
    drop(agent);
    // A fresh node with the same name joins with a new token.
    let data_dir: PathBuf = cluster.dir().join("node-1-again");
    let again = agent_join_background(&cluster, &data_dir, "node-1");
    wait_ready(&cluster, "node-1");
    drop(again);
}

/// An agent started with a new token on `data_dir`, killed on drop.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        sched_tests::agent_process::kill_agent(&mut self.0);
    }
}

fn agent_join_background(cluster: &Cluster, data_dir: &Path, name: &str) -> Background {
    let token = cluster.join_token("agent");
    let agent = sched_binary().with_file_name("sched-agent");
    let child = std::process::Command::new(agent)
        .args(["--server", &cluster.addresses(), "--name", name, "--no-network", "--api-listen", "127.0.0.1:0", "--join", &token])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sched-agent");
    Background(child)
}

#[test]
fn agents_renew_their_certificates_before_they_expire() {
    let options = ClusterOptions { servers: 1, server_args: vec!["--node-certificate-ttl".into(), "6s".into()], ..Default::default() };
    let cluster = Cluster::start(options);
    let agent = AgentProcess::start(&cluster, "node-1");
    wait_ready(&cluster, "node-1");
    let first = kept_serial(agent.data_dir()).expect("the agent keeps its certificate");
    let mut serials = vec![first];
    // Two renewals, each at 4 s of a 6 s life: the node stays ready past the first
    // certificate's expiry and its heartbeats keep coming.
    wait_until(
        "the agent renewed its certificate twice",
        TIMEOUT,
        || {
            if let Some(serial) = kept_serial(agent.data_dir())
                && serials.last() != Some(&serial)
            {
                serials.push(serial);
            }
            serials.len() >= 3
        },
        || std::fs::read_to_string(cluster.dir().join("agent-node-1.log")).unwrap_or_default(),
    );
    holds_for(
        "node-1 stays ready",
        Duration::from_secs(7),
        || node_status(&cluster, "node-1").as_deref() == Some("ready"),
        || std::fs::read_to_string(cluster.dir().join("agent-node-1.log")).unwrap_or_default(),
    );
}
