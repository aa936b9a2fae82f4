//! `TaskNetwork`: what one task's network is — its namespace, veth, address and default route —
//! and how those parts are made.
//!
//! [`TaskNetwork::build`] pins a new namespace at `<netns dir>/<task id>`, creates a veth pair
//! whose host end (`veth<address in hex>`) joins the node bridge and whose peer is created inside
//! the namespace as `eth0`, then — on a thread inside the namespace — sets `lo` and `eth0` up,
//! gives `eth0` the task address and adds the default route via the gateway.
//!
//! This file knows nothing of the node: allocating the address, undoing a failed build and
//! removing a task network are the node's ([`NodeNetwork::create_task`](super::NodeNetwork::create_task)
//! and [`NodeNetwork::destroy_task`](super::NodeNetwork::destroy_task)), which owns the state they
//! change. `node.rs` uses this file, never the other way round.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::config::NodeNetworkConfig;
use super::error::{NetworkError, Result};
use super::netlink::Netlink;
use super::{netns, sysctl};

/// The interface name of the task's end of its veth pair.
pub const TASK_INTERFACE: &str = "eth0";

/// What a task's network is: the runtime joins `netns_path`, the scheduler records `ip`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNetwork {
    /// The task this network belongs to.
    pub task_id: String,
    /// The pinned network namespace (OCI `linux.namespaces[{type: network, path}]`).
    pub netns_path: PathBuf,
    /// The task's address on the node bridge.
    pub ip: Ipv4Addr,
    /// The host end of the task's veth pair, attached to the node bridge.
    pub veth_host_name: String,
}

impl TaskNetwork {
    /// The network `task_id` has (or will have) with address `ip` under `config`.
    pub(super) fn describe(config: &NodeNetworkConfig, task_id: &str, ip: Ipv4Addr) -> Self {
        Self {
            task_id: task_id.to_owned(),
            netns_path: config.netns_dir.join(task_id),
            ip,
            veth_host_name: format!("veth{:08x}", u32::from(ip)),
        }
    }

    /// Makes the namespace, the veth pair (through `netlink`, in the node's namespace) and the
    /// in-namespace configuration. On failure the parts made stay: the caller removes them.
    pub(super) async fn build(&self, netlink: &Netlink, config: &NodeNetworkConfig) -> Result<()> {
        netns::create(&self.netns_path).await?;
        // A link of this name is a leftover of an earlier task that held the same address.
        netlink.delete_link(&self.veth_host_name).await?;
        let bridge = netlink.existing_link_index(&config.bridge).await?;
        let namespace = netns::open(&self.netns_path)?;
        netlink.create_veth_into(&self.veth_host_name, bridge, TASK_INTERFACE, namespace.as_fd()).await?;
        let (ip, prefix, gateway) = (self.ip, config.subnet.prefix(), config.subnet.gateway());
        netns::run_in(&self.netns_path, move || async move {
            // The namespace belongs to the host's user namespace, so root of a task in a user
            // namespace of its own lacks CAP_NET_BIND_SERVICE in it: every port is unprivileged
            // here, as Docker sets for every container since 20.10.
            sysctl::set("net/ipv4/ip_unprivileged_port_start", "0")?;
            let netlink = Netlink::connect()?;
            let lo = netlink.existing_link_index("lo").await?;
            netlink.set_up(lo, "lo").await?;
            let eth0 = netlink.existing_link_index(TASK_INTERFACE).await?;
            netlink.ensure_address(eth0, TASK_INTERFACE, ip, prefix).await?;
            netlink.set_up(eth0, TASK_INTERFACE).await?;
            netlink.add_default_route(gateway).await
        })
        .await
    }
}

/// Task ids become file names: 1-128 characters of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub(super) fn validate_task_id(task_id: &str) -> Result<()> {
    let ok = !task_id.is_empty()
        && task_id.len() <= 128
        && task_id != "."
        && task_id != ".."
        && task_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(NetworkError::InvalidTaskId { task_id: task_id.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn task_ids_that_are_not_plain_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "../etc", "a b", &"x".repeat(129)] {
            assert!(validate_task_id(bad).is_err(), "{bad:?}");
        }
        for good in ["web-1", "svc.web_2", "0123abcd"] {
            validate_task_id(good).unwrap();
        }
    }

    #[test]
    fn the_host_veth_name_fits_ifnamsiz_and_follows_the_address() {
        let config = NodeNetworkConfig::new(Path::new("/data"));
        let task = TaskNetwork::describe(&config, "web-1", Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(task.veth_host_name, "veth0a580002");
        assert!(task.veth_host_name.len() <= 15);
        assert_eq!(task.netns_path, Path::new("/run/sched/netns/web-1"));
    }
}
