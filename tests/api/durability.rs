//! A callback answered 200 is on disk: the real `siyu serve` takes encrypted messages from
//! 16 concurrent senders, is killed with SIGKILL part-way, and restarts on the same store.
//! Every callback answered before the kill must be in its follower's state, and WeChat's
//! retry of it must get the first reply and change nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::crash::serve_env;
use crate::helpers::*;

const FOLLOWERS: usize = 50;
const PER_FOLLOWER: usize = 5;
const SENDERS: usize = 16;

/// One message a sender got a 200 for: what WeChat would retry, and what it was told.
#[derive(Debug, Clone)]
struct Answered {
    openid: String,
    xml: String,
    reply: String,
}

pub(crate) fn config(dir: &std::path::Path) -> String {
    let replies = dir.join("replies");
    std::fs::create_dir_all(&replies).unwrap();
    // The reply shows the follower's new count: a lost callback, handled afresh on its
    // retry, would answer another number and count twice.
    std::fs::write(
        replies.join("checkin.toml"),
        "[[rule]]\nname = \"checkin\"\nkeywords = [\"打卡\"]\nincr = { checkin = 1 }\n\
         add_tags = [\"active\"]\nreply = \"第{counter.checkin}次打卡 {openid}\"\n",
    )
    .unwrap();
    config_in(dir, &replies)
}

pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    xml: &str,
    nonce: &str,
) -> Option<String> {
    let (query, body) = SAFE.request(xml, now(), nonce);
    let r = client
        .post(format!("{base}/wx/safe?{query}"))
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let body = r.text().await.ok()?;
    SAFE.open_reply(&body).and_then(|x| tag(&x, "Content"))
}

pub(crate) async fn follower(
    client: &reqwest::Client,
    base: &str,
    openid: &str,
) -> serde_json::Value {
    let r = client
        .get(format!("{base}/admin/v1/followers/safe/{openid}"))
        .header("authorization", format!("Bearer {VIEWER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "follower {openid} is known");
    r.json().await.unwrap()
}

/// Sends every follower's messages from `SENDERS` tasks at once and SIGKILLs the server as
/// soon as `kill_after` of them were answered; then checks the restarted server.
/// `db`: on PostgreSQL (a schema of its own), else on sled.
pub(crate) async fn kill_after(
    kill_after: usize,
    db: Option<&siyu::store::postgres::testing::TestDatabase>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let env: Vec<(&str, &str)> = match db {
        Some(db) => {
            config = crate::postgres::on_postgres(&config);
            vec![("SIYU_DATABASE_URL", db.url.as_str())]
        }
        None => Vec::new(),
    };
    let serve = |config: &str| serve_env(config, &env);
    let mut first = serve(&config);
    // Messages interleave across followers, so several of one follower are in flight.
    let queue: Vec<(String, String)> = (0..PER_FOLLOWER)
        .flat_map(|round| {
            (0..FOLLOWERS).map(move |f| {
                let openid = format!("o_dur_{f:02}");
                let msg_id = (round * FOLLOWERS + f) as u64 + 1;
                let xml = SAFE.text(&openid, "打卡", msg_id);
                (openid, xml)
            })
        })
        .collect();
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let answered = Arc::new(Mutex::new(Vec::<Answered>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (queue, answered, count) = (queue.clone(), answered.clone(), count.clone());
            let (client, base) = (client.clone(), first.base.clone());
            tokio::spawn(async move {
                loop {
                    let Some((openid, xml)) = queue.lock().unwrap().next() else {
                        return;
                    };
                    // After the kill every request fails: the sender stops.
                    let Some(reply) = post(&client, &base, &xml, &format!("n{s}")).await else {
                        return;
                    };
                    answered
                        .lock()
                        .unwrap()
                        .push(Answered { openid, xml, reply });
                    count.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let total = FOLLOWERS * PER_FOLLOWER;
    assert!(kill_after < total);
    while count.load(Ordering::SeqCst) < kill_after {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    first.child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= kill_after && answered.len() < total,
        "{}",
        answered.len()
    );

    let second = serve(&config);
    let mut per_follower: BTreeMap<&str, Vec<&Answered>> = BTreeMap::new();
    for a in &answered {
        per_follower.entry(&a.openid).or_default().push(a);
    }
    let mut before = BTreeMap::new();
    for (openid, msgs) in &per_follower {
        let f = follower(&client, &second.base, openid).await;
        let checkins = f["counters"]["checkin"].as_i64().unwrap_or(0);
        assert!(
            checkins >= msgs.len() as i64,
            "kill after {kill_after}: {openid} was answered {} times, the store counts {checkins}",
            msgs.len()
        );
        // Each answer named a distinct count; all of them must be at most the stored one.
        for m in msgs {
            let n: i64 = m
                .reply
                .trim_start_matches('第')
                .split('次')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                n <= checkins,
                "{openid}: answered {n}, store has {checkins}"
            );
        }
        before.insert(*openid, f);
    }
    // WeChat's retries of everything it got a 200 for: the first reply, nothing applied.
    for (i, a) in answered.iter().enumerate() {
        let reply = post(&client, &second.base, &a.xml, &format!("r{i}")).await;
        assert_eq!(
            reply.as_deref(),
            Some(a.reply.as_str()),
            "kill after {kill_after}: the retry of an answered callback got another reply"
        );
    }
    for (openid, f) in &before {
        let after = follower(&client, &second.base, openid).await;
        assert_eq!(
            after["counters"], f["counters"],
            "{openid}: a retry changed the counters"
        );
        assert_eq!(
            after["messages_in"], f["messages_in"],
            "{openid}: a retry counted again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_callback_answered_before_a_kill_survives_it() {
    // A burst right after start, the middle of the run, and near its end.
    for point in [8, 120, 230] {
        kill_after(point, None).await;
    }
}
