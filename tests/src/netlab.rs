//! A node network namespace for task-networking tests, and the processes run inside it.
//!
//! [`NodeLab::new`] pins a fresh network namespace (the "node") with only `lo` in it, and makes a
//! [`NodeNetworkConfig`] of its own (bridge, subnet, nft table, netns dir, data dir). Test bodies
//! run through [`NodeLab::run`] on a thread inside that namespace, so the bridge, `ip_forward`,
//! the nft table and every connection a test makes stay inside namespaces the test created:
//! nothing can route off the host, and the host's own network settings are never touched.
//! Commands a body starts inherit the node namespace; `nsenter --net=PATH` (not `ip netns
//! exec`, which remounts /sys) moves them into a task's.
//!
//! Dropping the lab kills the processes it started, unmounts and removes every namespace file
//! and the netns dir, and removes the node namespace — which takes the bridge, the veths and the
//! nft table with it — and the temp dirs: tests clean up also when they fail.

use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent::network::{NodeNetworkConfig, netns};
use nix::sched::{CloneFlags, setns};

use crate::bundle::unique_name;

/// A node namespace and the network layout of one test.
pub struct NodeLab {
    /// `/run/<unique>`: the node netns file and the task netns dir (on /run's tmpfs).
    root: PathBuf,
    /// The agent data dir (state files).
    data: tempfile::TempDir,
    /// The node's pinned network namespace.
    node: PathBuf,
    config: NodeNetworkConfig,
    /// Background processes (servers in task namespaces), killed on drop.
    children: Mutex<Vec<Child>>,
}

impl NodeLab {
    /// A node namespace with `lo` up, and a config with bridge `sbr<tag>`, subnet
    /// `10.199.<tag>.0/24`, nft table `sched_test_<tag>` and the 100 host ports from
    /// `40000 + 100 * tag` (give each test its own tag, at most 250).
    pub fn new(tag: u8) -> Self {
        let root = Path::new("/run").join(unique_name());
        fs::create_dir_all(&root).expect("create the lab dir under /run");
        let data = tempfile::tempdir().expect("create the data dir");
        let node = root.join("node");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
        runtime.block_on(netns::create(&node)).expect("create the node network namespace");
        let mut config = NodeNetworkConfig::new(data.path());
        config.bridge = format!("sbr{tag}");
        config.subnet = format!("10.199.{tag}.0/24").parse().expect("a valid subnet");
        config.nft_table = format!("sched_test_{tag}");
        config.netns_dir = root.join("netns");
        let first = 40000 + u16::from(tag) * 100;
        config.host_ports = first..=first + 99;
        let lab = Self { root, data, node, config, children: Mutex::new(Vec::new()) };
        let lo = lab.in_node(&["ip", "link", "set", "lo", "up"]);
        assert!(lo.status.success(), "set lo up in the node: {lo:?}");
        lab
    }

    /// The network layout of this test.
    pub fn config(&self) -> NodeNetworkConfig {
        self.config.clone()
    }

    /// The node's network namespace file.
    pub fn node_netns(&self) -> &Path {
        &self.node
    }

    /// The agent data dir.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Runs `body` to completion on a thread inside the node namespace (single-threaded tokio
    /// runtime); a panic in the body fails the test.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = ()>,
    {
        let node = fs::File::open(&self.node).expect("open the node netns");
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                setns(&node, CloneFlags::CLONE_NEWNET).expect("enter the node netns");
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(body());
            });
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        });
    }

    /// A further namespace `name` beside the node (e.g. a host "outside" the node, reached
    /// through an uplink the test wires itself); removed on drop.
    pub fn extra_namespace(&self, name: &str) -> PathBuf {
        let path = self.root.join(name);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
        runtime.block_on(netns::create(&path)).unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        path
    }

    /// Runs `args` inside the node namespace to completion (from any thread).
    pub fn in_node(&self, args: &[&str]) -> Output {
        nsenter(&self.node, args)
    }

    /// Starts `args` in the background inside the namespace at `netns`; killed on drop.
    pub fn spawn_in(&self, netns: &Path, args: &[&str]) -> u32 {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {args:?} in {}: {e}", netns.display()));
        let pid = child.id();
        self.children.lock().expect("children lock").push(child);
        pid
    }

    /// Serves `body` as `/index.html` with busybox httpd on `port` inside `netns`.
    pub fn serve_http(&self, netns: &Path, port: u16, body: &str) -> u32 {
        self.serve_http_on(netns, &port.to_string(), body)
    }

    /// Like [`NodeLab::serve_http`], listening on `listen` (`PORT` or `IP:PORT`).
    pub fn serve_http_on(&self, netns: &Path, listen: &str, body: &str) -> u32 {
        let www = self.data.path().join(format!("www-{}", unique_name()));
        fs::create_dir_all(&www).expect("create the web root");
        fs::write(www.join("index.html"), body).expect("write index.html");
        self.spawn_in(netns, &["busybox", "httpd", "-f", "-p", listen, "-h", &www.to_string_lossy()])
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        for mut child in self.children.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(entries) = fs::read_dir(&self.config.netns_dir) {
            for entry in entries.flatten() {
                let _ = netns::remove(&entry.path());
            }
        }
        let _ = netns::remove_shared_dir(&self.config.netns_dir);
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = netns::remove(&entry.path()); // the node and extra namespaces
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("warning: could not remove {}: {e}", self.root.display());
        }
    }
}

/// `nsenter --net=NETNS ARGS...` to completion, output captured.
pub fn nsenter(netns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run nsenter {args:?}: {e}"))
}

/// `GET /index.html` from `addr` over a plain TCP connection (from the calling thread's
/// namespace); the response body, or why it failed.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: test\r\n\r\n").map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| format!("{addr} answered without headers: {response:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("{addr} answered {head:?}"));
    }
    Ok(body.to_owned())
}

/// Polls [`http_get`] until it succeeds; panics with the last error after `timeout`.
#[track_caller]
pub fn wait_for_http(addr: SocketAddr, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(addr, Duration::from_secs(1)) {
            Ok(body) => return body,
            Err(error) if Instant::now() > deadline => {
                panic!("{addr} did not serve /index.html within {timeout:?}: {error}")
            }
            Err(_) => sleep(Duration::from_millis(20)),
        }
    }
}

/// A socket address from an address and a port.
pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}
