//! The full in-process pipeline of one safe-mode callback: verify, decrypt, parse, dedupe,
//! match against 1,000 keyword rules, state write to a real sled store, reply, encrypt,
//! sign. Plus the pure rule decision with 10 and 1,000 rules, to show matching cost does
//! not grow with the rule count.
//!
//! `cargo bench --bench pipeline`

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use siyu::config::Settings;
use siyu::follower::{Follower, HISTORY_LEN};
use siyu::protocol::{sign, Inbound, InboundKind};
use siyu::rules::{RuleContext, RuleSource, RuleTable};
use siyu::server::build_state;
use siyu::server::webhook::{handle_callback, CallbackQuery, CallbackReply, Entropy};
use siyu::store::{Answer, CallbackKey, Commit, SledStore, Store};

// The same allocator as the `siyu` binary, so the figures are the server's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "siyutoken";
const NOW: i64 = 1_700_000_000;

/// `n` keyword rules of all three match kinds, plus a default.
fn rules_toml(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let kind = ["exact", "prefix", "contains"][i % 3];
        writeln!(
            s,
            "[[rule]]\nname = \"r{i}\"\nkeywords = [\"关键词{i}\", \"kw{i}x\"]\nmatch = \"{kind}\"\nreply = \"回复 {i}：{{counter.hits}}\"\nadd_tags = [\"t{}\"]\nincr = {{ hits = 1 }}\n",
            i % 50
        )
        .unwrap();
    }
    s.push_str("[[rule]]\nname = \"fallback\"\ndefault = true\nreply = \"收到\"\n");
    s
}

fn table(n: usize) -> RuleTable {
    RuleTable::compile(
        &[RuleSource {
            name: "bench.toml".into(),
            text: rules_toml(n),
        }],
        &RuleContext::default(),
    )
    .expect("bench rules compile")
}

fn text(openid: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

/// The server state of the `pipeline/*` benches: 1,000 rules, a real sled store.
struct Fixture {
    dir: tempfile::TempDir,
    state: siyu::server::AppState,
    crypt: siyu::protocol::MsgCrypt,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let replies = dir.path().join("replies");
        std::fs::create_dir_all(&replies).unwrap();
        std::fs::write(replies.join("bench.toml"), rules_toml(1000)).unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config.toml");
        let mut settings = Settings::load(&config).unwrap();
        settings.max_clock_skew_secs = 0;
        for a in &mut settings.accounts {
            a.replies_dir = replies.clone();
        }
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let state = build_state(settings, store).unwrap();
        let crypt = state.accounts["safe"].settings.crypt.clone().unwrap();
        Fixture { dir, state, crypt }
    }

    /// Message `i` as WeChat sends it, from follower `i % 1000`; building it (our side of
    /// the wire) is not measured.
    fn request(&self, i: u64) -> (CallbackQuery, String) {
        let xml = text(
            &format!("o_bench_{}", i % 1000),
            &format!("我要关键词{}", i % 1000),
            i,
        );
        let encrypt = self.crypt.encrypt(&xml, [9; 16]);
        let ts = NOW.to_string();
        let query = CallbackQuery {
            signature: Some(sign(TOKEN, &[&ts, "1"])),
            msg_signature: Some(sign(TOKEN, &[&ts, "1", &encrypt])),
            timestamp: Some(ts),
            nonce: Some("1".into()),
            encrypt_type: Some("aes".into()),
            openid: None,
            echostr: None,
        };
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        (query, body)
    }
}

const ENTROPY: Entropy = Entropy {
    now: NOW,
    now_ms: NOW * 1000,
    random: [5; 16],
    seed: 1,
};

/// The measured step of `pipeline/safe_text_1000_rules`: one callback, end to end.
#[inline(never)]
fn safe_text_step(state: &siyu::server::AppState, q: &CallbackQuery, body: &str) -> CallbackReply {
    let r = handle_callback(state, "safe", q, body.as_bytes(), ENTROPY).unwrap();
    assert!(r.body.starts_with("<xml><Encrypt>"));
    r
}

/// `PIPELINE_LOOP=N` runs the `safe_text` step outside criterion, for figures that depend
/// less on the machine's load (quickest chunks of 500 messages, and instruction counts):
/// 10,000 messages first (every follower's history full, as in criterion's steady state),
/// then `N` more through `safe_text_step`.
///
/// `PIPELINE_LOOP=2000 valgrind --tool=callgrind --toggle-collect='*safe_text_step*' \
///    target/release/deps/pipeline-<hash> --bench`: collected Ir / N is the cost of one
/// message. (Valgrind hides the CPU's SHA extensions, so SHA-1 counts in software there.)
fn instruction_loop(n: u64) {
    let fx = Fixture::new();
    let mut next = 0u64;
    for _ in 0..10_000 {
        next += 1;
        let (q, body) = fx.request(next);
        handle_callback(&fx.state, "safe", &q, body.as_bytes(), ENTROPY).unwrap();
    }
    let requests: Vec<_> = (0..n).map(|i| fx.request(next + 1 + i)).collect();
    // Timed in chunks: the quickest chunks show the cost when no other process takes the
    // core or disturbs the caches, the median what a loaded machine gives.
    const CHUNK: usize = 500;
    let mut replied = 0usize;
    let mut per_msg = Vec::new();
    for chunk in requests.chunks(CHUNK) {
        let started = std::time::Instant::now();
        for (q, body) in chunk {
            // Dropped here, outside the measured step, as criterion drops a batch's outputs.
            let reply = safe_text_step(&fx.state, q, body);
            replied += usize::from(reply.outcome.is_some());
        }
        per_msg.push(started.elapsed().as_secs_f64() * 1e6 / chunk.len() as f64);
    }
    println!("{replied} messages through safe_text_step");
    per_msg.sort_by(f64::total_cmp);
    if !per_msg.is_empty() {
        let at = |q: f64| per_msg[((per_msg.len() - 1) as f64 * q) as usize];
        println!(
            "per message, over chunks of {CHUNK}: min {:.2} µs, 10th percentile {:.2} µs, median {:.2} µs",
            at(0.0),
            at(0.1),
            at(0.5)
        );
    }
}

fn bench_pipeline(c: &mut Criterion) {
    if let Some(n) = std::env::var("PIPELINE_LOOP")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        instruction_loop(n);
        return;
    }
    let fx = Fixture::new();
    let (dir, state) = (&fx.dir, &fx.state);
    let request = |i: u64| fx.request(i);
    let entropy = ENTROPY;

    let mut group = c.benchmark_group("pipeline");
    let mut next = 0u64;
    group.bench_function("safe_text_1000_rules", |b| {
        b.iter_batched(
            || {
                next += 1;
                request(next)
            },
            |(q, body)| safe_text_step(state, &q, &body),
            BatchSize::SmallInput,
        )
    });
    let (retry_q, retry_body) = request(0);
    handle_callback(state, "safe", &retry_q, retry_body.as_bytes(), entropy).unwrap();
    group.bench_function("safe_retry_dedupe_hit", |b| {
        b.iter(|| handle_callback(state, "safe", &retry_q, retry_body.as_bytes(), entropy).unwrap())
    });
    group.finish();

    // The store alone: one callback's commit of a follower with a full history.
    let mut group = c.benchmark_group("store");
    let sled = SledStore::open(&dir.path().join("store-only")).unwrap();
    let mut seasoned = Follower::new("o_store");
    for i in 0..HISTORY_LEN as i64 {
        seasoned.history.push(siyu::follower::HistoryEntry {
            at: NOW + i,
            kind: "text".into(),
            detail: Some("我要关键词123".into()),
            rule: Some("r123".into()),
        });
    }
    seasoned.tags = (0..5).map(|i| format!("t{i}")).collect();
    // What a decision commits: the follower it was given (decisions get no history) with
    // this callback's entry; the store appends it to the stored ten.
    let mut decided = seasoned.clone();
    decided.history.drain(..HISTORY_LEN - 1);
    // Without counts, and with what a text message counts (README "Reports"): messages
    // and rule hits for the account and the follower's channel, in the same write.
    let day = siyu::local_time::UtcOffset::CHINA.day(NOW);
    let text_counts = vec![
        siyu::report::Count::new(day, "*", "messages", 1),
        siyu::report::Count::new(day, "poster", "messages", 1),
        siyu::report::Count::new(day, "*", "rule_hits", 1),
    ];
    let mut n = 0u64;
    for (name, counts) in [
        ("apply_callback_sled", Vec::new()),
        ("apply_callback_sled_counted", text_counts),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                let key = n.to_string();
                sled.apply_callback(
                    CallbackKey {
                        account: "safe",
                        openid: "o_store",
                        dedupe_key: &key,
                        now: NOW,
                        expires_at: NOW + 3600,
                    },
                    &mut |_| Commit {
                        follower: Some(decided.clone()),
                        answer: Answer {
                            reply: None,
                            rules: vec!["r123".into()],
                        },
                        effects: vec![],
                        counts: counts.clone(),
                    },
                )
                .unwrap()
            })
        });
    }
    let raw = sled::open(dir.path().join("raw")).unwrap();
    let mut m = 0u64;
    group.bench_function("raw_sled_batch_3_keys", |b| {
        b.iter(|| {
            m += 1;
            let mut batch = sled::Batch::default();
            batch.insert(format!("f\0safe\0o{}", m % 1000).as_bytes(), vec![7u8; 300]);
            batch.insert(format!("d\0safe\0{m}").as_bytes(), vec![8u8; 120]);
            batch.insert(format!("x\0{m}").as_bytes(), vec![]);
            raw.apply_batch(batch).unwrap()
        })
    });
    group.bench_function("raw_sled_insert_600B", |b| {
        b.iter(|| {
            m += 1;
            raw.insert(format!("f\0safe\0o{}", m % 1000).as_bytes(), vec![7u8; 600])
                .unwrap()
        })
    });
    group.bench_function("raw_sled_cas_600B", |b| {
        b.iter(|| {
            m += 1;
            let k = format!("f\0safe\0o{}", m % 1000);
            let old = raw.get(k.as_bytes()).unwrap();
            raw.compare_and_swap(k.as_bytes(), old, Some(vec![9u8; 600]))
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("raw_sled_get", |b| {
        b.iter(|| {
            raw.get(format!("f\0safe\0o{}", m % 1000).as_bytes())
                .unwrap()
        })
    });
    group.bench_function("follower_postcard_roundtrip", |b| {
        b.iter(|| {
            let v = postcard::to_allocvec(&seasoned).unwrap();
            postcard::from_bytes::<Follower>(&v).unwrap()
        })
    });
    group.bench_function("follower_json_roundtrip", |b| {
        b.iter(|| {
            let v = serde_json::to_vec(&seasoned).unwrap();
            serde_json::from_slice::<Follower>(&v).unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decide");
    for n in [10usize, 1000, 10000] {
        let t = table(n);
        let msg = Inbound {
            to: "gh".into(),
            from: "o1".into(),
            create_time: NOW,
            agent_id: None,
            kind: InboundKind::Text {
                content: format!("我要关键词{}", n / 2),
                msg_id: 1,
            },
        };
        group.bench_function(format!("{n}_rules"), |b| {
            b.iter_batched(
                || Follower::new("o1"),
                |mut f| t.decide(&msg, &mut f, 1),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
