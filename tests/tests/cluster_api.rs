//! The public API on a real 3-server cluster: the CLI round trip, exit codes, and that
//! malformed files and bad gRPC requests get clear errors and change nothing.

use std::path::Path;
use std::time::Duration;

use proto::raft::v1::raft_peer_client::RaftPeerClient;
use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions, free_port, stderr, stdout};
use transport::Profile;

/// The README's example, its image on a registry port where nothing listens.
fn example(cluster: &Cluster) -> String {
    cluster.example_service_file().to_str().unwrap().to_string()
}

#[test]
fn apply_get_describe_scale_rollback_delete_round_trip() {
    let cluster = Cluster::start(ClusterOptions::default());
    let out = cluster.sched_ok(&["apply", &example(&cluster)]);
    assert_eq!(out.trim(), "service quotes applied: revision 1");
    // The same file again makes no new revision.
    assert_eq!(cluster.sched_ok(&["apply", &example(&cluster)]).trim(), "service quotes unchanged: revision 1");

    // Every server answers the same, whichever is asked.
    for server in cluster.servers.values() {
        let out = cluster.sched_at(&server.address, &["get", "services", "-o", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let services: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(services[0]["name"], "quotes", "server {}", server.id);
        assert_eq!(services[0]["current"]["spec"]["image"], format!("{CLOSED_REGISTRY}/quotes:1.0"));
        assert_eq!(services[0]["current"]["image_digest"], "", "nothing listens at {CLOSED_REGISTRY}");
        assert_eq!(services[0]["current"]["spec"]["health"]["path"], "/health");
        assert_eq!(services[0]["desired_count"], 2);
    }
    let table = cluster.sched_ok(&["get", "services"]);
    assert!(table.starts_with("NAME    REVISION  RUNNING  CPU  AUTOSCALE  IMAGE\nquotes  1         0/2      -    2-50 @70%  "), "{table}");

    let scaled = cluster.sched_ok(&["scale", "quotes", "4"]);
    assert_eq!(scaled.trim(), "service quotes scaled to 4 task(s)");
    let v2 = cluster.service_file("quotes", &format!("{CLOSED_REGISTRY}/quotes:2.0"), 2);
    let mut text = std::fs::read_to_string(example(&cluster)).unwrap();
    text = text.replace("quotes:1.0", "quotes:2.0");
    std::fs::write(&v2, text).unwrap();
    assert_eq!(cluster.sched_ok(&["apply", v2.to_str().unwrap()]).trim(), "service quotes applied: revision 2");

    let rolled = cluster.sched_ok(&["rollback", "quotes"]);
    assert_eq!(rolled.trim(), "service quotes rolled back to the spec of revision 1: revision 3");
    let history = cluster.sched_json(&["history", "quotes"]);
    let images: Vec<&str> = history.as_array().unwrap().iter().map(|r| r["spec"]["image"].as_str().unwrap()).collect();
    let [v1, v2] = [format!("{CLOSED_REGISTRY}/quotes:1.0"), format!("{CLOSED_REGISTRY}/quotes:2.0")];
    assert_eq!(images, [&v1, &v2, &v1]);

    let described = cluster.sched_json(&["describe", "service", "quotes"]);
    assert_eq!(described["service"]["revision"], 3);
    let events: Vec<&str> = described["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    // Nothing listens at CLOSED_REGISTRY: each new revision says its tag was not pinned, and why.
    let unresolved = |event: &str, revision: u32, image: &str| {
        event
            .starts_with(&format!("revision {revision}: the digest of {image} could not be resolved (request to http://{CLOSED_REGISTRY}/"))
            && event.contains("Connection refused")
            && event.ends_with("; its tasks will pull it by tag")
    };
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_eq!(events[0], "created at revision 1 with 2 task(s)");
    assert!(unresolved(events[1], 1, &v1), "{}", events[1]);
    assert_eq!(events[2], "scaled from 2 to 4 task(s)");
    // The example autoscales: a new revision keeps the count it had (4), not the file's 2.
    assert_eq!(events[3], "revision 2 applied; the autoscaler keeps 4 task(s)");
    assert!(unresolved(events[4], 2, &v2), "{}", events[4]);
    assert_eq!(events[5], "rolled back to the spec of revision 1 as revision 3");
    let text = cluster.sched_ok(&["describe", "service", "quotes"]);
    assert!(text.contains("Health:      http /health on 8080 every 5s"), "{text}");

    assert_eq!(cluster.sched_ok(&["delete", "quotes"]).trim(), "service quotes deleted");
    assert_eq!(cluster.sched_json(&["get", "services"]), serde_json::json!([]));
    let out = cluster.sched(&["describe", "service", "quotes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no service named \"quotes\""), "{}", stderr(&out));
}

#[test]
fn malformed_files_are_rejected_with_positions_and_change_nothing() {
    let cluster = Cluster::start(ClusterOptions::default());
    cluster.sched_ok(&["apply", &example(&cluster)]);
    let before = settled_describe(&cluster, "quotes");

    let bad = cluster.dir().join("bad.toml");
    std::fs::write(&bad, "name = \"quotes\"\nimage = \"127.0.0.1:1/busybox\"\ncpus = 100\n").unwrap();
    let out = cluster.sched(&["apply", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:3:1: `cpus`: unknown field `cpus`"), "{err}");

    std::fs::write(
        &bad,
        "name = \"quotes\"\nimage = \"127.0.0.1:1/busybox\"\nmemory = 1\nports = [80]\n[health]\nkind = \"tcp\"\nport = 81\n",
    )
    .unwrap();
    let out = cluster.sched(&["apply", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:3:10: `memory`: must be 4 to 1048576 MiB, got 1"), "{err}");
    assert!(err.contains("bad.toml:7:8: `health.port`: must be one of the service's ports [80], got 81"), "{err}");

    let out = cluster.sched(&["apply", "/nonexistent/service.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read /nonexistent/service.toml"), "{}", stderr(&out));

    let out = cluster.sched(&["rollback", "quotes", "--to", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("quotes has no revision 7: revisions are 1 to 1"), "{}", stderr(&out));

    assert_eq!(cluster.sched_json(&["describe", "service", "quotes"]), before);
}

#[test]
fn bad_grpc_requests_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start(ClusterOptions::default());
    cluster.sched_ok(&["apply", &example(&cluster)]);
    let before = settled_describe(&cluster, "quotes");
    let address = cluster.servers[&2].address.clone();
    let (admin, server) = (cluster.admin_transport(), cluster.server_transport(1));

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = ServiceApiClient::new(admin.connect(&address, Profile::CLI_CALL).await.unwrap());
        let status = client.apply(pb::ApplyRequest { spec: None }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, "`spec` is required"));

        let spec = pb::ServiceSpec {
            name: "Quotes".into(),
            image: "".into(),
            cpu_millis: 0,
            memory_mib: 64,
            ports: vec![70000],
            ..Default::default()
        };
        let status = client.apply(pb::ApplyRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for expected in [
            "`ports`: ports must be 1 to 65535, got 70000",
            "`name`: \"Quotes\" is not allowed",
            "`image`: must name an image",
            "`cpu`: must be 1 to 256000",
        ] {
            assert!(status.message().contains(expected), "{expected} not in {}", status.message());
        }

        let status = client.scale(pb::ScaleRequest { name: "nope".into(), count: 1 }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (tonic::Code::NotFound, "no service named \"nope\""));
        let status = client.scale(pb::ScaleRequest { name: "quotes".into(), count: 51 }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("autoscales between 2 and 50"), "{}", status.message());
        let status = client.delete(pb::DeleteRequest { name: String::new() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = client.list_tasks(pb::ListTasksRequest { service: "nope".into(), stale: false }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = client.rollback(pb::RollbackRequest { name: "quotes".into(), to_revision: 0 }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("nothing to roll back to"), "{}", status.message());

        // Peer traffic that is not a raft message is refused, not stepped (even from a server).
        let mut peer = RaftPeerClient::new(server.connect(&address, Profile::SERVER_TO_SERVER).await.unwrap());
        let status = peer
            .send(proto::raft::v1::RaftBatch { from: 9, from_address: String::new(), messages: vec![vec![0xff, 0xff, 0xff]] })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    });
    assert_eq!(cluster.sched_json(&["describe", "service", "quotes"]), before);
}

#[test]
fn health_and_reflection_are_served_on_the_api_port() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let address = cluster.servers[&1].address.clone();
    let admin = cluster.admin_transport();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let channel = admin.connect(&address, Profile::CLI_CALL).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let answer = health.check(tonic_health::pb::HealthCheckRequest { service: "sched.v1.ServiceApi".into() }).await.unwrap();
        assert_eq!(answer.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        let mut reflection = ServerReflectionClient::new(channel);
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let answer = answers.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in ["sched.v1.ServiceApi", "sched.v1.ClusterApi", "sched.v1.LogApi", "agent.v1.AgentApi", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
        }
    });
}

/// Reflection v1alpha beside v1, checked with a client sched did not write: Python's
/// grpcio-reflection (it speaks only v1alpha; before it was served, it got UNIMPLEMENTED).
#[test]
fn reflection_v1alpha_lists_the_services_to_pythons_grpcio_reflection() {
    const PYTHON: &str = "/var/lib/sched-tests/python/bin/python";
    assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: run scripts/install-test-deps.sh");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/reflection_list.py");
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let out = std::process::Command::new(PYTHON)
        .arg(script)
        .arg(&cluster.servers[&1].address)
        .arg(cluster.admin_credentials())
        .output()
        .expect("run python");
    assert!(out.status.success(), "grpcio-reflection failed: {}", stderr(&out));
    let names = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = names.lines().collect();
    for expected in ["sched.v1.ServiceApi", "sched.v1.ClusterApi", "sched.v1.LogApi", "agent.v1.AgentApi", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
}

#[test]
fn unreachable_cluster_exits_2_and_bad_input_exits_1() {
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = cluster.sched_at(&nobody, &["get", "services"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no server could answer"), "{}", stderr(&out));
    // A dead address first, then a live one: the client moves on.
    let list = format!("{nobody},{}", cluster.servers[&1].address);
    let out = cluster.sched_at(&list, &["get", "services"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.sched(&["scale", "quotes", "not-a-number"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid value 'not-a-number'"), "{}", stderr(&out));
}

/// `describe service NAME` once the leader's reconciler has acted on the last change (it places
/// or, with no nodes, creates pending tasks within a period): two reads a period apart agree.
fn settled_describe(cluster: &Cluster, name: &str) -> serde_json::Value {
    let mut last = cluster.sched_json(&["describe", "service", name]);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let now = cluster.sched_json(&["describe", "service", name]);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("describe service {name} never settled: {last:#}");
}

/// A proposal sent straight to the peer API skips the gRPC API's checks: the state machine
/// must refuse it on its own (issue 11: a count of u32::MAX made every server run out of
/// memory, on every restart), and a restarted server replays its log to the same verdict.
#[test]
fn raw_proposals_are_held_to_the_api_rules_and_survive_a_restart() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let address = cluster.servers[&leader].address.clone();
    let server = cluster.server_transport(leader);
    let spec = |name: &str, count: u64, env_value: &str| {
        serde_json::json!({
            "name": name, "image": "127.0.0.1:5000/quotes:1", "command": [], "env": {"V": env_value},
            "cpu_millis": 100, "memory_mib": 64, "ports": [8080], "count": count,
            "autoscale": null, "health": null, "deploy": {"min_healthy_percent": 100, "max_percent": 200}, "routes": []
        })
    };
    let apply =
        |spec: serde_json::Value| serde_json::json!({"command": {"op": "apply_service", "spec": spec, "image_digest": "", "now_ms": 1}});
    let huge_env = "v".repeat(1 << 20);
    let refused = [
        ("a count of u32::MAX", apply(spec("greedy", u64::from(u32::MAX), ""))),
        ("a 1 MiB environment", apply(spec("fat", 1, &huge_env))),
        ("a name that is a path", apply(spec("../../etc", 1, ""))),
        (
            "a node whose API address smuggles a user",
            serde_json::json!({"command": {"op": "register_node", "name": "n1",
            "address": "10.0.0.1", "cpu_millis": 1000, "memory_mib": 1024, "labels": {}, "now_ms": 1, "api_address": "me@evil:80"}}),
        ),
        ("a voter at no address", serde_json::json!({"add_voter": {"id": 9, "address": "not an address"}})),
    ];
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut peer = RaftPeerClient::new(server.connect(&address, Profile::SERVER_TO_SERVER).await.unwrap());
        for (what, proposal) in &refused {
            let request = proto::raft::v1::ProposeRequest { proposal: serde_json::to_vec(proposal).unwrap() };
            let outcome = peer.propose(request).await.unwrap().into_inner().outcome;
            let outcome: serde_json::Value = serde_json::from_slice(&outcome).unwrap();
            assert_eq!(outcome["Ok"]["Err"]["kind"], "invalid", "{what} was not refused as invalid: {outcome}");
        }
        // The same in one batch (what a follower forwards): each refused in its place.
        let proposals = refused.iter().map(|(_, proposal)| serde_json::to_vec(proposal).unwrap()).collect();
        let outcomes = peer.propose_batch(proto::raft::v1::ProposeBatchRequest { proposals }).await.unwrap().into_inner().outcomes;
        assert_eq!(outcomes.len(), refused.len(), "one outcome per proposal");
        for ((what, _), outcome) in refused.iter().zip(&outcomes) {
            let outcome: serde_json::Value = serde_json::from_slice(outcome).unwrap();
            assert_eq!(outcome["Ok"]["Err"]["kind"], "invalid", "{what} in a batch was not refused as invalid: {outcome}");
        }
        // A batch with one proposal that is not a proposal is refused whole, naming it.
        let proposals = vec![serde_json::to_vec(&refused[0].1).unwrap(), b"{not json".to_vec()];
        let error = peer.propose_batch(proto::raft::v1::ProposeBatchRequest { proposals }).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
        assert!(error.message().contains("proposals[1]"), "{error}");
    });
    let services = |cluster: &Cluster| cluster.sched_json(&["get", "services"]);
    assert_eq!(services(&cluster), serde_json::json!([]), "nothing was stored");
    assert_eq!(cluster.sched_json(&["get", "nodes"]), serde_json::json!([]));
    // The refused entries are in every server's log: each replays them to the same refusal.
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_for_leader(Duration::from_secs(20));
    cluster.sched_ok(&["apply", &example(&cluster)]);
    let names: Vec<_> = services(&cluster).as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, ["quotes"]);
}

/// Writes sent through a follower at the same moment go to the leader in batches
/// (`raft.v1.RaftPeer/ProposeBatch`): each caller still gets its own answer, the refusal of a
/// bad one reaches only its caller, and the state holds every write.
#[test]
fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    const SERVICES: usize = 40;
    let cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let addresses: Vec<String> = cluster.servers.values().map(|s| s.address.clone()).collect();
    let follower = cluster.servers.values().find(|s| s.id != leader).unwrap().address.clone();
    let admin = cluster.admin_transport();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for i in 0..SERVICES {
            assert!(sched_tests::cluster::apply_anywhere(&admin, &addresses, &format!("batch-{i}")).await, "batch-{i} applied");
        }
        let channel = admin.connect(&follower, Profile::CLI_STREAM).await.unwrap();
        for round in 2..5u32 {
            let mut writes = tokio::task::JoinSet::new();
            for i in 0..=SERVICES {
                let mut client = ServiceApiClient::new(channel.clone());
                // The last one names no service: refused, and only its caller hears it.
                let name = if i == SERVICES { "no-such-service".to_string() } else { format!("batch-{i}") };
                let count = round + (i % 3) as u32;
                writes.spawn(async move { (name.clone(), count, client.scale(pb::ScaleRequest { name, count }).await) });
            }
            while let Some(write) = writes.join_next().await {
                let (name, count, answer) = write.unwrap();
                if name == "no-such-service" {
                    let error = answer.unwrap_err();
                    assert_eq!(error.code(), tonic::Code::NotFound, "{error}");
                    assert!(error.message().contains("no-such-service"), "{error}");
                    continue;
                }
                let service = answer.unwrap_or_else(|e| panic!("scale {name} to {count}: {e}")).into_inner().service.unwrap();
                assert_eq!((service.name.as_str(), service.desired_count), (name.as_str(), count), "a caller got another write's answer");
            }
        }
    });
    let services = cluster.sched_json(&["get", "services"]);
    for i in 0..SERVICES {
        let name = format!("batch-{i}");
        let service = services
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing: {services}"));
        assert_eq!(service["desired_count"], 4 + (i % 3) as u64, "{name}: {service}");
    }
}
