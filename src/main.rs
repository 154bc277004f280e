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
    // One line per event on stderr, written by a thread of its own: a callback hands its
    // line over and answers, instead of waiting for a write(2) to a terminal or a pipe
    // (that wait cost a third of the webhook's throughput under load). Not lossy: when the
    // 128k-line queue is full a writer waits rather than dropping the line, and the guard
    // drains the queue when `main` returns, so a clean shutdown loses no line.
    let (writer, _drain) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("siyu-log")
        // Buffered on that thread: the writer flushes whenever its queue runs dry, so under
        // load a burst of lines is one write(2), and when idle a line goes out at once.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
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
