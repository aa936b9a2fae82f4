//! `HostPorts`: which node ports forward to which task address and port, kept in a JSON file.
//!
//! Pure bookkeeping like [`super::ipam`]: a port is chosen round-robin from the configured range
//! (default 32768-60999, Linux's ephemeral range, as ECS bridge mode does), skipping ports already
//! published and ports the caller's `is_free` check rejects (a local listener holds it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{NetworkError, Result};
use super::state_file;

/// One forwarding: TCP to any node address on `host_port` goes to `task_ip:container_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The node port clients connect to.
    pub host_port: u16,
    /// The task's address on the node bridge.
    pub task_ip: Ipv4Addr,
    /// The port the task listens on.
    pub container_port: u16,
}

/// The published ports of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPorts {
    /// First port of the range new ports come from.
    first: u16,
    /// Last port of that range (inclusive).
    last: u16,
    /// The port handed out last: the next search starts after it.
    previous: Option<u16>,
    /// Host port -> forwarding.
    published: BTreeMap<u16, PublishedPort>,
}

impl HostPorts {
    /// Nothing published; new ports come from `range`.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self { first: *range.start(), last: *range.end(), previous: None, published: BTreeMap::new() }
    }

    /// Publishes `task_ip:container_port` on a free host port (the same one if it is already
    /// published). `is_free` is asked about each candidate port before it is taken.
    pub fn publish(&mut self, task_ip: Ipv4Addr, container_port: u16, mut is_free: impl FnMut(u16) -> bool) -> Result<PublishedPort> {
        if let Some(existing) = self.published.values().find(|p| p.task_ip == task_ip && p.container_port == container_port) {
            return Ok(*existing);
        }
        let count = u32::from(self.last) - u32::from(self.first) + 1;
        let start = match self.previous {
            Some(previous) if (self.first..=self.last).contains(&previous) => u32::from(previous) - u32::from(self.first) + 1,
            _ => 0,
        };
        let host_port = (0..count)
            .map(|step| (u32::from(self.first) + (start + step) % count) as u16)
            .find(|port| !self.published.contains_key(port) && is_free(*port))
            .ok_or(NetworkError::PortsExhausted { first: self.first, last: self.last })?;
        let published = PublishedPort { host_port, task_ip, container_port };
        self.published.insert(host_port, published);
        self.previous = Some(host_port);
        Ok(published)
    }

    /// Removes one forwarding; `None` if the port was not published.
    pub fn unpublish(&mut self, host_port: u16) -> Option<PublishedPort> {
        self.published.remove(&host_port)
    }

    /// Removes every forwarding to `task_ip`; returns them.
    pub fn unpublish_task(&mut self, task_ip: Ipv4Addr) -> Vec<PublishedPort> {
        let ports: Vec<u16> = self.published.values().filter(|p| p.task_ip == task_ip).map(|p| p.host_port).collect();
        ports.into_iter().filter_map(|port| self.published.remove(&port)).collect()
    }

    /// Every forwarding, ordered by host port.
    pub fn published(&self) -> impl Iterator<Item = &PublishedPort> {
        self.published.values()
    }

    /// The forwardings saved at `path` (none if it does not exist); new ports come from `range`.
    pub fn load(path: &Path, range: RangeInclusive<u16>) -> Result<Self> {
        let mut ports = state_file::read::<Self>(path)?.unwrap_or_else(|| Self::new(range.clone()));
        ports.first = *range.start();
        ports.last = *range.end();
        Ok(ports)
    }

    /// Saves the forwardings to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        state_file::write(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

    #[test]
    fn publishes_distinct_ports_from_the_range_and_is_idempotent() {
        let mut ports = HostPorts::new(40000..=40009);
        let web = ports.publish(TASK, 8080, |_| true).unwrap();
        assert_eq!(web.host_port, 40000);
        assert_eq!(ports.publish(TASK, 8080, |_| true).unwrap(), web);
        assert_eq!(ports.publish(TASK, 9090, |_| true).unwrap().host_port, 40001);
        assert_eq!(ports.publish(OTHER, 8080, |_| true).unwrap().host_port, 40002);
    }

    #[test]
    fn ports_in_use_on_the_host_are_skipped() {
        let mut ports = HostPorts::new(40000..=40009);
        let published = ports.publish(TASK, 80, |p| p != 40000 && p != 40001).unwrap();
        assert_eq!(published.host_port, 40002);
    }

    #[test]
    fn exhaustion_names_the_range_and_unpublishing_frees_ports() {
        let mut ports = HostPorts::new(40000..=40001);
        ports.publish(TASK, 1, |_| true).unwrap();
        ports.publish(TASK, 2, |_| true).unwrap();
        let error = ports.publish(OTHER, 3, |_| true).unwrap_err().to_string();
        assert!(error.contains("40000-40001"), "{error}");
        let freed = ports.unpublish_task(TASK);
        assert_eq!(freed.len(), 2);
        assert_eq!(ports.published().count(), 0);
        assert_eq!(ports.unpublish(40000), None);
        assert!(ports.publish(OTHER, 3, |_| true).is_ok());
    }

    #[test]
    fn saved_ports_load_back_with_the_new_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.json");
        let mut ports = HostPorts::load(&path, 40000..=40009).unwrap();
        let web = ports.publish(TASK, 8080, |_| true).unwrap();
        ports.save(&path).unwrap();
        let mut loaded = HostPorts::load(&path, 50000..=50009).unwrap();
        assert_eq!(loaded.published().collect::<Vec<_>>(), [&web]);
        assert_eq!(loaded.publish(OTHER, 1, |_| true).unwrap().host_port, 50000);
    }
}
