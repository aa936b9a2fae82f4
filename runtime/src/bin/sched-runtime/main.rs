//! `sched-runtime`: a runc-compatible command line over the `runtime` library.
mod image;
fn main() {}
