//! `Ipam`: which task holds which address of the node subnet, kept in a JSON file.
//!
//! Pure bookkeeping (no system calls besides the file): allocate, release, exhaustion. It never
//! hands out the network, gateway or broadcast address. Addresses are handed out round-robin
//! after the last one given (like CNI's host-local plugin), so an address released a moment ago
//! is not reused at once while peers may still hold its ARP entry or connections to it.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{NetworkError, Result};
use super::state_file;
use super::subnet::Ipv4Subnet;

/// The address allocations of one node subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    subnet: Ipv4Subnet,
    /// The address handed out last: the next search starts after it.
    last: Option<Ipv4Addr>,
    /// Task id -> its address.
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// No allocations yet.
    pub fn new(subnet: Ipv4Subnet) -> Self {
        Self { subnet, last: None, allocations: BTreeMap::new() }
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Subnet {
        self.subnet
    }

    /// The task's address: the one it already holds, else the next free one.
    pub fn allocate(&mut self, task_id: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.allocations.get(task_id) {
            return Ok(*ip);
        }
        let used: HashSet<Ipv4Addr> = self.allocations.values().copied().collect();
        let first = u32::from(self.subnet.first_task_address());
        let count = self.subnet.task_address_count();
        let start = match self.last {
            Some(last) if self.subnet.is_task_address(last) => u32::from(last) - first + 1,
            _ => 0,
        };
        let free = (0..count)
            .map(|step| Ipv4Addr::from(first + (start + step) % count))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| NetworkError::SubnetExhausted { subnet: self.subnet.to_string(), allocated: self.allocations.len() })?;
        self.allocations.insert(task_id.to_owned(), free);
        self.last = Some(free);
        Ok(free)
    }

    /// Frees the task's address; returns it, or `None` if the task held none.
    pub fn release(&mut self, task_id: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(task_id)
    }

    /// The task's address, if it holds one.
    pub fn get(&self, task_id: &str) -> Option<Ipv4Addr> {
        self.allocations.get(task_id).copied()
    }

    /// True if some task holds `ip`.
    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.allocations.values().any(|held| *held == ip)
    }

    /// Every (task id, address), ordered by task id.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.allocations.iter().map(|(id, ip)| (id.as_str(), *ip))
    }

    /// The allocations saved at `path`, or none if the file does not exist. A file written for
    /// another subnet, or holding addresses outside it, is an error (tasks would get addresses
    /// the bridge does not route).
    pub fn load(path: &Path, subnet: Ipv4Subnet) -> Result<Self> {
        let Some(ipam) = state_file::read::<Self>(path)? else {
            return Ok(Self::new(subnet));
        };
        if ipam.subnet != subnet {
            return Err(NetworkError::StateFile {
                path: path.to_owned(),
                problem: format!(
                    "it holds allocations of subnet {} but the node is configured for {subnet}: \
                     destroy those tasks' networks with the old configuration, or remove the file",
                    ipam.subnet
                ),
            });
        }
        if let Some((task, ip)) = ipam.allocations().find(|(_, ip)| !subnet.is_task_address(*ip)) {
            return Err(NetworkError::StateFile {
                path: path.to_owned(),
                problem: format!(
                    "task {task} holds {ip}, which is not a task address of {subnet}: fix or \
                     remove the file"
                ),
            });
        }
        Ok(ipam)
    }

    /// Saves the allocations to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        state_file::write(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slash(text: &str) -> Ipv4Subnet {
        text.parse().unwrap()
    }

    #[test]
    fn allocates_distinct_task_addresses_starting_at_dot_two() {
        let mut ipam = Ipam::new(slash("10.88.0.0/24"));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 88, 0, 2), "a task asking again keeps its address");
        assert_eq!(ipam.get("b"), Some(Ipv4Addr::new(10, 88, 0, 3)));
        assert_eq!(ipam.get("c"), None);
    }

    #[test]
    fn released_addresses_are_reused_only_after_the_others() {
        let mut ipam = Ipam::new(slash("10.88.0.0/29")); // task addresses .2 to .6
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a"), Some(a));
        assert_eq!(ipam.release("a"), None, "releasing twice is harmless");
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 88, 0, 4));
        ipam.allocate("d").unwrap();
        ipam.allocate("e").unwrap();
        assert_eq!(ipam.allocate("f").unwrap(), a, "wraps around to the freed one");
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_exhaustion_names_the_subnet() {
        let subnet = slash("10.7.3.0/28");
        let mut ipam = Ipam::new(subnet);
        let mut seen = HashSet::new();
        for n in 0..subnet.task_address_count() {
            let ip = ipam.allocate(&format!("task-{n}")).unwrap();
            assert!(subnet.is_task_address(ip), "{ip}");
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(seen.len(), 13);
        let error = ipam.allocate("one-too-many").unwrap_err();
        assert!(matches!(error, NetworkError::SubnetExhausted { allocated: 13, .. }), "{error:?}");
        assert!(error.to_string().contains("10.7.3.0/28"), "{error}");
        ipam.release("task-5");
        assert!(ipam.allocate("one-too-many").is_ok());
    }

    #[test]
    fn saved_allocations_load_back_and_keep_round_robin_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let subnet = slash("10.88.0.0/24");
        let mut ipam = Ipam::load(&path, subnet).unwrap();
        ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        ipam.release("b");
        ipam.save(&path).unwrap();
        let mut loaded = Ipam::load(&path, subnet).unwrap();
        assert_eq!(loaded, ipam);
        assert_eq!(loaded.allocate("c").unwrap(), Ipv4Addr::new(10, 88, 0, 4));
    }

    #[test]
    fn a_file_of_another_subnet_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        Ipam::new(slash("10.88.0.0/24")).save(&path).unwrap();
        let error = Ipam::load(&path, slash("10.99.0.0/24")).unwrap_err().to_string();
        assert!(error.contains("10.88.0.0/24") && error.contains("10.99.0.0/24"), "{error}");
    }
}
