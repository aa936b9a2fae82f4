//! The servers' side of the agent protocol (`agent.v1.AgentApi`) on a real cluster: what
//! `sched-agent` (issue 5) builds on.

use std::time::Duration;

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use sched_tests::cluster::{Cluster, ClusterOptions};
use tokio_stream::StreamExt as _;
use transport::Profile;

#[test]
fn agents_register_heartbeat_and_watch_assignments_through_any_server_each_as_its_own_node() {
    let cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    let follower = cluster.servers.values().find(|s| s.id != leader).unwrap().address.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let connect = |transport: transport::Transport| {
            let follower = follower.clone();
            async move { AgentApiClient::new(transport.connect(&follower, Profile::AGENT_TO_SERVER).await.unwrap()) }
        };
        let mut agent = connect(cluster.agent_transport("node-a").await).await;
        let mut agent_b = connect(cluster.agent_transport("node-b").await).await;
        let register = |name: &str, address: &str| pb::RegisterRequest {
            name: name.into(),
            address: address.into(),
            cpu_millis: 2000,
            memory_mib: 4096,
            labels: [("zone".to_string(), "a".to_string())].into(),
            api_address: String::new(),
        };
        let id = agent.register(register("node-a", "10.0.0.1")).await.unwrap().into_inner().node_id;
        // Registering again by the same name keeps the id (a restarted agent).
        let again = agent.register(register("node-a", "10.0.0.9")).await.unwrap().into_inner().node_id;
        assert_eq!(again, id);
        let other = agent_b.register(register("node-b", "10.0.0.2")).await.unwrap().into_inner().node_id;
        assert_ne!(other, id);
        // A certificate registers, beats, watches and reports only as its own node.
        let status = agent.register(register("node-b", "10.0.0.66")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("agent node-a") && status.message().contains("\"node-b\""), "{}", status.message());
        let status = agent.heartbeat(pb::HeartbeatRequest { node_id: other, ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", status.message());
        let status = agent.watch_assignments(pb::WatchAssignmentsRequest { node_id: other }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", status.message());
        let status = agent
            .report_task_status(pb::ReportTaskStatusRequest { node_id: other, task_id: "t".into(), state: 4, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", status.message());
        // A label no service constraint could require is refused, named.
        let bad_label =
            pb::RegisterRequest { labels: [("disk type".to_string(), "ssd".to_string())].into(), ..register("node-a", "10.0.0.9") };
        let status = agent.register(bad_label).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("disk type") && status.message().contains("--labels"), "{}", status.message());

        assert!(agent.heartbeat(pb::HeartbeatRequest { node_id: id, ..Default::default() }).await.unwrap().into_inner().known);
        assert!(!agent.heartbeat(pb::HeartbeatRequest { node_id: 999, ..Default::default() }).await.unwrap().into_inner().known);

        let mut watch = agent.watch_assignments(pb::WatchAssignmentsRequest { node_id: id }).await.unwrap().into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap();
        assert!(first.assignments.is_empty() && first.index > 0, "{first:?}");
        let status = agent.watch_assignments(pb::WatchAssignmentsRequest { node_id: 999 }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        let status = agent
            .report_task_status(pb::ReportTaskStatusRequest { node_id: id, task_id: "nope".into(), state: 4, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!((status.code(), status.message()), (tonic::Code::NotFound, "no task nope"));

        // The admin's certificate is not an agent's.
        let mut admin = connect(cluster.admin_transport()).await;
        let status = admin.register(register("node-c", "10.0.0.3")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", status.message());
    });
    let nodes = cluster.sched_json(&["get", "nodes"]);
    let summary: Vec<(String, String, String)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().into(), n["address"].as_str().unwrap().into(), n["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(summary, [("node-a".into(), "10.0.0.9".into(), "ready".into()), ("node-b".into(), "10.0.0.2".into(), "ready".into())]);
    let table = cluster.sched_ok(&["get", "nodes"]);
    assert!(table.contains("node-a  10.0.0.9  2000    4096         ready   zone=a"), "{table}");
}
