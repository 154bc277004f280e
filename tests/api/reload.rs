//! Rule changes while serving: picked up from disk without a restart, refused when
//! invalid (the old rules keep answering), and never seen half-applied by a callback.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::helpers::*;

/// The text the coupon keyword gets now.
async fn coupon_reply(app: &TestApp, msg_id: u64) -> String {
    let xml = PLAIN.text("o_reload", "优惠券", msg_id);
    let reply = app.exchange(PLAIN, &xml).await.expect("a reply");
    tag(&reply, "Content").unwrap()
}

/// Polls until `check` holds or 10 s pass (the watcher debounces for 250 ms).
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const NEW_RULE: &str = r#"
[[rule]]
name = "coupon-v2"
priority = 100
keywords = ["优惠券"]
reply = "新版优惠：满 50 减 20"
"#;

#[tokio::test]
async fn a_rule_file_changed_on_disk_takes_effect_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    assert_eq!(coupon_reply(&app, 1).await, "领券成功，第 1 次");
    let before = app.get("/healthz").await.json()["rules"][0]["version"]["hash"].clone();

    std::fs::write(dir.path().join("replies/zz_new.toml"), NEW_RULE).unwrap();
    let mut id = 10;
    assert!(
        eventually(|| {
            id += 1;
            let app = &app;
            async move { coupon_reply(app, id).await == "新版优惠：满 50 减 20" }
        })
        .await,
        "the new rule never answered"
    );
    let health = app.get("/healthz").await.json();
    assert_ne!(
        health["rules"][0]["version"]["hash"], before,
        "a new version is reported"
    );
    let audit = app
        .admin(Method::GET, "/admin/v1/audit", Some(ADMIN), None)
        .await
        .json();
    let entry = &audit["entries"][0];
    assert_eq!(
        (entry["who"].as_str(), entry["action"].as_str()),
        (Some("file-watcher"), Some("rules.reload"))
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_old_rules_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let main = dir.path().join("replies/main.toml");
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        good.replace("intent = \"greeting\"", "intent = \"greting\""),
    )
    .unwrap();
    assert!(
        eventually(|| async { app.get("/healthz").await.status == 503 }).await,
        "health never reported the refused folder"
    );
    let health = app.get("/healthz").await.json();
    let error = health["rules"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("main.toml:") && error.contains("greting"),
        "{error}"
    );
    // Still answering with the rules in force.
    assert_eq!(coupon_reply(&app, 1).await, "领券成功，第 1 次");

    std::fs::write(&main, &good).unwrap();
    assert!(eventually(|| async { app.get("/healthz").await.status == 200 }).await);
    let audit = app
        .admin(Method::GET, "/admin/v1/audit?limit=10", Some(ADMIN), None)
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"rules.reload_failed"), "{actions:?}");
    app.stop().await;
}

#[tokio::test]
async fn callbacks_in_flight_during_reloads_all_get_a_consistent_answer() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let version = |v: &str| {
        format!(
            "[[rule]]\nname = \"flip\"\npriority = 100\nkeywords = [\"优惠券\"]\nreply = \"版本{v}：{v}{v}{v}\"\n"
        )
    };
    let answers = ["版本A：AAA".to_string(), "版本B：BBB".to_string()];
    let r = app
        .admin(
            Method::PUT,
            "/admin/v1/rules/flip.toml",
            Some(OPERATOR),
            Some(version("A")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let messages: Vec<String> = (0..200u64)
        .map(|i| PLAIN.text(&format!("o_flip_{}", i % 20), "优惠券", 50_000 + i))
        .collect();
    let callbacks =
        futures_util::future::join_all(messages.iter().map(|xml| app.callback(PLAIN, xml)));
    let reloads = async {
        for i in 0..20 {
            let v = if i % 2 == 0 { "B" } else { "A" };
            let r = app
                .admin(
                    Method::PUT,
                    "/admin/v1/rules/flip.toml",
                    Some(OPERATOR),
                    Some(version(v)),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    let (results, ()) = tokio::join!(callbacks, reloads);
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.body);
        let content = tag(&PLAIN.open_reply(&r.body).unwrap(), "Content").unwrap();
        assert!(
            answers.contains(&content),
            "a torn or unexpected answer: {content}"
        );
    }
    assert_eq!(results.len(), 200);
    app.stop().await;
}
