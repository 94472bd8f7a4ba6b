//! Generates the protobuf-2 `Entry` message raft-engine needs and the gRPC client of the
//! part of etcd's API the side-by-side benchmark calls (pure Rust, no protoc).

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    protobuf_codegen_pure::Codegen::new()
        .out_dir(&out)
        .inputs(["proto/entry.proto"])
        .include("proto")
        .run()
        .expect("generate protobuf code for proto/entry.proto");
    // The generated file opens with inner attributes and docs (`#![..]`, `//!`), which `include!`
    // cannot take inside a module; drop them (the including module sets its own allows).
    let path = Path::new(&out).join("entry.rs");
    let code = std::fs::read_to_string(&path).expect("read generated entry.rs");
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("#![") && !l.trim_start().starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, code).expect("write entry.rs");
    println!("cargo:rerun-if-changed=proto/entry.proto");

    let fds = protox::compile(["etcd/kv.proto"], ["proto"]).expect("compile proto/etcd/kv.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)
        .expect("generate the etcd client");
    println!("cargo:rerun-if-changed=proto/etcd/kv.proto");
}
