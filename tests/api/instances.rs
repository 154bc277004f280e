//! Two real `siyu serve` processes on one PostgreSQL database, for what they coordinate
//! through leases and row locks: a campaign driven by one instance at a time (its driver
//! SIGKILLed, the other finishes it, and every follower still gets one message and one
//! coupon), one access-token refresh per account across both, and coupon stock and limits
//! with claims and redemptions racing through both.

use std::collections::{BTreeMap, BTreeSet};

use siyu::fake_wechat::{FakeWechat, Fault};
use siyu::store::postgres::testing::TestDatabase;

use crate::crash::{crash_config, serve_env, Serve};
use crate::helpers::*;
use crate::outbox::eventually;
use crate::postgres::{ask_for_news, on_postgres};

const TEMPLATE: &str = "/cgi-bin/message/template/send";
const CUSTOM: &str = "/cgi-bin/message/custom/send";
const TOKEN: &str = "/cgi-bin/token";
const SHOP: &str = "shop-secret-0123456789";

/// The crash tests' config (the `plain` account talks to `fake`) with 2-second outbox
/// leases, a coupons file and a campaigns file, on PostgreSQL.
fn shared_config(dir: &std::path::Path, fake: &str, coupons: &str, campaigns: &str) -> String {
    let config = crash_config(dir, fake);
    std::fs::write(dir.join("coupons.toml"), coupons).unwrap();
    std::fs::write(dir.join("campaigns.toml"), campaigns).unwrap();
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "lease_secs = 2\n\n[coupons]\nfile = \"coupons.toml\"\nredeem_token = \"{SHOP}\"\n\n\
             [campaigns]\nfile = \"campaigns.toml\"\n"
        );
    std::fs::write(&config, text).unwrap();
    on_postgres(&config)
}

fn two(config: &str, db: &TestDatabase) -> (Serve, Serve) {
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    (serve_env(config, &env), serve_env(config, &env))
}

async fn admin_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> (u16, serde_json::Value) {
    let r = client
        .request(method, url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

const HANDOVER_FOLLOWERS: usize = 120;

/// The campaign is started through A; whichever instance drives it is SIGKILLed while
/// templates go out. The other takes the campaign's lease when it runs out (10 s) and the
/// killed one's outbox items when theirs do (2 s), and finishes: every follower got exactly
/// one template (a resend carries the same `client_msg_id`, which WeChat ignores) with the
/// one coupon recorded for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_campaign_driver_is_taken_over_and_everyone_gets_one_message_and_one_coupon() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(
        dir.path(),
        fake.base_url(),
        "[[batch]]\nname = \"back\"\ntitle = \"回归礼\"\nvalue = \"满 100 减 20\"\nstock = 500\nvalid_days = 7\n",
        "[[campaign]]\nname = \"handover\"\naccount = \"plain\"\naudience = \"tag:vip\"\n\
         coupon = \"back\"\nrate_per_sec = 10\n\
         [campaign.template]\nid = \"TPL-BACK\"\ndata = { first = \"{attr.name}\", keyword1 = \"{coupon.code}\" }\n",
    );
    {
        let pg = siyu::store::postgres::PgStore::open(&db.settings(2)).unwrap();
        for i in 0..HANDOVER_FOLLOWERS {
            let f = crate::campaigns::follower(&format!("o_hand_{i:03}"), &["vip"], false);
            siyu::store::put_follower(&pg, "plain", &f).unwrap();
        }
    }
    let (a, b) = two(&config, &db);
    let client = reqwest::Client::new();
    let (status, body) = admin_json(
        &client,
        reqwest::Method::POST,
        format!("{}/admin/v1/campaigns/handover/start", a.base),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let lease = "SELECT owner FROM leases WHERE name = 'campaign:handover'";
    eventually(10, "an instance drives the campaign", || {
        !db.column(lease).is_empty()
    })
    .await;
    let owner = db.column(lease).remove(0);
    let pid_of = |s: &Serve| format!("-{}-", s.child.id());
    let (mut driver, other) = if owner.contains(&pid_of(&a)) {
        (a, b)
    } else {
        assert!(owner.contains(&pid_of(&b)), "{owner}");
        (b, a)
    };
    eventually(20, "a quarter of the templates out", || {
        fake.templates_delivered() >= HANDOVER_FOLLOWERS as u64 / 4
    })
    .await;
    driver.child.kill().unwrap();
    driver.child.wait().unwrap();
    assert!(
        fake.templates_delivered() < HANDOVER_FOLLOWERS as u64,
        "killed midway"
    );

    let report_url = format!("{}/admin/v1/campaigns/handover", other.base);
    let mut report = serde_json::Value::Null;
    for _ in 0..120 {
        (_, report) = admin_json(&client, reqwest::Method::GET, report_url.clone()).await;
        if report["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        report["state"], "done",
        "the other instance finished it: {report}"
    );
    assert_eq!(
        (report["targeted"].as_u64(), report["sent"].as_u64()),
        (
            Some(HANDOVER_FOLLOWERS as u64),
            Some(HANDOVER_FOLLOWERS as u64)
        ),
        "{report}"
    );
    let owner = db.column(lease);
    assert!(
        owner.iter().all(|o| o.contains(&pid_of(&other))),
        "the survivor holds the campaign now: {owner:?}"
    );

    // What each follower saw: the first template WeChat took for them (repeats are ignored).
    assert_eq!(fake.templates_delivered(), HANDOVER_FOLLOWERS as u64);
    let mut seen = BTreeMap::<String, String>::new();
    for call in fake.accepted(TEMPLATE) {
        let to = call.body["touser"].as_str().unwrap().to_string();
        let code = call.body["data"]["keyword1"]["value"].as_str().unwrap();
        seen.entry(to).or_insert_with(|| code.to_string());
    }
    assert_eq!(seen.len(), HANDOVER_FOLLOWERS);
    // What the store recorded: each follower sent once, with that coupon.
    let recorded: BTreeMap<String, String> = db
        .column("SELECT openid || ' ' || progress::text FROM campaign_progress WHERE campaign = 'handover'")
        .iter()
        .map(|row| {
            let (openid, progress) = row.split_once(' ').unwrap();
            let p: serde_json::Value = serde_json::from_str(progress).unwrap();
            assert_eq!(p["state"], "sent", "{row}");
            (openid.to_string(), p["coupon"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        recorded, seen,
        "the coupon each follower was shown is theirs"
    );
    let codes: BTreeSet<&String> = recorded.values().collect();
    assert_eq!(
        codes.len(),
        HANDOVER_FOLLOWERS,
        "one coupon each, none shared"
    );
    assert_eq!(
        db.column("SELECT count(*) FROM coupons WHERE batch = 'back'"),
        [HANDOVER_FOLLOWERS.to_string()],
        "no second coupon claimed for anyone"
    );
    drop(other);
    fake.stop().await;
}

/// Both instances need the token at once: one fetch. The token then dies (42001 on both):
/// one refresh between them, and every call after it uses the one new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_refresh_an_accounts_token_once_between_them() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(dir.path(), fake.base_url(), "", "");
    let (a, b) = two(&config, &db);
    let client = reqwest::Client::new();
    // The fetch takes a while, so the second instance asks while the first one fetches.
    let slow = || Fault {
        path: Some(TOKEN.into()),
        delay_ms: Some(700),
        ..Fault::default()
    };
    fake.inject([slow()]);
    let burst = |from: u64| {
        let (client, a, b) = (&client, a.base.clone(), b.base.clone());
        async move {
            let sends = (from..from + 20).map(|i| {
                let base = if i % 2 == 0 { a.clone() } else { b.clone() };
                async move { ask_for_news(client, &base, &format!("o_tok_{i:02}"), i + 1).await }
            });
            futures_util::future::join_all(sends).await;
        }
    };
    burst(0).await;
    eventually(30, "the first 20 follow-ups delivered", || {
        fake.accepted(CUSTOM).len() >= 20
    })
    .await;
    assert_eq!(fake.calls_to(TOKEN), 1, "one fetch for both instances");

    fake.expire_tokens();
    fake.inject([slow()]);
    burst(20).await;
    eventually(30, "the next 20 follow-ups delivered", || {
        fake.accepted(CUSTOM).len() >= 40
    })
    .await;
    let rejected = fake
        .calls()
        .iter()
        .filter(|c| c.path == CUSTOM && c.errcode == Some(42001))
        .count();
    assert!(rejected >= 1, "the old token was refused");
    assert_eq!(fake.calls_to(TOKEN), 2, "one refresh for both instances");
    let tokens: BTreeSet<String> = fake.accepted(CUSTOM)[20..]
        .iter()
        .map(|c| {
            c.query
                .split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "everything after the refresh: one token");
    drop((a, b));
    fake.stop().await;
}

async fn claim(client: &reqwest::Client, base: &str, openid: &str, msg_id: u64) -> String {
    let reply = post_plain(client, base, openid, "领券", msg_id).await;
    tag(&reply, "Content").expect("a reply")
}

/// 50 followers each ask for a coupon through both instances at the same moment, 29 codes
/// in stock, one per follower: exactly 29 followers get one code each. Then every code is
/// redeemed through both instances at once: one redemption each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_stock_and_limits_hold_with_claims_racing_through_both_instances() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(
        dir.path(),
        "http://127.0.0.1:1",
        "[[batch]]\nname = \"few\"\ntitle = \"限量券\"\nvalue = \"5 元\"\nstock = 29\nvalid_days = 7\n",
        "",
    );
    std::fs::write(
        dir.path().join("replies/claim.toml"),
        "[[rule]]\nname = \"claim\"\nkeywords = [\"领券\"]\nissue_coupon = \"few\"\n\
         reply = \"券码 {coupon.code}\"\ncoupon_refused = \"{coupon.refused}\"\n",
    )
    .unwrap();
    let (a, b) = two(&config, &db);
    let client = reqwest::Client::new();
    let asks = (0..50u64).flat_map(|i| {
        let openid = format!("o_race_{i:02}");
        [
            (a.base.clone(), openid.clone(), 2 * i + 1),
            (b.base.clone(), openid, 2 * i + 2),
        ]
    });
    let replies = futures_util::future::join_all(asks.map(|(base, openid, msg_id)| {
        let client = &client;
        async move {
            let reply = claim(client, &base, &openid, msg_id).await;
            (openid, reply)
        }
    }))
    .await;
    let mut codes = BTreeMap::<String, Vec<String>>::new();
    for (openid, reply) in &replies {
        match reply.strip_prefix("券码 ") {
            Some(code) => codes.entry(openid.clone()).or_default().push(code.into()),
            None => assert!(
                reply == "已领完" || reply == "已领取过",
                "{openid}: {reply}"
            ),
        }
    }
    assert_eq!(codes.len(), 29, "29 followers got a code: {codes:?}");
    assert!(
        codes.values().all(|c| c.len() == 1),
        "one code per follower: {codes:?}"
    );
    let distinct: BTreeSet<&String> = codes.values().flatten().collect();
    assert_eq!(distinct.len(), 29, "no code given twice");
    assert_eq!(
        db.column("SELECT count(*) FROM coupons WHERE batch = 'few'"),
        ["29"]
    );
    let redeem = |base: String, code: String| {
        let client = &client;
        async move {
            client
                .post(format!("{base}/coupons/v1/redeem"))
                .bearer_auth(SHOP)
                .json(&serde_json::json!({ "code": code }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let attempts = distinct.iter().flat_map(|code| {
        [
            (a.base.clone(), code.to_string()),
            (b.base.clone(), code.to_string()),
        ]
    });
    let statuses =
        futures_util::future::join_all(attempts.map(|(base, code)| redeem(base, code))).await;
    let mut by_status = BTreeMap::<u16, usize>::new();
    for s in statuses {
        *by_status.entry(s).or_default() += 1;
    }
    assert_eq!(
        by_status,
        BTreeMap::from([(200, 29), (409, 29)]),
        "each code redeemed once"
    );
    assert_eq!(
        db.column("SELECT count(*) FROM coupons WHERE batch = 'few' AND redeemed_at IS NOT NULL"),
        ["29"]
    );
}
