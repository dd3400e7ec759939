//! Compiles `coord/v1/*.proto` with `protox` (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["coord/v1/coord.proto", "coord/v1/peer.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let file_descriptors = protox::compile(files, ["."])?;
    // The client API alone, for gRPC server reflection on the client port (the peer protocol
    // is not served there).
    let client_api = protox::compile(["coord/v1/coord.proto"], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("coord_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&client_api),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .build_server(true)
        .build_client(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
