//! The ingress across hosts in the netns lab (see `sched_tests::lab`): host h1's agent runs the
//! ingress (`--ingress-listen`, node label `role=edge`), the service's 4 tasks run on h2 and h3
//! (`constraints = { role = "worker" }`), and a steady load of 100 requests/s from the switch
//! goes to h1's ingress while h3's cable is cut. The requests h3 held at the cut are all the
//! failures there may be: the ingress retries refused and timed-out connections on h2, h3's
//! targets leave the route table when the node is marked down, and their replacements on h2
//! join it.

use std::time::Duration;

use sched_tests::lab::{INGRESS_PORT, Lab, LabOptions, wait_until};
use sched_tests::load::{AllowList, Load, LoadOptions};
use serde_json::{Value, json};

const SERVICE: &str = "web";
const TASKS: usize = 4;

/// The healthy targets of the service's route, by the node address they are published on.
fn healthy_targets(lab: &Lab) -> Vec<String> {
    let routes = lab.sched_json(&["get", "routes"]).unwrap_or(Value::Null);
    let rule = routes.as_array().and_then(|r| r.iter().find(|r| r["service"] == SERVICE).cloned()).unwrap_or(Value::Null);
    rule["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["healthy"] == true)
        .filter_map(|t| t["address"].as_str().map(|a| a.split(':').next().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn an_ingress_on_one_host_serves_tasks_on_two_others_and_rides_out_a_cut_host() {
    // The default 10 s node timeout: h2's agent talks to h3's server first and needs about 5 s to
    // notice the cut and move on; a shorter timeout would mark h2 down too.
    let lab = Lab::start(LabOptions { ingress_host: Some(0), ..LabOptions::default() });
    let [h2, h3] = [lab.hosts[1].ip.to_string(), lab.hosts[2].ip.to_string()];
    let image = lab.push_busybox("web:1", json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let script = "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    let file = lab.dir().join("web.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"{SERVICE}\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ncpu = 100\nmemory = 32\nports = [8080]\n\
             count = {TASKS}\nconstraints = {{ role = \"worker\" }}\ndrain = \"1s\"\n\
             [health]\nkind = \"http\"\npath = \"/index.html\"\nport = 8080\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 2\n\
             [[route]]\npath_prefix = \"/\"\nport = 8080\ntimeout = \"3s\"\n"
        ),
    )
    .unwrap();
    lab.sched_ok(&["apply", &file.to_string_lossy()]);
    let context = || {
        format!(
            "routes: {:#}\ntasks: {:#}\n{}",
            lab.sched_json(&["get", "routes"]).unwrap_or_default(),
            Value::Array(lab.tasks()),
            lab.log_tails(20)
        )
    };
    wait_until(
        "4 healthy targets on h2 and h3",
        Duration::from_secs(90),
        || {
            let t = healthy_targets(&lab);
            t.len() == TASKS && t.contains(&h2) && t.contains(&h3)
        },
        context,
    );

    let ingress = format!("{}:{INGRESS_PORT}", lab.hosts[0].ip);
    let mut options = LoadOptions::new(100.0, "/index.html", Duration::from_secs(30));
    options.allow = AllowList::loopback().with_lab_subnet(lab.subnet(), 24);
    let target = ingress.clone();
    let load = lab.in_switch(move || Load::start(options, move || Some(vec![target.clone()])));
    std::thread::sleep(Duration::from_secs(5));
    let before_cut = load.snapshot();
    assert_eq!(before_cut.failures, 0, "before the cut: {}", before_cut.summary());
    lab.cut(2);
    let report = load.wait();
    println!("100 requests/s through the ingress on h1 for 30 s, h3 cut after 5 s: {}", report.summary());
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    // The only requests that may fail are those the ingress had already sent to h3 when its
    // cable went (in flight, or on an open keep-alive connection it reused before it could
    // know): they get the route's 3 s timeout (504). Every other request is retried on h2.
    std::thread::sleep(Duration::from_secs(4)); // the last answers reach the access log
    let access = std::fs::read_to_string(lab.dir().join("ingress-access.log")).unwrap_or_default();
    let failed: Vec<Value> = access.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["status"] != 200).collect();
    println!("the ingress's answers other than 200: {failed:#?}");
    for r in &failed {
        let target = r["target"].as_str().unwrap_or_default();
        assert!(target.starts_with(&format!("{h3}:")), "a request failed that did not go to the cut host: {r}");
    }
    assert!(
        failed.len() <= 4,
        "more failures than h3's two targets held at the cut (one in flight, one reused connection each): {failed:#?}"
    );
    assert!(report.failures + report.no_endpoint <= 4, "{}", report.summary());
    assert!(report.successes >= 2_990, "{}", report.summary());

    // h3's tasks were replaced on h2: the route has 4 healthy targets again, all on h2.
    wait_until(
        "4 healthy targets, all on h2",
        Duration::from_secs(60),
        || {
            let t = healthy_targets(&lab);
            t.len() == TASKS && t.iter().all(|a| *a == h2)
        },
        context,
    );
}
