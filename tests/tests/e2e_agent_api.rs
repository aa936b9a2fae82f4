//! The agent API (every task's log) is the servers', not the tasks': with real processes in a
//! network namespace of the test's own (a [`NodeLab`]), one `sched server`, a `sched-agent`
//! with task networking whose API listens on every address (the old default, so that only the
//! node's nftables table stands between a task and it), and a busybox task that tries to
//! connect to the API through its gateway. The task cannot, while `sched logs` reads the
//! task's log through the server; and the API serves at most `--max-log-follows` follows,
//! refusing one more with RESOURCE_EXHAUSTED until one ends.

use std::time::Duration;

use proto::agent::v1::TaskLogsRequest;
use proto::agent::v1::task_log_api_client::TaskLogApiClient;
use sched_tests::agent_process::wait_until;
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, free_port};
use sched_tests::cpu_service::NetworkedAgent;
use sched_tests::netlab::NodeLab;
use sched_tests::registry::Registry;
use serde_json::json;
use transport::Profile;

const TIMEOUT: Duration = Duration::from_secs(60);
const PROBES: usize = 3;

fn running_task(cluster: &Cluster) -> Option<String> {
    let tasks = cluster.sched_json(&["get", "tasks"]);
    tasks
        .as_array()?
        .iter()
        .find(|t| t["observed_state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("running")))
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_task_cannot_reach_the_agent_api_and_follows_are_capped() {
    let lab = NodeLab::new(239);
    lab.run(|| async { scenario(&lab).await });
}

async fn scenario(lab: &NodeLab) {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let api_port = free_port();
    let agent =
        NetworkedAgent::start_with(&cluster, lab, "node1", &["--api-listen", &format!("0.0.0.0:{api_port}"), "--max-log-follows", "2"]);
    let gateway = lab.config().subnet.gateway();
    // Each probe: a TCP connect to the gateway's API port (nc runs `true` once connected).
    let script = format!(
        "for i in $(seq {PROBES}); do if nc -w 2 {gateway} {api_port} -e /bin/true; then echo REACHED; else echo BLOCKED; fi; done; \
         echo PROBED; sleep 1000"
    );
    let image = push_busybox(cluster.dir(), &registry.addr(), "prober:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let file = cluster.dir().join("prober.toml");
    let command = serde_json::to_string(&json!(["sh", "-c", script])).unwrap();
    std::fs::write(&file, format!("name = \"prober\"\nimage = \"{image}\"\ncommand = {command}\ncpu = 100\nmemory = 32\ncount = 1\n"))
        .unwrap();
    cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || format!("tasks: {:#}\ncontainers: {:?}", cluster.sched_json(&["get", "tasks"]), agent.containers());
    wait_until("the prober runs", TIMEOUT, || running_task(&cluster).is_some(), context);
    let task = running_task(&cluster).unwrap();

    // The servers read the log (the agent registered 127.0.0.1:PORT) ...
    let mut log = String::new();
    wait_until(
        "the prober's log shows its probes",
        TIMEOUT,
        || {
            log = sched_tests::cluster::stdout(&cluster.sched(&["logs", "prober"]));
            log.contains("PROBED")
        },
        context,
    );
    // ... the task does not reach the API, though it listens on the gateway's address too.
    assert_eq!(log.matches("BLOCKED").count(), PROBES, "every probe from the task is dropped: {log}");
    assert!(!log.contains("REACHED"), "the task connected to the agent API: {log}");
    assert!(
        std::net::TcpStream::connect_timeout(&format!("{gateway}:{api_port}").parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "the API does listen on the gateway address (from the node)"
    );

    // Only the servers may call the agent API: the admin's certificate is refused.
    let api = format!("127.0.0.1:{api_port}");
    let admin = cluster.admin_transport().connect(&api, Profile::SERVER_TO_AGENT).await.expect("connect to the agent API");
    let refused = TaskLogApiClient::new(admin)
        .logs(TaskLogsRequest { task_id: task.clone(), follow: false, tail: Some(1), since_unix_ms: None })
        .await
        .expect_err("the admin calls the agent API");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // At most 2 follows: a third is refused naming the limit, and taken once one ends.
    let channel = cluster.server_transport(1).connect(&api, Profile::SERVER_TO_AGENT).await.expect("connect to the agent API");
    let mut client = TaskLogApiClient::new(channel);
    let follow = || TaskLogsRequest { task_id: task.clone(), follow: true, tail: Some(1), since_unix_ms: None };
    let first = client.logs(follow()).await.expect("follow 1").into_inner();
    let _second = client.logs(follow()).await.expect("follow 2").into_inner();
    let refused = client.logs(follow()).await.expect_err("a third follow");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("--max-log-follows") && refused.message().contains('2'), "{}", refused.message());
    client.logs(TaskLogsRequest { follow: false, ..follow() }).await.expect("reads without follow are not capped");
    drop(first);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match client.logs(follow()).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("a follow after one ended: {s:?}"),
        }
    }

    cluster.sched_ok(&["delete", "prober"]);
    wait_until("no container is left", TIMEOUT, || agent.containers().is_empty(), context);
}
