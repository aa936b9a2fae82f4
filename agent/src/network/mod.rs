//! Task networking: each task gets its own network namespace on a node bridge, an address from
//! the node subnet, outbound NAT, and its ports published on node ports (ECS bridge mode).
//!
//! # Components
//! - [`NodeNetwork`] (`node.rs`): the node side — bridge (`sched0`), gateway address (`.1` of
//!   `10.213.0.0/24`), `ip_forward`, the nftables table (`ip sched`), and the allocations. All of
//!   it lives in the network namespace of the caller of [`NodeNetwork::new`]: the host's for a
//!   real agent, a node namespace in the netns lab and in tests.
//! - [`TaskNetwork`] (`task.rs`): one task's namespace pinned at `/run/sched/netns/<task id>`,
//!   its veth pair (host end on the bridge, `eth0` inside), address, `lo`, default route. The
//!   node creates and removes task networks; `task.rs` does not know the node (no import
//!   cycle: `node.rs` -> `task.rs` only).
//! - [`Ipam`] (`ipam.rs`) and [`HostPorts`] (`host_ports.rs`): pure allocation logic, persisted
//!   as `ipam.json` and `ports.json` under `<data dir>/network` (atomic replace,
//!   `state_file.rs`), so a restarted agent keeps its tasks' addresses and ports.
//! - `netlink.rs`: links, addresses and routes through rtnetlink (no `ip` commands);
//!   [`netns`]: pinning and entering namespaces; `nftables.rs`: the rules text and `nft -f -`.
//!
//! # Flow
//! `NodeNetwork::new(config)` once at agent start; per task `node.create_task(id)` (also
//! spelled `TaskNetwork::create(&node, id)`), then the runtime starts the container with
//! `linux.namespaces[{type: network, path: netns_path}]`, then `node.publish(task.ip, container_port)` per declared port returns the
//! host port the scheduler records as `node_ip:host_port`. `task.destroy(&node)` (or
//! `node.destroy_task(id)`) unpublishes its ports and removes veth, namespace and address.
//!
//! # Port publishing: DNAT in the kernel, not a userspace proxy
//! A published port is one rule `tcp dport H dnat to TASK_IP:P` in chain `published`, jumped to
//! for packets whose destination is a local address (`fib daddr type local`) from both the
//! `prerouting` hook (connections from other hosts and from tasks) and the `output` hook
//! (connections from processes on the node, such as the ingress). Forwarding stays in the
//! kernel: no copy through the agent, no agent process in the data path (tasks keep serving
//! while the agent restarts), and tasks see the real client address of remote clients.
//! Two extra pieces make local and same-node clients work:
//! - **127.0.0.1**: `route_localnet=1` on the bridge lets the kernel route a packet whose source
//!   is 127.0.0.1 out of the bridge after DNAT, and `postrouting` masquerades such packets to
//!   the gateway address so the task's reply comes back to the node.
//!   `route_localnet` alone would also let a task address the node's loopback services through
//!   the bridge (kube-proxy's CVE-2020-8558), so an `input` chain drops packets from the bridge
//!   to 127.0.0.0/8 unless they belong to a connection the node opened.
//!
//! # Tasks do not reach the node's own services
//! The same `input` chain drops every connection a task opens to any of the node's own
//! addresses (`fib daddr type local`): the gateway is the task's router, not its server. The
//! node's services (the agent API that serves every task's log, sshd, a server on the same
//! host) bind addresses tasks could otherwise reach through the gateway. Replies of what the
//! node opens (health checks, the ingress) and ping to the gateway pass; published ports keep
//! working from tasks because their DNAT happens in `prerouting`, before the input hook. The
//! bridge has IPv6 disabled, so no link-local address opens a way around the IPv4 table.
//! - **hairpin**: a task connecting to its own (or a neighbour's) published port through a node
//!   address is masqueraded too (`ct status dnat` from the subnet out of the bridge), and each
//!   bridge port has hairpin mode on so the packet may leave by the port it arrived on.
//!
//! Outbound traffic from the subnet leaving by any interface but the bridge is masqueraded.
//!
//! # Why `nft -f -` rather than nftables over netlink
//! See `nftables.rs`: the netlink crates are GPL-3.0 (`rustables`) or bind C libraries
//! (`nftnl`); a rendered table applied in one atomic transaction is simpler and inspectable.

mod config;
mod error;
mod host_ports;
mod ipam;
mod netlink;
pub mod netns;
mod nftables;
mod node;
pub(crate) mod state_file;
mod subnet;
mod sysctl;
mod task;

pub use config::{DEFAULT_BRIDGE, DEFAULT_HOST_PORTS, DEFAULT_NETNS_DIR, DEFAULT_NFT_TABLE, DEFAULT_SUBNET, NodeNetworkConfig};
pub use error::{NetworkError, Result};
pub use host_ports::{HostPorts, PublishedPort};
pub use ipam::Ipam;
pub use nftables::table_exists;
pub use node::{NetworkCensus, NodeNetwork, is_task_veth_name};
pub use subnet::Ipv4Subnet;
pub use task::{TASK_INTERFACE, TaskNetwork};
