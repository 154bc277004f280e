//! State and dedupe keys survive a restart on the same sled folder.

use siyu::store::Store;

use crate::helpers::*;

#[tokio::test]
async fn state_and_dedupe_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let xml = SAFE.text("o_keep", "优惠券", 5555);
    let app = spawn_app(&dir).await;
    app.exchange(
        SAFE,
        &SAFE.event("o_keep", "subscribe", Some("qrscene_spring-poster")),
    )
    .await
    .unwrap();
    let first = app.exchange(SAFE, &xml).await.unwrap();
    app.stop().await;

    let app = spawn_app(&dir).await;
    let retry = app.exchange(SAFE, &xml).await.unwrap();
    assert_eq!(
        tag(&retry, "Content"),
        tag(&first, "Content"),
        "a retry after restart is still a retry"
    );
    let next = app
        .exchange(SAFE, &SAFE.text("o_keep", "优惠券", 5556))
        .await
        .unwrap();
    assert_eq!(tag(&next, "Content").as_deref(), Some("领券成功，第 2 次"));
    let path = app.store_path.clone();
    app.stop().await;

    let store = open_store(&path);
    let f = store.follower("safe", "o_keep").unwrap().unwrap();
    assert_eq!(f.first_scene.as_deref(), Some("spring-poster"));
    assert!(f.tags.contains("channel-spring") && f.tags.contains("coupon-seeker"));
    assert_eq!(f.counters.get("coupon_asks"), Some(&2));
    assert_eq!(f.messages_in, 2);
}
