//! Compiles the .proto files with protox (pure Rust, no system `protoc`) and generates prost
//! messages and tonic clients and servers (with the codec of `src/codec.rs`). Also writes the
//! encoded descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "sched/v1/sched.proto",
    "sched/v1/logs.proto",
    "sched/v1/pki.proto",
    "agent/v1/agent.proto",
    "agent/v1/logs.proto",
    "raft/v1/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(out_dir.join("sched_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    // Every service's codec: prost's with smaller per-call buffers (see src/codec.rs).
    tonic_prost_build::configure().codec_path("crate::codec::SmallBufferCodec").compile_fds(compiler.file_descriptor_set())?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    Ok(())
}
