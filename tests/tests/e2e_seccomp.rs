//! `[security] seccomp` end to end: a `sched server`, one `sched-agent` and a loopback registry.
//! A service that says nothing runs its tasks under the default seccomp profile; one with
//! `seccomp = "unconfined"` runs them without a filter. The key travels from the file through
//! the replicated spec and the node's assignment to the task's bundle.

use std::time::Duration;

use sched_tests::agent_process::{self, AgentProcess};
use sched_tests::busybox_image::push_busybox;
use sched_tests::cluster::{Cluster, ClusterOptions, stdout};
use sched_tests::registry::Registry;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn the_seccomp_key_reaches_the_tasks_of_each_service() {
    let registry = Registry::start();
    let cluster = Cluster::start(ClusterOptions { servers: 1, ..Default::default() });
    let image = push_busybox(cluster.dir(), &registry.addr(), "seccomp:1", vec![], json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}));
    let _node = AgentProcess::start(&cluster, "node1");
    let script = "grep Seccomp: /proc/self/status; sleep 1000";
    for (name, security) in [("confined", ""), ("unconfined", "[security]\nseccomp = \"unconfined\"\n")] {
        let file = cluster.dir().join(format!("{name}.toml"));
        let text = format!("name = \"{name}\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ncount = 1\n{security}");
        std::fs::write(&file, text).unwrap();
        cluster.sched_ok(&["apply", &file.to_string_lossy()]);
    }
    for (name, want) in [("confined", "Seccomp:\t2"), ("unconfined", "Seccomp:\t0")] {
        let mut last = String::new();
        agent_process::wait_until(
            &format!("{name}'s task prints its seccomp mode"),
            TIMEOUT,
            || {
                last = stdout(&cluster.sched(&["logs", name]));
                last.contains("Seccomp:")
            },
            || format!("{:#?}", cluster.sched_json(&["get", "tasks"])),
        );
        assert!(last.contains(want), "{name}: want {want:?}, got {last:?}");
    }
}
