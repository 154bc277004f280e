//! Official accounts over real HTTP in each security mode, and the official vector.

use siyu::protocol::sign;

use crate::helpers::*;

#[tokio::test]
async fn url_verification_echoes_echostr_only_with_a_good_signature() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let ts = now().to_string();
    let sig = sign(OFFICIAL_TOKEN, &[&ts, "42"]);
    let ok = app
        .get(&format!(
            "/wx/safe?signature={sig}&timestamp={ts}&nonce=42&echostr=5837397"
        ))
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "5837397"));
    let bad = app
        .get(&format!(
            "/wx/safe?signature={}&timestamp={ts}&nonce=43&echostr=5837397",
            sig
        ))
        .await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    assert!(!bad.body.contains("5837397"));
    assert_eq!(app.get("/healthz").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn every_mode_answers_from_the_rules_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    for peer in [SAFE, COMPAT, PLAIN] {
        let openid = format!("o_{}", peer.account);
        let reply = app
            .exchange(peer, &peer.text(&openid, "请给我优惠券", 1001))
            .await
            .expect("coupon rule replies");
        assert_eq!(tag(&reply, "MsgType").as_deref(), Some("text"), "{peer:?}");
        assert_eq!(
            tag(&reply, "Content").as_deref(),
            Some("领券成功，第 1 次"),
            "{peer:?}"
        );
        assert_eq!(tag(&reply, "ToUserName").as_deref(), Some(openid.as_str()));
        assert_eq!(tag(&reply, "FromUserName").as_deref(), Some(GH_ID));
        let second = app
            .exchange(peer, &peer.text(&openid, "COUPON", 1002))
            .await
            .unwrap();
        assert_eq!(
            tag(&second, "Content").as_deref(),
            Some("领券成功，第 2 次"),
            "{peer:?}"
        );

        let f = app
            .store
            .follower(peer.account, &openid)
            .unwrap()
            .expect("follower stored");
        assert!(f.tags.contains("coupon-seeker"));
        assert_eq!(f.counters.get("coupon_asks"), Some(&2));
        assert_eq!(f.messages_in, 2);
        assert!(f.last_inbound_at.is_some());
    }
    app.stop().await;
}

#[tokio::test]
async fn events_welcome_scan_click_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let peer = SAFE;
    let welcome = app
        .exchange(
            peer,
            &peer.event("o_ev", "subscribe", Some("qrscene_spring-poster")),
        )
        .await
        .unwrap();
    assert_eq!(
        tag(&welcome, "Content").as_deref(),
        Some("春季海报来的朋友，欢迎！渠道：spring-poster")
    );
    let plain = app
        .exchange(peer, &peer.event("o_ev2", "subscribe", None))
        .await
        .unwrap();
    assert_eq!(tag(&plain, "Content").as_deref(), Some("欢迎关注！"));

    let scan = app
        .exchange(
            peer,
            &peer.event_at("o_ev", "SCAN", Some("store-42"), now() - 1),
        )
        .await
        .unwrap();
    assert_eq!(tag(&scan, "Content").as_deref(), Some("扫码场景 store-42"));

    let click = app
        .exchange(peer, &peer.event("o_ev", "CLICK", Some("MENU_COUPON")))
        .await
        .unwrap();
    assert_eq!(tag(&click, "MsgType").as_deref(), Some("news"));
    assert_eq!(tag(&click, "ArticleCount").as_deref(), Some("1"));
    assert_eq!(tag(&click, "Title").as_deref(), Some("本周优惠"));

    let transfer = app
        .exchange(peer, &peer.text("o_ev", "人工", 7))
        .await
        .unwrap();
    assert_eq!(
        tag(&transfer, "MsgType").as_deref(),
        Some("transfer_customer_service")
    );

    let bye = app
        .exchange(peer, &peer.event_at("o_ev", "unsubscribe", None, now() + 1))
        .await;
    assert_eq!(bye, None, "unsubscribe answers success");

    let f = app.store.follower("safe", "o_ev").unwrap().unwrap();
    assert!(!f.subscribed);
    assert!(f.unsubscribed_at.is_some());
    assert!(f.first_subscribed_at.is_some(), "unsubscribe keeps history");
    assert_eq!(f.first_scene.as_deref(), Some("spring-poster"));
    let scenes: Vec<&str> = f.scenes.iter().map(|s| s.scene.as_str()).collect();
    assert_eq!(scenes, ["spring-poster", "store-42"]);
    assert!(f.tags.contains("channel-spring") && f.tags.contains("churned"));
    app.stop().await;
}

#[tokio::test]
async fn default_reply_vip_condition_and_unsupported_types() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let peer = PLAIN;
    let fallback = app
        .exchange(peer, &peer.text("o_d", "随便说说", 1))
        .await
        .unwrap();
    assert_eq!(tag(&fallback, "Content").as_deref(), Some("收到：随便说说"));
    // Not a VIP yet: the vip rule's condition fails, so the default answers.
    let not_vip = app
        .exchange(peer, &peer.text("o_d", "会员", 2))
        .await
        .unwrap();
    assert_eq!(tag(&not_vip, "Content").as_deref(), Some("收到：会员"));
    app.exchange(peer, &peer.text("o_d", "升级会员", 3))
        .await
        .unwrap();
    let vip = app
        .exchange(peer, &peer.text("o_d", "会员", 4))
        .await
        .unwrap();
    assert_eq!(tag(&vip, "Content").as_deref(), Some("尊贵的会员您好"));

    let odd = format!(
        "<xml><ToUserName>{GH_ID}</ToUserName><FromUserName>o_new</FromUserName><CreateTime>{}</CreateTime><MsgType>hologram</MsgType><MsgId>9</MsgId></xml>",
        now()
    );
    let r = app.callback(peer, &odd).await;
    assert_eq!((r.status, r.body.as_str()), (200, "success"));
    assert!(app.store.follower("plain", "o_new").unwrap().is_none());
    app.stop().await;
}

/// The official vector, posted byte for byte as WeChat sent it (its timestamp is old, so
/// this app runs with the clock check off).
#[tokio::test]
async fn official_vector_over_http() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/wechat.json")).unwrap();
    let v = &vectors["official_generated"]["message"];
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.max_clock_skew_secs = 0;
    let app = spawn_with(settings).await;
    let query = format!(
        "signature={}&timestamp={}&nonce={}&openid={}&encrypt_type=aes&msg_signature={}",
        s("signature"),
        s("timestamp"),
        s("nonce"),
        s("openid"),
        s("msg_signature")
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt></xml>",
        s("encrypt")
    );
    let r = app.post(&format!("/wx/safe?{query}"), body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reply = SAFE.open_reply(&r.body).unwrap();
    // The vector's text is `优惠券 ]]> 😀`: the coupon rule answers.
    assert_eq!(tag(&reply, "Content").as_deref(), Some("领券成功，第 1 次"));
    assert_eq!(
        tag(&reply, "ToUserName").as_deref(),
        Some(s("openid").as_str())
    );
    assert_eq!(
        tag(&r.body, "TimeStamp").as_deref(),
        Some(s("timestamp").as_str())
    );
    app.stop().await;
}
