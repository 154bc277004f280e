//! The durable outbox end to end: callbacks queue calls to WeChat in the same write as the
//! follower change, the background worker delivers them to the fake WeChat API over real
//! HTTP, retries transient failures, dead-letters permanent ones, and never makes a
//! callback wait on the network.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use siyu::api::ApiSettings;
use siyu::config::{AccountKind, Secret, Settings};
use siyu::fake_wechat::{FakeWechat, FakeWechatHandle, Fault};
use siyu::store::Store;

use crate::helpers::*;

const BATCH_TAG: &str = "/cgi-bin/tags/members/batchtagging";
const BATCH_UNTAG: &str = "/cgi-bin/tags/members/batchuntagging";
const CREATE_TAG: &str = "/cgi-bin/tags/create";
const WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";
const MARK_TAG: &str = "/cgi-bin/externalcontact/mark_tag";

/// The test settings with every account talking to `base` (the fake), and a worker quick
/// enough for tests: retries from 50 ms, tag batches gathered for `tag_delay_ms`.
pub fn with_api(dir: &std::path::Path, base: &str, tag_delay_ms: u64) -> Settings {
    let mut s = settings(dir);
    for a in &mut s.accounts {
        let (kind, id) = (a.kind, a.receive_id.clone());
        let mut api = ApiSettings::new(a.id.clone(), kind, id, Secret::new("app-secret"));
        api.api_base = base.to_string();
        api.timeout = Duration::from_millis(500);
        api.rate_per_sec = 0.0;
        if kind == AccountKind::Wecom {
            api.corp_tags
                .insert("wecom-contact".into(), "etCONTACT".into());
        }
        a.api = Some(api);
    }
    s.outbox.retry.base_ms = 50;
    s.outbox.retry.max_ms = 200;
    s.outbox.retry.max_attempts = 4;
    s.outbox.tag_batch_delay_ms = tag_delay_ms;
    s
}

/// Polls `done` every 20 ms until it holds; fails the test after `secs`.
pub async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn queue_len(store: &dyn Store) -> usize {
    store.outbox_page(None, 10_000).unwrap().len()
}

fn dead(store: &dyn Store) -> Vec<siyu::outbox::DeadItem> {
    store.dead_letters(None, 1000).unwrap()
}

/// The openids of every accepted call to `path`, one list per call.
fn openid_lists(fake: &FakeWechatHandle, path: &str) -> Vec<Vec<String>> {
    fake.accepted(path)
        .iter()
        .map(|c| {
            c.body["openid_list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_of_120_followers_take_three_batch_calls() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = with_api(dir.path(), fake.base_url(), 1500);
    std::fs::write(
        s.replies_dir.join("zz_unvip.toml"),
        "[[rule]]\nname = \"drop-vip\"\nkeywords = [\"取消会员\"]\nreply = \"已取消\"\nremove_tags = [\"vip\"]\n",
    )
    .unwrap();
    let app = spawn_with(s).await;

    for (round, (word, path)) in [("升级会员", BATCH_TAG), ("取消会员", BATCH_UNTAG)]
        .into_iter()
        .enumerate()
    {
        // 120 followers, 20 at a time: all queued well within the batch delay.
        for chunk in (0..120).collect::<Vec<u32>>().chunks(20) {
            let calls = chunk.iter().map(|i| {
                let msg_id = 1000 * (round as u64 + 1) + *i as u64;
                let xml = PLAIN.text(&format!("o_tag_{i:03}"), word, msg_id);
                let app = &app;
                async move { app.exchange(PLAIN, &xml).await }
            });
            for reply in futures_util::future::join_all(calls).await {
                let reply = reply.expect("every callback answered");
                assert!(
                    reply.contains(if path == BATCH_TAG {
                        "已升级"
                    } else {
                        "已取消"
                    }),
                    "{reply}"
                );
            }
        }
        eventually(10, "the outbox drains", || {
            queue_len(app.store.as_ref()) == 0
        })
        .await;
        let lists = openid_lists(&fake, path);
        let mut sizes: Vec<usize> = lists.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [20, 50, 50], "{word}: three calls of at most 50");
        let all: BTreeSet<String> = lists.into_iter().flatten().collect();
        assert_eq!(all.len(), 120, "{word}: every follower exactly once");
    }
    // The tag was created once, on first use, and its id cached.
    assert_eq!(fake.calls_to(CREATE_TAG), 1);
    assert!(app.store.tag_id("plain", "vip").unwrap().is_some());
    assert!(dead(app.store.as_ref()).is_empty());
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_is_answered_while_wechat_is_down_and_its_effect_sent_later() {
    // A port where nothing listens yet.
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let base = fake.base_url().to_string();
    let addr = base.trim_start_matches("http://").to_string();
    fake.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut s = with_api(dir.path(), &base, 0);
    s.outbox.retry.max_attempts = 1000;
    let app = spawn_with(s).await;
    let reply = app
        .exchange(PLAIN, &PLAIN.text("o_down", "升级会员", 1))
        .await
        .expect("answered from the rules, not from WeChat");
    assert_eq!(tag(&reply, "Content").as_deref(), Some("已升级"));
    let f = app.store.follower("plain", "o_down").unwrap().unwrap();
    assert!(f.tags.contains("vip"), "local state is the truth at once");

    eventually(10, "a failed attempt is recorded", || {
        app.store
            .outbox_page(None, 1)
            .unwrap()
            .first()
            .is_some_and(|i| i.attempts >= 1)
    })
    .await;
    let item = app.store.outbox_page(None, 1).unwrap().remove(0);
    let error = item.last_error.unwrap();
    assert!(error.contains("network"), "{error}");

    // WeChat is back: the change reaches it.
    let fake = FakeWechat::start(&addr).unwrap();
    eventually(10, "the outbox drains", || {
        queue_len(app.store.as_ref()) == 0
    })
    .await;
    assert_eq!(openid_lists(&fake, BATCH_TAG), [vec!["o_down".to_string()]]);
    assert!(dead(app.store.as_ref()).is_empty());
    app.stop().await;
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_permanent_ones_dead_lettered() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(with_api(dir.path(), fake.base_url(), 0)).await;
    let on_tagging = |f: Fault| Fault {
        path: Some(BATCH_TAG.into()),
        ..f
    };
    // First make sure the tag exists, so each case below is exactly one batch call.
    app.exchange(PLAIN, &PLAIN.text("o_warmup", "升级会员", 1))
        .await;
    eventually(10, "warm-up delivered", || {
        queue_len(app.store.as_ref()) == 0
    })
    .await;

    let transient = [
        ("-1 system busy", Fault::errcode(-1)),
        ("45009 quota", Fault::errcode(45009)),
        (
            "HTTP 502",
            Fault {
                status: Some(502),
                ..Fault::default()
            },
        ),
        (
            "dropped connection",
            Fault {
                drop: true,
                ..Fault::default()
            },
        ),
        (
            "slower than the client's 500 ms timeout",
            Fault {
                delay_ms: Some(1500),
                ..Fault::default()
            },
        ),
    ];
    for (i, (name, fault)) in transient.into_iter().enumerate() {
        let openid = format!("o_transient_{i}");
        let before = fake.calls_to(BATCH_TAG);
        fake.inject([on_tagging(fault)]);
        app.exchange(PLAIN, &PLAIN.text(&openid, "升级会员", 10 + i as u64))
            .await;
        eventually(10, name, || queue_len(app.store.as_ref()) == 0).await;
        assert_eq!(
            fake.calls_to(BATCH_TAG) - before,
            2,
            "{name}: one failed attempt, one retry"
        );
        let lists = openid_lists(&fake, BATCH_TAG);
        assert_eq!(
            lists.last().unwrap(),
            std::slice::from_ref(&openid),
            "{name}"
        );
        assert!(dead(app.store.as_ref()).is_empty(), "{name}");
    }

    // Permanent errors: no retry, a dead letter with WeChat's reason.
    let permanent = [
        (40003, "invalid openid"),
        (45059, "maximum of 20 tags"),
        (43004, "unsubscribed"),
    ];
    for (i, (code, reason)) in permanent.into_iter().enumerate() {
        let openid = format!("o_permanent_{i}");
        let before = fake.calls_to(BATCH_TAG);
        fake.inject([on_tagging(Fault::errcode(code))]);
        app.exchange(PLAIN, &PLAIN.text(&openid, "升级会员", 20 + i as u64))
            .await;
        eventually(10, "dead-lettered", || {
            dead(app.store.as_ref()).len() == i + 1
        })
        .await;
        assert_eq!(fake.calls_to(BATCH_TAG) - before, 1, "{code}: tried once");
        let d = dead(app.store.as_ref()).pop().unwrap();
        assert!(
            d.reason.contains(&code.to_string()) && d.reason.contains(reason),
            "{code}: {}",
            d.reason
        );
        assert_eq!(d.item.effect.follower(), openid);
    }
    assert_eq!(queue_len(app.store.as_ref()), 0);

    // A transient failure that never ends gives up after max_attempts (4).
    fake.inject((0..4).map(|_| on_tagging(Fault::errcode(-1))));
    app.exchange(PLAIN, &PLAIN.text("o_giveup", "升级会员", 30))
        .await;
    eventually(10, "given up", || dead(app.store.as_ref()).len() == 4).await;
    let d = dead(app.store.as_ref()).pop().unwrap();
    assert!(
        d.reason.contains("gave up after 4 attempts"),
        "{}",
        d.reason
    );

    // The admin API shows the dead letters; an operator requeues one and it goes out.
    let r = app
        .admin(
            Method::GET,
            "/admin/v1/outbox?account=plain",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["accounts"]["plain"]["dead"], 4);
    assert_eq!(report["dead"].as_array().unwrap().len(), 4);
    let id = d.item.id;
    let path = format!("/admin/v1/outbox/{id}/retry");
    let r = app.admin(Method::POST, &path, Some(VIEWER), None).await;
    assert_eq!(r.status, 403, "a viewer cannot requeue");
    let r = app.admin(Method::POST, &path, Some(OPERATOR), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the requeued item is delivered", || {
        queue_len(app.store.as_ref()) == 0 && dead(app.store.as_ref()).len() == 3
    })
    .await;
    assert_eq!(
        openid_lists(&fake, BATCH_TAG).last().unwrap(),
        &["o_giveup".to_string()]
    );
    let r = app.admin(Method::POST, &path, Some(OPERATOR), None).await;
    assert_eq!(r.status, 404, "no longer dead: {}", r.body);
    let audit = app.store.audit(10).unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "outbox.retry" && e.who == "ops-li"));
    app.stop().await;
    fake.stop().await;
}

fn add_contact(external: &str, code: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[staff-zhang]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID><WelcomeCode><![CDATA[{code}]]></WelcomeCode><AgentID>218</AgentID></xml>",
        now()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wecom_contact_gets_the_rules_welcome_within_20_seconds_and_corp_tags() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(with_api(dir.path(), fake.base_url(), 0)).await;
    let sent_at = now_ms();
    assert_eq!(
        app.exchange(CORP, &add_contact("wmNEW01", "CODE-1")).await,
        None,
        "WeCom takes no passive reply for this event"
    );
    eventually(19, "the welcome message is sent", || {
        fake.accepted(WELCOME).len() == 1
    })
    .await;
    let call = &fake.accepted(WELCOME)[0];
    assert_eq!(call.body["welcome_code"], "CODE-1");
    assert_eq!(call.body["text"]["content"], "欢迎添加企业微信");
    let latency = call.at - sent_at;
    assert!(latency < 20_000, "within the code's 20 s: {latency} ms");
    eprintln!("welcome delivered {latency} ms after the callback was sent");

    // The rule's tag, mirrored as the corp tag mapped in the config, by the staff member.
    eventually(10, "mark_tag", || fake.accepted(MARK_TAG).len() == 1).await;
    let mark = &fake.accepted(MARK_TAG)[0];
    assert_eq!(mark.body["userid"], "staff-zhang");
    assert_eq!(mark.body["external_userid"], "wmNEW01");
    assert_eq!(mark.body["add_tag"], serde_json::json!(["etCONTACT"]));

    // A code is usable once: WeChat refuses the same code again, permanently.
    app.exchange(CORP, &add_contact("wmNEW02", "CODE-1")).await;
    eventually(10, "dead-lettered", || dead(app.store.as_ref()).len() == 1).await;
    let reason = dead(app.store.as_ref())[0].reason.clone();
    assert!(!reason.is_empty());
    app.stop().await;
    fake.stop().await;
}

fn now_ms() -> i64 {
    siyu::outbox::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_what_wechat_would_refuse_without_calling_it() {
    use siyu::api::ApiClient;
    use siyu::follower::{CsWindow, Follower};
    use siyu::outbox::worker::{Channel, Worker};
    use siyu::outbox::{Effect, NewItem};
    use siyu::protocol::Reply;
    use siyu::store::{Answer, CallbackKey, Commit, MemoryStore};
    use std::collections::HashMap;
    use std::sync::Arc;

    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.open_window("*", 5);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let mut channels = HashMap::new();
    for (account, kind) in [("off", AccountKind::Official), ("corp", AccountKind::Wecom)] {
        let mut api = ApiSettings::new(account, kind, "wx-app", Secret::new("s"));
        api.api_base = fake.base_url().to_string();
        let client = Arc::new(ApiClient::new(api.clone(), store.clone()).unwrap());
        channels.insert(account.to_string(), Channel::new(client, &api));
    }
    let worker = Arc::new(Worker::new(
        store.clone(),
        channels,
        siyu::config::OutboxSettings::default(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let now = siyu::outbox::now_ms();
    // A follower whose window has two messages left, and one whose window closed.
    for (openid, window) in [
        (
            "o_open",
            Some(CsWindow {
                remaining: 2,
                until: now / 1000 + 3600,
            }),
        ),
        (
            "o_closed",
            Some(CsWindow {
                remaining: 5,
                until: now / 1000 - 1,
            }),
        ),
    ] {
        let key = CallbackKey {
            account: "off",
            openid,
            dedupe_key: "k",
            now: now / 1000,
            expires_at: now / 1000 + 60,
        };
        store
            .apply_callback(key, &mut |_| Commit {
                follower: Some(Follower {
                    cs_window: window,
                    ..Follower::new(openid)
                }),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![],
                counts: vec![],
            })
            .unwrap();
    }
    let item = |effect| NewItem {
        effect,
        origin: "test".into(),
        not_before_ms: 0,
    };
    let text = |openid: &str, n: u32| {
        item(Effect::Custom {
            openid: openid.into(),
            message: Reply::Text {
                content: format!("m{n}"),
            },
        })
    };
    store
        .enqueue(
            "off",
            vec![
                text("o_open", 1),
                text("o_open", 2),
                text("o_open", 3),
                text("o_closed", 4),
                text("o_unknown", 5),
            ],
            now,
        )
        .unwrap();
    store
        .enqueue(
            "corp",
            vec![
                item(Effect::Welcome {
                    welcome_code: "LATE".into(),
                    text: "hi".into(),
                    expires_at: now / 1000 - 1,
                }),
                item(Effect::CorpTag {
                    staff: "s".into(),
                    external_userid: "wm1".into(),
                    tag: "unmapped".into(),
                    add: true,
                }),
            ],
            now,
        )
        .unwrap();
    let report = worker.pass().await.unwrap();
    assert_eq!((report.delivered, report.dead), (2, 5), "{report:?}");
    let sent: Vec<String> = fake
        .accepted("/cgi-bin/message/custom/send")
        .iter()
        .map(|c| c.body["text"]["content"].as_str().unwrap().to_string())
        .collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(sent_sorted.len(), 2, "{sent:?}");
    assert!(sent_sorted
        .iter()
        .all(|m| m == "m1" || m == "m2" || m == "m3"));
    assert_eq!(
        fake.calls_to(WELCOME),
        0,
        "an expired code is not even tried"
    );
    assert_eq!(fake.calls_to(MARK_TAG), 0);
    let reasons: Vec<String> = dead(store.as_ref()).into_iter().map(|d| d.reason).collect();
    for want in [
        "allowance is used up",
        "outside the customer-service window",
        "unknown follower o_unknown",
        "WelcomeCode expired",
        "no WeCom corp tag id for tag `unmapped`",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want} in {reasons:?}"
        );
    }
    let f = store.follower("off", "o_open").unwrap().unwrap();
    assert_eq!(f.cs_window.unwrap().remaining, 0, "two slots used");
    fake.stop().await;
}

#[tokio::test]
async fn simulate_shows_what_would_be_queued_for_wechat() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: a simulation never calls WeChat.
    let app = spawn_with(with_api(dir.path(), "http://127.0.0.1:9", 0)).await;
    let body = r#"{"account":"plain","from":"o_sim","text":"升级会员"}"#;
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/simulate",
            Some(VIEWER),
            Some(body.into()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let effects = r.json()["effects"].clone();
    assert_eq!(effects[0]["describe"], "add tag vip to o_sim", "{effects}");
    assert_eq!(effects[0]["effect"]["kind"], "tag");
    assert_eq!(queue_len(app.store.as_ref()), 0, "a dry run queues nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_go_out_in_order_and_only_inside_the_window() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = with_api(dir.path(), fake.base_url(), 0);
    std::fs::write(
        s.replies_dir.join("zz_followups.toml"),
        r#"
[[rule]]
name = "gift"
keywords = ["福利"]
reply = "福利来了"
followups = [
  { text = "第一条 {openid}" },
  { after = 1, image = "MEDIA_GIFT" },
  { news = [{ title = "春季茶单", description = "新品", url = "https://tea.example.com/m", pic_url = "https://tea.example.com/p.jpg" }] },
]

[[rule]]
name = "menu-gift"
priority = 10
event = "click"
key = "MENU_GIFT"
reply = "菜单福利"
followups = [{ text = "m1" }, { text = "m2" }, { text = "m3" }, { text = "m4" }, { text = "m5" }]
"#,
    )
    .unwrap();
    let app = spawn_with(s).await;
    const CUSTOM: &str = "/cgi-bin/message/custom/send";

    // A message opens 5 messages within 48 hours: all three go, in order, spaced out.
    fake.open_window("o_gift", 5);
    let reply = app
        .exchange(PLAIN, &PLAIN.text("o_gift", "福利", 1))
        .await
        .unwrap();
    assert_eq!(tag(&reply, "Content").as_deref(), Some("福利来了"));
    eventually(15, "three follow-ups", || fake.accepted(CUSTOM).len() == 3).await;
    let calls = fake.accepted(CUSTOM);
    let kinds: Vec<&str> = calls
        .iter()
        .map(|c| c.body["msgtype"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "image", "news"]);
    assert_eq!(calls[0].body["text"]["content"], "第一条 o_gift");
    assert_eq!(calls[1].body["image"]["media_id"], "MEDIA_GIFT");
    assert_eq!(calls[2].body["news"]["articles"][0]["title"], "春季茶单");
    for pair in calls.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= 900,
            "spaced out: {} ms",
            pair[1].at - pair[0].at
        );
    }
    let f = app.store.follower("plain", "o_gift").unwrap().unwrap();
    assert_eq!(f.cs_window.unwrap().remaining, 2, "three of five used");

    // A menu click opens only 3 within a minute: two of the five are refused locally,
    // without calling WeChat.
    fake.open_window("o_menu", 3);
    app.exchange(PLAIN, &PLAIN.event("o_menu", "CLICK", Some("MENU_GIFT")))
        .await;
    eventually(15, "the click's follow-ups settle", || {
        dead(app.store.as_ref()).len() == 2 && queue_len(app.store.as_ref()) == 0
    })
    .await;
    let to_menu = fake
        .calls()
        .into_iter()
        .filter(|c| c.path == CUSTOM && c.body["touser"] == "o_menu")
        .count();
    assert_eq!(to_menu, 3, "WeChat was asked exactly three times");
    for d in dead(app.store.as_ref()) {
        assert!(d.reason.contains("used up"), "{}", d.reason);
    }
    app.stop().await;
    fake.stop().await;
}
