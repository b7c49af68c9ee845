//! Compiles `tarn/v1/*.proto` and the Flight session messages with protox
//! (pure Rust): no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "tarn/v1/handles.proto",
        "tarn/v1/progress.proto",
        "arrow/flight/session.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
