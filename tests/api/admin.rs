//! The admin API over HTTP: every endpoint with each role and with bad tokens, rule writes
//! validated before they land, follower edits, the audit trail, and metrics.

use reqwest::Method;

use crate::helpers::*;

/// One endpoint and the least role that may call it.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    least: usize,
}

const ROLES: [(&str, &str); 3] = [("viewer", VIEWER), ("operator", OPERATOR), ("admin", ADMIN)];

fn endpoints() -> Vec<Endpoint> {
    let e = |method, path, body, least| Endpoint {
        method,
        path,
        body,
        least,
    };
    vec![
        e(Method::GET, "/admin/v1/rules", None, 0),
        e(Method::GET, "/admin/v1/rules/main.toml", None, 0),
        e(
            Method::POST,
            "/admin/v1/simulate",
            Some(r#"{"account":"safe","from":"o_adm","text":"优惠券"}"#),
            0,
        ),
        e(Method::GET, "/admin/v1/followers/safe/o_adm", None, 0),
        e(Method::GET, "/admin/v1/tags/safe", None, 0),
        e(
            Method::POST,
            "/admin/v1/tests",
            Some("[[case]]\ntext = \"优惠券\"\nexpect = \"coupon\"\n"),
            0,
        ),
        e(
            Method::PUT,
            "/admin/v1/rules/extra.toml",
            Some("[[rule]]\nname = \"extra\"\nkeywords = [\"额外\"]\nreply = \"extra\"\n"),
            1,
        ),
        e(Method::POST, "/admin/v1/reload", None, 1),
        e(
            Method::PUT,
            "/admin/v1/followers/safe/o_adm/tags/vip",
            None,
            1,
        ),
        e(
            Method::DELETE,
            "/admin/v1/followers/safe/o_adm/tags/vip",
            None,
            1,
        ),
        e(
            Method::POST,
            "/admin/v1/qrcode",
            Some(r#"{"account":"safe","scene":"role-test"}"#),
            1,
        ),
        e(Method::GET, "/admin/v1/channels", None, 0),
        e(Method::GET, "/admin/v1/audit", None, 2),
    ]
}

/// The test app with the `safe` account's API pointed at a fake WeChat.
async fn spawn_with_fake(
    dir: &tempfile::TempDir,
) -> (TestApp, siyu::fake_wechat::FakeWechatHandle) {
    let fake = siyu::fake_wechat::FakeWechat::start("127.0.0.1:0").unwrap();
    let mut s = settings(dir.path());
    for a in &mut s.accounts {
        if a.id == "safe" {
            let mut api = siyu::api::ApiSettings::new(
                "safe",
                a.kind,
                OFFICIAL_APP_ID,
                siyu::config::Secret::new("app-secret-for-tests"),
            );
            api.api_base = fake.base_url().to_string();
            a.api = Some(api);
        }
    }
    (spawn_with(s).await, fake)
}

#[tokio::test]
async fn every_endpoint_checks_the_token_and_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake) = spawn_with_fake(&dir).await;
    // A follower to look at.
    app.exchange(SAFE, &SAFE.text("o_adm", "你好", 1))
        .await
        .unwrap();
    for ep in endpoints() {
        let call = |token| app.admin(ep.method.clone(), ep.path, token, ep.body.map(String::from));
        let none = call(None).await;
        assert_eq!(
            none.status, 401,
            "{} {} without a token",
            ep.method, ep.path
        );
        let wrong = call(Some("not-a-configured-secret-at-all")).await;
        assert_eq!(
            wrong.status, 401,
            "{} {} with a wrong token",
            ep.method, ep.path
        );
        let prefix = call(Some(&ADMIN[..10])).await;
        assert_eq!(prefix.status, 401, "a prefix of a secret is not the secret");
        for (i, (role, secret)) in ROLES.iter().enumerate() {
            let r = call(Some(secret)).await;
            let want = if i >= ep.least { 200 } else { 403 };
            assert_eq!(
                r.status, want,
                "{} {} as {role}: {}",
                ep.method, ep.path, r.body
            );
        }
    }
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn rule_files_are_validated_before_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let main = dir.path().join("replies/main.toml");
    let before = std::fs::read_to_string(&main).unwrap();

    let bad = before.replace(
        "reply = \"你好呀 {openid}\"",
        "reply = \"你好呀 {nickname}\"",
    );
    let r = app
        .admin(
            Method::PUT,
            "/admin/v1/rules/main.toml",
            Some(OPERATOR),
            Some(bad),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("main.toml:") && errors.contains("nickname"),
        "{errors}"
    );
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        before,
        "nothing written"
    );
    assert_eq!(
        app.admin(
            Method::PUT,
            "/admin/v1/rules/..%2Fescape.toml",
            Some(OPERATOR),
            Some("x".into())
        )
        .await
        .status,
        400
    );
    assert_eq!(
        app.admin(
            Method::GET,
            "/admin/v1/rules/missing.toml",
            Some(VIEWER),
            None
        )
        .await
        .status,
        404
    );

    let good = before.replace("你好呀 {openid}", "您好 {openid}");
    let r = app
        .admin(
            Method::PUT,
            "/admin/v1/rules/main.toml",
            Some(OPERATOR),
            Some(good.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hash = r.json()["version"]["hash"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&main).unwrap(), good);
    let reply = app
        .exchange(SAFE, &SAFE.text("o_w", "hello", 3))
        .await
        .unwrap();
    assert_eq!(tag(&reply, "Content").as_deref(), Some("您好 o_w"));

    let listed = app
        .admin(Method::GET, "/admin/v1/rules", Some(VIEWER), None)
        .await
        .json();
    assert_eq!(listed["folders"][0]["version"]["hash"], hash.as_str());
    assert!(listed["folders"][0]["files"]
        .to_string()
        .contains("main.toml"));
    let read = app
        .admin(Method::GET, "/admin/v1/rules/main.toml", Some(VIEWER), None)
        .await;
    assert_eq!(read.body, good);

    let audit = app
        .admin(Method::GET, "/admin/v1/audit", Some(ADMIN), None)
        .await
        .json();
    let e = &audit["entries"][0];
    assert_eq!(e["who"], "ops-li");
    assert_eq!(e["action"], "rules.write");
    assert!(
        e["detail"].as_str().unwrap().starts_with("+1 −1 lines"),
        "{e}"
    );
    app.stop().await;
}

#[tokio::test]
async fn simulate_followers_tags_and_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let sim = app
        .admin(
            Method::POST,
            "/admin/v1/simulate",
            Some(VIEWER),
            Some(
                r#"{"account":"safe","from":"o_t","event":"subscribe","scene":"spring-poster"}"#
                    .into(),
            ),
        )
        .await;
    assert_eq!(sim.status, 200, "{}", sim.body);
    let sim = sim.json();
    assert_eq!(sim["rules"][0], "welcome-spring");
    assert!(sim["follower_after"]["tags"]
        .to_string()
        .contains("channel-spring"));
    let missing = app
        .admin(
            Method::GET,
            "/admin/v1/followers/safe/o_t",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(missing.status, 404, "a simulation writes nothing");
    let bad = app
        .admin(
            Method::POST,
            "/admin/v1/simulate",
            Some(VIEWER),
            Some(r#"{"account":"safe","event":"dance"}"#.into()),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    for (i, openid) in ["o_t", "o_u"].iter().enumerate() {
        app.exchange(
            SAFE,
            &SAFE.event_at(
                openid,
                "subscribe",
                Some("qrscene_spring-poster"),
                now() - i as i64,
            ),
        )
        .await
        .unwrap();
    }
    let r = app
        .admin(
            Method::PUT,
            "/admin/v1/followers/safe/o_t/tags/vip",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = app
        .admin(
            Method::GET,
            "/admin/v1/followers/safe/o_t",
            Some(VIEWER),
            None,
        )
        .await
        .json();
    assert!(f["tags"].to_string().contains("vip"), "{f}");
    assert_eq!(f["first_scene"], "spring-poster");
    assert_eq!(f["history"][0]["kind"], "event:subscribe");

    let tags = app
        .admin(Method::GET, "/admin/v1/tags/safe", Some(VIEWER), None)
        .await
        .json();
    assert_eq!(tags["followers"], 2);
    assert_eq!(tags["tags"]["channel-spring"], 2);
    assert_eq!(tags["tags"]["vip"], 1);

    app.admin(
        Method::DELETE,
        "/admin/v1/followers/safe/o_t/tags/vip",
        Some(OPERATOR),
        None,
    )
    .await;
    let f = app
        .admin(
            Method::GET,
            "/admin/v1/followers/safe/o_t",
            Some(VIEWER),
            None,
        )
        .await
        .json();
    assert!(!f["tags"].to_string().contains("vip"));
    assert_eq!(
        app.admin(
            Method::PUT,
            "/admin/v1/followers/safe/nobody/tags/vip",
            Some(OPERATOR),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.admin(
            Method::GET,
            "/admin/v1/followers/ghost/o_t",
            Some(VIEWER),
            None
        )
        .await
        .status,
        404
    );

    let audit = app
        .admin(Method::GET, "/admin/v1/audit?limit=2", Some(ADMIN), None)
        .await
        .json();
    let got: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |a: &str| ("ops-li".to_string(), a.to_string(), "safe/o_t".to_string());
    assert_eq!(got, [want("follower.tag_remove"), want("follower.tag_add")]);
    app.stop().await;
}

#[tokio::test]
async fn the_workbench_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let suite = "[[case]]\ntext = \"优惠券\"\nexpect = \"coupon\"\n\n[[case]]\ntext = \"hello\"\nexpect = \"coupon\"\n";
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/tests",
            Some(VIEWER),
            Some(suite.into()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let failure = report["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("suite.toml:7") && failure.contains("greet"),
        "{failure}"
    );
    let bad = app
        .admin(
            Method::POST,
            "/admin/v1/tests",
            Some(VIEWER),
            Some("[[case]]\nwhat = 1\n".into()),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);

    // A rule shadowed by an earlier one is reported by GET /rules.
    let shadowed = "[[rule]]\nname = \"late-coupon\"\nkeywords = [\"优惠券\"]\nmatch = \"contains\"\nreply = \"never\"\n";
    let w = app
        .admin(
            Method::PUT,
            "/admin/v1/rules/zz.toml",
            Some(OPERATOR),
            Some(shadowed.into()),
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    let rules = app
        .admin(Method::GET, "/admin/v1/rules", Some(VIEWER), None)
        .await
        .json();
    let warnings = rules["folders"][0]["warnings"].to_string();
    assert!(
        warnings.contains("zz.toml:2") && warnings.contains("can never fire"),
        "{warnings}"
    );
    app.stop().await;
}

#[tokio::test]
async fn qrcodes_through_the_servers_own_client() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake) = spawn_with_fake(&dir).await;
    let create = |body: &str| {
        app.admin(
            Method::POST,
            "/admin/v1/qrcode",
            Some(OPERATOR),
            Some(body.to_string()),
        )
    };
    let r = create(r#"{"account":"safe","scene":"spring-poster"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json();
    assert_eq!(t["expire_seconds"], 2_592_000);
    assert!(t["image_url"]
        .as_str()
        .unwrap()
        .starts_with("https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket="));
    let r = create(r#"{"account":"safe","scene":"store-7","permanent":true}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["expire_seconds"].is_null());
    assert_eq!(fake.calls_to("/cgi-bin/token"), 1, "one token for both");

    assert_eq!(
        create(r#"{"account":"plain","scene":"x"}"#).await.status,
        400,
        "no API settings"
    );
    let long = format!(r#"{{"account":"safe","scene":"{}"}}"#, "x".repeat(65));
    assert_eq!(create(&long).await.status, 400, "scene over 64 characters");
    fake.inject([siyu::fake_wechat::Fault::errcode(45009)]);
    let r = create(r#"{"account":"safe","scene":"quota"}"#).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("45009") || r.body.to_lowercase().contains("quota"),
        "{}",
        r.body
    );

    let audit = app
        .admin(Method::GET, "/admin/v1/audit", Some(ADMIN), None)
        .await
        .json();
    let e = &audit["entries"][0];
    assert_eq!(
        (e["action"].as_str(), e["target"].as_str()),
        (Some("qrcode.create"), Some("safe/store-7"))
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn metrics_count_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    for i in 0..3 {
        app.exchange(SAFE, &SAFE.text("o_m", "优惠券", 700 + i))
            .await
            .unwrap();
    }
    let retry = SAFE.text("o_m", "优惠券", 700);
    app.exchange(SAFE, &retry).await.unwrap();
    app.exchange(PLAIN, &PLAIN.event("o_m", "unsubscribe", None))
        .await;
    app.post("/wx/safe?timestamp=1&nonce=1", "<xml/>").await;
    app.post("/wx/no-such-account?timestamp=1&nonce=1", "<xml/>")
        .await;

    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    for line in [
        r#"siyu_callbacks_total{account="safe",outcome="replied",type="text"} 3"#,
        r#"siyu_callbacks_total{account="safe",outcome="duplicate",type="text"} 1"#,
        r#"siyu_callbacks_total{account="plain",outcome="success",type="event:unsubscribe"} 1"#,
        r#"siyu_callbacks_total{account="safe",outcome="rejected_stale_timestamp",type="unknown"} 1"#,
        r#"siyu_callbacks_total{account="unknown",outcome="rejected_unknown_account",type="unknown"} 1"#,
        r#"siyu_rule_hits_total{rule="coupon"} 3"#,
        r#"siyu_duplicates_suppressed_total{account="safe"} 1"#,
        r#"siyu_callback_seconds_count{account="safe"} 5"#,
    ] {
        assert!(m.body.contains(line), "missing `{line}` in:\n{}", m.body);
    }
    assert!(m.body.contains("siyu_store_bytes "), "{}", m.body);
    app.stop().await;
}

/// docs/openapi.yaml describes every route the admin API serves.
#[test]
fn the_openapi_file_lists_every_route() {
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"),
    )
    .unwrap();
    let source = concat!(
        include_str!("../../src/server/admin.rs"),
        include_str!("../../src/server/admin_campaigns.rs"),
        include_str!("../../src/server/admin_coupons.rs"),
        include_str!("../../src/server/admin_segments.rs"),
        include_str!("../../src/server/admin_sync.rs"),
        include_str!("../../src/server/admin_import.rs"),
        include_str!("../../src/server/admin_people.rs"),
        include_str!("../../src/server/channel_codes.rs"),
        include_str!("../../src/server/admin_reports.rs")
    );
    let routes: Vec<&str> = source
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix(".route(\"")
                .or_else(|| l.strip_prefix("cfg.route(\""))
                .or_else(|| l.strip_prefix("web::resource(\""))
        })
        .map(|l| l.split('"').next().unwrap())
        .chain(
            source
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("\"/") && l.ends_with("\","))
                .map(|l| l.trim_matches(|c| c == '"' || c == ',')),
        )
        .collect();
    assert!(routes.len() >= 25, "{routes:?}");
    for r in routes {
        assert!(
            spec.contains(&format!("/admin/v1{r}:")),
            "{r} is not in docs/openapi.yaml"
        );
    }
}
