//! Shared helpers for sched's multi-process tests.
//!
//! The tests under `tests/tests/` start real processes: `sched-runtime` containers from a
//! busybox-static rootfs, and (in later stages) servers and agents in a netns lab and a cgroup-v2
//! VM. Every fixture cleans up what it made, also when the test fails.

pub mod agent_process;
pub mod bundle;
pub mod busybox_image;
pub mod cluster;
pub mod cpu_service;
pub mod lab;
pub mod load;
pub mod netlab;
pub mod node_holdings;
pub mod oci_image;
pub mod registry;
pub mod registry_proxy;
pub mod sim_nodes;
pub mod syscall_probe;
pub mod vagrant_lab;
pub mod wait;
