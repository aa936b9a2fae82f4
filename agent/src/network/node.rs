//! `NodeNetwork`: the node side of task networking — bridge, gateway address, forwarding, NAT
//! table, address and port allocations — and the operations that change them.
//!
//! It owns every task network's lifecycle: [`NodeNetwork::create_task`] allocates the address
//! and builds the parts ([`TaskNetwork::build`]), undoing them on failure;
//! [`NodeNetwork::destroy_task`] removes them. `TaskNetwork::create` and `destroy` are defined
//! here too, as the same operations seen from the task.
//!
//! All mutable state (allocations, published ports, the nft table written from them) sits behind
//! one async mutex, so concurrent task starts and stops on a node are serialized and the table in
//! the kernel always matches the state saved on disk.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};
use tracing::{info, warn};

use super::config::NodeNetworkConfig;
use super::error::{NetworkError, Result};
use super::host_ports::{HostPorts, PublishedPort};
use super::ipam::Ipam;
use super::netlink::Netlink;
use super::task::{TaskNetwork, validate_task_id};
use super::{netns, nftables, state_file, sysctl};

/// The task network of this node (cheap to clone; clones share state).
#[derive(Clone)]
pub struct NodeNetwork {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    config: NodeNetworkConfig,
    /// A socket in the node's network namespace (the caller's at [`NodeNetwork::new`]).
    netlink: Netlink,
    /// Allocations and published ports: one lock, so the nft table written always matches them.
    state: Mutex<NodeState>,
}

struct NodeState {
    ipam: Ipam,
    ports: HostPorts,
}

impl NodeNetwork {
    /// Brings the node network to the configured state in the caller's network namespace:
    /// creates the bridge if missing, gives it the gateway address, enables IPv4 forwarding and
    /// `route_localnet` on the bridge (so connections to 127.0.0.1 can be forwarded to tasks),
    /// creates the netns dir, loads the saved allocations and writes the nft table with the
    /// ports they publish. Safe to call again (an agent restart does).
    pub async fn new(config: NodeNetworkConfig) -> Result<Self> {
        config.validate()?;
        let ipam = Ipam::load(&config.ipam_file(), config.subnet)?;
        let ports = HostPorts::load(&config.ports_file(), config.host_ports.clone())?;
        let netlink = Netlink::connect()?;
        let bridge = netlink.ensure_bridge(&config.bridge).await?;
        let gateway = config.subnet.gateway();
        netlink.ensure_address(bridge, &config.bridge, gateway, config.subnet.prefix()).await?;
        netns::ensure_shared_dir(&config.netns_dir)?;
        let node = Self { inner: Arc::new(NodeInner { config, netlink, state: Mutex::new(NodeState { ipam, ports }) }) };
        // The table first: its input chain guards loopback before route_localnet opens it.
        node.write_rules(&*node.inner.state.lock().await).await?;
        let config = &node.inner.config;
        sysctl::set("net/ipv4/ip_forward", "1")?;
        sysctl::set(&format!("net/ipv4/conf/{}/route_localnet", config.bridge), "1")?;
        // The table guards IPv4 only: no IPv6 on the bridge, or tasks would reach the node's
        // services through its link-local address. (Nothing to do where IPv6 is off.)
        let ipv6 = format!("net/ipv6/conf/{}/disable_ipv6", config.bridge);
        if std::path::Path::new("/proc/sys").join(&ipv6).exists() {
            sysctl::set(&ipv6, "1")?;
        }
        info!(bridge = %config.bridge, subnet = %config.subnet, table = %config.nft_table, "node network ready");
        Ok(node)
    }

    /// The configuration this node network was made with.
    pub fn config(&self) -> &NodeNetworkConfig {
        &self.inner.config
    }

    /// The bridge's address, the tasks' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.config.subnet.gateway()
    }

    /// The network of task `task_id`, if it has one (e.g. after an agent restart).
    pub async fn task(&self, task_id: &str) -> Option<TaskNetwork> {
        let state = self.inner.state.lock().await;
        state.ipam.get(task_id).map(|ip| TaskNetwork::describe(&self.inner.config, task_id, ip))
    }

    /// Every task network of this node, ordered by task id.
    pub async fn tasks(&self) -> Vec<TaskNetwork> {
        let state = self.inner.state.lock().await;
        state.ipam.allocations().map(|(id, ip)| TaskNetwork::describe(&self.inner.config, id, ip)).collect()
    }

    /// Forwards TCP connections to `host_port` on any node address (127.0.0.1 and the gateway
    /// included) to `task_ip:container_port`, choosing a free host port from the configured
    /// range; returns that port. Publishing the same task port again returns the same host port.
    pub async fn publish(&self, task_ip: Ipv4Addr, container_port: u16) -> Result<u16> {
        let mut state = self.inner.state.lock().await;
        if !state.ipam.is_allocated(task_ip) {
            return Err(NetworkError::NotATaskAddress { ip: task_ip, subnet: self.inner.config.subnet.to_string() });
        }
        let before = state.ports.clone();
        let published = state.ports.publish(task_ip, container_port, host_port_is_free)?;
        if before != state.ports {
            self.change_ports(&mut state, before).await?;
            info!(host_port = published.host_port, %task_ip, container_port, "published");
        }
        Ok(published.host_port)
    }

    /// Stops forwarding `host_port`.
    pub async fn unpublish(&self, host_port: u16) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let before = state.ports.clone();
        if state.ports.unpublish(host_port).is_none() {
            return Err(NetworkError::NotPublished { host_port });
        }
        self.change_ports(&mut state, before).await?;
        info!(host_port, "unpublished");
        Ok(())
    }

    /// Every forwarding of this node, ordered by host port.
    pub async fn published(&self) -> Vec<PublishedPort> {
        let state = self.inner.state.lock().await;
        state.ports.published().copied().collect()
    }

    /// Creates the network of `task_id` (an error if it already has one): allocates its address,
    /// saves the allocation and builds namespace, veth and routes. If any step fails, everything
    /// made so far is undone before the error is returned.
    pub async fn create_task(&self, task_id: &str) -> Result<TaskNetwork> {
        validate_task_id(task_id)?;
        let inner = &self.inner;
        let config = &inner.config;
        let mut state = inner.state.lock().await;
        let netns_path = config.netns_dir.join(task_id);
        if state.ipam.get(task_id).is_some() || netns_path.exists() {
            return Err(NetworkError::TaskExists { task_id: task_id.to_owned() });
        }
        let ip = state.ipam.allocate(task_id)?;
        let task = TaskNetwork::describe(config, task_id, ip);
        let built = async {
            state.ipam.save(&config.ipam_file())?;
            task.build(&inner.netlink, config).await
        }
        .await;
        if let Err(error) = built {
            let undo = self.remove_task_parts(&mut state, task_id).await;
            return Err(error.with_cleanup(undo));
        }
        info!(task_id, %ip, netns = %task.netns_path.display(), "task network created");
        Ok(task)
    }

    /// Removes the network of `task_id`: its published ports, its veth, its namespace file, its
    /// address. Idempotent: parts already gone (or never made) are skipped.
    pub async fn destroy_task(&self, task_id: &str) -> Result<()> {
        validate_task_id(task_id)?;
        let mut state = self.inner.state.lock().await;
        if let Some(ip) = state.ipam.get(task_id) {
            let before = state.ports.clone();
            if !state.ports.unpublish_task(ip).is_empty() {
                self.change_ports(&mut state, before).await?;
            }
        }
        self.remove_task_parts(&mut state, task_id).await?;
        info!(task_id, "task network destroyed");
        Ok(())
    }

    /// Removes what a task network is made of (veth, netns file, address), each if present.
    async fn remove_task_parts(&self, state: &mut MutexGuard<'_, NodeState>, task_id: &str) -> Result<()> {
        let config = &self.inner.config;
        if let Some(ip) = state.ipam.get(task_id) {
            let task = TaskNetwork::describe(config, task_id, ip);
            self.inner.netlink.delete_link(&task.veth_host_name).await?;
        }
        netns::remove(&config.netns_dir.join(task_id))?;
        if state.ipam.release(task_id).is_some() {
            state.ipam.save(&config.ipam_file())?;
        }
        Ok(())
    }

    /// What of task networking is on the node now, taken under the state lock so that no task
    /// network is half made while it is read: the address allocations (with each one's veth),
    /// the namespace files in the netns dir, the links attached to the bridge and the
    /// published ports. The reaper matches them to tasks.
    pub async fn census(&self) -> Result<NetworkCensus> {
        let config = &self.inner.config;
        let state = self.inner.state.lock().await;
        let allocations = state.ipam.allocations().map(|(id, ip)| TaskNetwork::describe(config, id, ip)).collect::<Vec<_>>();
        let pins = match std::fs::read_dir(&config.netns_dir) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(NetworkError::io(format!("list netns dir {}", config.netns_dir.display()), e)),
        };
        let bridge_ports = self.inner.netlink.ports_of(&config.bridge).await?;
        let published = state.ports.published().copied().collect();
        Ok(NetworkCensus { allocations, pins, bridge_ports, published })
    }

    /// Deletes link `name` from the node if it is a veth on the bridge that no task network
    /// holds (checked again under the state lock). Returns whether it deleted it.
    pub async fn remove_stray_veth(&self, name: &str) -> Result<bool> {
        let config = &self.inner.config;
        let state = self.inner.state.lock().await;
        let held = state.ipam.allocations().any(|(id, ip)| TaskNetwork::describe(config, id, ip).veth_host_name == name);
        if held || !is_task_veth_name(name) {
            return Ok(false);
        }
        self.inner.netlink.delete_link(name).await
    }

    /// Stops forwarding `host_port` if it forwards to an address no task holds (checked again
    /// under the state lock). Returns whether it did.
    pub async fn unpublish_stray(&self, host_port: u16) -> Result<bool> {
        let mut state = self.inner.state.lock().await;
        let stray = state.ports.published().any(|p| p.host_port == host_port && !state.ipam.is_allocated(p.task_ip));
        if !stray {
            return Ok(false);
        }
        let before = state.ports.clone();
        state.ports.unpublish(host_port);
        self.change_ports(&mut state, before).await?;
        Ok(true)
    }

    /// Removes everything this node network made: every task network, the nft table, the
    /// bridge, the netns dir and the state files. IPv4 forwarding stays on (other software on
    /// the host may rely on it).
    pub async fn teardown(self) -> Result<()> {
        for task in self.tasks().await {
            self.destroy_task(&task.task_id).await?;
        }
        let config = &self.inner.config;
        nftables::delete_table(&config.nft, &config.nft_table).await?;
        self.inner.netlink.delete_link(&config.bridge).await?;
        netns::remove_shared_dir(&config.netns_dir)?;
        state_file::remove(&config.ipam_file())?;
        state_file::remove(&config.ports_file())?;
        if let Err(e) = std::fs::remove_dir(&config.state_dir) {
            warn!(dir = %config.state_dir.display(), error = %e, "state dir not removed");
        }
        info!(bridge = %config.bridge, table = %config.nft_table, "node network torn down");
        Ok(())
    }

    /// Saves the changed ports and rewrites the nft table; on failure restores `before` in
    /// memory, on disk and in the kernel.
    async fn change_ports(&self, state: &mut MutexGuard<'_, NodeState>, before: HostPorts) -> Result<()> {
        let written = async {
            state.ports.save(&self.inner.config.ports_file())?;
            self.write_rules(state).await
        }
        .await;
        if let Err(error) = written {
            state.ports = before;
            let undo = async {
                state.ports.save(&self.inner.config.ports_file())?;
                self.write_rules(state).await
            }
            .await;
            return Err(error.with_cleanup(undo));
        }
        Ok(())
    }

    async fn write_rules(&self, state: &NodeState) -> Result<()> {
        let config = &self.inner.config;
        let rules = nftables::render_table(&config.nft_table, &config.bridge, config.subnet, state.ports.published());
        nftables::replace_table(&config.nft, &config.nft_table, &rules).await
    }
}

impl TaskNetwork {
    /// Creates the network of `task_id` on `node`: [`NodeNetwork::create_task`].
    pub async fn create(node: &NodeNetwork, task_id: &str) -> Result<TaskNetwork> {
        node.create_task(task_id).await
    }

    /// Removes this network: [`NodeNetwork::destroy_task`]; idempotent.
    pub async fn destroy(&self, node: &NodeNetwork) -> Result<()> {
        node.destroy_task(&self.task_id).await
    }
}

/// What of task networking is on a node ([`NodeNetwork::census`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkCensus {
    /// Every address allocation, as the task network it stands for.
    pub allocations: Vec<TaskNetwork>,
    /// The file names in the netns dir (task ids, if the agent made them).
    pub pins: Vec<String>,
    /// The names of the links attached to the node bridge.
    pub bridge_ports: Vec<String>,
    /// Every published port.
    pub published: Vec<PublishedPort>,
}

/// Whether `name` has the form of a task's host veth (`veth` and 8 hex digits, see
/// [`TaskNetwork`]): links of other forms on the bridge are not the agent's to remove.
pub fn is_task_veth_name(name: &str) -> bool {
    name.strip_prefix("veth").is_some_and(|hex| hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// True if nothing on this node listens on TCP `port` (a DNAT rule would hide it).
fn host_port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}
