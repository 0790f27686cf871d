//! Compiles `proto/herald/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and hands the descriptors to tonic-prost-build. The descriptor set is also
//! written to `OUT_DIR` for gRPC server reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["events.proto", "tasks.proto", "agents.proto", "executions.proto"]
        .map(|f| format!("proto/herald/v1/{f}"));
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("herald_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
