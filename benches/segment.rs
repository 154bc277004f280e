//! Evaluating a segment over every follower of an account in the sled store.
//!
//! `cargo bench --bench segment` (env: SEGMENT_N=1000000). Setup writes N followers with a
//! realistic spread of tags, counters and times (not measured); then one streaming pass
//! counts the followers of `tag:vip AND NOT tag:blocked AND counter.orders >= 2 AND
//! last_message_before 30d`, timed, with this process's resident memory before and at its
//! peak during the pass.
//!
//! `SEGMENT_BACKEND=postgres` (with `SIYU_TEST_DATABASE_URL`, a schema of its own, dropped
//! at the end): the followers are written to sled as above, moved with `siyu store copy`'s
//! code (timed: the copy's speed), and the pass runs on PostgreSQL.

mod common;

use std::time::Instant;

use siyu::follower::Follower;
use siyu::segment::Segment;
use siyu::store::{Answer, CallbackKey, Commit, SledStore, Store};

use common::{env_or, rss_kb, PeakRss};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_800_000_000;

fn main() {
    let n = env_or("SEGMENT_N", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let started = Instant::now();
    for i in 0..n {
        let openid = format!("o_{i:08}");
        let key = CallbackKey {
            account: "demo",
            openid: &openid,
            dedupe_key: "k",
            now: NOW,
            expires_at: NOW,
        };
        store
            .apply_callback(key, &mut |_| {
                let mut f = Follower::new(openid.clone());
                f.subscribed = i % 10 != 0;
                if i % 3 == 0 {
                    f.tags.insert("vip".into());
                }
                if i % 17 == 0 {
                    f.tags.insert("blocked".into());
                }
                f.tags.insert(format!("channel-{}", i % 7));
                f.counters.insert("orders".into(), (i % 5) as i64);
                f.attributes.insert(
                    "city".into(),
                    ["上海", "杭州", "北京"][(i % 3) as usize].into(),
                );
                f.last_inbound_at = Some(NOW - (i % 90) as i64 * 86_400);
                f.messages_in = i % 40;
                Commit {
                    follower: Some(f),
                    answer: Answer {
                        reply: None,
                        rules: vec![],
                    },
                    effects: vec![],
                    counts: vec![],
                }
            })
            .unwrap();
    }
    store.flush().unwrap();
    println!(
        "segment: {n} followers written in {:.1} s (setup)",
        started.elapsed().as_secs_f64()
    );

    let postgres = std::env::var("SEGMENT_BACKEND").is_ok_and(|b| b == "postgres");
    let db;
    let pg;
    let store: &dyn Store = if postgres {
        db = siyu::store::postgres::testing::TestDatabase::new()
            .expect("SEGMENT_BACKEND=postgres needs SIYU_TEST_DATABASE_URL");
        pg = siyu::store::PgStore::open(&db.settings(4)).unwrap();
        let started = Instant::now();
        let (_, counts) =
            siyu::store::portable::copy(&store, &pg, 1000, NOW, &mut |_, _| {}).unwrap();
        let rows: u64 = counts.iter().map(|c| c.1).sum();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "segment: store copy to PostgreSQL: {rows} rows in {secs:.1} s ({:.0} rows/s)",
            rows as f64 / secs
        );
        &pg
    } else {
        &store
    };

    let segment = Segment::parse(
        "tag:vip AND NOT tag:blocked AND counter.orders >= 2 AND last_message_before 30d",
    )
    .unwrap();
    let before = rss_kb();
    let peak = PeakRss::start();
    let started = Instant::now();
    let mut matched = 0u64;
    store
        .for_each_follower("demo", &mut |f| {
            if segment.matches(&f, NOW) {
                matched += 1;
            }
        })
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak = peak.stop();
    let backend = if postgres { "postgres" } else { "sled" };
    println!(
        "segment ({backend}): {matched} of {n} matched `{segment}` in {secs:.2} s ({:.0} followers/s)",
        n as f64 / secs
    );
    println!(
        "segment: resident memory {} MB before the pass, peak {} MB during",
        before / 1024,
        peak / 1024
    );
}
