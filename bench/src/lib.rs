//! Shared pieces of sched's benchmark programs (`bench/src/bin/*`): timing and the table that
//! puts sched beside its peer (runc for the runtime, skopeo+umoci for pulls, etcd for Raft),
//! with the ratio, all measured in the same run.

pub mod etcd;
pub mod process;
pub mod stats;
