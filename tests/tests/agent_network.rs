//! Task networking of the agent (`agent::network`) on real namespaces, veths, a bridge and
//! nftables, as root.
//!
//! Every test runs inside its own node network namespace ([`NodeLab`]) with its own bridge,
//! subnet, nft table, netns dir and data dir, so tests run in parallel and nothing they do can
//! reach the host's interfaces. Probes run with `nsenter --net=PATH busybox ...` inside task
//! namespaces, and plain TCP from the node namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use agent::network::{NetworkError, NodeNetwork, TaskNetwork, table_exists};
use sched_tests::bundle::BusyboxBundle;
use sched_tests::netlab::{NodeLab, addr, http_get, nsenter, wait_for_http};

const SERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `busybox ARGS...` inside the namespace at `netns`; panics with its output unless it succeeds.
#[track_caller]
fn busybox_in(netns: &Path, args: &[&str]) -> String {
    let mut full = vec!["busybox"];
    full.extend_from_slice(args);
    let output = nsenter(netns, &full);
    assert!(output.status.success(), "busybox {args:?} in {} failed: {output:?}", netns.display());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ip ARGS...` in the caller's namespace (the node's inside `NodeLab::run`).
fn ip(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip").args(args).output().expect("run ip (iproute2)")
}

#[test]
fn tasks_on_one_bridge_reach_each_other_and_the_gateway() {
    let lab = NodeLab::new(1);
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let started = Instant::now();
        let a = TaskNetwork::create(&node, "task-a").await.expect("task a");
        eprintln!("one task network created in {:?}", started.elapsed());
        let b = TaskNetwork::create(&node, "task-b").await.expect("task b");
        assert_ne!(a.ip, b.ip);
        assert!(lab.config().subnet.is_task_address(a.ip));

        // Inside: eth0 holds the address, the default route goes via the gateway.
        let addrs = String::from_utf8_lossy(&nsenter(&a.netns_path, &["ip", "-4", "-o", "addr", "show", "eth0"]).stdout).into_owned();
        assert!(addrs.contains(&format!("{}/24", a.ip)), "{addrs}");
        let routes = String::from_utf8_lossy(&nsenter(&a.netns_path, &["ip", "route"]).stdout).into_owned();
        assert!(routes.contains(&format!("default via {}", node.gateway())), "{routes}");
        // Outside: the host end is a port of the bridge.
        let veth = String::from_utf8_lossy(&ip(&["-o", "link", "show", &a.veth_host_name]).stdout).into_owned();
        assert!(veth.contains(&format!("master {}", lab.config().bridge)), "{veth}");

        busybox_in(&a.netns_path, &["ping", "-c1", "-W1", &b.ip.to_string()]);
        busybox_in(&b.netns_path, &["ping", "-c1", "-W1", &a.ip.to_string()]);
        busybox_in(&a.netns_path, &["ping", "-c1", "-W1", &node.gateway().to_string()]);

        lab.serve_http(&b.netns_path, 8080, "hello from b\n");
        let url = format!("http://{}:8080/index.html", b.ip);
        let deadline = Instant::now() + SERVE_TIMEOUT;
        loop {
            // busybox 1.35's `wget -T` segfaults: bound it with timeout(1) instead.
            let got = nsenter(&a.netns_path, &["timeout", "2", "busybox", "wget", "-q", "-O-", &url]);
            if got.status.success() {
                assert_eq!(String::from_utf8_lossy(&got.stdout), "hello from b\n");
                break;
            }
            assert!(Instant::now() < deadline, "a cannot fetch {url}: {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn outbound_nat_and_published_ports_work_across_an_uplink() {
    let lab = NodeLab::new(7);
    // An "outside" host on an uplink of the node (10.198.7.0/30), with no route back to the
    // task subnet: a task's connection can only be answered if the node masquerades it.
    let outside = lab.extra_namespace("outside");
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&node, "client").await.expect("task");
        let outside_arg = outside.to_string_lossy().into_owned();
        for args in [
            &["link", "add", "upl7", "type", "veth", "peer", "name", "eth0", "netns", &outside_arg][..],
            &["addr", "add", "10.198.7.1/30", "dev", "upl7"],
            &["link", "set", "upl7", "up"],
        ] {
            let out = ip(args);
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        for args in [
            &["ip", "addr", "add", "10.198.7.2/30", "dev", "eth0"][..],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "lo", "up"],
        ] {
            let out = nsenter(&outside, args);
            assert!(out.status.success(), "{args:?} outside: {out:?}");
        }
        let no_route = nsenter(&outside, &["ip", "route", "get", &task.ip.to_string()]);
        assert!(!no_route.status.success(), "outside must not route to tasks: {no_route:?}");

        lab.serve_http(&outside, 80, "outside the node\n");
        wait_for_http(addr(Ipv4Addr::new(10, 198, 7, 2), 80), SERVE_TIMEOUT);
        let fetched = nsenter(&task.netns_path, &["timeout", "3", "busybox", "wget", "-q", "-O-", "http://10.198.7.2/index.html"]);
        assert_eq!(String::from_utf8_lossy(&fetched.stdout), "outside the node\n", "{fetched:?}");

        // The other way: a remote client reaches a published port on the node's uplink address
        // (prerouting DNAT; the task's reply is un-NATed on its way back through the node).
        lab.serve_http(&task.netns_path, 8080, "published to the outside\n");
        wait_for_http(addr(task.ip, 8080), SERVE_TIMEOUT);
        let host_port = node.publish(task.ip, 8080).await.expect("publish");
        let url = format!("http://10.198.7.1:{host_port}/index.html");
        let remote = nsenter(&outside, &["timeout", "3", "busybox", "wget", "-q", "-O-", &url]);
        assert_eq!(String::from_utf8_lossy(&remote.stdout), "published to the outside\n", "{remote:?}");
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn a_task_cannot_reach_node_services_bound_to_loopback() {
    let lab = NodeLab::new(8);
    let config = lab.config();
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&node, "attacker").await.expect("task");
        // A node service that trusts loopback, and a localhost-published port (must keep working).
        lab.serve_http_on(lab.node_netns(), "127.0.0.1:9999", "node secret\n");
        wait_for_http(addr(Ipv4Addr::LOCALHOST, 9999), SERVE_TIMEOUT);
        lab.serve_http(&task.netns_path, 8080, "published\n");
        wait_for_http(addr(task.ip, 8080), SERVE_TIMEOUT);
        let host_port = node.publish(task.ip, 8080).await.expect("publish");

        // The attack of CVE-2020-8558: the task routes 127.0.0.0/8 out of eth0 to the gateway's
        // MAC, hoping the node's route_localnet lets the packets reach its loopback services.
        let bridge_mac = String::from_utf8_lossy(&ip(&["-o", "link", "show", &config.bridge]).stdout)
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .expect("the bridge's MAC")
            .to_owned();
        let gateway = node.gateway().to_string();
        for args in [
            &["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"][..],
            &["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
            // Removing lo's address also removes the local routes of 127.0.0.0/8.
            &["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"],
            &["ip", "route", "add", "127.0.0.0/8", "via", &gateway, "dev", "eth0"],
            &["ip", "neigh", "replace", "127.0.0.1", "lladdr", &bridge_mac, "dev", "eth0"],
        ] {
            let out = nsenter(&task.netns_path, args);
            assert!(out.status.success(), "{args:?} in the task: {out:?}");
        }
        let attack = nsenter(&task.netns_path, &["timeout", "2", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:9999/"]);
        assert!(
            !attack.status.success() && !String::from_utf8_lossy(&attack.stdout).contains("secret"),
            "the task reached the node's loopback: {attack:?}"
        );
        let table = std::process::Command::new(&config.nft)
            .args(["list", "chain", "ip", &config.nft_table, "input"])
            .output()
            .expect("nft list chain");
        let listing = String::from_utf8_lossy(&table.stdout).into_owned();
        let loopback_guard = listing.lines().find(|l| l.contains("127.0.0.0/8")).unwrap_or_default();
        assert!(
            loopback_guard.contains("counter packets") && !loopback_guard.contains("counter packets 0 "),
            "the guard dropped nothing, so the attack never arrived: {listing}"
        );
        assert_eq!(
            http_get(addr(Ipv4Addr::LOCALHOST, host_port), SERVE_TIMEOUT).unwrap(),
            "published\n",
            "the guard must not break 127.0.0.1 -> published port"
        );
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn a_task_cannot_open_connections_to_the_node_but_reaches_published_ports() {
    let lab = NodeLab::new(9);
    let config = lab.config();
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&node, "prober").await.expect("task");
        let web = TaskNetwork::create(&node, "web").await.expect("web task");
        // A node service on every address, a second node address, and a neighbour's published port.
        let extra = "10.250.9.1";
        let added = ip(&["addr", "add", &format!("{extra}/32"), "dev", "lo"]);
        assert!(added.status.success(), "{added:?}");
        lab.serve_http_on(lab.node_netns(), "0.0.0.0:9998", "node service\n");
        wait_for_http(addr(Ipv4Addr::LOCALHOST, 9998), SERVE_TIMEOUT);
        lab.serve_http(&web.netns_path, 8080, "published\n");
        wait_for_http(addr(web.ip, 8080), SERVE_TIMEOUT);
        let host_port = node.publish(web.ip, 8080).await.expect("publish");

        // One TCP connect from the task (nc runs `true` once connected).
        let connects = |host: &str, port: u16| {
            nsenter(&task.netns_path, &["busybox", "nc", "-w", "2", host, &port.to_string(), "-e", "/bin/true"]).status.success()
        };
        let gateway = node.gateway().to_string();
        assert!(connects(&gateway, host_port), "a published port through the gateway must stay reachable from tasks");
        assert!(connects(&web.ip.to_string(), 8080), "a neighbour task is reachable directly");
        for host in [gateway.as_str(), extra] {
            assert!(!connects(host, 9998), "the task connected to the node's service at {host}:9998");
        }
        busybox_in(&task.netns_path, &["ping", "-c1", "-W1", &gateway]);
        // No IPv6 on the bridge: no link-local way around the IPv4 table.
        let disabled = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.bridge)).unwrap_or_default();
        assert_eq!(disabled.trim(), "1", "IPv6 on the bridge");
        let v6 = String::from_utf8_lossy(&ip(&["-6", "-o", "addr", "show", "dev", &config.bridge]).stdout).into_owned();
        assert!(v6.trim().is_empty(), "the bridge holds IPv6 addresses: {v6}");
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn published_port_forwards_localhost_and_gateway_to_the_task_until_destroyed() {
    let lab = NodeLab::new(2);
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&node, "web").await.expect("task");
        lab.serve_http(&task.netns_path, 8080, "served from the task\n");
        wait_for_http(addr(task.ip, 8080), SERVE_TIMEOUT);

        let host_port = node.publish(task.ip, 8080).await.expect("publish");
        assert!(lab.config().host_ports.contains(&host_port), "{host_port}");
        assert_eq!(node.publish(task.ip, 8080).await.unwrap(), host_port, "publishing again returns the same port");
        for via in [Ipv4Addr::LOCALHOST, node.gateway()] {
            assert_eq!(
                http_get(addr(via, host_port), SERVE_TIMEOUT).expect("published port answers"),
                "served from the task\n",
                "through {via}:{host_port}"
            );
        }
        // Hairpin: the task reaches its own published port through the gateway.
        let url = format!("http://{}:{host_port}/index.html", node.gateway());
        let hairpin = nsenter(&task.netns_path, &["timeout", "2", "busybox", "wget", "-q", "-O-", &url]);
        assert_eq!(String::from_utf8_lossy(&hairpin.stdout), "served from the task\n", "{hairpin:?}");
        let other = lab.config();
        let wrong = node.publish(Ipv4Addr::new(10, 199, 2, 200), 80).await;
        assert!(matches!(wrong, Err(NetworkError::NotATaskAddress { .. })), "{wrong:?} ({})", other.subnet);

        task.destroy(&node).await.expect("destroy");
        assert!(
            http_get(addr(Ipv4Addr::LOCALHOST, host_port), Duration::from_secs(1)).is_err(),
            "the published port still answers after destroy"
        );
        assert!(node.published().await.is_empty());
        assert!(!task.netns_path.exists(), "netns file left behind");
        assert!(!ip(&["link", "show", &task.veth_host_name]).status.success(), "veth {} left behind", task.veth_host_name);
        assert_eq!(node.task("web").await, None, "address not released");
        task.destroy(&node).await.expect("destroy is idempotent");
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn allocations_and_published_ports_survive_a_new_node_network_instance() {
    let lab = NodeLab::new(3);
    lab.run(|| async {
        let first = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&first, "kept").await.expect("task");
        lab.serve_http(&task.netns_path, 80, "still here\n");
        wait_for_http(addr(task.ip, 80), SERVE_TIMEOUT);
        let host_port = first.publish(task.ip, 80).await.expect("publish");
        drop(first); // like an agent restart: nothing is torn down

        let second = NodeNetwork::new(lab.config()).await.expect("node network again");
        assert_eq!(second.task("kept").await, Some(task.clone()));
        assert_eq!(second.published().await.len(), 1);
        assert_eq!(http_get(addr(Ipv4Addr::LOCALHOST, host_port), SERVE_TIMEOUT).unwrap(), "still here\n");
        let next = TaskNetwork::create(&second, "new").await.expect("another task");
        assert_ne!(next.ip, task.ip, "a restarted agent handed out a held address");
        assert_eq!(second.publish(next.ip, 80).await.unwrap(), host_port + 1, "a restarted agent reused a published port");
        let duplicate = TaskNetwork::create(&second, "kept").await;
        assert!(matches!(duplicate, Err(NetworkError::TaskExists { .. })), "{duplicate:?}");
        second.teardown().await.expect("teardown");
    });
}

#[test]
fn teardown_leaves_no_bridge_table_namespace_or_state() {
    let lab = NodeLab::new(4);
    let config = lab.config();
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let mut tasks = Vec::new();
        for id in ["t1", "t2"] {
            let task = TaskNetwork::create(&node, id).await.expect("task");
            node.publish(task.ip, 80).await.expect("publish");
            tasks.push(task);
        }
        assert!(table_exists(&config.nft, &config.nft_table).await.unwrap());
        assert!(config.ipam_file().exists());
        node.teardown().await.expect("teardown");

        assert!(!ip(&["link", "show", &config.bridge]).status.success(), "bridge left");
        for task in &tasks {
            assert!(!ip(&["link", "show", &task.veth_host_name]).status.success());
            assert!(!task.netns_path.exists());
        }
        assert!(!table_exists(&config.nft, &config.nft_table).await.unwrap(), "nft table left");
        assert!(!config.netns_dir.exists(), "netns dir left");
        assert!(!config.ipam_file().exists() && !config.ports_file().exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&*config.netns_dir.to_string_lossy()), "mounts left under the netns dir");
    });
}

#[test]
fn a_failed_create_undoes_what_it_made() {
    let lab = NodeLab::new(5);
    let config = lab.config();
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        // Without the bridge, create fails after it made the namespace (at the veth step).
        assert!(ip(&["link", "del", &config.bridge]).status.success());
        let failed = TaskNetwork::create(&node, "doomed").await;
        let error = failed.expect_err("create without a bridge must fail").to_string();
        assert!(error.contains(&config.bridge), "{error}");
        assert_eq!(node.task("doomed").await, None, "address not released");
        let left: Vec<_> = std::fs::read_dir(&config.netns_dir).unwrap().collect();
        assert!(left.is_empty(), "netns files left: {left:?}");
        let links = String::from_utf8_lossy(&ip(&["-o", "link"]).stdout).into_owned();
        assert!(!links.contains("veth"), "veth left: {links}");

        // A new NodeNetwork repairs the node, and the id can be used again.
        let node = NodeNetwork::new(lab.config()).await.expect("node network again");
        let task = TaskNetwork::create(&node, "doomed").await.expect("create again");
        busybox_in(&task.netns_path, &["ping", "-c1", "-W1", &node.gateway().to_string()]);
        node.teardown().await.expect("teardown");
    });
}

#[test]
fn container_in_the_task_namespace_serves_through_the_published_port() {
    let lab = NodeLab::new(6);
    lab.run(|| async {
        let node = NodeNetwork::new(lab.config()).await.expect("node network");
        let task = TaskNetwork::create(&node, "container").await.expect("task");
        let bundle = BusyboxBundle::new().namespace_path("network", &task.netns_path).args(&["httpd", "-f", "-p", "8080", "-h", "/www"]);
        let www = bundle.rootfs().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello from a sched-runtime container\n").unwrap();
        let run = bundle.spawn_run();
        let host_port = node.publish(task.ip, 8080).await.expect("publish");
        assert_eq!(wait_for_http(addr(Ipv4Addr::LOCALHOST, host_port), SERVE_TIMEOUT), "hello from a sched-runtime container\n");
        assert_eq!(http_get(addr(node.gateway(), host_port), SERVE_TIMEOUT).unwrap(), "hello from a sched-runtime container\n");
        bundle.kill("KILL").assert_success();
        run.wait(SERVE_TIMEOUT);
        drop(bundle);
        task.destroy(&node).await.expect("destroy");
        node.teardown().await.expect("teardown");
    });
}
