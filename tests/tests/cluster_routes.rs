//! The servers' side of the ingress: `[[route]]` rules become a route table that `sched get
//! routes` shows and `RouteApi/WatchRoutes` streams to ingresses on every change, and a second
//! service claiming the same host and path prefix is refused, naming the first.

use std::time::{Duration, Instant};

use proto::sched::v1 as pb;
use proto::sched::v1::route_api_client::RouteApiClient;
use sched_tests::cluster::{CLOSED_REGISTRY, Cluster, ClusterOptions, stderr};

fn write(cluster: &Cluster, name: &str, text: &str) -> String {
    let path = cluster.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn routed(name: &str, routes: &str) -> String {
    format!("name = \"{name}\"\nimage = \"{CLOSED_REGISTRY}/{name}:1\"\nports = [8080]\ncount = 0\n{routes}")
}

#[test]
fn routes_are_listed_streamed_on_every_change_and_never_claimed_twice() {
    let cluster = Cluster::start(ClusterOptions::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    let follower = cluster.servers.values().find(|s| s.id != leader).unwrap().address.clone();
    let quotes =
        write(&cluster, "quotes", &routed("quotes", "[[route]]\nhost = \"quotes.example\"\npath_prefix = \"/api/v1\"\nport = 8080\n"));
    cluster.sched_ok(&["apply", &quotes]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut stream = runtime.block_on(async {
        let channel = cluster.admin_transport().connect(&follower, transport::Profile::CLI_STREAM).await.unwrap();
        let mut client = RouteApiClient::new(channel);
        client.watch_routes(pb::WatchRoutesRequest {}).await.unwrap().into_inner()
    });
    let next = |stream: &mut tonic::Streaming<pb::RouteTable>| {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(1), stream.message()).await })
            .expect("a table within 1 s")
            .unwrap()
            .unwrap()
    };
    let first = next(&mut stream);
    let rules: Vec<(&str, &str, &str)> =
        first.rules.iter().map(|r| (r.service.as_str(), r.host.as_str(), r.path_prefix.as_str())).collect();
    assert_eq!(rules, [("quotes", "quotes.example", "/api/v1")]);

    // A new service with a route: the stream has it within a second of the apply.
    let web = write(&cluster, "web", &routed("web", "[[route]]\npath_prefix = \"/\"\nport = 8080\ntimeout = \"5s\"\n"));
    let applied = Instant::now();
    cluster.sched_ok(&["apply", &web]);
    let second = next(&mut stream);
    println!("route change reached the watcher {:?} after the apply began", applied.elapsed());
    assert_eq!(second.rules.len(), 2);
    assert!(second.index > first.index);
    let web_rule = second.rules.iter().find(|r| r.service == "web").unwrap();
    assert_eq!((web_rule.host.as_str(), web_rule.path_prefix.as_str(), web_rule.timeout_ms), ("", "/", 5_000));

    // A third service claiming quotes' host and prefix is refused, naming quotes; nothing changes.
    let thief =
        write(&cluster, "thief", &routed("thief", "[[route]]\nhost = \"quotes.example\"\npath_prefix = \"/api/v1\"\nport = 8080\n"));
    let out = cluster.sched(&["apply", &thief]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("already served by service \"quotes\""), "{}", stderr(&out));

    let table = cluster.sched_ok(&["get", "routes"]);
    assert_eq!(
        table.trim_end(),
        "HOST            PATH     SERVICE  PORT  HEALTHY\nquotes.example  /api/v1  quotes   8080  0/0\n*               /        web      8080  0/0"
    );
    let json = cluster.sched_json(&["get", "routes"]);
    assert_eq!(json.as_array().unwrap().len(), 2);

    // Deleting a service takes its rule out of the stream too.
    cluster.sched_ok(&["delete", "web"]);
    let third = next(&mut stream);
    assert_eq!(third.rules.len(), 1);
}

#[test]
fn malformed_routes_are_refused_with_field_and_line() {
    let cluster = Cluster::start(ClusterOptions::default());
    let bad = write(
        &cluster,
        "bad",
        &routed(
            "bad",
            "[[route]]\npath_prefix = \"api/\"\nport = 8080\n[[route]]\nhost = \"Bad_Host\"\npath_prefix = \"/\"\nport = 9\n[[route]]\npath_prefix = \"/x\"\nport = 8080\n[[route]]\npath_prefix = \"/x\"\nport = 8080\n",
        ),
    );
    let out = cluster.sched(&["apply", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "bad.toml:6:15: `route[0].path_prefix`: must start with '/', got \"api/\"",
        "bad.toml:9:8: `route[1].host`: \"Bad_Host\" is not a host name",
        "bad.toml:11:8: `route[1].port`: must be one of the service's ports [8080], got 9",
        "`route[3]`: has the same host and path_prefix as route[2]",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert_eq!(cluster.sched_json(&["get", "services"]), serde_json::json!([]));
}
