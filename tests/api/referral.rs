//! A referral programme (任务宝) end to end over real HTTP against the fake WeChat: three
//! inviters ask for their posters (codes made, posters drawn and uploaded, sent as images,
//! all through the outbox), twenty invitees subscribe through the codes, with an unfollow
//! inside the hold, a self-invite, a mutual invite, a burst held for review (one released,
//! one rejected by an operator), a retried subscribe callback and a rescan, and the server
//! SIGKILLed in the middle. Then every tier's reward is granted exactly once (one coupon
//! per (inviter, tier); the fake saw each notice once), and the report's counts are exact
//! over the admin API and the CLI.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use siyu::fake_wechat::FakeWechat;
use siyu::referral::{scene, ParticipantId};

use crate::crash::{crash_config, serve_env, Serve};
use crate::helpers::*;
use crate::outbox::eventually;

const VIEWER: &str = "viewer-secret-0123456789";
const OPERATOR: &str = "operator-secret-0123456789";
const CUSTOM: &str = "/cgi-bin/message/custom/send";
const KEYWORD: &str = "我的二维码";

/// The fake's `plain` account with coupons and a referral programme: tiers at 2 and 5
/// valid invites, a hold of about 11 s, more than 6 invites in 10 minutes held, matured
/// every second.
fn referral_config(dir: &Path, api_base: &str) -> String {
    let config = crash_config(dir, api_base);
    std::fs::write(
        dir.join("coupons.toml"),
        "[[batch]]\nname = \"tea-2\"\ntitle = \"两人茶券\"\nvalue = \"一壶\"\nstock = 100\nper_follower = 1\nvalid_days = 7\n\n\
         [[batch]]\nname = \"tea-5\"\ntitle = \"五人茶券\"\nvalue = \"一桌\"\nstock = 100\nper_follower = 1\nvalid_days = 7\n",
    )
    .unwrap();
    std::fs::write(dir.join("bg.png"), white_png(320, 320)).unwrap();
    std::fs::write(
        dir.join("referrals.toml"),
        format!(
            r#"
[[referral]]
name = "tea"
account = "plain"
title = "冬日茶会"
start = 2020-01-01
end = 2099-12-31
keyword = "{KEYWORD}"
hold_hours = 0.003
burst = {{ invites = 6, minutes = 10 }}

[[referral.tier]]
invites = 2
coupon = "tea-2"

[[referral.tier]]
invites = 5
coupon = "tea-5"

[referral.poster]
background = "bg.png"
x = 10
y = 10
size = 300
"#
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[coupons]\nfile = \"coupons.toml\"\n\n[referral]\nfile = \"referrals.toml\"\ncheck_every_secs = 1\n";
    std::fs::write(&config, text).unwrap();
    config
}

fn white_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer
            .write_image_data(&vec![255u8; (w * h * 3) as usize])
            .unwrap();
    }
    out
}

fn code_of(openid: &str) -> String {
    format!(
        "qrscene_{}",
        scene("tea", &ParticipantId::of("plain", openid)).unwrap()
    )
}

async fn post(client: &reqwest::Client, base: &str, xml: &str) -> String {
    let (query, body) = PLAIN.request(xml, now(), "9");
    let r = client
        .post(format!("{base}/wx/plain?{query}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn subscribe(client: &reqwest::Client, base: &str, openid: &str, inviter: &str) -> String {
    let xml = PLAIN.event(openid, "subscribe", Some(&code_of(inviter)));
    post(client, base, &xml).await
}

async fn admin(client: &reqwest::Client, base: &str, token: &str, path: &str, post: bool) -> Value {
    let url = format!("{base}{path}");
    let request = if post {
        client.post(url)
    } else {
        client.get(url)
    };
    let r = request.bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The texts of the customer-service messages the fake accepted, per openid.
fn texts(fake: &siyu::fake_wechat::FakeWechatHandle) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in fake.accepted(CUSTOM) {
        if c.body["msgtype"] == "text" {
            out.entry(c.body["touser"].as_str().unwrap().to_string())
                .or_default()
                .push(c.body["text"]["content"].as_str().unwrap().to_string());
        }
    }
    out
}

fn images(fake: &siyu::fake_wechat::FakeWechatHandle) -> Vec<String> {
    fake.accepted(CUSTOM)
        .iter()
        .filter(|c| c.body["msgtype"] == "image")
        .map(|c| c.body["touser"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_programme_rewards_each_tier_once_through_a_crash() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = referral_config(dir.path(), fake.base_url());
    scenario(&fake, &config, &[]).await;
    // The coupons once more, from the store itself once the server is gone.
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let settings = siyu::config::Settings::load(Path::new(&config)).unwrap();
    for batch in ["tea-2", "tea-5"] {
        let stats =
            siyu::store::Store::coupon_stats(&store, settings.coupon_batch(batch).unwrap(), now())
                .unwrap();
        assert_eq!(stats.issued, 3, "{batch}");
    }
    drop(store);
    let (code, out, err) = siyu(&["referral", "report", "tea", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid 17"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_programme_rewards_each_tier_once_through_a_crash_on_postgres() {
    let Some(db) = siyu::store::postgres::testing::TestDatabase::new() else {
        return;
    };
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::postgres::on_postgres(&referral_config(dir.path(), fake.base_url()));
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    scenario(&fake, &config, &env).await;
    // Beside no server: the CLI reads PostgreSQL itself.
    let (code, out, err) = siyu_env(&["referral", "report", "tea", "--config", &config], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid 17"), "{out}");
}

async fn scenario(fake: &siyu::fake_wechat::FakeWechatHandle, config: &str, env: &[(&str, &str)]) {
    fake.open_window("*", 5);
    let config = config.to_string();
    let with = |extra: &[(&'static str, &str)]| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    };
    let cli = |args: &[&str], extra: &[(&'static str, &str)]| {
        let vars = with(extra);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        siyu_env(args, &vars)
    };
    let (code, out, err) = cli(&["check", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("referral tea (冬日茶会)"), "{out}");
    let client = reqwest::Client::new();
    let first = serve_env(&config, env);
    let base = first.base.clone();

    // The inviters ask: the passive reply is the invitation; the posters come through the
    // outbox (a code, an upload, an image message each).
    for (i, a) in ["a1", "a2", "a3"].iter().enumerate() {
        let reply = post(&client, &base, &PLAIN.text(a, KEYWORD, 10 + i as u64)).await;
        assert!(reply.contains("这是你的专属二维码"), "{reply}");
    }
    eventually(20, "three posters sent", || images(fake).len() == 3).await;
    assert_eq!(fake.accepted("/cgi-bin/qrcode/create").len(), 3);
    let uploads = fake.accepted("/cgi-bin/media/upload");
    assert_eq!(uploads.len(), 3);
    assert_eq!(uploads[0].body["png"], true, "{:?}", uploads[0].body);
    let created = &fake.accepted("/cgi-bin/qrcode/create")[0].body;
    assert_eq!(created["action_name"], "QR_STR_SCENE");
    assert!(
        created["action_info"]["scene"]["scene_str"]
            .as_str()
            .unwrap()
            .starts_with("ref:tea:"),
        "{created}"
    );

    // a1: six invites, iv03 unfollows inside the hold.
    for i in 1..=6 {
        subscribe(&client, &base, &format!("iv{i:02}"), "a1").await;
        if i == 3 {
            post(&client, &base, &PLAIN.event("iv03", "unsubscribe", None)).await;
        }
    }
    // a2: iv07 first, who asks for a code of their own; a2 comes back through it (a
    // mutual invite: neither counts).
    subscribe(&client, &base, "iv07", "a2").await;
    post(&client, &base, &PLAIN.text("iv07", KEYWORD, 20)).await;
    eventually(20, "iv07's poster", || images(fake).len() == 4).await;
    post(
        &client,
        &base,
        &PLAIN.event_at("a2", "unsubscribe", None, now() - 1),
    )
    .await;
    subscribe(&client, &base, "a2", "iv07").await;
    for i in 8..=11 {
        subscribe(&client, &base, &format!("iv{i:02}"), "a2").await;
    }
    // iv20's subscribe, retried by WeChat (the same callback), then a rescan of a1's code.
    let retried = PLAIN.event("iv20", "subscribe", Some(&code_of("a2")));
    post(&client, &base, &retried).await;
    post(&client, &base, &retried).await;
    post(
        &client,
        &base,
        &PLAIN.event("iv20", "SCAN", Some(&code_of("a1")[8..])),
    )
    .await;
    // a3: a self-invite, then a burst of eight: the 7th and 8th are held.
    post(
        &client,
        &base,
        &PLAIN.event_at("a3", "unsubscribe", None, now() - 1),
    )
    .await;
    subscribe(&client, &base, "a3", "a3").await;
    for i in 12..=19 {
        subscribe(&client, &base, &format!("iv{i:02}"), "a3").await;
    }
    // SIGKILL before any hold is over: everything answered is on disk.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let second: Serve = serve_env(&config, env);
    let base = second.base.clone();
    let bind = base.trim_start_matches("http://");
    let held = admin(
        &client,
        &base,
        VIEWER,
        "/admin/v1/referrals/tea/held",
        false,
    )
    .await;
    let held: Vec<&str> = held["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["invitee"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["iv18", "iv19"]);
    let released = admin(
        &client,
        &base,
        OPERATOR,
        "/admin/v1/referrals/tea/invites/iv18/release",
        true,
    )
    .await;
    assert_eq!(released["invite"]["state"], "pending");
    // The CLI beside the server goes through its admin API.
    let (code, out, err) = cli(
        &["referral", "reject", "tea", "iv19", "--config", &config],
        &[("SIYU_ADMIN_TOKEN", OPERATOR), ("SIYU_BIND", bind)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Rejected"), "{out}");

    // Every hold ends; each inviter reaches both tiers: six notices.
    eventually(60, "six reward notices", || {
        texts(fake)
            .values()
            .flatten()
            .filter(|t| t.contains("你获得了"))
            .count()
            >= 6
    })
    .await;
    // A few more maturing runs: nothing is given twice.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let notices = texts(fake);
    for a in ["a1", "a2", "a3"] {
        let mine: Vec<&String> = notices[a]
            .iter()
            .filter(|t| t.contains("你获得了"))
            .collect();
        assert_eq!(mine.len(), 2, "{a}: {mine:?}");
        assert!(mine.iter().any(|t| t.contains("两人茶券")), "{a}: {mine:?}");
        assert!(mine.iter().any(|t| t.contains("五人茶券")), "{a}: {mine:?}");
    }
    assert!(!notices.contains_key("iv07"), "{notices:?}");

    // The progress reply to the keyword again.
    let reply = post(&client, &base, &PLAIN.text("a1", KEYWORD, 30)).await;
    assert!(reply.contains("已有 5 位好友"), "{reply}");

    let report = admin(&client, &base, VIEWER, "/admin/v1/referrals/tea", false).await;
    let inv = &report["invites"];
    let figures: Vec<i64> = [
        "pending",
        "held",
        "valid",
        "revoked",
        "rejected",
        "capped",
        "refused_self",
        "refused_mutual",
        "refused_not_new",
    ]
    .iter()
    .map(|k| inv[k].as_i64().unwrap_or_else(|| panic!("{k}: {report}")))
    .collect();
    assert_eq!(figures, [0, 0, 17, 1, 1, 0, 1, 2, 0], "{report}");
    assert_eq!(report["participants"], 4, "{report}");
    assert_eq!(report["new_followers"], 19, "{report}");
    assert_eq!(report["still_following"], 18, "{report}");
    let given: Vec<i64> = report["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["given"].as_i64().unwrap())
        .collect();
    assert_eq!(given, [3, 3], "{report}");
    let top: Vec<(String, i64)> = report["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["inviter"].as_str().unwrap().to_string(),
                t["valid"].as_i64().unwrap(),
            )
        })
        .take(3)
        .collect();
    assert_eq!(
        top,
        [
            ("a3".to_string(), 7),
            ("a1".to_string(), 5),
            ("a2".to_string(), 5)
        ]
    );
    let (code, out, err) = cli(
        &["referral", "report", "tea", "--json", "--config", &config],
        &[("SIYU_ADMIN_TOKEN", VIEWER), ("SIYU_BIND", bind)],
    );
    assert_eq!(code, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli, report);

    // The coupons: one per (inviter, tier).
    for batch in ["tea-2", "tea-5"] {
        let stats = admin(
            &client,
            &base,
            VIEWER,
            &format!("/admin/v1/coupons/{batch}/stats"),
            false,
        )
        .await;
        assert_eq!(stats["issued"], 3, "{stats}");
    }
    drop(second);
}
