//! `TaskNetwork`: one task's network namespace, veth, address and default route.
//!
//! [`TaskNetwork::create`] pins a new namespace at `<netns dir>/<task id>`, creates a veth pair
//! whose host end (`veth<address in hex>`) joins the node bridge and whose peer is created inside
//! the namespace as `eth0`, then — on a thread inside the namespace — sets `lo` and `eth0` up,
//! gives `eth0` the task address and adds the default route via the gateway. If any step fails,
//! everything made so far is undone before the error is returned.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use tracing::info;

use super::config::NodeNetworkConfig;
use super::error::{NetworkError, Result};
use super::netlink::Netlink;
use super::netns;
use super::node::{NodeInner, NodeNetwork};

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
    /// Creates the network of `task_id` on `node` (an error if it already has one).
    pub async fn create(node: &NodeNetwork, task_id: &str) -> Result<TaskNetwork> {
        validate_task_id(task_id)?;
        let inner = &node.inner;
        let config = &inner.config;
        let mut state = inner.state.lock().await;
        let netns_path = config.netns_dir.join(task_id);
        if state.ipam.get(task_id).is_some() || netns_path.exists() {
            return Err(NetworkError::TaskExists { task_id: task_id.to_owned() });
        }
        let ip = state.ipam.allocate(task_id)?;
        let task = Self::describe(config, task_id, ip);
        let built = async {
            state.ipam.save(&config.ipam_file())?;
            build(inner, &task).await
        }
        .await;
        if let Err(error) = built {
            let undo = node.remove_task_parts(&mut state, task_id).await;
            return Err(error.with_cleanup(undo));
        }
        info!(task_id, %ip, netns = %task.netns_path.display(), "task network created");
        Ok(task)
    }

    /// Removes this network (see [`NodeNetwork::destroy_task`]); idempotent.
    pub async fn destroy(&self, node: &NodeNetwork) -> Result<()> {
        node.destroy_task(&self.task_id).await
    }

    /// The network `task_id` has (or will have) with address `ip` under `config`.
    pub(super) fn describe(config: &NodeNetworkConfig, task_id: &str, ip: Ipv4Addr) -> Self {
        Self {
            task_id: task_id.to_owned(),
            netns_path: config.netns_dir.join(task_id),
            ip,
            veth_host_name: format!("veth{:08x}", u32::from(ip)),
        }
    }
}

/// Makes the namespace, the veth pair and the in-namespace configuration of `task`.
async fn build(inner: &NodeInner, task: &TaskNetwork) -> Result<()> {
    let config = &inner.config;
    netns::create(&task.netns_path).await?;
    // A link of this name is a leftover of an earlier task that held the same address.
    inner.netlink.delete_link(&task.veth_host_name).await?;
    let bridge = inner.netlink.existing_link_index(&config.bridge).await?;
    let namespace = netns::open(&task.netns_path)?;
    inner.netlink.create_veth_into(&task.veth_host_name, bridge, TASK_INTERFACE, namespace.as_fd()).await?;
    let (ip, prefix, gateway) = (task.ip, config.subnet.prefix(), config.subnet.gateway());
    netns::run_in(&task.netns_path, move || async move {
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
