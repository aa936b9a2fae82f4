//! `sched-runtime image ...`: pull, list, inspect, remove, prune and unpack images.
