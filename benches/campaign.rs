//! A campaign to N followers against the fake WeChat API on loopback.
//!
//! The fake runs as its own process (`siyu fake-wechat`). Setup: N followers tagged
//! `vip`, half inside their customer-service window (they get a customer-service
//! message), half outside (a template message), each with a coupon code issued at send
//! time. Then the campaign runs as `siyu serve` runs it: the runner queues the audience in
//! atomic chunks while the outbox worker delivers. Reported: sends per second with no
//! rate limit (siyu's own ceiling), then with a configured rate (should match it), and
//! resident memory.
//!
//! `cargo bench --bench campaign` (env: CAMPAIGN_N=100000, CAMPAIGN_RATE=500,
//! CAMPAIGN_RATE_N=5000, OUTBOX_CONCURRENCY=16). `CAMPAIGN_BACKEND=postgres` (with
//! `SIYU_TEST_DATABASE_URL`): the followers are written to sled, moved with `siyu store
//! copy`'s code (not measured), and the campaign runs on PostgreSQL (a schema of its own).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use siyu::campaign::{runner, RunState};
use siyu::config::Settings;
use siyu::follower::{CsWindow, Follower};
use siyu::outbox::now_ms;
use siyu::server::startup::standalone_worker;
use siyu::store::{Answer, CallbackKey, Commit, SledStore, Store};

use common::{env_or, rss_kb, Fake, PeakRss};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A config, coupons and campaigns file in `dir` for one official account at `base`.
fn settings(dir: &std::path::Path, base: &str, n: u64, rate: Option<u64>) -> Settings {
    let rate = rate
        .map(|r| format!("rate_per_sec = {r}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[storage]\npath = \"db\"\n\
             [[account]]\nid = \"demo\"\nkind = \"official\"\napp_id = \"wxbench\"\ntoken = \"t\"\nmode = \"plaintext\"\n\
             [account.api]\nsecret = \"s\"\napi_base = \"{base}\"\nrate_per_sec = 0\n\
             [outbox]\nconcurrency = {}\n\
             [coupons]\nfile = \"coupons.toml\"\n[campaigns]\nfile = \"campaigns.toml\"\n",
            env_or("OUTBOX_CONCURRENCY", 16)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("coupons.toml"),
        format!(
            "[[batch]]\nname = \"back\"\nvalue = \"满 100 减 20\"\nstock = {n}\nvalid_days = 7\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("campaigns.toml"),
        format!(
            "[[campaign]]\nname = \"vip\"\naccount = \"demo\"\naudience = \"tag:vip AND subscribed\"\ncoupon = \"back\"\n{rate}\
             [campaign.message]\ntext = \"{{attr.name}}，回归礼 {{coupon.code}}\"\n\
             [campaign.template]\nid = \"TPL\"\ndata = {{ first = \"{{attr.name}}\", keyword1 = \"{{coupon.code}}\" }}\n"
        ),
    )
    .unwrap();
    Settings::load(&dir.join("config.toml")).unwrap()
}

/// Runs the campaign to the end; returns (seconds, followers sent).
fn run(
    n: u64,
    rate: Option<u64>,
    base: &str,
    runtime: &tokio::runtime::Runtime,
) -> (f64, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Arc::new(settings(dir.path(), base, n, rate));
    let sled = SledStore::open(&settings.storage_path).unwrap();
    let now = now_ms() / 1000;
    for i in 0..n {
        let openid = format!("o_{i:07}");
        let mut f = Follower::new(openid.clone());
        f.subscribed = true;
        f.tags.insert("vip".into());
        f.attributes.insert("name".into(), format!("客人{i}"));
        if i % 2 == 0 {
            f.cs_window = Some(CsWindow {
                remaining: 5,
                until: now + 48 * 3600,
            });
        }
        sled.apply_callback(
            CallbackKey {
                account: "demo",
                openid: &openid,
                dedupe_key: "m",
                now,
                expires_at: now + 600,
            },
            &mut |_| Commit {
                follower: Some(f.clone()),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![],
                counts: vec![],
            },
        )
        .unwrap();
    }
    sled.flush().unwrap();
    let _db;
    let store: Arc<dyn Store> = if postgres() {
        let db = siyu::store::postgres::testing::TestDatabase::new()
            .expect("CAMPAIGN_BACKEND=postgres needs SIYU_TEST_DATABASE_URL");
        let pg = siyu::store::PgStore::open(&db.settings(16)).unwrap();
        siyu::store::portable::copy(&sled, &pg, 1000, now, &mut |_, _| {}).unwrap();
        _db = db;
        Arc::new(pg)
    } else {
        Arc::new(sled)
    };
    let rss_before = rss_kb();
    let peak = PeakRss::start();
    let started = Instant::now();
    runner::start(store.as_ref(), &settings, "vip", now).unwrap();
    runtime.block_on(async {
        let wake = Arc::new(tokio::sync::Notify::new());
        let worker = Arc::new(standalone_worker(&settings, store.clone(), wake.clone()).unwrap());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let w = tokio::spawn(worker.run(stopped.clone()));
        let r = tokio::spawn(runner::run(store.clone(), settings.clone(), wake, stopped));
        loop {
            let run = store.campaign_run("vip").unwrap().unwrap();
            if run.state == RunState::Done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        let _ = r.await;
        let _ = w.await;
    });
    let secs = started.elapsed().as_secs_f64();
    let peak = peak.stop();
    if let Some(pg) = store.as_postgres() {
        // Where the time went: each store operation's calls and mean time.
        use prometheus::core::Collector;
        let mut ops: Vec<(String, u64, f64)> = Vec::new();
        for family in pg.timings().collect() {
            for m in family.get_metric() {
                let h = m.get_histogram();
                let op = m.get_label().first().map(|l| l.value().to_string());
                ops.push((
                    op.unwrap_or_default(),
                    h.get_sample_count(),
                    h.get_sample_sum(),
                ));
            }
        }
        ops.sort_by(|a, b| b.2.total_cmp(&a.2));
        for (op, count, sum) in ops.iter().take(8) {
            println!(
                "  {op:<24} {count:>8} calls  {:>7.2} ms mean  {sum:>7.1} s in all",
                sum * 1000.0 / *count as f64
            );
        }
    }
    let report =
        runner::report(store.as_ref(), "vip", siyu::local_time::UtcOffset::CHINA, 0).unwrap();
    assert_eq!(report.sent, n, "{report}");
    assert_eq!(report.coupons_issued, n);
    (secs, report.sent, rss_before, peak)
}

fn postgres() -> bool {
    std::env::var("CAMPAIGN_BACKEND").is_ok_and(|b| b == "postgres")
}

fn main() {
    let n = env_or("CAMPAIGN_N", 100_000);
    let rate = env_or("CAMPAIGN_RATE", 500);
    let rate_n = env_or("CAMPAIGN_RATE_N", 5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = Fake::start(&runtime);
    let base = fake.base.clone();
    let (secs, sent, before, peak) = run(n, None, &base, &runtime);
    let backend = if postgres() { "postgres" } else { "sled" };
    println!(
        "campaign ({backend}): {sent} followers (half customer-service, half template, a coupon each), no rate limit: {secs:.1} s = {:.0} sends/s; RSS {} MB before, peak {} MB",
        sent as f64 / secs,
        before / 1024,
        peak / 1024
    );
    let (secs, sent, _, _) = run(rate_n, Some(rate), &base, &runtime);
    println!(
        "campaign ({backend}): {sent} followers at rate_per_sec = {rate}: {secs:.1} s = {:.0} sends/s",
        sent as f64 / secs
    );
}
