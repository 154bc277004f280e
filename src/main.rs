//! `siyu`: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
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
    // The server's lines (one per callback) leave through a batching writer thread, off the
    // request path (`siyu::log_lines`); the drain writes what is left when `main` returns.
    // Every other command writes straight to stderr, so its log lines and its own messages
    // keep their order.
    let mut _drain = None;
    let batched = match cli.command {
        siyu::cli::Command::Serve(_) => siyu::log_lines::start(std::io::stderr()).ok(),
        _ => None,
    };
    let writer = match batched {
        Some((lines, drain)) => {
            _drain = Some(drain);
            BoxMakeWriter::new(lines)
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(writer)
        // Colours only for a person at a terminal; log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    siyu::cli::run(cli)
}
