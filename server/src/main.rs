use clap::Parser;

fn main() -> std::process::ExitCode {
    tarn::cli::run(tarn::cli::Cli::parse())
}
