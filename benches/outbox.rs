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
mod common;

use std::sync::Arc;
use std::time::Instant;

use siyu::api::{ApiClient, ApiSettings};
use siyu::config::{AccountKind, OutboxSettings, Secret};
use siyu::follower::{CsWindow, Follower};
use siyu::outbox::worker::{Channel, Worker};
use siyu::outbox::{now_ms, Effect, NewItem};
use siyu::protocol::Reply;
use siyu::store::{Answer, CallbackKey, Commit, SledStore, Store};

use common::{env_or, rss_kb, Fake, PeakRss};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n = env_or("OUTBOX_N", 100_000);
    let concurrency = env_or("OUTBOX_CONCURRENCY", 16) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every follower wrote just now: their windows are open.
    let fake = Fake::start(&runtime);
    let base = fake.base.clone();

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
                counts: vec![],
            })
            .unwrap();
    }
    store.flush().unwrap();
    let queued_secs = started.elapsed().as_secs_f64();
    let rss_before = rss_kb();

    let mut api = ApiSettings::new("demo", AccountKind::Official, "wx-bench", Secret::new("s"));
    api.api_base = base;
    api.rate_per_sec = 0.0;
    let settings = OutboxSettings {
        concurrency,
        ..OutboxSettings::default()
    };
    let peak = PeakRss::start();
    let delivered = runtime.block_on(async {
        let client = Arc::new(ApiClient::new(api.clone(), store.clone()).unwrap());
        let channels = HashMap::from([("demo".to_string(), Channel::new(client, &api))]);
        let worker = Arc::new(Worker::new(
            store.clone(),
            channels,
            settings,
            Arc::new(tokio::sync::Notify::new()),
        ));
        let started = Instant::now();
        let mut delivered = 0;
        while delivered < n as usize {
            let r = worker.pass().await.unwrap();
            assert_eq!(r.dead, 0, "{r:?}");
            delivered += r.delivered;
        }
        (delivered, started.elapsed().as_secs_f64())
    });
    let peak_kb = peak.stop();
    let (count, secs) = delivered;
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
