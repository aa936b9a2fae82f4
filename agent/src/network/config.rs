//! `NodeNetworkConfig`: the names, subnet, paths and port range of one node's task network.
//!
//! Everything a test must keep apart from other tests (bridge, subnet, nft table, netns dir, data
//! dir) is a field, so tests can run side by side.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::error::{NetworkError, Result};
use super::subnet::Ipv4Subnet;

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "sched0";
/// Default task subnet.
/// Not 10.88.0.0/16 (podman's default network), 172.17-31 (docker's) or 172.26.64.0/20 (Nomad's):
/// a node that also runs one of them would get two routes for one subnet.
pub const DEFAULT_SUBNET: &str = "10.213.0.0/24";
/// Default nftables table (family `ip`).
pub const DEFAULT_NFT_TABLE: &str = "sched";
/// Default directory of the task namespace files.
pub const DEFAULT_NETNS_DIR: &str = "/run/sched/netns";
/// Default host port range (Linux's ephemeral range, like ECS bridge mode).
pub const DEFAULT_HOST_PORTS: RangeInclusive<u16> = 32768..=60999;

/// How one node's task network is laid out.
#[derive(Clone, Debug)]
pub struct NodeNetworkConfig {
    /// The node bridge every task veth is attached to (at most 15 characters).
    pub bridge: String,
    /// The task subnet; the bridge holds its gateway address (`.1`).
    pub subnet: Ipv4Subnet,
    /// The nftables table (family `ip`) this node owns entirely.
    pub nft_table: String,
    /// Where task namespaces are pinned, one file per task id.
    pub netns_dir: PathBuf,
    /// Where the address and port allocations are kept (`ipam.json`, `ports.json`).
    pub state_dir: PathBuf,
    /// The node ports published task ports are chosen from.
    pub host_ports: RangeInclusive<u16>,
    /// The `nft` binary.
    pub nft: PathBuf,
}

impl NodeNetworkConfig {
    /// The defaults, keeping state under `<data_dir>/network`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: DEFAULT_SUBNET.parse().expect("the default subnet is valid"),
            nft_table: DEFAULT_NFT_TABLE.to_owned(),
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            state_dir: data_dir.join("network"),
            host_ports: DEFAULT_HOST_PORTS,
            nft: PathBuf::from("nft"),
        }
    }

    /// The file of the address allocations.
    pub fn ipam_file(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }

    /// The file of the published ports.
    pub fn ports_file(&self) -> PathBuf {
        self.state_dir.join("ports.json")
    }

    /// Checks names and ranges before anything is touched.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(NetworkError::InvalidConfig(what));
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
        if self.bridge.is_empty() || self.bridge.len() > 15 || !self.bridge.chars().all(is_name_char) {
            return bad(format!("bridge name {:?} must be 1-15 characters from [A-Za-z0-9_.-]", self.bridge));
        }
        let table_ok = self.nft_table.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && self.nft_table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.nft_table.len() <= 64;
        if !table_ok {
            return bad(format!(
                "nft table name {:?} must start with a letter and use only [A-Za-z0-9_] \
                 (and not be an nft keyword)",
                self.nft_table
            ));
        }
        if self.host_ports.is_empty() || *self.host_ports.start() == 0 {
            return bad(format!(
                "host port range {}-{} must be non-empty and start above 0",
                self.host_ports.start(),
                self.host_ports.end()
            ));
        }
        if !self.netns_dir.is_absolute() || !self.state_dir.is_absolute() {
            return bad(format!(
                "netns dir {} and state dir {} must be absolute paths",
                self.netns_dir.display(),
                self.state_dir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_names_are_refused() {
        let config = NodeNetworkConfig::new(Path::new("/var/lib/sched"));
        config.validate().unwrap();
        assert_eq!(config.ipam_file(), Path::new("/var/lib/sched/network/ipam.json"));
        let mut long = config.clone();
        long.bridge = "a-bridge-name-too-long".into();
        assert!(long.validate().unwrap_err().to_string().contains("1-15"));
        let mut table = config.clone();
        table.nft_table = "sched table".into();
        assert!(table.validate().is_err());
        let mut ports = config;
        ports.host_ports = 0..=10;
        assert!(ports.validate().is_err());
    }
}
