//! Behaviour from the shop: `POST /ingest/v1/events` over real HTTP (its token, refusals
//! per event and per request, idempotency across a SIGKILL) and `siyu followers import`.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};
use siyu::config::Settings;
use siyu::store::Store;

use crate::crash::serve;
use crate::helpers::*;

pub(crate) const TOKEN: &str = "shop-ingest-secret-0123";

/// The mapping the tests use (README "Behaviour from the shop").
const MAPPING: &str = r#"
[[ingest.event]]
type = "order_paid"
count = ["orders"]
sum = { spend_fen = "amount" }
set = { last_order_at = "at", last_sku = "sku" }
tags = ["buyer"]
history = true

[[ingest.event]]
type = "coupon_used"
count = ["coupons_used"]
"#;

/// A config in `dir` with `[ingest]` set as `ingest` says, followed by the mapping.
pub(crate) fn ingest_config(dir: &Path, ingest: &str) -> String {
    let replies = dir.join("replies");
    std::fs::create_dir_all(&replies).unwrap();
    let path = config_in(dir, &replies);
    let text = std::fs::read_to_string(&path).unwrap() + "\n[ingest]\n" + ingest + MAPPING;
    std::fs::write(&path, text).unwrap();
    path
}

fn ingest_settings(dir: &Path, ingest: &str) -> Settings {
    let mut s = Settings::load(Path::new(&ingest_config(dir, ingest))).unwrap();
    s.bind = "127.0.0.1:0".into();
    s
}

pub(crate) fn order(id: &str, openid: &str, amount: Value) -> Value {
    json!({"id": id, "account": "safe", "openid": openid, "type": "order_paid",
           "at": now() - 60, "props": {"amount": amount, "sku": "longjing-100g"}})
}

fn statuses(r: &Response) -> Vec<(String, String)> {
    r.json()["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", r.body))
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or("").to_string();
            (id, r["status"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn post(app: &TestApp, token: Option<&str>, body: String) -> Response {
    app.admin(Method::POST, "/ingest/v1/events", token, Some(body))
        .await
}

#[tokio::test]
async fn shop_events_apply_once_and_a_bad_event_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = ingest_settings(dir.path(), &format!("token = \"{TOKEN}\"\n"));
    let config = s.source.display().to_string();
    let app = spawn_with(s).await;
    let batch = |events: Vec<Value>| json!({ "events": events }).to_string();
    let one = batch(vec![order("shop-1", "o_buyer", json!(128.5))]);

    // The token: none, a wrong one, then the right one.
    assert_eq!(post(&app, None, one.clone()).await.status, 401);
    assert_eq!(
        post(&app, Some("wrong-token-0123456789"), one.clone())
            .await
            .status,
        401
    );
    // Not JSON, not the shape: refused whole, nothing applied.
    let r = post(&app, Some(TOKEN), "{not json".into()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("must be JSON"),
        "{}",
        r.body
    );
    let r = post(&app, Some(TOKEN), json!({"event": []}).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(&app, Some(TOKEN), json!({"events": [1]}).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // 1,001 events: refused whole, the first 1,000 not applied either.
    let many: Vec<Value> = (0..1001)
        .map(|i| order(&format!("bulk-{i}"), "o_bulk", json!(1)))
        .collect();
    let r = post(&app, Some(TOKEN), batch(many)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("at most 1000"), "{}", r.body);
    assert!(app.store.follower("safe", "o_bulk").unwrap().is_none());
    assert_eq!(app.store.ingested("safe", "bulk-0").unwrap(), None);

    // A mixed batch: each event's result, in request order; the good ones apply.
    let mut unionid = order("shop-u", "x", json!(1));
    unionid.as_object_mut().unwrap().remove("openid");
    unionid["unionid"] = json!("u_1");
    let mut no_amount = order("shop-3", "o_buyer", json!(1));
    no_amount["props"].as_object_mut().unwrap().remove("amount");
    let mut other_account = order("shop-4", "o_buyer", json!(1));
    other_account["account"] = json!("nope");
    let mut unknown_type = order("shop-5", "o_buyer", json!(1));
    unknown_type["type"] = json!("refund");
    let mixed = vec![
        order("shop-1", "o_buyer", json!(128.5)),
        no_amount,
        order("shop-2", "o_buyer", json!("0.125")),
        unionid,
        other_account,
        unknown_type,
        order("shop-6", "o_buyer", json!(1.5)),
        order("shop-1", "o_buyer", json!(128.5)),
        json!({"id": "shop-7", "account": "safe", "openid": "o_buyer", "type": "coupon_used",
               "at": now()}),
    ];
    let r = post(&app, Some(TOKEN), batch(mixed.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = statuses(&r);
    let want = [
        ("shop-1", "applied"),
        ("shop-3", "refused"),
        ("shop-2", "applied"),
        ("shop-u", "kept"),
        ("shop-4", "refused"),
        ("shop-5", "refused"),
        ("shop-6", "applied"),
        ("shop-1", "duplicate"),
        ("shop-7", "applied"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "{}", r.body);
    let errors: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["error"].as_str().map(str::to_string))
        .collect();
    assert!(errors[0].contains("props.amount is missing"), "{errors:?}");
    assert!(errors[1].contains("unknown account `nope`"), "{errors:?}");
    assert!(
        errors[2].contains("unknown event type `refund` (known types: coupon_used, order_paid)"),
        "{errors:?}"
    );

    let f = app.store.follower("safe", "o_buyer").unwrap().unwrap();
    assert!(!f.subscribed, "an unknown follower is kept, not subscribed");
    assert_eq!(f.counters["orders"], 3);
    // 128.5 + 0.125 (13 fen, half rounds up) + 1.5 yuan.
    assert_eq!(f.counters["spend_fen"], 12850 + 13 + 150);
    assert_eq!(f.counters["coupons_used"], 1);
    assert_eq!(f.attributes["last_sku"], "longjing-100g");
    assert!(f.tags.contains("buyer"));
    assert_eq!(
        f.history
            .iter()
            .filter(|h| h.kind == "event:order_paid")
            .count(),
        3
    );

    // The whole request again: nothing changes, every applied or kept event is a duplicate.
    let r = post(&app, Some(TOKEN), batch(mixed)).await;
    let again: Vec<String> = statuses(&r).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        again,
        [
            "duplicate",
            "refused",
            "duplicate",
            "duplicate",
            "refused",
            "refused",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    assert_eq!(app.store.follower("safe", "o_buyer").unwrap().unwrap(), f);
    app.stop().await;

    // A segment sees the counters.
    let (code, out, err) = siyu(&[
        "followers",
        "--config",
        &config,
        "--account",
        "safe",
        "--where",
        "counter.spend_fen >= 10000 AND tag:buyer",
    ]);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, out, err) = siyu(&[
        "followers",
        "--config",
        &config,
        "--account",
        "safe",
        "--where",
        "counter.orders > 3",
    ]);
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
}

#[tokio::test]
async fn without_a_token_the_endpoint_is_off_and_unknown_followers_can_be_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(ingest_settings(dir.path(), "")).await;
    let body = json!({"events": [order("e1", "o1", json!(1))]}).to_string();
    let r = post(&app, Some(TOKEN), body.clone()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("set [ingest] token_env"), "{}", r.body);
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let ingest = format!("token = \"{TOKEN}\"\nunknown = \"refuse\"\n");
    let app = spawn_with(ingest_settings(dir.path(), &ingest)).await;
    let r = post(&app, Some(TOKEN), body.clone()).await;
    assert_eq!(
        statuses(&r),
        [("e1".into(), "refused".into())],
        "{}",
        r.body
    );
    assert!(r.body.contains("unknown follower `o1`"), "{}", r.body);
    assert!(app.store.follower("safe", "o1").unwrap().is_none());
    // So is an event by a unionid nobody synced: not kept.
    let by_unionid = json!({"events": [{"id": "u9", "account": "safe", "unionid": "ou_nobody",
        "type": "coupon_used", "at": now() - 60}]});
    let r = post(&app, Some(TOKEN), by_unionid.to_string()).await;
    assert_eq!(
        statuses(&r),
        [("u9".into(), "refused".into())],
        "{}",
        r.body
    );
    assert!(r.body.contains("sync the account first"), "{}", r.body);
    assert!(app
        .store
        .kept_events("safe", &["ou_nobody".to_string()])
        .unwrap()
        .is_empty());
    // Once the follower is known, the same event applies (a refusal recorded nothing).
    siyu::store::put_follower(
        app.store.as_ref(),
        "safe",
        &siyu::follower::Follower::new("o1"),
    )
    .unwrap();
    let r = post(&app, Some(TOKEN), body).await;
    assert_eq!(
        statuses(&r),
        [("e1".into(), "applied".into())],
        "{}",
        r.body
    );
    app.stop().await;
}

/// An `[[autotag]]` in the rule folder is re-evaluated in the same write as a shop event:
/// the order that takes a follower's spend past ¥1,000 tags them; `siyu simulate` shows an
/// autotag a message would add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_event_that_meets_an_autotag_condition_tags_the_follower() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ingest_settings(dir.path(), &format!("token = \"{TOKEN}\"\n"));
    std::fs::write(
        dir.path().join("replies/autotags.toml"),
        "[[autotag]]\ntag = \"high-value\"\nwhen = \"counter.spend_fen >= 100000\"\n\n\
         [[rule]]\nname = \"ask\"\nkeywords = [\"积分\"]\nincr = { spend_fen = 100000 }\nreply = \"ok\"\n",
    )
    .unwrap();
    let config = settings.source.display().to_string();
    // The rules are read at start: the file is there before.
    let app = spawn_with(
        Settings::load(std::path::Path::new(&config))
            .map(|mut s| {
                s.bind = "127.0.0.1:0".into();
                s
            })
            .unwrap(),
    )
    .await;
    let body =
        |id: &str, amount: f64| json!({"events": [order(id, "o_big", json!(amount))]}).to_string();
    post(&app, Some(TOKEN), body("big-1", 600.0)).await;
    assert!(!app
        .store
        .follower("safe", "o_big")
        .unwrap()
        .unwrap()
        .has_tag("high-value"));
    let r = post(&app, Some(TOKEN), body("big-2", 400.0)).await;
    assert_eq!(
        statuses(&r),
        [("big-2".into(), "applied".into())],
        "{}",
        r.body
    );
    let f = app.store.follower("safe", "o_big").unwrap().unwrap();
    assert_eq!(f.counters.get("spend_fen"), Some(&100_000));
    assert!(f.has_tag("high-value"), "{f:?}");
    app.stop().await;

    let (code, out, err) = siyu(&[
        "simulate",
        "--config",
        &config,
        "--account",
        "plain",
        "--from",
        "o_new",
        "积分",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("autotag +high-value"), "{out}");
}

/// An event may name the person by unionid: the people index (written by a sync) finds
/// their openid in the event's account; a unionid nobody synced is kept (`unknown =
/// "keep"`, the default) for the sync that brings them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unionid_event_reaches_the_persons_openid_in_its_account() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = format!("token = \"{TOKEN}\"\n");
    let app = spawn_with(ingest_settings(dir.path(), &ingest)).await;
    // What a sync leaves: the person's identities in two accounts.
    for (account, openid) in [("safe", "o_safe_1"), ("compat", "o_compat_1")] {
        let mut run = siyu::sync::SyncRun::new(account, 1_700_000_000_000, "test");
        app.store
            .sync_step(
                account,
                &[openid.to_string()],
                &mut run,
                &mut |_, o, _, _| {
                    let mut f = siyu::follower::Follower::new(o);
                    f.unionid = Some("ou_person_1".into());
                    Some(f)
                },
            )
            .unwrap();
    }
    let by_unionid = |id: &str, unionid: &str| {
        json!({"id": id, "account": "safe", "unionid": unionid, "type": "order_paid",
               "at": now() - 60, "props": {"amount": 10, "sku": "x"}})
    };
    let body = json!({"events": [by_unionid("u1", "ou_person_1"), by_unionid("u2", "ou_nobody")]});
    let r = post(&app, Some(TOKEN), body.to_string()).await;
    assert_eq!(
        statuses(&r),
        [
            ("u1".into(), "applied".into()),
            ("u2".into(), "kept".into())
        ],
        "{}",
        r.body
    );
    let f = app.store.follower("safe", "o_safe_1").unwrap().unwrap();
    assert_eq!(f.counters.get("spend_fen"), Some(&1000));
    let other = app.store.follower("compat", "o_compat_1").unwrap().unwrap();
    assert!(other.counters.is_empty(), "the event's account only");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_survives_sigkill_and_its_resend_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), &format!("token = \"{TOKEN}\"\n"));
    let client = reqwest::Client::new();
    let send = |base: String, body: String| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("{base}/ingest/v1/events"))
                .bearer_auth(TOKEN)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let events: Vec<Value> = (0..20)
        .map(|i| order(&format!("crash-{i}"), &format!("o_c{}", i % 3), json!(10)))
        .collect();
    let body = json!({ "events": events }).to_string();
    let mut first = serve(&config);
    let answer = send(first.base.clone(), body.clone()).await;
    assert!(answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "applied"));
    // SIGKILL right after the answer: no shutdown flush.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let second = serve(&config);
    let again = send(second.base.clone(), body).await;
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "duplicate"),
        "{again}"
    );
    drop(second);
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let orders: i64 = (0..3)
        .map(|i| {
            let f = store.follower("safe", &format!("o_c{i}")).unwrap().unwrap();
            assert_eq!(f.counters["spend_fen"], f.counters["orders"] * 1000);
            f.counters["orders"]
        })
        .sum();
    assert_eq!(orders, 20);
}

#[test]
fn a_bad_mapping_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(
        dir.path(),
        "[[ingest.event]]\ntype = \"order_paid\"\ncount = [\"\"]\n",
    );
    let (code, _, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 1, "{err}");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text.lines().position(|l| l == "count = [\"\"]").unwrap() + 1;
    let dup = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "type = \"order_paid\"")
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert!(
        err.contains(&format!(
            "config.toml:{line}:10: [[ingest.event]] `order_paid`: a `count` counter name is empty"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("config.toml:{dup}:8: [[ingest.event]]: type `order_paid` is mapped twice (first at line")), "{err}");
    let config = ingest_config(dir.path(), "unknown = \"drop\"\n");
    let (code, _, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("config.toml:") && err.contains("unknown variant `drop`"),
        "{err}"
    );
}

#[test]
fn followers_import_reports_bad_lines_and_applies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), "");
    // An automatic tag the imported counters meet.
    std::fs::write(
        dir.path().join("replies/autotags.toml"),
        "[[autotag]]\ntag = \"repeat-buyer\"\nwhen = \"counter.orders >= 2\"\n",
    )
    .unwrap();
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        let mut known = siyu::follower::Follower::new("o_known");
        known.subscribed = true;
        known.tags.insert("old".into());
        siyu::store::put_follower(&store, "safe", &known).unwrap();
        let mut same = siyu::follower::Follower::new("o_same");
        same.tags.insert("vip".into());
        siyu::store::put_follower(&store, "safe", &same).unwrap();
        store.flush().unwrap();
    }
    let csv = dir.path().join("shop.csv");
    std::fs::write(
        &csv,
        "\u{feff}openid,tags,attributes,counters\n\
         o_new,vip;老客户,city=上海,orders=3;spend_fen=12850\n\
         o_known,vip,\"level=gold;note=a, b\",\n\
         o_same,vip,,\n\
         ,vip,,\n\
         o_bad,,,orders=lots\n",
    )
    .unwrap();
    let file = csv.display().to_string();
    let args = |dry: bool| {
        let mut a = vec![
            "followers",
            "import",
            &file,
            "--account",
            "safe",
            "--config",
            &config,
        ];
        if dry {
            a.push("--dry-run");
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |dry: bool| {
        let a = args(dry);
        siyu(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, out, err) = run(true);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.trim(),
        "new 1, updated 1, unchanged 1, bad lines 2 (dry run: nothing changed)"
    );
    assert!(
        err.contains(&format!("{file}:5: the openid is empty")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:6: counters: `orders=lots`: `lots` is not a whole number"
        )),
        "{err}"
    );
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        assert!(
            store.follower("safe", "o_new").unwrap().is_none(),
            "a dry run changes nothing"
        );
    }
    let (code, out, err) = run(false);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.trim(), "new 1, updated 1, unchanged 1, bad lines 2");
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let new = store.follower("safe", "o_new").unwrap().unwrap();
    assert_eq!(new.counters["spend_fen"], 12850);
    assert!(new.tags.contains("老客户") && !new.subscribed);
    assert!(
        new.has_tag("repeat-buyer"),
        "the autotag, in the same write: {new:?}"
    );
    let known = store.follower("safe", "o_known").unwrap().unwrap();
    assert!(
        known.tags.contains("old") && known.tags.contains("vip"),
        "tags are added"
    );
    assert_eq!(known.attributes["note"], "a, b");
    assert!(known.subscribed);
    drop(store);
    // The file again: everything is as it says.
    let (_, out, _) = run(false);
    assert_eq!(out.trim(), "new 0, updated 0, unchanged 3, bad lines 2");
    // A missing account or file: exit 1.
    let (code, _, err) = siyu(&[
        "followers",
        "import",
        &file,
        "--account",
        "nope",
        "--config",
        &config,
    ]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = siyu(&[
        "followers",
        "import",
        "/nonexistent.csv",
        "--account",
        "safe",
        "--config",
        &config,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read /nonexistent.csv"), "{err}");
}

/// `[ingest] unknown = "keep"` (the default): an event by a unionid no follower has yet is
/// kept, on disk before the 200 (a SIGKILL right after keeps it, a resend is a duplicate),
/// and applied, once, by the sync that brings the person in; a second sync applies
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_an_unknown_unionid_is_kept_and_applied_once_by_the_sync() {
    use siyu::fake_wechat::{FakeWechat, PopulationRequest};
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(PopulationRequest::new(30, 7)).unwrap();
    let person = fake.followers(None, 4, 1);
    let (openid, unionid) = (person.openids[0].clone(), person.unionids[0].clone());
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), &format!("token = \"{TOKEN}\"\n"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "mode = \"safe\"\n",
        &format!(
            "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"{}\"\nrate_per_sec = 0.0\ntimeout_ms = 2000\n",
            fake.base_url()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let client = reqwest::Client::new();
    let event = json!({"id": "early-1", "account": "safe", "unionid": unionid,
        "type": "order_paid", "at": now() - 60, "props": {"amount": 12.5, "sku": "x"}});
    let body = json!({ "events": [event] }).to_string();
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
            let v: Value = r.json().await.unwrap();
            v["results"][0]["status"].as_str().unwrap().to_string()
        }
    };
    let mut first = serve(&config);
    assert_eq!(send(first.base.clone()).await, "kept");
    assert_eq!(send(first.base.clone()).await, "duplicate", "a resend");
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let server = serve(&config);
    assert_eq!(
        send(server.base.clone()).await,
        "duplicate",
        "kept across SIGKILL"
    );
    let sync = |previous: Option<i64>| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let url = format!("{base}/admin/v1/followers/safe/sync");
            let r = client
                .post(&url)
                .bearer_auth(OPERATOR)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let run: Value = client
                    .get(&url)
                    .bearer_auth(VIEWER)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if run["state"] == "done" && run["live"] == false && run["id"].as_i64() != previous
                {
                    return run["id"].as_i64();
                }
                assert!(std::time::Instant::now() < until, "{run}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let run = sync(None).await;
    sync(run).await;
    drop(server);
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let f = store.follower("safe", &openid).unwrap().unwrap();
    assert_eq!(f.counters.get("orders"), Some(&1), "{f:?}");
    assert_eq!(f.counters.get("spend_fen"), Some(&1250), "{f:?}");
    assert!(f.tags.contains("buyer"), "{f:?}");
    let entries = f
        .history
        .iter()
        .filter(|h| format!("{h:?}").contains("order_paid"))
        .count();
    assert_eq!(entries, 1, "one history entry: {:?}", f.history);
    assert_eq!(
        store.ingested("safe", "early-1").unwrap().as_deref(),
        Some(openid.as_str())
    );
    assert!(store.kept_events("safe", &[unionid]).unwrap().is_empty());
    let others = store.follower("safe", &fake.followers(None, 5, 1).openids[0]);
    assert!(
        others.unwrap().unwrap().counters.is_empty(),
        "that person only"
    );
    fake.stop().await;
}
