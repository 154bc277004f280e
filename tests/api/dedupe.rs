//! WeChat retries: a retry gets the first delivery's reply and applies nothing again.

use crate::helpers::*;

#[tokio::test]
async fn a_retried_message_gets_the_same_reply_and_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    for peer in [SAFE, CORP] {
        let xml = peer.text("o_retry", "优惠券", 424242);
        let first = app.exchange(peer, &xml).await.unwrap();
        let retry = app.exchange(peer, &xml).await.unwrap();
        assert_eq!(tag(&first, "Content"), tag(&retry, "Content"), "{peer:?}");
        assert_eq!(tag(&retry, "Content").as_deref(), Some("领券成功，第 1 次"));
        let f = app
            .store
            .follower(peer.account, "o_retry")
            .unwrap()
            .unwrap();
        assert_eq!(f.counters.get("coupon_asks"), Some(&1), "{peer:?}");
        assert_eq!(f.messages_in, 1);
        assert_eq!(f.history.len(), 1);
        // Same MsgId from another follower is a different message.
        let other = app
            .exchange(peer, &peer.text("o_other", "优惠券", 424242))
            .await
            .unwrap();
        assert_eq!(tag(&other, "Content").as_deref(), Some("领券成功，第 1 次"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_retried_event_is_applied_once_even_when_retries_race() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let xml = SAFE.event("o_race", "subscribe", Some("qrscene_spring-poster"));
    let (query, body) = SAFE.request(&xml, now(), "77");
    let path = format!("/wx/safe?{query}");
    let sends = (0..12).map(|_| app.post(&path, body.clone()));
    let answers = futures_util::future::join_all(sends).await;
    let replies: Vec<Option<String>> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            SAFE.open_reply(&r.body).and_then(|x| tag(&x, "Content"))
        })
        .collect();
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:?}");
    let f = app.store.follower("safe", "o_race").unwrap().unwrap();
    assert_eq!(
        f.scenes.len(),
        1,
        "one subscribe recorded, not {}",
        f.scenes.len()
    );
    assert_eq!(f.history.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_messages_of_one_follower_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let messages: Vec<String> = (0..20u64)
        .map(|i| PLAIN.text("o_busy", "优惠券", 9000 + i))
        .collect();
    let sends = messages.iter().map(|xml| app.callback(PLAIN, xml));
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let f = app.store.follower("plain", "o_busy").unwrap().unwrap();
    assert_eq!(f.counters.get("coupon_asks"), Some(&20));
    assert_eq!(f.messages_in, 20);
    app.stop().await;
}
