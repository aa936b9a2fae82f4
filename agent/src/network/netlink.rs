//! `Netlink`: the few rtnetlink requests task networking needs (links, addresses, routes).
//!
//! A `Netlink` talks to the network namespace its socket was opened in: the caller's for the
//! node side ([`Netlink::connect`]), a task's when opened on a [`super::netns::run_in`] thread.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::{NetworkError, Result};

/// A route-netlink connection (its socket task runs on the caller's tokio runtime).
#[derive(Clone)]
pub(crate) struct Netlink {
    handle: Handle,
}

/// The errno of a netlink NACK (`ENODEV`, `EEXIST`, ...), if `error` is one.
fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| NetworkError::io("open a route netlink socket", e))?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of link `name`, or `None` if there is no such link.
    pub(crate) async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetworkError::netlink(format!("look up link {name}"), e)),
        }
    }

    /// The index of link `name`; an error naming it if it does not exist.
    pub(crate) async fn existing_link_index(&self, name: &str) -> Result<u32> {
        self.link_index(name)
            .await?
            .ok_or_else(|| NetworkError::io(format!("find link {name}"), std::io::Error::from_raw_os_error(libc::ENODEV)))
    }

    /// Creates bridge `name` unless it exists, and sets it up; returns its index.
    pub(crate) async fn ensure_bridge(&self, name: &str) -> Result<u32> {
        if self.link_index(name).await?.is_none() {
            match self.handle.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetworkError::netlink(format!("create bridge {name}"), e)),
            }
        }
        let index = self.existing_link_index(name).await?;
        self.set_up(index, name).await?;
        Ok(index)
    }

    /// Sets link `index` (called `name` in errors) up.
    pub(crate) async fn set_up(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetworkError::netlink(format!("set link {name} up"), e))
    }

    /// Adds `ip/prefix` to link `index` unless it is there already.
    pub(crate) async fn ensure_address(&self, index: u32, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        match self.handle.address().add(index, IpAddr::V4(ip), prefix).execute().await {
            Err(e) if errno_of(&e) != Some(libc::EEXIST) => Err(NetworkError::netlink(format!("add address {ip}/{prefix} to {name}"), e)),
            _ => Ok(()),
        }
    }

    /// Deletes link `name`; returns false if it did not exist.
    pub(crate) async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
        }
    }

    /// The names of the links attached to bridge `bridge` (none if it does not exist).
    pub(crate) async fn ports_of(&self, bridge: &str) -> Result<Vec<String>> {
        use rtnetlink::packet_route::link::LinkAttribute;
        let Some(index) = self.link_index(bridge).await? else {
            return Ok(Vec::new());
        };
        let mut links = self.handle.link().get().execute();
        let mut names = Vec::new();
        while let Some(link) = links.try_next().await.map_err(|e| NetworkError::netlink(format!("list the ports of {bridge}"), e))? {
            let attached = link.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(i) if *i == index));
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let (true, Some(name)) = (attached, name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates veth pair `host` (attached to bridge `bridge_index`, up, hairpin on) and `peer`,
    /// the peer created directly inside the network namespace `netns`.
    pub(crate) async fn create_veth_into(&self, host: &str, bridge_index: u32, peer: &str, netns: BorrowedFd<'_>) -> Result<u32> {
        let peer_message = LinkUnspec::new_with_name(peer).setns_by_fd(netns.as_raw_fd()).build();
        let message =
            LinkVeth::new(host, peer).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message))).controller(bridge_index).up().build();
        self.handle.link().add(message).execute().await.map_err(|e| NetworkError::netlink(format!("create veth {host} <-> {peer}"), e))?;
        let index = self.existing_link_index(host).await?;
        // Hairpin lets a task reach its own published port through a node address: the DNATed
        // packet must leave the bridge by the port it came in on.
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| NetworkError::netlink(format!("set hairpin mode on {host}"), e))?;
        Ok(index)
    }

    /// Adds the default route via `gateway`.
    pub(crate) async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build();
        self.handle.route().add(route).execute().await.map_err(|e| NetworkError::netlink(format!("add default route via {gateway}"), e))
    }
}
