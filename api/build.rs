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
    let descriptors = fds.encode_to_vec();
    std::fs::write(out.join("cathedral_descriptor.bin"), &descriptors)?;
    tonic_prost_build::configure().compile_fds(fds)?;
    // serde for the public messages, in protobuf's canonical JSON mapping (the REST API):
    // field names as in the proto files, 64-bit integers as strings, enums by name.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[".cathedral.v1"])?;
    Ok(())
}
