//! `siyu`: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

// The callback path allocates many small strings (XML fields, the follower record);
// mimalloc took 15–45% off the whole pipeline against glibc malloc across runs
// (README "Speed"; `--no-default-features` turns it off).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match siyu::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // One line per event on stderr; RUST_LOG overrides the default level.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    siyu::cli::run(cli)
}
