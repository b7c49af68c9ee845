use clap::Parser;

/// Freed query memory goes back to the OS instead of staying in per-thread
/// arenas (see the load test in benches/stress).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tarn::allocator::purge_lazily();
    tarn::cli::run(tarn::cli::Cli::parse())
}
