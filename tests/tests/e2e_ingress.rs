//! The ingress end to end with real processes, inside a network namespace of the test's own (a
//! [`NodeLab`]): a loopback registry, one `sched server`, one `sched-agent` with task networking
//! and `--ingress-listen`, and busybox httpd services whose `[[route]]`s the servers stream to
//! the agent's ingress.
//!
//! - rules: `/api/v1` -> one service, a host rule -> another, 404 naming host and path when no
//!   rule matches, `/` -> a third once it exists; 503 with Retry-After when a route has no
//!   task; a task failing its health check leaves the target group within interval x retries
//!   + 1 s;
//! - no failed request: 100 requests/s through the ingress while a rolling deploy replaces
//!   every task, while the service scales in from 6 to 2, and while a task is killed with
//!   SIGKILL: every answer is a 200;
//! - draining: a task scaled away while it answers a slow request finishes it (200), and is
//!   stopped once no ingress has anything in flight to it, long before its 60 s drain time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sched_tests::agent_process::wait_until;
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, free_port};
use sched_tests::cpu_service::NetworkedAgent;
use sched_tests::load::{AllowList, Load, LoadOptions};
use sched_tests::netlab::NodeLab;
use sched_tests::oci_image::Entry;
use sched_tests::registry::Registry;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A registry, one server and one networked agent running the ingress, in the lab's namespace.
/// Bind its parts in this order (`let IngressNode { registry, cluster, ingress, agent } = ...`),
/// so the agent and its tasks go before the server and the registry. Dropped whole, the fields
/// go in declaration order: the agent first too.
struct IngressNode {
    agent: NetworkedAgent,
    ingress: SocketAddr,
    cluster: Cluster,
    registry: Registry,
}

impl IngressNode {
    fn start(lab: &NodeLab) -> IngressNode {
        let registry = Registry::start();
        let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
        let ingress: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let agent = NetworkedAgent::start_with(&cluster, lab, "node1", &["--ingress-listen", &ingress.to_string()]);
        IngressNode { agent, ingress, cluster, registry }
    }
}

/// One HTTP/1.0 GET with `Host: host`: (status, headers and body as text).
fn request(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the ingress");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim()
}

/// An image whose httpd serves `files` (path under /www -> content) on port 8080.
fn push_site(cluster: &Cluster, registry: &Registry, repo_tag: &str, files: &[(&str, &str)]) -> String {
    let mut entries = vec![Entry::dir("www")];
    for (path, content) in files {
        let mut dir = String::from("www");
        for part in path.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, dirs)| dirs) {
            dir = format!("{dir}/{part}");
            entries.push(Entry::dir(&dir));
        }
        if path.starts_with("cgi-bin/") {
            entries.push(Entry::File { path: format!("www/{path}"), content: content.as_bytes().to_vec(), mode: 0o755, uid: 0, gid: 0 });
        } else {
            entries.push(Entry::file(&format!("www/{path}"), content));
        }
    }
    let work = cluster.dir().join(repo_tag.replace([':', '/'], "-"));
    std::fs::create_dir_all(&work).unwrap();
    push_busybox(
        &work,
        &registry.addr(),
        repo_tag,
        entries,
        json!({"Env": ["PATH=/bin"], "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"]}),
    )
}

/// A service.toml with an http health check on `/health` (1 s interval, 2 retries).
fn service(name: &str, image: &str, count: u32, routes: &str) -> String {
    format!(
        "name = \"{name}\"\nimage = \"{image}\"\nports = [8080]\ncount = {count}\ncpu = 50\nmemory = 16\ndrain = \"2s\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\nport = 8080\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 2\n{routes}"
    )
}

fn apply(cluster: &Cluster, name: &str, text: &str) {
    let path = cluster.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    cluster.sched_ok(&["apply", &path.to_string_lossy()]);
}

/// (healthy, total) targets of `service`'s routes.
fn targets(cluster: &Cluster, service: &str) -> (usize, usize) {
    let routes = cluster.sched_json(&["get", "routes"]);
    let rule = routes.as_array().and_then(|r| r.iter().find(|r| r["service"] == service).cloned()).unwrap_or(Value::Null);
    let all = rule["targets"].as_array().cloned().unwrap_or_default();
    (all.iter().filter(|t| t["healthy"] == true).count(), all.len())
}

fn wait_healthy(cluster: &Cluster, service: &str, count: usize) {
    wait_until(
        &format!("{count} healthy targets of {service}"),
        TIMEOUT,
        || targets(cluster, service) == (count, count),
        || format!("routes: {:#}\ntasks: {:#}", cluster.sched_json(&["get", "routes"]), cluster.sched_json(&["get", "tasks"])),
    );
}

#[test]
fn rules_hosts_404_503_and_a_failing_check_take_effect_through_the_ingress() {
    let lab = NodeLab::new(236);
    lab.run(|| async { rules(&lab) });
}

fn rules(lab: &NodeLab) {
    let IngressNode { registry, cluster, ingress, agent } = IngressNode::start(lab);
    let api = push_site(&cluster, &registry, "api:1", &[("health", "ok"), ("api/v1/quote", "from api")]);
    let hosted = push_site(&cluster, &registry, "hosted:1", &[("health", "ok"), ("index.html", "from hosted")]);
    let web = push_site(&cluster, &registry, "web:1", &[("health", "ok"), ("index.html", "from web"), ("api/v10/index.html", "web v10")]);
    apply(&cluster, "api", &service("api", &api, 2, "[[route]]\npath_prefix = \"/api/v1\"\nport = 8080\n"));
    apply(&cluster, "hosted", &service("hosted", &hosted, 1, "[[route]]\nhost = \"app.example\"\npath_prefix = \"/\"\nport = 8080\n"));
    wait_healthy(&cluster, "api", 2);
    wait_healthy(&cluster, "hosted", 1);

    let (status, r) = request(ingress, "any.example", "/api/v1/quote");
    assert_eq!((status, body(&r)), (200, "from api"), "{r}");
    let (status, r) = request(ingress, "APP.example:8080", "/");
    assert_eq!((status, body(&r)), (200, "from hosted"), "{r}");
    // No rule for this host and path: the ingress's own 404 names both.
    let (status, r) = request(ingress, "nobody.example", "/elsewhere");
    assert_eq!(status, 404, "{r}");
    assert!(body(&r).contains("nobody.example") && body(&r).contains("/elsewhere"), "{r}");

    // A catch-all service: `/api/v10` is not under `/api/v1`, so it goes to web.
    apply(&cluster, "web", &service("web", &web, 1, "[[route]]\npath_prefix = \"/\"\nport = 8080\n"));
    wait_healthy(&cluster, "web", 1);
    assert_eq!(body(&request(ingress, "any.example", "/").1), "from web");
    assert_eq!(body(&request(ingress, "any.example", "/api/v10/").1), "web v10");
    assert_eq!(body(&request(ingress, "any.example", "/api/v1/quote").1), "from api");

    // No task behind a route: 503 with Retry-After.
    cluster.sched_ok(&["scale", "hosted", "0"]);
    wait_until("hosted has no target", TIMEOUT, || targets(&cluster, "hosted").1 == 0, String::new);
    let (status, r) = request(ingress, "app.example", "/");
    assert_eq!(status, 503, "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after:"), "{r}");

    // A task whose check starts failing leaves the target group within interval x retries + 1 s.
    let task = cluster.sched_json(&["get", "tasks", "--service", "web"])[0]["id"].as_str().unwrap().to_string();
    let broke = Instant::now();
    let out = Command::new(sched_tests::bundle::runtime_binary())
        .arg("--root")
        .arg(cluster.dir().join("agent-node1/runtime"))
        .args(["exec", &task, "rm", "/www/health"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_until("the ingress answers 503 for web", Duration::from_secs(10), || request(ingress, "any.example", "/").0 == 503, String::new);
    let took = broke.elapsed();
    println!("a failing check took the target out of the ingress after {took:?} (interval 1 s x retries 2 + 1 s = 3 s)");
    assert!(took <= Duration::from_secs(3) + Duration::from_millis(500), "took {took:?}");

    for name in ["api", "hosted", "web"] {
        cluster.sched_ok(&["delete", name]);
    }
    wait_until("no container is left", TIMEOUT, || agent.containers().is_empty(), || format!("{:?}", agent.containers()));
}

#[test]
fn no_failed_request_through_a_rolling_deploy_a_scale_in_and_a_killed_task() {
    let lab = NodeLab::new(237);
    lab.run(|| async { steady(&lab) });
}

fn steady(lab: &NodeLab) {
    let IngressNode { registry, cluster, ingress, agent } = IngressNode::start(lab);
    let v1 = push_site(&cluster, &registry, "steady:1", &[("health", "ok"), ("index.html", "v1")]);
    let v2 = push_site(&cluster, &registry, "steady:2", &[("health", "ok"), ("index.html", "v2")]);
    let route = "[[route]]\npath_prefix = \"/\"\nport = 8080\n";
    apply(&cluster, "steady", &service("steady", &v1, 6, route));
    wait_healthy(&cluster, "steady", 6);

    let load = |what: &str, seconds: u64, during: &dyn Fn()| {
        let mut options = LoadOptions::new(100.0, "/", Duration::from_secs(seconds));
        options.allow = AllowList::loopback();
        let load = Load::start(options, move || Some(vec![ingress.to_string()]));
        std::thread::sleep(Duration::from_secs(2));
        during();
        let report = load.wait();
        println!("{what}: {}", report.summary());
        assert_eq!(report.failures + report.no_endpoint, 0, "{what}: every request must be answered 200: {}", report.summary());
        assert!(report.successes >= 100 * seconds - 5, "{what}: {}", report.summary());
    };

    // (a) a rolling deploy replaces every task.
    load("rolling deploy", 30, &|| {
        apply(&cluster, "steady", &service("steady", &v2, 6, route));
        wait_until(
            "every task runs v2",
            Duration::from_secs(25),
            || {
                let tasks = cluster.sched_json(&["get", "tasks", "--service", "steady"]);
                let running: Vec<&Value> = tasks.as_array().unwrap().iter().filter(|t| t["observed_state"] == "running").collect();
                running.len() == 6 && running.iter().all(|t| t["revision"] == 2)
            },
            || format!("{:#}", cluster.sched_json(&["get", "tasks"])),
        );
    });
    // (b) a scale-in from 6 to 2.
    load("scale-in 6 -> 2", 20, &|| {
        cluster.sched_ok(&["scale", "steady", "2"]);
    });
    wait_healthy(&cluster, "steady", 2);
    // (c) a task killed with SIGKILL.
    load("a task killed", 20, &|| {
        let task = cluster
            .sched_json(&["get", "tasks", "--service", "steady"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["observed_state"] == "running")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .unwrap();
        let out = Command::new(sched_tests::bundle::runtime_binary())
            .arg("--root")
            .arg(cluster.dir().join("agent-node1/runtime"))
            .args(["kill", &task, "KILL"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    });

    cluster.sched_ok(&["delete", "steady"]);
    wait_until("no container is left", TIMEOUT, || agent.containers().is_empty(), || format!("{:?}", agent.containers()));
}

#[test]
fn a_draining_task_finishes_its_requests_and_stops_when_nothing_is_in_flight() {
    let lab = NodeLab::new(238);
    lab.run(|| async { draining(&lab) });
}

fn draining(lab: &NodeLab) {
    let IngressNode { registry, cluster, ingress, agent } = IngressNode::start(lab);
    let slow = "#!/bin/sh\n/bin/sleep 3\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n";
    let image = push_site(&cluster, &registry, "slow:1", &[("health", "ok"), ("cgi-bin/slow", slow)]);
    let text = service("slow", &image, 2, "[[route]]\npath_prefix = \"/\"\nport = 8080\n").replace("drain = \"2s\"", "drain = \"60s\"");
    apply(&cluster, "slow", &text);
    wait_healthy(&cluster, "slow", 2);

    // One slow request on each task (least outstanding spreads them), then scale in to 1.
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let answer = std::thread::spawn(move || {
                let answer = request(ingress, "any.example", "/cgi-bin/slow");
                (answer, Instant::now())
            });
            std::thread::sleep(Duration::from_millis(200));
            answer
        })
        .collect();
    let scaled = Instant::now();
    cluster.sched_ok(&["scale", "slow", "1"]);
    let draining_task = || {
        cluster
            .sched_json(&["get", "tasks", "--service", "slow"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["desired_state"] != "running")
            .cloned()
    };
    wait_until(
        "a task is draining",
        Duration::from_secs(5),
        || draining_task().is_some_and(|t| t["desired_state"] == "draining"),
        String::new,
    );
    wait_until(
        "the draining task is stopped",
        Duration::from_secs(30),
        || draining_task().is_some_and(|t| t["desired_state"] == "stopped"),
        || format!("{:#}", cluster.sched_json(&["get", "tasks"])),
    );
    let stopped = Instant::now();
    let answers: Vec<((u16, String), Instant)> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    for ((status, response), _) in &answers {
        assert_eq!((*status, body(response)), (200, "slow"), "{response}");
    }
    let first_done = answers.iter().map(|(_, at)| *at).min().unwrap();
    println!(
        "drain: stopped {:.1} s after the scale-in; the slow requests ended {:.1} s after it (drain time 60 s)",
        stopped.duration_since(scaled).as_secs_f64(),
        first_done.duration_since(scaled).as_secs_f64()
    );
    assert!(stopped >= first_done, "the draining task stopped before its request in flight had ended");
    assert!(stopped.duration_since(scaled) < Duration::from_secs(20), "the drain ran on although nothing was in flight");

    cluster.sched_ok(&["delete", "slow"]);
    wait_until("no container is left", Duration::from_secs(90), || agent.containers().is_empty(), || format!("{:?}", agent.containers()));
}
