//! Campaigns end to end against the fake WeChat API over real HTTP: channel choice per
//! follower (customer-service inside the window, template outside, skipped with the
//! reason), one coupon per follower, the report, delivery results from
//! TEMPLATESENDJOBFINISH, pause and resume, WeCom app messages and a group-robot
//! announcement, and the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::Method;
use siyu::campaign::{Channel, Progress};
use siyu::config::Settings;
use siyu::fake_wechat::{FakeWechat, FakeWechatHandle};
use siyu::follower::{Follower, CS_AFTER_MESSAGE};
use siyu::store::{SledStore, Store};

use crate::helpers::*;
use crate::outbox::{eventually, with_api};

const CUSTOM: &str = "/cgi-bin/message/custom/send";
const TEMPLATE: &str = "/cgi-bin/message/template/send";
const APP: &str = "/cgi-bin/message/send";
const ROBOT: &str = "/cgi-bin/webhook/send";

/// Writes followers straight into a (closed) store, as earlier callbacks would have.
pub fn seed(store_path: &Path, account: &str, followers: &[Follower]) {
    let store = open(store_path);
    for f in followers {
        siyu::store::put_follower(&store, account, f).unwrap();
    }
    store.flush().unwrap();
}

/// Opens a store another handle has just let go of (sled's flusher thread may hold it a
/// moment longer).
pub fn open(path: &Path) -> SledStore {
    for _ in 0..100 {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(siyu::store::StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{} stays locked", path.display())
}

/// A subscribed follower tagged `tags`; `window`: they wrote just now.
pub fn follower(openid: &str, tags: &[&str], window: bool) -> Follower {
    let mut f = Follower::new(openid);
    f.subscribed = true;
    f.tags = tags.iter().map(|t| t.to_string()).collect();
    f.attributes.insert("name".into(), format!("客人{openid}"));
    if window {
        f.open_cs_window(CS_AFTER_MESSAGE, now());
    }
    f
}

/// Settings talking to the fake, with a coupons file and `campaigns` as the campaigns file.
fn campaign_settings(dir: &Path, fake: &FakeWechatHandle, campaigns: &str) -> Settings {
    let mut s = with_api(dir, fake.base_url(), 0);
    std::fs::write(
        dir.join("coupons.toml"),
        "[[batch]]\nname = \"back\"\ntitle = \"回归礼\"\nvalue = \"满 100 减 20\"\nstock = 500\nvalid_days = 7\n",
    )
    .unwrap();
    std::fs::write(dir.join("campaigns.toml"), campaigns).unwrap();
    s.coupons_file = Some(dir.join("coupons.toml"));
    s.load_coupons().unwrap();
    s.campaigns_file = Some(dir.join("campaigns.toml"));
    s.load_campaigns().unwrap();
    s
}

async fn report(app: &TestApp, name: &str) -> serde_json::Value {
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/v1/campaigns/{name}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn wait_done(app: &TestApp, name: &str) {
    let store = app.store.clone();
    eventually(30, &format!("campaign {name} done"), || {
        store
            .campaign_run(name)
            .unwrap()
            .is_some_and(|r| r.state == siyu::campaign::RunState::Done)
    })
    .await;
}

const VIP: &str = r#"
[[campaign]]
name = "vip-back"
account = "plain"
audience = "tag:vip"
coupon = "back"
goals = [
  { metric = "sent", at_least = 8, by = "2099-12-31" },
  { metric = "coupons_redeemed", at_least = 5, by = "2000-01-01" },
  { metric = "new", at_least = 1, by = "2099-12-31" },
]

[campaign.message]
text = "{attr.name}，回归礼 {coupon.code} 请收好"

[campaign.template]
id = "TPL-BACK"
data = { first = "{attr.name}，回归礼到账", keyword1 = "{coupon.code}", keyword2 = "{coupon.expires}" }

[[campaign]]
name = "cs-only"
account = "plain"
audience = "tag:vip"

[campaign.message]
text = "只在窗口内"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_uses_the_window_then_templates_and_reports_every_follower() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = campaign_settings(dir.path(), &fake, VIP);
    let mut gone = follower("vip_gone", &["vip"], true);
    gone.subscribed = false;
    gone.unsubscribed_at = Some(now() - 60);
    let mut people = vec![gone, follower("plain_fan", &["fan"], true)];
    for i in 0..4 {
        people.push(follower(&format!("vip_in_{i}"), &["vip"], true));
        people.push(follower(&format!("vip_out_{i}"), &["vip"], false));
        fake.open_window(&format!("vip_in_{i}"), 5);
    }
    seed(&settings.storage_path, "plain", &people);
    let app = spawn_with(settings).await;

    // The dry run counts without writing.
    let r = app
        .admin(
            Method::GET,
            "/admin/v1/campaigns/vip-back/plan",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let plan = r.json();
    assert_eq!(plan["audience"], 9);
    assert_eq!(plan["by_channel"]["customer-service message"], 4);
    assert_eq!(plan["by_channel"]["template message"], 4);
    assert_eq!(plan["unreachable"]["unsubscribed"], 1);
    let r = app
        .admin(
            Method::GET,
            "/admin/v1/campaigns/cs-only/plan",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        r.json()["unreachable"]["outside the 48-hour window and the campaign has no template"],
        4
    );
    assert!(
        app.store.campaign_run("vip-back").unwrap().is_none(),
        "plan writes nothing"
    );

    // Viewers cannot start; operators can.
    let start = "/admin/v1/campaigns/vip-back/start";
    assert_eq!(
        app.admin(Method::POST, start, Some(VIEWER), None)
            .await
            .status,
        403
    );
    let r = app.admin(Method::POST, start, Some(OPERATOR), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_done(&app, "vip-back").await;

    // Inside the window: customer-service messages with the follower's own coupon.
    let mut codes = BTreeSet::new();
    let custom = fake.accepted(CUSTOM);
    assert_eq!(custom.len(), 4);
    for call in &custom {
        let to = call.body["touser"].as_str().unwrap();
        assert!(to.starts_with("vip_in_"), "{to}");
        let text = call.body["text"]["content"].as_str().unwrap();
        let code = text
            .strip_prefix(&format!("客人{to}，回归礼 "))
            .and_then(|t| t.strip_suffix(" 请收好"))
            .unwrap_or_else(|| panic!("{text}"));
        let coupon = app.store.coupon(code).unwrap().expect("a real code");
        assert_eq!(coupon.openid, to);
        codes.insert(code.to_string());
    }
    // Outside it: template messages, idempotent by client_msg_id.
    let templates = fake.accepted(TEMPLATE);
    assert_eq!(templates.len(), 4);
    for call in &templates {
        let to = call.body["touser"].as_str().unwrap();
        assert!(to.starts_with("vip_out_"), "{to}");
        assert_eq!(call.body["template_id"], "TPL-BACK");
        assert_eq!(
            call.body["data"]["first"]["value"],
            format!("客人{to}，回归礼到账")
        );
        assert_eq!(call.body["client_msg_id"].as_str().unwrap().len(), 40);
        let code = call.body["data"]["keyword1"]["value"].as_str().unwrap();
        assert_eq!(app.store.coupon(code).unwrap().unwrap().openid, to);
        codes.insert(code.to_string());
    }
    assert_eq!(codes.len(), 8, "one distinct code per follower");
    assert!(fake
        .calls()
        .iter()
        .all(|c| c.body["touser"] != "plain_fan" && c.body["touser"] != "vip_gone"));

    let r = report(&app, "vip-back").await;
    assert_eq!(
        (r["targeted"].as_u64(), r["sent"].as_u64()),
        (Some(9), Some(8)),
        "{r}"
    );
    assert_eq!(r["sent_by_channel"]["customer-service message"], 4);
    assert_eq!(r["sent_by_channel"]["template message"], 4);
    // The daily report counts the same sends, by how they went, on the day they went.
    let daily = app
        .admin(
            Method::GET,
            "/admin/v1/reports/daily?account=plain",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(daily.status, 200, "{}", daily.body);
    let sends = |how: &str| -> i64 {
        daily.json()["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["campaign_sends"][how].as_i64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (sends("custom"), sends("template")),
        (4, 4),
        "{}",
        daily.body
    );
    assert_eq!(r["skipped_by_reason"]["unsubscribed"], 1);
    // Its goals: 8 sent (met), none of its coupons redeemed by a day long past (missed),
    // no follower of the account new in the store's counters yet (open, still time).
    let goals: Vec<(i64, &str)> = r["goals"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|g| (g["value"].as_i64().unwrap(), g["status"].as_str().unwrap()))
        .collect();
    assert_eq!(goals, [(8, "met"), (0, "missed"), (0, "open")], "{r}");
    assert_eq!(
        (r["failed"].as_u64(), r["queued"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (r["coupons_issued"].as_u64(), r["coupons_redeemed"].as_u64()),
        (Some(8), Some(0))
    );

    // A code redeemed at the shop shows in the report; WeChat's delivery report of a
    // template message is recorded against the follower.
    let code = codes.iter().next().unwrap().clone();
    app.store
        .redeem_coupon(&code, now(), siyu::local_time::UtcOffset::CHINA)
        .unwrap()
        .unwrap();
    let Some(Progress::Sent {
        msgid: Some(msgid),
        channel: Channel::Template,
        ..
    }) = app
        .store
        .campaign_progress("vip-back", "vip_out_0")
        .unwrap()
    else {
        panic!("vip_out_0 got a template message")
    };
    let finished = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[vip_out_0]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID><Status><![CDATA[failed:user block]]></Status></xml>",
        PLAIN.to(),
        now()
    );
    assert_eq!(app.callback(PLAIN, &finished).await.status, 200);
    let r = report(&app, "vip-back").await;
    assert_eq!(r["coupons_redeemed"], 1, "{r}");
    assert_eq!(r["deliveries"]["failed:user block"], 1, "{r}");

    // Unknown is 404; defined but never started is 409.
    let r = app
        .admin(Method::GET, "/admin/v1/campaigns/nope", Some(VIEWER), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = app
        .admin(
            Method::GET,
            "/admin/v1/campaigns/cs-only",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    // A campaign runs once.
    let r = app.admin(Method::POST, start, Some(OPERATOR), None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_sends_nothing_until_resumed_and_then_everyone_once() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    let dir = tempfile::tempdir().unwrap();
    // 20 a second: 60 followers take about 3 s, time enough to pause in between.
    let settings = campaign_settings(
        dir.path(),
        &fake,
        "[[campaign]]\nname = \"slow\"\naccount = \"plain\"\naudience = \"tag:fan\"\nrate_per_sec = 20\n[campaign.message]\ntext = \"新品到店 {openid}\"\n",
    );
    let people: Vec<Follower> = (0..60)
        .map(|i| follower(&format!("fan_{i:02}"), &["fan"], true))
        .collect();
    seed(&settings.storage_path, "plain", &people);
    let app = spawn_with(settings).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns/slow/start",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "some sent", || fake.accepted(CUSTOM).len() >= 5).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns/slow/pause",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Calls already under way finish; then nothing moves.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let at_pause = fake.accepted(CUSTOM).len();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(fake.accepted(CUSTOM).len(), at_pause, "paused means paused");
    assert!(at_pause < 60, "paused before the end ({at_pause})");
    let r = report(&app, "slow").await;
    assert_eq!(r["state"], "paused");
    assert_eq!(
        r["queued"].as_u64().unwrap() + r["sent"].as_u64().unwrap(),
        r["targeted"].as_u64().unwrap(),
        "{r}"
    );
    // Resuming twice is one resume; pausing a paused campaign is fine too.
    for _ in 0..2 {
        let r = app
            .admin(
                Method::POST,
                "/admin/v1/campaigns/slow/resume",
                Some(OPERATOR),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_done(&app, "slow").await;
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for call in fake.accepted(CUSTOM) {
        *per.entry(call.body["touser"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per.len(), 60, "nobody left out");
    assert!(per.values().all(|&n| n == 1), "nobody twice: {per:?}");
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns/slow/pause",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        r.status, 409,
        "a done campaign cannot be paused: {}",
        r.body
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_campaign_sends_app_messages_and_one_robot_announcement() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The robot's key is a secret: read from the environment when it is sent.
    std::env::set_var("SIYU_TEST_ROBOT_KEY", "robot-key-123");
    let mut settings = campaign_settings(
        dir.path(),
        &fake,
        "[[campaign]]\nname = \"stocktake\"\naccount = \"corp\"\naudience = \"tag:store-manager\"\n\
         [campaign.message]\ntext = \"{attr.name}：周五盘点\"\n\
         [campaign.robot]\nkey_env = \"SIYU_TEST_ROBOT_KEY\"\ntext = \"各门店周五盘点\"\n",
    );
    for a in &mut settings.accounts {
        if let Some(api) = a.api.as_mut() {
            api.agent_id = Some(1000002);
        }
    }
    let mut people: Vec<Follower> = ["zhangsan", "lisi", "unknown_wang"]
        .iter()
        .map(|u| {
            let mut f = follower(u, &["store-manager"], false);
            f.subscribed = false; // app users never subscribe
            f
        })
        .collect();
    people.push(follower("clerk", &["clerk"], false));
    seed(&settings.storage_path, "corp", &people);
    let app = spawn_with(settings).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns/stocktake/start",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_done(&app, "stocktake").await;
    let sent: BTreeSet<String> = fake
        .accepted(APP)
        .iter()
        .map(|c| {
            assert_eq!(c.body["agentid"], 1000002);
            let to = c.body["touser"].as_str().unwrap().to_string();
            assert_eq!(c.body["text"]["content"], format!("客人{to}：周五盘点"));
            to
        })
        .collect();
    assert_eq!(
        sent,
        ["lisi", "unknown_wang", "zhangsan"]
            .map(String::from)
            .into()
    );
    let robot = fake.accepted(ROBOT);
    assert_eq!(robot.len(), 1, "one announcement");
    assert_eq!(robot[0].body["text"]["content"], "各门店周五盘点");
    assert!(robot[0].query.contains("key="), "{}", robot[0].query);
    let r = report(&app, "stocktake").await;
    assert_eq!(r["sent_by_channel"]["app message"], 2, "{r}");
    // WeCom lists an unknown user in `invaliduser`: a failure with that reason.
    assert_eq!(r["failed"], 1, "{r}");
    let reasons = r["failed_by_reason"].as_object().unwrap();
    assert!(reasons.keys().any(|k| k.contains("invalid")), "{r}");
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_delivers_a_repeated_template_send_once() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = with_api(dir.path(), fake.base_url(), 0);
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(open_store(&settings.storage_path));
    let api = settings.account("plain").unwrap().api.clone().unwrap();
    let client = siyu::api::ApiClient::new(api, store).unwrap();
    let mut m = siyu::api::TemplateMessage::new("o1", "T").field("first", "hi");
    m.client_msg_id = Some(siyu::campaign::client_msg_id("c", "o1"));
    let first = client.send_template(&m).await.unwrap();
    let again = client.send_template(&m).await.unwrap();
    assert_eq!(first, again, "the first send's msgid");
    assert_eq!(fake.templates_delivered(), 1);
    m.client_msg_id = Some(siyu::campaign::client_msg_id("c", "o2"));
    client.send_template(&m).await.unwrap();
    assert_eq!(fake.templates_delivered(), 2);
    fake.stop().await;
}

async fn cli(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        siyu(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_defines_plans_starts_and_reports_a_campaign() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::crash::crash_config(dir.path(), fake.base_url());
    let settings = Settings::load(Path::new(&config)).unwrap();
    let people = vec![
        follower("v1", &["vip"], true),
        follower("v2", &["vip"], true),
        follower("v3", &["vip"], false),
        follower("n1", &[], true),
    ];
    seed(&settings.storage_path, "plain", &people);
    let c = config.as_str();

    let (code, _, err) = cli(&[
        "campaign",
        "define",
        "hello",
        "--config",
        c,
        "--account",
        "plain",
        "--audience",
        "tag:vip AND",
        "--text",
        "hi",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("audience: expected a condition"), "{err}");
    let (code, _, err) = cli(&[
        "campaign",
        "define",
        "hello",
        "--config",
        c,
        "--account",
        "plain",
        "--audience",
        "tag:vip",
        "--text",
        "hi {content}",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no incoming message"), "{err}");
    let (code, out, err) = cli(&[
        "campaign",
        "define",
        "hello",
        "--config",
        c,
        "--account",
        "plain",
        "--audience",
        "tag:vip",
        "--text",
        "你好 {attr.name}",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("campaign hello defined"), "{out}");
    let (code, _, err) = cli(&[
        "campaign",
        "define",
        "hello",
        "--config",
        c,
        "--account",
        "plain",
        "--audience",
        "tag:vip",
        "--text",
        "again",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("already defined"), "{err}");

    let (code, out, _) = cli(&["campaign", "plan", "hello", "--config", c]).await;
    assert_eq!(code, 0);
    assert!(out.contains("audience  3"), "{out}");
    assert!(out.contains("2  by customer-service message"), "{out}");
    assert!(out.contains("1  outside the 48-hour window"), "{out}");
    let (_, out, _) = cli(&["campaign", "list", "--config", c]).await;
    assert!(out.contains("hello") && out.contains("waiting"), "{out}");

    let (code, _, err) = cli(&["campaign", "pause", "hello", "--config", c]).await;
    assert_eq!(code, 1, "a campaign not started cannot be paused");
    assert!(
        err.contains("only a running campaign can be paused"),
        "{err}"
    );

    let (code, out, err) = cli(&["campaign", "start", "hello", "--config", c]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("sent      2"), "{out}");
    let sent: BTreeSet<String> = fake
        .accepted(CUSTOM)
        .iter()
        .map(|c| c.body["text"]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sent,
        ["你好 客人v1", "你好 客人v2"].map(String::from).into()
    );

    let (code, out, _) = cli(&["campaign", "status", "hello", "--json", "--config", c]).await;
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            r["state"].as_str(),
            r["sent"].as_u64(),
            r["skipped"].as_u64()
        ),
        (Some("done"), Some(2), Some(1))
    );
    // Unix seconds for scripts, and beside them the local date-time (China time here).
    let started = r["started_at"].as_i64().expect("started_at");
    assert_eq!(
        r["started_at_local"].as_str(),
        Some(
            siyu::local_time::UtcOffset::CHINA
                .date_time(started)
                .as_str()
        )
    );
    let (_, out, _) = cli(&["campaign", "status", "hello", "--config", c]).await;
    assert!(out.contains("  started   20"), "{out}");
    // `siyu campaign status X --json | head -c 300`: the rest is dropped quietly (also
    // when the pipe is closed before the first write, which makes the EPIPE certain).
    for keep in [0, 300] {
        let args = ["campaign", "status", "hello", "--json", "--config", c].map(String::from);
        let (code, read, err) = tokio::task::spawn_blocking(move || {
            siyu_closing_stdout(&args.each_ref().map(String::as_str), keep)
        })
        .await
        .unwrap();
        assert_eq!((code, err.as_str()), (0, ""), "a closed pipe is no failure");
        assert!(keep == 0 || read.starts_with(b"{"), "{read:?}");
    }
    let (code, _, err) = cli(&["campaign", "start", "hello", "--config", c]).await;
    assert_eq!(code, 1);
    assert!(err.contains("runs once"), "{err}");
    let (code, _, err) = cli(&["campaign", "status", "nope", "--config", c]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no campaign `nope`"), "{err}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_send_is_never_repeated_and_a_spent_quota_waits_for_the_new_day() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    // The first template call finds the daily quota used up.
    let mut quota = siyu::fake_wechat::Fault::errcode(45009);
    quota.path = Some(TEMPLATE.into());
    fake.inject([quota]);
    let dir = tempfile::tempdir().unwrap();
    let settings = campaign_settings(
        dir.path(),
        &fake,
        "[[campaign]]\nname = \"cs\"\naccount = \"plain\"\naudience = \"tag:in\"\n\
         [campaign.message]\ntext = \"hi\"\n\
         [[campaign]]\nname = \"tpl\"\naccount = \"plain\"\naudience = \"tag:out\"\nrate_per_sec = 2\n\
         [campaign.template]\nid = \"T\"\ndata = { first = \"hi\" }\n",
    );
    let mut people: Vec<Follower> = (1..=3)
        .map(|i| follower(&format!("in_{i}"), &["in"], true))
        .collect();
    people.extend((1..=3).map(|i| follower(&format!("out_{i}"), &["out"], false)));
    seed(&settings.storage_path, "plain", &people);
    {
        // The state a crash leaves when it comes during a customer-service call to in_1:
        // queued, with `Sending` on disk.
        let store = open(&settings.storage_path);
        siyu::campaign::runner::start(&store, &settings, "cs", now()).unwrap();
        assert_eq!(
            siyu::campaign::runner::fill_chunk(&store, "cs", now()).unwrap(),
            Some(3)
        );
        store
            .campaign_record(
                "plain",
                "cs",
                "in_1",
                &Progress::Sending {
                    channel: Channel::Custom,
                },
                None,
            )
            .unwrap();
        store.flush().unwrap();
    }
    let app = spawn_with(settings).await;
    wait_done(&app, "cs").await;
    let to: BTreeSet<String> = fake
        .accepted(CUSTOM)
        .iter()
        .map(|c| c.body["touser"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        to,
        ["in_2", "in_3"].map(String::from).into(),
        "in_1 is not sent again"
    );
    let r = report(&app, "cs").await;
    assert_eq!(r["failed_by_reason"][siyu::campaign::IN_DOUBT], 1, "{r}");

    let r = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns/tpl/start",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the quota refusal", || fake.calls_to(TEMPLATE) >= 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        fake.calls_to(TEMPLATE),
        1,
        "one call learns the quota is spent; the rest wait"
    );
    let r = report(&app, "tpl").await;
    assert_eq!(
        (r["queued"].as_u64(), r["failed"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    let waiting = app.store.outbox_page(None, 100).unwrap();
    assert_eq!(waiting.len(), 3);
    let tomorrow = siyu::campaign::send::next_china_midnight_ms(siyu::outbox::now_ms());
    assert!(waiting
        .iter()
        .any(|i| i.due_ms == tomorrow
            && i.last_error.as_deref().is_some_and(|e| e.contains("45009"))));
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_campaign_is_one_call_and_its_job_report_is_recorded() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = campaign_settings(
        dir.path(),
        &fake,
        "[[campaign]]\nname = \"d12\"\naccount = \"plain\"\naudience = \"tag:fan\"\n\
         [campaign.mass]\ntext = \"双十二全场 8 折\"\n\
         [[campaign]]\nname = \"lonely\"\naccount = \"plain\"\naudience = \"tag:only\"\n\
         [campaign.mass]\ntext = \"只有一位\"\n",
    );
    // 700 fans (more than one 500-follower page), one unsubscribed, one not a fan.
    let mut people: Vec<Follower> = (0..700)
        .map(|i| follower(&format!("fan_{i:03}"), &["fan"], false))
        .collect();
    people[3].subscribed = false;
    people.push(follower("only_one", &["only"], false));
    seed(&settings.storage_path, "plain", &people);
    let app = spawn_with(settings).await;
    for name in ["d12", "lonely"] {
        let r = app
            .admin(
                Method::POST,
                &format!("/admin/v1/campaigns/{name}/start"),
                Some(OPERATOR),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        wait_done(&app, name).await;
    }
    let calls = fake.accepted("/cgi-bin/message/mass/send");
    assert_eq!(
        calls.len(),
        1,
        "one call for the 699 reachable fans; none for a lone follower"
    );
    let to: BTreeSet<&str> = calls[0].body["touser"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(to.len(), 699);
    assert!(!to.contains("fan_003") && !to.contains("only_one"));
    assert_eq!(calls[0].body["text"]["content"], "双十二全场 8 折");
    assert_eq!(calls[0].body["clientmsgid"].as_str().unwrap().len(), 40);

    let r = report(&app, "d12").await;
    assert_eq!(
        (r["targeted"].as_u64(), r["sent"].as_u64()),
        (Some(700), Some(699)),
        "{r}"
    );
    assert_eq!(r["skipped_by_reason"]["unsubscribed"], 1);
    let msg_id = r["mass_jobs"][0]["msg_id"].as_i64().unwrap();
    assert_eq!(r["mass_jobs"][0]["followers"], 699);
    assert_eq!(r["mass_jobs"][0]["status"], serde_json::Value::Null);
    let finished = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[system]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>{msg_id}</MsgID><Status><![CDATA[send success]]></Status><TotalCount>699</TotalCount><FilterCount>650</FilterCount><SentCount>640</SentCount><ErrorCount>10</ErrorCount></xml>",
        PLAIN.to(),
        now()
    );
    assert_eq!(app.callback(PLAIN, &finished).await.status, 200);
    let r = report(&app, "d12").await;
    let job = &r["mass_jobs"][0];
    assert_eq!(job["status"], "send success", "{r}");
    assert_eq!(
        (
            job["filter_count"].as_u64(),
            job["sent_count"].as_u64(),
            job["error_count"].as_u64()
        ),
        (Some(650), Some(640), Some(10))
    );
    let r = report(&app, "lonely").await;
    assert_eq!(r["skipped"], 1, "{r}");
    assert!(r["skipped_by_reason"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.contains("at least 2")));
    app.stop().await;
    fake.stop().await;
}
