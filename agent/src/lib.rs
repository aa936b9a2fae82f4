//! `sched-agent`: the node daemon.
//!
//! It will own everything that happens on one node: registering with the servers, heartbeats,
//! receiving task assignments on a watch stream, running tasks through the `runtime` crate,
//! task networking (netns, veth, bridge, published ports), health checks, logs, CPU metrics read
//! from cgroups, and the HTTP ingress. It never decides placement.
