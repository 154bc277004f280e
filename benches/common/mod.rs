//! What the load-style benches share: settings from the environment, resident memory
//! sampling, and the fake WeChat API in its own process. Included with `mod common;`
//! (each bench is its own crate).

#![allow(dead_code)] // not every bench uses every piece

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident set now (kB), from /proc.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples the resident set every 10 ms until `stop`, which returns the peak (kB).
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn start() -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss_kb()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kb(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakRss {
            peak,
            done,
            sampler,
        }
    }

    pub fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.sampler.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// `siyu fake-wechat` on a free loopback port, killed on drop.
pub struct Fake {
    child: Child,
    pub base: String,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fake {
    /// Starts the fake and waits until it answers; every follower gets an open
    /// customer-service window (`POST /fake/window {"openid": "*"}`).
    pub fn start(runtime: &tokio::runtime::Runtime) -> Fake {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(["fake-wechat", "--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("siyu fake-wechat starts");
        let fake = Fake {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        runtime.block_on(async {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while http
                .post(format!("{}/fake/window", fake.base))
                .json(&serde_json::json!({ "openid": "*" }))
                .send()
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "the fake did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        fake
    }
}
