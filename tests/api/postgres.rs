//! Several real `siyu serve` processes on one PostgreSQL database (a schema of the test's
//! own, `SIYU_TEST_DATABASE_URL`): what one instance acknowledged, the other honours; no
//! update of a follower is lost between them; a SIGKILL loses nothing acknowledged.

use std::collections::BTreeSet;
use std::sync::Arc;

use siyu::store::postgres::testing::TestDatabase;

use crate::crash::{serve_env, Serve};
use crate::durability::{config, follower, kill_after, post};
use crate::helpers::*;

/// The same config on PostgreSQL: `SIYU_DATABASE_URL` names the database.
pub(crate) fn on_postgres(config: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let storage = text.find("[storage]").expect("a [storage] table");
    let rest = &text[storage + "[storage]".len()..];
    let end = rest
        .find("\n[")
        .map_or(text.len(), |i| storage + "[storage]".len() + i);
    let text = format!(
        "{}[storage]\nbackend = \"postgres\"\nurl_env = \"SIYU_DATABASE_URL\"\npool_size = 4\n{}",
        &text[..storage],
        &text[end..]
    );
    let path = std::path::Path::new(config).with_file_name("config.postgres.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

struct Pair {
    a: Serve,
    b: Serve,
    db: TestDatabase,
    dir: tempfile::TempDir,
}

fn two_instances() -> Option<Pair> {
    let db = TestDatabase::new()?;
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&config(dir.path()));
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let a = serve_env(&config, &env);
    let b = serve_env(&config, &env);
    Some(Pair { a, b, db, dir })
}

fn count_of(reply: &str) -> i64 {
    reply
        .trim_start_matches('第')
        .split('次')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_at_the_other_instance_gets_the_first_reply_and_changes_nothing() {
    let Some(p) = two_instances() else { return };
    let client = reqwest::Client::new();
    let xml = SAFE.text("o_pg_retry", "打卡", 1);
    let first = post(&client, &p.a.base, &xml, "n1")
        .await
        .expect("A answers");
    assert_eq!(first, "第1次打卡 o_pg_retry");
    let retry = post(&client, &p.b.base, &xml, "n2")
        .await
        .expect("B answers");
    assert_eq!(retry, first, "B answers A's reply");
    let f = follower(&client, &p.b.base, "o_pg_retry").await;
    assert_eq!(f["counters"]["checkin"], 1, "{f}");
    assert_eq!(f["messages_in"], 1, "{f}");

    // The first delivery and its retry at both instances at the same moment: one applies.
    for round in 2..12u64 {
        let xml = SAFE.text("o_pg_retry", "打卡", round);
        let (ra, rb) = tokio::join!(
            post(&client, &p.a.base, &xml, "x"),
            post(&client, &p.b.base, &xml, "y")
        );
        let (ra, rb) = (ra.expect("A answers"), rb.expect("B answers"));
        assert_eq!(ra, rb, "round {round}: both deliveries get the one answer");
        assert_eq!(count_of(&ra), round as i64, "round {round}: counted once");
    }
    let f = follower(&client, &p.a.base, "o_pg_retry").await;
    assert_eq!(f["counters"]["checkin"], 11, "{f}");
    assert_eq!(f["messages_in"], 11, "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callbacks_for_one_follower_through_both_instances_add_up() {
    let Some(p) = two_instances() else { return };
    const MESSAGES: u64 = 80;
    const SENDERS: u64 = 8;
    let client = reqwest::Client::new();
    let bases = Arc::new([p.a.base.clone(), p.b.base.clone()]);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (client, bases) = (client.clone(), bases.clone());
            tokio::spawn(async move {
                let mut counts = Vec::new();
                for i in (s..MESSAGES).step_by(SENDERS as usize) {
                    let xml = SAFE.text("o_pg_busy", "打卡", i + 1);
                    let base = &bases[(i % 2) as usize];
                    let reply = post(&client, base, &xml, &format!("n{i}"))
                        .await
                        .expect("answered");
                    counts.push(count_of(&reply));
                }
                counts
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for s in senders {
        for n in s.await.unwrap() {
            assert!(
                seen.insert(n),
                "two callbacks were both answered count {n}: a lost update"
            );
        }
    }
    assert_eq!(seen, (1..=MESSAGES as i64).collect::<BTreeSet<_>>());
    for base in [&p.a.base, &p.b.base] {
        let f = follower(&client, base, "o_pg_busy").await;
        assert_eq!(f["counters"]["checkin"], MESSAGES, "{f}");
        assert_eq!(f["messages_in"], MESSAGES, "{f}");
    }
}

/// Admin calls whose queries hang (a table locked by another session) keep more requests
/// waiting than the server has worker threads; a callback still gets its answer at once,
/// because no worker thread waits on the database. When the lock goes, the admin calls
/// finish too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_hanging_on_the_database_leave_the_webhook_answering() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&config(dir.path()));
    // actix starts a worker thread per core; the pool keeps connections for the callback.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("pool_size = 4\n", &format!("pool_size = {}\n", workers + 4));
    std::fs::write(&config, text).unwrap();
    let server = serve_env(&config, &[("SIYU_DATABASE_URL", db.url.as_str())]);
    let client = reqwest::Client::new();
    let lock = db.lock("audit");
    let hanging: Vec<_> = (0..workers + 1)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{}/admin/v1/audit", server.base));
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        hanging.iter().all(|h| !h.is_finished()),
        "the audit is locked"
    );
    let reply = post(
        &client,
        &server.base,
        &SAFE.text("o_pg_busy", "打卡", 1),
        "b",
    )
    .await
    .expect("answered while the admin calls hang");
    assert_eq!(reply, "第1次打卡 o_pg_busy");
    drop(lock);
    for h in hanging {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_callback_answered_before_a_kill_survives_it_on_postgres() {
    for point in [8, 150] {
        let Some(db) = TestDatabase::new() else {
            return;
        };
        kill_after(point, Some(&db)).await;
    }
}

#[test]
fn every_store_command_works_beside_running_servers() {
    let Some(p) = two_instances() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    for (i, openid) in ["o_pg_cli_1", "o_pg_cli_2", "o_pg_cli_3"]
        .iter()
        .enumerate()
    {
        let xml = SAFE.text(openid, "打卡", i as u64 + 1);
        rt.block_on(post(&client, &p.a.base, &xml, "c"))
            .expect("answered");
    }
    let metrics = rt.block_on(async {
        client
            .get(format!("{}/metrics", p.a.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for series in [
        "siyu_store_pool_size ",
        "siyu_store_pool_waiting ",
        "siyu_store_operation_seconds_count{operation=\"apply_callback\"} 3",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    let config = p.dir.path().join("config.postgres.toml");
    let config = config.to_str().unwrap();
    let env = [("SIYU_DATABASE_URL", p.db.url.as_str())];
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(args)
            .args(["--config", config])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["followers", "--account", "safe", "--where", "tag:active"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "3", "everyone who checked in is tagged active");
    let (code, out, err) = run(&["followers", "--account", "safe", "--list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["o_pg_cli_1", "o_pg_cli_2", "o_pg_cli_3"]
    );
    let (code, _, err) = run(&["audit"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["outbox"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("up to date"), "{out}");
    let (code, out, err) = run(&[
        "simulate",
        "--account",
        "safe",
        "--from",
        "o_pg_cli_1",
        "--commit",
        "打卡",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("第2次打卡"), "{out}");
    drop(p);
}

const CUSTOM: &str = "/cgi-bin/message/custom/send";

pub(crate) async fn ask_for_news(client: &reqwest::Client, base: &str, openid: &str, msg_id: u64) {
    post_plain(client, base, openid, "新品", msg_id).await;
}

/// Both instances deliver the one queue: every follow-up reaches WeChat once. Then both
/// hang on WeChat, one is SIGKILLed mid-call: once its leases run out, the other delivers
/// what it held, and still nobody gets a message twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_outbox_and_take_over_a_killed_ones_items() {
    use siyu::fake_wechat::FakeWechat;
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::crash::crash_config(dir.path(), fake.base_url());
    let text = std::fs::read_to_string(&config).unwrap() + "lease_secs = 2\n";
    std::fs::write(&config, text).unwrap();
    let config = on_postgres(&config);
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let mut a = serve_env(&config, &env);
    let b = serve_env(&config, &env);
    let client = reqwest::Client::new();
    const FIRST: usize = 40;
    for i in 0..FIRST {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        ask_for_news(&client, base, &format!("o_pg_out_{i:02}"), i as u64 + 1).await;
    }
    crate::outbox::eventually(30, "the first follow-ups delivered", || {
        fake.accepted(CUSTOM).len() >= FIRST
    })
    .await;

    // WeChat stops answering after 5 more: both instances' slots hang.
    const SECOND: usize = 30;
    fake.hold(CUSTOM, FIRST + 5);
    for i in FIRST..FIRST + SECOND {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        ask_for_news(&client, base, &format!("o_pg_out_{i:02}"), i as u64 + 1).await;
    }
    crate::outbox::eventually(30, "every slot of both instances is held", || {
        fake.held() == 8
    })
    .await;
    a.child.kill().unwrap(); // SIGKILL mid-call: its items stay leased to it
    a.child.wait().unwrap();
    fake.release();
    crate::outbox::eventually(30, "B delivers everything, A's items included", || {
        fake.accepted(CUSTOM).len() >= FIRST + SECOND
    })
    .await;
    // Give a wrongly repeated send the time to show up (a lease is 2 s).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let mut per_follower = std::collections::BTreeMap::<String, usize>::new();
    for call in fake.accepted(CUSTOM) {
        *per_follower
            .entry(call.body["touser"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_follower.len(), FIRST + SECOND, "nobody lost");
    assert!(
        per_follower.values().all(|&n| n == 1),
        "nobody twice: {per_follower:?}"
    );
    drop(b);
    fake.stop().await;
}

/// `siyu store copy --to postgres`, SIGKILLed midway, run again: it resumes from its
/// checkpoint, the counts match, a third run writes nothing, and a server on PostgreSQL
/// then knows every follower the sled server had.
#[test]
fn a_store_copy_killed_midway_resumes_and_the_copy_serves() {
    use siyu::store::portable::{Checkpoint, Portable, CHECKPOINT};
    use siyu::store::{PgStore, Store};
    let Some(db) = TestDatabase::new() else {
        return;
    };
    const FOLLOWERS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    {
        // Real callbacks first (followers, deliveries, outbox items), on sled.
        let sled = crate::crash::serve_env(&config, &[]);
        for i in 1..=3 {
            let xml = SAFE.text("o_copy_real", "打卡", i);
            rt.block_on(post(&client, &sled.base, &xml, "c"))
                .expect("answered");
        }
    }
    let settings = siyu::config::Settings::load(std::path::Path::new(&config)).unwrap();
    {
        let store = open_store(&settings.storage_path);
        for i in 0..FOLLOWERS {
            let mut f = siyu::follower::Follower::new(format!("o_copy_{i:05}"));
            f.tags.insert("imported".into());
            siyu::store::put_follower(&store, "safe", &f).unwrap();
        }
        store.flush().unwrap();
    }
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let copy_args = [
        "store", "copy", "--to", "postgres", "--page", "50", "--config", &config,
    ];
    let mut child = siyu_command(&copy_args, &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pg = PgStore::open(&db.settings(1)).unwrap();
    let checkpoint =
        || -> Option<Checkpoint> { serde_json::from_str(&pg.meta(CHECKPOINT).unwrap()?).ok() };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while checkpoint().is_none_or(|c| c.rows < 2_000) {
        assert!(std::time::Instant::now() < until, "the copy makes progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stopped = checkpoint().unwrap();
    assert!(stopped.finished_at.is_none(), "killed midway: {stopped:?}");
    let copied_so_far = pg.count(siyu::store::portable::Table::Followers).unwrap();
    assert!(
        (2_000..FOLLOWERS as u64).contains(&copied_so_far),
        "part of the followers copied: {copied_so_far}"
    );

    let (code, out, err) = siyu_env(&copy_args, &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resumed from the last checkpoint"), "{out}");
    assert!(out.contains("counts match"), "{out}");
    let followers_line = out.lines().find(|l| l.starts_with("followers")).unwrap();
    let n = (FOLLOWERS + 1).to_string();
    assert_eq!(
        followers_line.split_whitespace().collect::<Vec<_>>(),
        ["followers", n.as_str(), n.as_str()],
        "{out}"
    );
    let (code, out, err) = siyu_env(&copy_args, &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing written"), "{out}");

    // A server on the copy: the sled server's follower, as it left them.
    let pg_config = on_postgres(&config);
    let server = crate::crash::serve_env(&pg_config, &env);
    let f = rt.block_on(follower(&client, &server.base, "o_copy_real"));
    assert_eq!(f["counters"]["checkin"], 3, "{f}");
    let xml = SAFE.text("o_copy_real", "打卡", 4);
    let reply = rt
        .block_on(post(&client, &server.base, &xml, "d"))
        .expect("answered");
    assert_eq!(reply, "第4次打卡 o_copy_real");
    // A retry of a callback answered before the copy is still recognised after it.
    let retry = rt
        .block_on(post(
            &client,
            &server.base,
            &SAFE.text("o_copy_real", "打卡", 3),
            "e",
        ))
        .expect("answered");
    assert_eq!(retry, "第3次打卡 o_copy_real");
    let f = rt.block_on(follower(&client, &server.base, "o_copy_00042"));
    assert_eq!(f["tags"], serde_json::json!(["imported"]), "{f}");
}

/// An instance in a folder of its own, started as README starts it: `siyu serve --config
/// config.postgres.toml` from that folder, the rules in `./replies`.
fn instance_in(dir: &std::path::Path, db: &TestDatabase) -> crate::crash::Serve {
    let absolute = config(dir);
    let replies = dir.join("replies").display().to_string();
    let text = std::fs::read_to_string(&absolute)
        .unwrap()
        .replace(&format!("{replies:?}"), "\"replies\"");
    std::fs::write(&absolute, text).unwrap();
    on_postgres(&absolute);
    crate::crash::serve_in(
        Some(dir),
        "config.postgres.toml",
        &[("SIYU_DATABASE_URL", db.url.as_str())],
    )
}

async fn rules_hash(client: &reqwest::Client, base: &str) -> String {
    let r: serde_json::Value = client
        .get(format!("{base}/admin/v1/rules"))
        .header("authorization", format!("Bearer {VIEWER}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["folders"][0]["version"]["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls until both instances run the same rules, at most 2 seconds (the promise).
async fn agree_within_2s(client: &reqwest::Client, a: &str, b: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let (ha, hb) = (rules_hash(client, a).await, rules_hash(client, b).await);
        if ha == hb {
            return ha;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the instances still run different rules after 2 s: {ha} vs {hb}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_through_one_instance_is_in_force_on_the_other_within_2_seconds() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance_in(da.path(), &db);
    let b = instance_in(db_dir.path(), &db);
    let client = reqwest::Client::new();
    let start = agree_within_2s(&client, &a.base, &b.base).await;

    // An operator's write through A: B answers with it, and B's folder holds it.
    let rule =
        "[[rule]]\nname = \"hours\"\nkeywords = [\"营业时间\"]\nreply = \"每天 9:00-21:00\"\n";
    let r = client
        .put(format!("{}/admin/v1/rules/hours.toml", a.base))
        .header("authorization", format!("Bearer {OPERATOR}"))
        .body(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let written = agree_within_2s(&client, &a.base, &b.base).await;
    assert_ne!(written, start);
    let xml = SAFE.text("o_rules_b", "营业时间", 1);
    let reply = post(&client, &b.base, &xml, "r1").await.expect("B answers");
    assert_eq!(reply, "每天 9:00-21:00");
    assert_eq!(
        std::fs::read_to_string(db_dir.path().join("replies/hours.toml")).unwrap(),
        rule,
        "B keeps the rules in its own folder, for its next start"
    );

    // A file deployed into B's folder (as from git): A follows, and removes what B removed.
    std::fs::remove_file(db_dir.path().join("replies/hours.toml")).unwrap();
    std::fs::write(
        db_dir.path().join("replies/hours2.toml"),
        "[[rule]]\nname = \"hours\"\nkeywords = [\"营业时间\"]\nreply = \"周末休息\"\n",
    )
    .unwrap();
    let deployed = {
        // The watcher's debounce comes first: wait for B itself to change (while this
        // loop reads B's rule list every 50 ms, which must not hold B's reload off).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rules_hash(&client, &b.base).await == written {
            if std::time::Instant::now() > until {
                let r: serde_json::Value = client
                    .get(format!("{}/admin/v1/rules", b.base))
                    .header("authorization", format!("Bearer {VIEWER}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                panic!("B does not reload its folder: {r}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        agree_within_2s(&client, &a.base, &b.base).await
    };
    assert_ne!(deployed, written);
    let reply = post(
        &client,
        &a.base,
        &SAFE.text("o_rules_a", "营业时间", 2),
        "r2",
    )
    .await
    .expect("A answers");
    assert_eq!(reply, "周末休息");
    assert!(!da.path().join("replies/hours.toml").exists());

    // A restarted instance whose folder is stale takes the newest rules; a third
    // instance with the old folder (down while the others moved on) does too.
    drop(a);
    let stale = tempfile::tempdir().unwrap();
    let c = instance_in(stale.path(), &db);
    assert_eq!(
        rules_hash(&client, &c.base).await,
        deployed,
        "an old folder is not republished"
    );
    assert_eq!(rules_hash(&client, &b.base).await, deployed);
}

/// Shop events posted over HTTP to a server on PostgreSQL, SIGKILLed right after the 200
/// (no shutdown, no flush): after a restart the resend is answered `duplicate`, and every
/// follower's counters count each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_events_acknowledged_before_a_sigkill_count_once_on_postgres() {
    use crate::ingest::{ingest_config, order, TOKEN};
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&ingest_config(
        dir.path(),
        &format!("token = \"{TOKEN}\"\n"),
    ));
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let client = reqwest::Client::new();
    let events: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            order(
                &format!("pg-{i}"),
                &format!("o_pg{}", i % 3),
                serde_json::json!(10),
            )
        })
        .collect();
    let body = serde_json::json!({ "events": events }).to_string();
    let send = |base: String| {
        let (client, body) = (client.clone(), body.clone());
        async move {
            let r = client
                .post(format!("{base}/ingest/v1/events"))
                .bearer_auth(TOKEN)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let answer: serde_json::Value = r.json().await.unwrap();
            let statuses: BTreeSet<String> = answer["results"]
                .as_array()
                .unwrap_or_else(|| panic!("{answer}"))
                .iter()
                .map(|r| r["status"].as_str().unwrap().to_string())
                .collect();
            statuses
        }
    };
    let mut first = serve_env(&config, &env);
    assert_eq!(
        send(first.base.clone()).await,
        BTreeSet::from(["applied".to_string()])
    );
    first.child.kill().unwrap(); // SIGKILL right after the 200
    first.child.wait().unwrap();
    drop(first);

    let second = serve_env(&config, &env);
    assert_eq!(
        send(second.base.clone()).await,
        BTreeSet::from(["duplicate".to_string()]),
        "the resend changes nothing"
    );
    let mut orders = 0;
    for i in 0..3 {
        let f = follower(&client, &second.base, &format!("o_pg{i}")).await;
        assert_eq!(f["counters"]["orders"], 4, "{f}");
        assert_eq!(f["counters"]["spend_fen"], 4000, "10 yuan each, once: {f}");
        orders += f["counters"]["orders"].as_i64().unwrap();
    }
    assert_eq!(orders, 12);
}
