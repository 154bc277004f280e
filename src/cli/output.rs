//! Standard output and error for the subcommands, written the way a Unix tool writes them.
//!
//! `siyu check | head -1` closes the pipe after one line. Rust ignores SIGPIPE, so the next
//! `println!` fails with `EPIPE` and panics ("failed printing to stdout: Broken pipe", exit
//! 101). The classic fix, SIGPIPE back to its default, needs `libc` and `unsafe`, and it
//! kills the process at whatever write it is at: `siyu coupon redeem … | head -0` could die
//! between the store write and the flush that makes it durable, and the exit status would
//! be a signal, not 0.
//!
//! So every line of the subcommands goes through `outln!` (or a [`Buffered`] writer for
//! long listings). Once the reader has gone, output is switched off for the rest of the
//! run: the command finishes what it started (its store writes flushed), long listings ask
//! [`closed`] and stop early, and the exit code is the command's own, since a closed pipe is
//! not a failure. Any other write error (a full disk behind `>`) is reported once on stderr
//! and turns success into [`EXIT_RUNTIME`](super::EXIT_RUNTIME). `errln!` ignores its own
//! write errors: stderr is where they would have been reported.

use std::fmt;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Like `println!`, to stdout; writes nothing once stdout is closed.
macro_rules! outln {
    () => {
        $crate::cli::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Like `eprintln!`, to stderr, without panicking when stderr is closed too
/// (`siyu check 2>&1 | head -1`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Set once a write to stdout failed: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error that was not a closed pipe, reported by [`finish`].
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout (unbuffered beyond std's line buffering, so a person at a terminal
/// sees each line as it comes); use `outln!`.
pub fn print(args: fmt::Arguments<'_>) {
    if !closed() {
        note(io::stdout().lock().write_fmt(args));
    }
}

/// Writes to stderr, ignoring errors; use `errln!`.
pub fn eprint(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Whether stdout is gone (the reader closed the pipe, or writing failed): a listing can
/// stop here.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Flushes stdout at the end of a subcommand and says how the run ends: `code`, or
/// [`EXIT_RUNTIME`](super::EXIT_RUNTIME) if a successful command could not write its output.
pub fn finish(code: ExitCode) -> ExitCode {
    if !closed() {
        note(io::stdout().lock().flush());
    }
    let failed = FAILED.lock().map(|mut f| f.take()).unwrap_or(None);
    match failed {
        Some(e) => {
            errln!("error: cannot write the output: {e}");
            if code == ExitCode::SUCCESS {
                ExitCode::from(super::EXIT_RUNTIME)
            } else {
                code
            }
        }
        None => code,
    }
}

/// A block-buffered stdout for long listings (a CSV of a million followers is one write
/// per 8 KiB, not per line), with the same closed-pipe handling as `outln!`.
pub struct Buffered {
    out: BufWriter<StdoutLock<'static>>,
}

impl Buffered {
    pub fn new() -> Buffered {
        Buffered {
            out: BufWriter::new(io::stdout().lock()),
        }
    }

    /// Writes `args`; nothing once stdout is closed.
    pub fn write(&mut self, args: fmt::Arguments<'_>) {
        if !closed() {
            note(self.out.write_fmt(args));
        }
    }

    /// Writes raw bytes (a byte-order mark); nothing once stdout is closed.
    pub fn bytes(&mut self, bytes: &[u8]) {
        if !closed() {
            note(self.out.write_all(bytes));
        }
    }
}

impl Default for Buffered {
    fn default() -> Self {
        Buffered::new()
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        if !closed() {
            note(self.out.flush());
        }
    }
}

/// Records a write's outcome: any error switches output off; one that is not a closed
/// pipe is kept for [`finish`] to report.
fn note(result: io::Result<()>) {
    if let Err(e) = result {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            if let Ok(mut failed) = FAILED.lock() {
                failed.get_or_insert(e);
            }
        }
    }
}
