//! Delivering a queue of customer-service messages to the fake WeChat API on loopback.
//!
//! The fake runs as its own process (`siyu fake-wechat`), so its call log does not count
//! against our memory. Setup: N followers, each with an open customer-service window and
//! one queued message, written the way a callback writes them (follower + outbox item in
//! one atomic write). Then the worker delivers the queue; we report messages per second
//! and this process's resident memory before delivery and at its peak during delivery.
//!
//! `cargo bench --bench outbox` (env: OUTBOX_N=100000, OUTBOX_CONCURRENCY=16)

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siyu::api::{ApiClient, ApiSettings};
use siyu::config::{AccountKind, OutboxSettings, Secret};
use siyu::follower::{CsWindow, Follower};
use siyu::outbox::worker::{Channel, Worker};
use siyu::outbox::{now_ms, Effect, NewItem};
use siyu::protocol::Reply;
use siyu::store::{Answer, CallbackKey, Commit, SledStore, Store};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident set now, and its peak so far (kB), from /proc.
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Fake(Child);

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_fake(port: u16) -> Fake {
    let child = Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["fake-wechat", "--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("siyu fake-wechat starts");
    Fake(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let n = env_or("OUTBOX_N", 100_000);
    let concurrency = env_or("OUTBOX_CONCURRENCY", 16) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let _fake = start_fake(port);
    let base = format!("http://127.0.0.1:{port}");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Every follower wrote just now: their windows are open.
        while http
            .post(format!("{base}/fake/window"))
            .json(&serde_json::json!({ "openid": "*" }))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the fake did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let now = now_ms();
    let started = Instant::now();
    for i in 0..n {
        let openid = format!("o_bench_{i:07}");
        let key = CallbackKey {
            account: "demo",
            openid: &openid,
            dedupe_key: "m",
            now: now / 1000,
            expires_at: now / 1000 + 600,
        };
        store
            .apply_callback(key, &mut |_| Commit {
                follower: Some(Follower {
                    cs_window: Some(CsWindow {
                        remaining: 5,
                        until: now / 1000 + 48 * 3600,
                    }),
                    ..Follower::new(openid.clone())
                }),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![NewItem {
                    effect: Effect::Custom {
                        openid: openid.clone(),
                        message: Reply::Text {
                            content: format!("春季新品上市，回复「优惠券」领券 {i}"),
                        },
                    },
                    origin: "bench".into(),
                    not_before_ms: 0,
                }],
            })
            .unwrap();
    }
    store.flush().unwrap();
    let queued_secs = started.elapsed().as_secs_f64();
    let (rss_before, _) = rss_kb();

    let mut api = ApiSettings::new("demo", AccountKind::Official, "wx-bench", Secret::new("s"));
    api.api_base = base;
    api.rate_per_sec = 0.0;
    let settings = OutboxSettings {
        concurrency,
        ..OutboxSettings::default()
    };
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let delivered = runtime.block_on(async {
        let client = Arc::new(ApiClient::new(api.clone(), store.clone()).unwrap());
        let channels = HashMap::from([("demo".to_string(), Channel::new(client, &api))]);
        let worker = Worker::new(
            store.clone(),
            channels,
            settings,
            Arc::new(tokio::sync::Notify::new()),
        );
        let started = Instant::now();
        let mut delivered = 0;
        while delivered < n as usize {
            let r = worker.pass().await.unwrap();
            assert_eq!(r.dead, 0, "{r:?}");
            delivered += r.delivered;
        }
        (delivered, started.elapsed().as_secs_f64())
    });
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (count, secs) = delivered;
    let peak_kb = peak.load(Ordering::Relaxed);
    println!(
        "outbox: {n} followers + queued messages written in {queued_secs:.1} s ({:.0}/s)",
        n as f64 / queued_secs
    );
    println!(
        "outbox: {count} customer-service messages delivered in {secs:.1} s = {:.0} msg/s (concurrency {concurrency})",
        count as f64 / secs
    );
    println!(
        "outbox: resident memory {} MB before delivery, peak {} MB during (+{} MB)",
        rss_before / 1024,
        peak_kb / 1024,
        peak_kb.saturating_sub(rss_before) / 1024
    );
    assert!(store.outbox_page(None, 1).unwrap().is_empty());
}
