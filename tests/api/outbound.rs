//! The outbound API client against the fake WeChat server, over real HTTP on port 0:
//! shared tokens (single flight, persisted, refreshed once on refusal), errcode mapping,
//! the platform's limits, and transport failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use siyu::api::{ApiClient, ApiError, ApiSettings, CustomMessage, TemplateMessage};
use siyu::config::{AccountKind, Secret};
use siyu::fake_wechat::{FakeWechat, FakeWechatHandle, Fault};
use siyu::store::{MemoryStore, Store};

const APP_ID: &str = "wx0123456789abcdef";
const APP_SECRET: &str = "app-secret-never-shown";
const TOKEN: &str = "/cgi-bin/token";
const TAGS: &str = "/cgi-bin/tags/get";

fn settings(fake: &FakeWechatHandle, kind: AccountKind) -> ApiSettings {
    ApiSettings {
        api_base: fake.base_url().to_string(),
        timeout: Duration::from_secs(5),
        agent_id: Some(1000002),
        ..ApiSettings::new("demo", kind, APP_ID, Secret::new(APP_SECRET))
    }
}

fn official(fake: &FakeWechatHandle, store: Arc<dyn Store>) -> ApiClient {
    ApiClient::new(settings(fake, AccountKind::Official), store).unwrap()
}

fn start() -> FakeWechatHandle {
    FakeWechat::start("127.0.0.1:0").unwrap()
}

/// The `access_token` a recorded call carried.
fn token_of(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("access_token="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_calls_fetch_one_token() {
    let fake = start();
    let client = Arc::new(official(&fake, Arc::new(MemoryStore::default())));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.list_tags().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.calls_to(TOKEN), 1, "one token fetch for 50 callers");
    assert_eq!(fake.calls_to(TAGS), 50);
    fake.stop().await;
}

#[tokio::test]
async fn a_token_survives_a_restart_through_the_store() {
    let fake = start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Arc::new(crate::helpers::open_store(&path));
        let client = official(&fake, store.clone());
        client.list_tags().await.unwrap();
        drop(client);
        store.flush().unwrap();
    }
    // A new process: the store reopened, a new client.
    let store = Arc::new(crate::helpers::open_store(&path));
    let client = official(&fake, store);
    client.list_tags().await.unwrap();
    assert_eq!(fake.calls_to(TOKEN), 1, "the stored token is reused");
    let calls = fake.calls();
    let tags: Vec<_> = calls.iter().filter(|c| c.path == TAGS).collect();
    assert_eq!(token_of(&tags[0].query), token_of(&tags[1].query));
    fake.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_call_retried_once() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    client.list_tags().await.unwrap();
    fake.inject([Fault::errcode(40001)]);
    client.list_tags().await.unwrap();
    assert_eq!(fake.calls_to(TOKEN), 2);
    let calls = fake.calls();
    let tags: Vec<_> = calls.iter().filter(|c| c.path == TAGS).collect();
    assert_eq!(tags.len(), 3, "warm-up, refused, retried");
    assert_ne!(
        token_of(&tags[1].query),
        token_of(&tags[2].query),
        "the retry carries the new token"
    );

    // Refused twice: the error surfaces after one refresh, no loop. (Scoped to the tags
    // path: an unscoped fault would hit the token fetch in between.)
    let refused = Fault {
        path: Some(TAGS.into()),
        ..Fault::errcode(40014)
    };
    fake.inject([refused.clone(), refused]);
    assert_eq!(client.list_tags().await, Err(ApiError::InvalidAccessToken));
    assert_eq!(fake.calls_to(TOKEN), 3);
    assert_eq!(fake.calls_to(TAGS), 5);
    fake.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refused_by_the_fake_and_replaced() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    client.list_tags().await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/fake/expire_tokens", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    client.list_tags().await.unwrap();
    assert_eq!(fake.calls_to(TOKEN), 2);

    // An unknown token is 40014, an expired one 42001.
    let stale = client.access_token().await.unwrap();
    for (name, token, code) in [("unknown", "nope", 40014), ("fresh", stale.expose(), 0)] {
        let answer: Value = http
            .get(format!("{}{TAGS}?access_token={token}", fake.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer["errcode"].as_i64().unwrap_or(0),
            code,
            "{name}: {answer}"
        );
    }
    http.post(format!("{}/fake/expire_tokens", fake.base_url()))
        .send()
        .await
        .unwrap();
    let answer: Value = http
        .get(format!(
            "{}{TAGS}?access_token={}",
            fake.base_url(),
            stale.expose()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errcode"], 42001, "{answer}");
    fake.stop().await;
}

#[tokio::test]
async fn each_error_class_maps_to_its_variant_and_classification() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    client.list_tags().await.unwrap();
    let cases = [
        (
            "system busy",
            Fault::errcode(-1),
            ApiError::SystemBusy,
            true,
        ),
        (
            "daily quota",
            Fault::errcode(45009),
            ApiError::DailyQuotaReached,
            true,
        ),
        (
            "minute quota",
            Fault::errcode(45011),
            ApiError::MinuteQuotaReached,
            true,
        ),
        (
            "bad secret",
            Fault::errcode(40125),
            ApiError::InvalidAppSecret,
            false,
        ),
        (
            "ip whitelist",
            Fault::errcode(40164),
            ApiError::IpNotWhitelisted,
            false,
        ),
        (
            "unsubscribed",
            Fault::errcode(43004),
            ApiError::Unsubscribed,
            false,
        ),
        (
            "invalid openid",
            Fault::errcode(40003),
            ApiError::InvalidOpenid,
            false,
        ),
        (
            "unknown errcode",
            Fault {
                errcode: Some(48001),
                errmsg: Some("api unauthorized".into()),
                ..Fault::default()
            },
            ApiError::Other {
                code: 48001,
                message: "api unauthorized".into(),
            },
            false,
        ),
        (
            "bad gateway",
            Fault {
                status: Some(502),
                ..Fault::default()
            },
            ApiError::Http(502),
            true,
        ),
    ];
    for (name, fault, want, transient) in cases {
        fake.inject([fault]);
        let got = client.list_tags().await;
        assert_eq!(got.as_ref().err(), Some(&want), "{name}");
        assert_eq!(want.is_transient(), transient, "{name}: is_transient");
        assert!(!want.is_token_error(), "{name}: not a token error");
    }
    assert_eq!(fake.calls_to(TOKEN), 1, "no refresh for non-token errors");

    // A wrong secret on the token fetch itself.
    let fresh = official(&fake, Arc::new(MemoryStore::default()));
    fake.inject([Fault {
        path: Some(TOKEN.into()),
        ..Fault::errcode(40125)
    }]);
    assert_eq!(fresh.list_tags().await, Err(ApiError::InvalidAppSecret));
    fake.stop().await;
}

#[tokio::test]
async fn tagging_120_followers_takes_three_calls_of_at_most_50() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    let tag = client.create_tag("vip").await.unwrap();
    assert_eq!(client.create_tag("vip").await, Err(ApiError::TagNameExists));
    let openids: Vec<String> = (0..120).map(|i| format!("o{i:03}")).collect();
    client.batch_tag(tag, &openids).await.unwrap();
    let sizes: Vec<usize> = fake
        .calls()
        .iter()
        .filter(|c| c.path == "/cgi-bin/tags/members/batchtagging")
        .map(|c| c.body["openid_list"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [50, 50, 20]);
    let tags = client.list_tags().await.unwrap();
    assert_eq!((tags[0].id, tags[0].count), (tag, 120));
    assert_eq!(client.user_info("o007").await.unwrap().tagid_list, [tag]);

    client.batch_untag(tag, &openids[..60]).await.unwrap();
    assert_eq!(client.list_tags().await.unwrap()[0].count, 60);

    // The fake enforces the limit itself: 51 openids in one call is refused.
    let token = client.access_token().await.unwrap();
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/tags/members/batchtagging?access_token={}",
            fake.base_url(),
            token.expose()
        ))
        .json(&json!({ "openid_list": &openids[..51], "tagid": tag }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errcode"], 40032, "{answer}");
    fake.stop().await;
}

#[tokio::test]
async fn customer_service_messages_need_an_open_window() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    let hello = CustomMessage::text("你好");
    assert_eq!(
        client.send_custom("o1", &hello).await,
        Err(ApiError::OutOfWindow)
    );
    // Opened over the control endpoint, for two messages.
    let r = reqwest::Client::new()
        .post(format!("{}/fake/window", fake.base_url()))
        .json(&json!({ "openid": "o1", "messages": 2 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    client.send_custom("o1", &hello).await.unwrap();
    let card = CustomMessage::News {
        title: "T".into(),
        description: "D".into(),
        url: "https://example.com".into(),
        picurl: "https://example.com/p.png".into(),
    };
    client.send_custom("o1", &card).await.unwrap();
    assert_eq!(
        client.send_custom("o1", &hello).await,
        Err(ApiError::OverResponseCount)
    );
    let sent = fake.calls();
    let bodies: Vec<&Value> = sent
        .iter()
        .filter(|c| c.path == "/cgi-bin/message/custom/send")
        .map(|c| &c.body)
        .collect();
    assert_eq!(bodies[1]["text"]["content"], "你好");
    assert_eq!(bodies[2]["news"]["articles"][0]["title"], "T");

    // Template messages need no window.
    let msgid = client
        .send_template(&TemplateMessage::new("o2", "TPL").field("first", "hi"))
        .await
        .unwrap();
    assert!(msgid > 0);
    fake.stop().await;
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_and_a_dropped_one_a_network_error() {
    let fake = start();
    let client = ApiClient::new(
        ApiSettings {
            timeout: Duration::from_millis(500),
            ..settings(&fake, AccountKind::Official)
        },
        Arc::new(MemoryStore::default()),
    )
    .unwrap();
    client.list_tags().await.unwrap();

    fake.inject([Fault {
        delay_ms: Some(3000),
        ..Fault::default()
    }]);
    let began = Instant::now();
    let slow = client.list_tags().await;
    assert_eq!(slow, Err(ApiError::Timeout));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(ApiError::Timeout.is_transient());

    fake.inject([Fault {
        drop: true,
        ..Fault::default()
    }]);
    let dropped = client.list_tags().await;
    assert!(matches!(dropped, Err(ApiError::Network(_))), "{dropped:?}");
    assert!(dropped.unwrap_err().is_transient());

    // Nothing is left broken: the next call goes through.
    client.list_tags().await.unwrap();
    fake.stop().await;
}

#[tokio::test]
async fn a_refused_connection_is_a_network_error_without_the_secret() {
    let fake = start();
    let mut s = settings(&fake, AccountKind::Official);
    fake.stop().await;
    s.timeout = Duration::from_secs(2);
    let client = ApiClient::new(s, Arc::new(MemoryStore::default())).unwrap();
    let e = client.list_tags().await.unwrap_err();
    assert!(matches!(e, ApiError::Network(_)), "{e:?}");
    assert!(!e.to_string().contains(APP_SECRET), "{e}");
}

#[tokio::test]
async fn qr_codes_come_back_with_ticket_url_and_image() {
    let fake = start();
    let client = official(&fake, Arc::new(MemoryStore::default()));
    let qr = client
        .create_qrcode("campaign-42", false, 600)
        .await
        .unwrap();
    assert!(!qr.ticket.is_empty());
    assert_eq!(qr.expire_seconds, Some(600));
    assert!(qr.url.starts_with("http://weixin.qq.com/q/"), "{}", qr.url);
    let image = reqwest::Url::parse(&qr.image_url).unwrap();
    assert_eq!(
        image.as_str().split('?').next(),
        Some("https://mp.weixin.qq.com/cgi-bin/showqrcode")
    );
    let ticket = image.query_pairs().find(|(k, _)| k == "ticket").unwrap().1;
    assert_eq!(ticket, qr.ticket, "the ticket survives URL encoding");
    assert!(!image.query().unwrap().contains('+'), "{}", qr.image_url);

    let permanent = client.create_qrcode("shop-1", true, 0).await.unwrap();
    assert_eq!(permanent.expire_seconds, None);
    let bodies: Vec<Value> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path == "/cgi-bin/qrcode/create")
        .map(|c| c.body)
        .collect();
    assert_eq!(bodies[0]["action_name"], "QR_STR_SCENE");
    assert_eq!(
        bodies[0]["action_info"]["scene"]["scene_str"],
        "campaign-42"
    );
    assert_eq!(bodies[1]["action_name"], "QR_LIMIT_STR_SCENE");

    // Limits are checked before sending.
    for (name, scene, expire) in [("empty scene", "", 60), ("too long", "x", 2_592_001)] {
        let e = client.create_qrcode(scene, false, expire).await;
        assert!(matches!(e, Err(ApiError::Invalid(_))), "{name}: {e:?}");
    }
    fake.stop().await;
}

#[tokio::test]
async fn wecom_calls_use_gettoken_and_their_own_shapes() {
    let fake = start();
    let client = ApiClient::new(
        settings(&fake, AccountKind::Wecom),
        Arc::new(MemoryStore::default()),
    )
    .unwrap();
    let invalid = client
        .send_app_message("zhangsan|unknown1", "上线了")
        .await
        .unwrap();
    assert_eq!(invalid, ["unknown1"]);
    client
        .mark_tag("zhangsan", "wmEXT", &["et1".into()], &[])
        .await
        .unwrap();
    client.send_welcome_msg("WELCOME1", "欢迎").await.unwrap();
    assert!(
        client.send_welcome_msg("WELCOME1", "欢迎").await.is_err(),
        "a welcome code works once"
    );
    client
        .robot_send(fake.base_url(), &Secret::new("robot-key"), "告警")
        .await
        .unwrap();
    assert_eq!(fake.calls_to("/cgi-bin/gettoken"), 1);
    assert_eq!(fake.calls_to(TOKEN), 0);
    let calls = fake.calls();
    let send = calls
        .iter()
        .find(|c| c.path == "/cgi-bin/message/send")
        .unwrap();
    assert_eq!(send.body["agentid"], 1000002);
    let robot = calls
        .iter()
        .find(|c| c.path == "/cgi-bin/webhook/send")
        .unwrap();
    assert_eq!(robot.query, "key=robot-key", "no token for robots");
    // Official-only calls are refused before sending.
    assert!(matches!(
        client.list_tags().await,
        Err(ApiError::Invalid(_))
    ));
    fake.stop().await;
}

#[tokio::test]
async fn stable_tokens_are_fetched_by_post_and_secrets_never_print() {
    let fake = start();
    let client = ApiClient::new(
        ApiSettings {
            use_stable_token: true,
            ..settings(&fake, AccountKind::Official)
        },
        Arc::new(MemoryStore::default()),
    )
    .unwrap();
    client.list_tags().await.unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0].path, "/cgi-bin/stable_token");
    assert_eq!(calls[0].body["force_refresh"], false);
    assert_eq!(calls[0].body["secret"], "***", "the fake's log redacts");
    let token = client.access_token().await.unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(APP_SECRET), "{shown}");
    assert!(!shown.contains(token.expose()), "{shown}");
    fake.stop().await;
}

#[tokio::test]
async fn faults_and_calls_are_driven_over_http() {
    let fake = start();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/fake/faults", fake.base_url()))
        .json(&json!([{ "errcode": 45011 }]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let client = official(&fake, Arc::new(MemoryStore::default()));
    // The fault hits the next call, the token fetch included.
    assert_eq!(client.list_tags().await, Err(ApiError::MinuteQuotaReached));
    client.list_tags().await.unwrap();
    let calls: Value = http
        .get(format!("{}/fake/calls", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(paths, [TOKEN, TOKEN, TAGS]);
    assert!(calls[0]["query"].as_str().unwrap().contains("secret=***"));
    assert!(calls[0]["at"].as_i64().unwrap() > 0);
    fake.stop().await;
}
