//! The servers' side of the agent protocol (`agent.v1.AgentApi`) on a real cluster: what
//! `sched-agent` (issue 5) builds on.

use std::time::Duration;

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use sched_tests::cluster::{Cluster, ClusterOptions};
use tokio_stream::StreamExt as _;

#[test]
fn agents_register_heartbeat_and_watch_assignments_through_any_server() {
    let cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    let follower = cluster.servers.values().find(|s| s.id != leader).unwrap().address.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut agent = AgentApiClient::connect(format!("http://{follower}")).await.unwrap();
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
        let other = agent.register(register("node-b", "10.0.0.2")).await.unwrap().into_inner().node_id;
        assert_ne!(other, id);
        let status = agent.register(pb::RegisterRequest { name: String::new(), ..register("x", "y") }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // A label no service constraint could require is refused, named.
        let bad_label =
            pb::RegisterRequest { labels: [("disk type".to_string(), "ssd".to_string())].into(), ..register("node-c", "10.0.0.3") };
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
