//! The server's log lines, written off the request path in batches.
//!
//! A callback logs one summary line. Written to stderr synchronously, that is one write(2)
//! per callback on the actix worker; handed to a writer thread through a channel
//! (tracing-appender), it is one futex wake-up per line instead, which under load cost the
//! workers about as much as the write and kept the writer thread busy sleeping and waking
//! (13% of a core at 45k lines/s). Here a line is appended to a shared buffer under a
//! mutex held for a memcpy, and the writer thread wakes on a timer ([`PERIOD`]) or when
//! the buffer passes [`WAKE_AT`], writing everything gathered in one call.
//!
//! Nothing is dropped: past [`MAX`] a caller writes the buffer out itself (backpressure
//! instead of loss), and [`Drain`], dropped when `main` returns, writes what is left. A
//! `kill -9` loses at most the last [`PERIOD`] of lines; what the store acknowledged is
//! unaffected (see the README's durability section).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in the buffer.
pub const PERIOD: Duration = Duration::from_millis(20);
/// A buffer this full wakes the writer early.
pub const WAKE_AT: usize = 256 * 1024;
/// A buffer this full is written by the caller itself.
pub const MAX: usize = 8 * 1024 * 1024;

struct Shared {
    buf: Mutex<Buffer>,
    wake: Condvar,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    stopping: bool,
    /// The writer sleeps until woken: the next line must wake it.
    idle: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Only appends and swaps happen under the lock; a poisoned buffer is still bytes.
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the fmt subscriber writes each line through.
#[derive(Clone)]
pub struct LogLines {
    shared: Arc<Shared>,
}

/// Writes what is left when dropped; keep it alive until the process ends.
pub struct Drain {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out` (stderr in the binary).
pub fn start<W: Write + Send + 'static>(mut out: W) -> std::io::Result<(LogLines, Drain)> {
    let shared = Arc::new(Shared {
        buf: Mutex::new(Buffer::default()),
        wake: Condvar::new(),
    });
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("siyu-log".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                let stopping = {
                    let mut buf = writer.lock();
                    if buf.bytes.is_empty() && !buf.stopping {
                        // Idle: sleep until a line comes (its writer wakes us), so an
                        // idle server's first line goes out at once.
                        buf.idle = true;
                        while buf.bytes.is_empty() && !buf.stopping {
                            buf = writer.wake.wait(buf).unwrap_or_else(|p| p.into_inner());
                        }
                        buf.idle = false;
                    } else if buf.bytes.len() < WAKE_AT && !buf.stopping {
                        // Busy: gather a batch (a full buffer wakes us early).
                        buf = writer
                            .wake
                            .wait_timeout(buf, PERIOD)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    std::mem::swap(&mut buf.bytes, &mut spare);
                    buf.stopping
                };
                if !spare.is_empty() {
                    // Nowhere to report a failed log write: the line is lost, the server not.
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                }
                if stopping && writer.lock().bytes.is_empty() {
                    return;
                }
            }
        })?;
    Ok((
        LogLines {
            shared: shared.clone(),
        },
        Drain {
            shared,
            thread: Some(thread),
        },
    ))
}

impl Write for LogLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.shared.lock();
        if buf.bytes.len() >= MAX {
            // The writer is behind: write its backlog here rather than drop or grow.
            let backlog = std::mem::take(&mut buf.bytes);
            drop(buf);
            let mut err = std::io::stderr().lock();
            err.write_all(&backlog)?;
            err.write_all(bytes)?;
            return Ok(bytes.len());
        }
        buf.bytes.extend_from_slice(bytes);
        if buf.idle || buf.bytes.len() >= WAKE_AT {
            buf.idle = false;
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogLines {
    type Writer = LogLines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read after the writer thread is gone.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_once_in_its_order() {
        let sink = Sink::default();
        let (lines, drain) = start(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        // One write per line, as the fmt subscriber writes a formatted event.
                        lines
                            .write_all(format!("t{t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(drain); // what a clean shutdown does: everything written
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 5000, "thread {t}");
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(*l, format!("t{t} line {i}"));
            }
        }
    }

    #[test]
    fn an_idle_line_goes_out_within_the_period() {
        let sink = Sink::default();
        let (mut lines, _drain) = start(sink.clone()).unwrap();
        lines.write_all(b"siyu serving port=1\n").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < until, "the line never went out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
