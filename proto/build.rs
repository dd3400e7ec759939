//! Compiles `coord/v1/*.proto` with `protox` (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["coord/v1/coord.proto", "coord/v1/peer.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let file_descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .build_server(true)
        .build_client(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
