//! Compiles the part of etcd's v3 API the raft-commit benchmark calls (a gRPC client for
//! `KV.Put`) with protox (pure Rust, no system `protoc`), as the `proto` crate does for sched's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.open_files(["etcd/kv.proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(compiler.file_descriptor_set())?;
    println!("cargo:rerun-if-changed=proto/etcd/kv.proto");
    Ok(())
}
