//! `Ipv4Subnet`: the node's task subnet (`10.88.0.0/24`) and the addresses it reserves.
//!
//! The first address is the network, the second the gateway (the bridge's own address), the last
//! the broadcast; tasks get the ones in between.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::NetworkError;

/// An IPv4 network in CIDR form with at least one task address (prefix 8 to 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet `network/prefix`; the network address must have no host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, NetworkError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetworkError::InvalidConfig(format!(
                "subnet {network}/{prefix}: the prefix must be 8 to 30 (a /30 leaves one task address)"
            )));
        }
        let subnet = Self { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            return Err(NetworkError::InvalidConfig(format!(
                "subnet {network}/{prefix} has host bits set: did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(network) & subnet.mask())
            )));
        }
        Ok(subnet)
    }

    /// The network address (`10.88.0.0`).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length (`24`).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The bridge's address and the tasks' default route (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The broadcast address (`.255` in a /24).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The first address a task can get (`.2`).
    pub fn first_task_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }

    /// The last address a task can get (`.254` in a /24).
    pub fn last_task_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()) - 1)
    }

    /// How many task addresses the subnet has (253 in a /24).
    pub fn task_address_count(&self) -> u32 {
        u32::from(self.last_task_address()) - u32::from(self.first_task_address()) + 1
    }

    /// True if `ip` is inside the subnet (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// True if `ip` is one a task may hold: inside, and not network, gateway or broadcast.
    pub fn is_task_address(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip >= self.first_task_address() && ip <= self.last_task_address()
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || NetworkError::InvalidConfig(format!("subnet {text:?} is not in CIDR form like 10.88.0.0/24"));
        let (network, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let network = network.parse().map_err(|_| invalid())?;
        let prefix = prefix.parse().map_err(|_| invalid())?;
        Self::new(network, prefix)
    }
}

impl Serialize for Ipv4Subnet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Subnet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_24_reserves_network_gateway_and_broadcast() {
        let subnet: Ipv4Subnet = "10.88.0.0/24".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(subnet.broadcast(), Ipv4Addr::new(10, 88, 0, 255));
        assert_eq!(subnet.first_task_address(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(subnet.last_task_address(), Ipv4Addr::new(10, 88, 0, 254));
        assert_eq!(subnet.task_address_count(), 253);
        for reserved in [subnet.network(), subnet.gateway(), subnet.broadcast()] {
            assert!(subnet.contains(reserved));
            assert!(!subnet.is_task_address(reserved), "{reserved}");
        }
        assert!(!subnet.contains(Ipv4Addr::new(10, 88, 1, 2)));
        assert_eq!(subnet.to_string(), "10.88.0.0/24");
    }

    #[test]
    fn host_bits_and_bad_prefixes_are_refused_with_a_hint() {
        let error = "10.88.0.5/24".parse::<Ipv4Subnet>().unwrap_err().to_string();
        assert!(error.contains("did you mean 10.88.0.0/24"), "{error}");
        assert!("10.88.0.0/31".parse::<Ipv4Subnet>().is_err());
        assert!("10.88.0.0".parse::<Ipv4Subnet>().is_err());
        assert!("ten/24".parse::<Ipv4Subnet>().is_err());
    }

    #[test]
    fn a_slash_30_has_exactly_one_task_address() {
        let subnet: Ipv4Subnet = "10.9.0.4/30".parse().unwrap();
        assert_eq!(subnet.task_address_count(), 1);
        assert_eq!(subnet.first_task_address(), Ipv4Addr::new(10, 9, 0, 6));
    }
}
