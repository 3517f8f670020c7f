//! Compiles the gRPC API (`proto/`) with protoc (Debian `protobuf-compiler`: scripts/setup),
//! and writes the descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("eaglerank_descriptor.bin"))
        .compile_protos(&["proto/eaglerank/v1/feed.proto"], &["proto"])?;
    Ok(())
}
