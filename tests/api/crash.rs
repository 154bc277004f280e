//! Crash and restart: the real `siyu serve` process is killed with SIGKILL while its
//! outbox worker is mid-queue, restarted on the same store, and every queued
//! customer-service message reaches the fake WeChat exactly once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use siyu::fake_wechat::FakeWechat;
use siyu::store::Store;

use crate::helpers::*;
use crate::outbox::eventually;

const CUSTOM: &str = "/cgi-bin/message/custom/send";
const FOLLOWERS: usize = 60;
const CONCURRENCY: usize = 4;
const ACCEPTED_BEFORE_CRASH: usize = 25;

/// A config serving the fixture accounts with `plain` talking to the fake, and a rule
/// whose reply is followed by one customer-service message.
pub fn crash_config(dir: &Path, api_base: &str) -> String {
    let replies = dir.join("replies");
    std::fs::create_dir_all(&replies).unwrap();
    std::fs::write(
        replies.join("news.toml"),
        "[[rule]]\nname = \"news\"\nkeywords = [\"新品\"]\nreply = \"马上为你介绍\"\n\
         followups = [{ after = 0, text = \"春季新品：桂花乌龙 {openid}\" }]\n",
    )
    .unwrap();
    let path = config_in(dir, &replies);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "mode = \"plaintext\"\n",
        &format!(
            "mode = \"plaintext\"\n\n[account.api]\nsecret = \"app-secret\"\napi_base = \"{api_base}\"\ntimeout_ms = 60000\nrate_per_sec = 0\n"
        ),
        1,
    ) + &format!("\n[outbox]\nconcurrency = {CONCURRENCY}\nretry_base_ms = 50\n");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Serve {
    /// A failing test must not leave a server behind (it would also hold the test's output
    /// pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(config: &str) -> Serve {
    serve_env(config, &[])
}

/// [`serve`] with extra environment (a PostgreSQL store's `SIYU_DATABASE_URL`).
pub(crate) fn serve_env(config: &str, env: &[(&str, &str)]) -> Serve {
    serve_in(None, config, env)
}

/// [`serve_env`] started in folder `cwd` (a relative `config` is read from there).
pub(crate) fn serve_in(cwd: Option<&std::path::Path>, config: &str, env: &[(&str, &str)]) -> Serve {
    let mut command = Command::new(env!("CARGO_BIN_EXE_siyu"));
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = command
        .args(["serve", "--config", config])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("serve logs its port").unwrap();
        if line.contains("WARN") && !line.contains("secret written") || line.contains("ERROR") {
            eprintln!("serve: {line}");
        }
        if let Some(rest) = line.split("port=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe; shown on failure.
    std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .for_each(|l| eprintln!("serve: {l}"))
    });
    Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_its_queue_and_sends_each_message_exactly_once() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    // WeChat takes the first 25 messages, then stops answering: the worker's calls hang.
    fake.hold(CUSTOM, ACCEPTED_BEFORE_CRASH);
    let dir = tempfile::tempdir().unwrap();
    let config = crash_config(dir.path(), fake.base_url());
    let mut first = serve(&config);
    let client = reqwest::Client::new();
    for i in 0..FOLLOWERS {
        let openid = format!("o_crash_{i:02}");
        let (query, body) = PLAIN.request(&PLAIN.text(&openid, "新品", i as u64 + 1), now(), "7");
        let r = client
            .post(format!("{}/wx/plain?{query}", first.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("马上为你介绍"));
    }
    // Every slot of the worker is stuck on a call WeChat has not taken: each slot wrote
    // (and flushed) its previous delivery before taking this item.
    eventually(20, "every worker slot is held", || {
        eprintln!(
            "accepted {} held {}",
            fake.accepted(CUSTOM).len(),
            fake.held()
        );
        fake.held() == CONCURRENCY
    })
    .await;
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    first.child.wait().unwrap();
    assert_eq!(fake.accepted(CUSTOM).len(), ACCEPTED_BEFORE_CRASH);
    fake.release();

    let mut second = serve(&config);
    eventually(30, "all messages delivered after the restart", || {
        fake.accepted(CUSTOM).len() >= FOLLOWERS
    })
    .await;
    // Give a wrongly repeated send the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_follower: BTreeMap<String, usize> = BTreeMap::new();
    for call in fake.accepted(CUSTOM) {
        let to = call.body["touser"].as_str().unwrap().to_string();
        assert_eq!(
            call.body["text"]["content"].as_str().unwrap(),
            format!("春季新品：桂花乌龙 {to}")
        );
        *per_follower.entry(to).or_default() += 1;
    }
    assert_eq!(per_follower.len(), FOLLOWERS, "nobody lost");
    assert!(
        per_follower.values().all(|&n| n == 1),
        "nobody twice: {per_follower:?}"
    );
    let r = client
        .get(format!("{}/admin/v1/outbox", second.base))
        .header("authorization", format!("Bearer {VIEWER}"))
        .send()
        .await
        .unwrap();
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["accounts"], serde_json::json!({}), "{report}");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    fake.stop().await;
}

const TEMPLATE: &str = "/cgi-bin/message/template/send";
const IN_WINDOW: usize = 20;
const OUTSIDE: usize = 40;
const TEMPLATES_BEFORE_CRASH: usize = 10;

/// A scheduled campaign (its start time is past, so `siyu serve` starts it by itself):
/// followers inside the window get a customer-service message, the others a template
/// message, each with their own coupon. The real server is SIGKILLed while every worker
/// slot hangs on a template call, and restarted: every follower gets exactly one message
/// and one code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_a_campaign_sending_each_follower_once() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.hold(TEMPLATE, TEMPLATES_BEFORE_CRASH);
    let dir = tempfile::tempdir().unwrap();
    let config = crash_config(dir.path(), fake.base_url());
    std::fs::write(
        dir.path().join("coupons.toml"),
        "[[batch]]\nname = \"back\"\nvalue = \"满 100 减 20\"\nstock = 100\nvalid_days = 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("campaigns.toml"),
        "[[campaign]]\nname = \"spring\"\naccount = \"plain\"\naudience = \"tag:vip\"\n\
         start = 2020-01-01T10:00:00+08:00\ncoupon = \"back\"\n\
         [campaign.message]\ntext = \"春季礼 {coupon.code}\"\n\
         [campaign.template]\nid = \"TPL\"\ndata = { keyword1 = \"{coupon.code}\" }\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[coupons]\nfile = \"coupons.toml\"\n\n[campaigns]\nfile = \"campaigns.toml\"\n";
    std::fs::write(&config, text).unwrap();
    let settings = siyu::config::Settings::load(Path::new(&config)).unwrap();
    let mut people = Vec::new();
    for i in 0..IN_WINDOW {
        let openid = format!("a_in_{i:02}");
        fake.open_window(&openid, 5);
        people.push(crate::campaigns::follower(&openid, &["vip"], true));
    }
    for i in 0..OUTSIDE {
        people.push(crate::campaigns::follower(
            &format!("b_out_{i:02}"),
            &["vip"],
            false,
        ));
    }
    crate::campaigns::seed(&settings.storage_path, "plain", &people);

    let mut first = serve(&config);
    eventually(30, "every worker slot is held on a template call", || {
        fake.held() == CONCURRENCY
    })
    .await;
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    first.child.wait().unwrap();
    assert_eq!(fake.accepted(CUSTOM).len(), IN_WINDOW);
    assert_eq!(fake.accepted(TEMPLATE).len(), TEMPLATES_BEFORE_CRASH);
    fake.release();

    let mut second = serve(&config);
    eventually(30, "every follower reached after the restart", || {
        fake.templates_delivered() as usize >= OUTSIDE
    })
    .await;
    // Give a wrongly repeated send the time to show up, then stop and read the store.
    tokio::time::sleep(Duration::from_millis(700)).await;
    second.child.kill().unwrap();
    second.child.wait().unwrap();

    let mut per_follower: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for call in fake.accepted(CUSTOM) {
        let code = call.body["text"]["content"].as_str().unwrap();
        let code = code.strip_prefix("春季礼 ").unwrap().to_string();
        per_follower
            .entry(call.body["touser"].as_str().unwrap().to_string())
            .or_default()
            .push(code);
    }
    for call in fake.accepted(TEMPLATE) {
        let code = call.body["data"]["keyword1"]["value"].as_str().unwrap();
        per_follower
            .entry(call.body["touser"].as_str().unwrap().to_string())
            .or_default()
            .push(code.to_string());
    }
    assert_eq!(per_follower.len(), IN_WINDOW + OUTSIDE, "nobody left out");
    assert!(
        per_follower.values().all(|codes| codes.len() == 1),
        "nobody twice: {per_follower:?}"
    );
    assert_eq!(fake.templates_delivered() as usize, OUTSIDE);

    let store = open_store(&settings.storage_path);
    let report =
        siyu::campaign::runner::report(&store, "spring", siyu::local_time::UtcOffset::CHINA, now())
            .unwrap();
    assert_eq!(
        (
            report.targeted,
            report.sent,
            report.failed,
            report.skipped,
            report.queued
        ),
        (60, 60, 0, 0, 0),
        "{report}"
    );
    assert_eq!(report.coupons_issued, 60);
    for (openid, codes) in &per_follower {
        let coupon = store.coupon(&codes[0]).unwrap().expect("a real code");
        assert_eq!(
            &coupon.openid, openid,
            "the code sent is the follower's own"
        );
    }
    let batch = settings.coupon_batch("back").unwrap();
    let stats = store.coupon_stats(batch, now()).unwrap();
    assert_eq!(
        stats.issued, 60,
        "one code per follower, none lost to the crash"
    );
    fake.stop().await;
}
