//! Generates the gRPC code from `proto/` with protox (a Rust protobuf compiler, so no
//! `protoc` binary is needed) and keeps the descriptor set for server reflection.

use prost::Message;

const PROTOS: [&str; 2] = [
    "cathedral/v1/cathedral.proto",
    "cathedral/internal/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("cathedral_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
