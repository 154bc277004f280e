//! A WeCom self-built app over real HTTP, with the official WeCom vectors.

use crate::helpers::*;

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../vectors/wechat.json")).unwrap()
}

#[tokio::test]
async fn url_verification_and_message_vectors() {
    let v = vectors();
    let w = &v["wecom_doc"];
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.max_clock_skew_secs = 0; // the vectors are from 2014
    let app = spawn_with(settings).await;

    let u = &w["verify_url"];
    let s = |k: &str| u[k].as_str().unwrap().to_string();
    let r = app
        .get(&format!(
            "/wx/corp?msg_signature={}&timestamp={}&nonce={}&echostr={}",
            s("msg_signature"),
            s("timestamp"),
            s("nonce"),
            encode(&s("echostr"))
        ))
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, s("echostr_plain").as_str())
    );

    let m = &w["message"];
    let s = |k: &str| m[k].as_str().unwrap().to_string();
    let body = format!(
        "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>",
        s("encrypt")
    );
    let r = app
        .post(
            &format!(
                "/wx/corp?msg_signature={}&timestamp={}&nonce={}",
                s("msg_signature"),
                s("timestamp"),
                s("nonce")
            ),
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // "hello" is in the greeting intent.
    let reply = CORP.open_reply(&r.body).unwrap();
    assert_eq!(tag(&reply, "Content").as_deref(), Some("你好呀 mycreate"));
    assert_eq!(tag(&reply, "ToUserName").as_deref(), Some("mycreate"));
    assert_eq!(tag(&reply, "FromUserName").as_deref(), Some(CORP_ID));
    app.stop().await;
}

#[tokio::test]
async fn external_contact_is_recorded_under_the_external_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let xml = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[staff-zhang]]></UserID><ExternalUserID><![CDATA[wmEXT001]]></ExternalUserID><State><![CDATA[store-7]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode><AgentID>218</AgentID></xml>",
        now()
    );
    // No passive reply can reach an external contact: the answer is `success`.
    assert_eq!(app.exchange(CORP, &xml).await, None);
    let f = app
        .store
        .follower("corp", "wmEXT001")
        .unwrap()
        .expect("contact stored");
    assert!(f.subscribed);
    assert!(f.tags.contains("wecom-contact"));
    assert_eq!(f.first_scene.as_deref(), Some("store-7"));
    assert_eq!(
        f.attributes.get("wecom_staff").map(String::as_str),
        Some("staff-zhang")
    );
    assert!(app.store.follower("corp", "sys").unwrap().is_none());

    // A member's text message is answered with an encrypted reply.
    let reply = app
        .exchange(CORP, &CORP.text("zhangsan", "hi", 5))
        .await
        .unwrap();
    assert_eq!(tag(&reply, "Content").as_deref(), Some("你好呀 zhangsan"));
    app.stop().await;
}
