//! Coupons over real HTTP and the CLI: a shop system redeems a follower's code once, with
//! a clear refusal for a second time, an unknown or an expired code; stats add up.

use reqwest::Method;
use siyu::config::Secret;
use siyu::store::Store;

use crate::helpers::*;

const COUPONS: &str = r#"
[[batch]]
name = "new-guest"
title = "新客礼"
value = "满 30 减 10"
stock = 100
valid_days = 7

[[batch]]
name = "shop"
value = "10 元"
valid_until = 2020-01-01
codes_csv = "shop-codes.csv"
"#;

fn write_coupons(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("shop-codes.csv"),
        "券码,备注\nSHOP-0001,x\nSHOP-0002,y\n",
    )
    .unwrap();
    let path = dir.join("coupons.toml");
    std::fs::write(&path, COUPONS).unwrap();
    path
}

#[tokio::test]
async fn a_shop_redeems_a_code_once_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.coupons_file = Some(write_coupons(dir.path()));
    s.load_coupons().unwrap();
    s.redeem_token = Some(Secret::new("shop-secret-0123456789"));
    let batch = s.coupon_batch("new-guest").unwrap().clone();
    let app = spawn_with(s).await;
    let coupon = app
        .store
        .claim_coupon(&batch, "safe", "o_buyer", now(), None)
        .unwrap()
        .unwrap();
    let redeem = |token: Option<&'static str>, code: String| {
        let app = &app;
        async move {
            app.admin(
                Method::POST,
                "/coupons/v1/redeem",
                token,
                Some(format!(r#"{{"code":"{code}"}}"#)),
            )
            .await
        }
    };
    // The admin API's tokens are not the shop's.
    assert_eq!(redeem(Some(ADMIN), coupon.code.clone()).await.status, 401);
    assert_eq!(redeem(None, coupon.code.clone()).await.status, 401);
    let shop = Some("shop-secret-0123456789");
    let r = redeem(shop, coupon.code.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["redeemed"]["openid"], "o_buyer");
    let again = redeem(shop, coupon.code.clone()).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.json()["error"]
        .as_str()
        .unwrap()
        .contains("already redeemed"));
    let unknown = redeem(shop, "NOPE-0000".into()).await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("unknown coupon code `NOPE-0000`"),
        "{}",
        unknown.body
    );
    let stored = app.store.coupon(&coupon.code).unwrap().unwrap();
    assert!(stored.redeemed_at.is_some());
    let audit = app.store.audit(5).unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "coupon.redeem" && e.who == "shop"));
    app.stop().await;
}

#[test]
fn coupon_cli_lists_redeems_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    write_coupons(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "[storage]",
            "[coupons]\nfile = \"coupons.toml\"\n\n[storage]",
        ),
    )
    .unwrap();

    let (code, out, err) = siyu(&["coupon", "--config", &config, "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("new-guest") && out.contains("满 30 减 10"),
        "{out}"
    );
    assert!(out.contains("shop") && out.contains("stock 2"), "{out}");

    let mut s = siyu::config::Settings::load(std::path::Path::new(&config)).unwrap();
    s.load_coupons().unwrap();
    let (fresh, old) = {
        let store = open_store(&s.storage_path);
        let fresh = store
            .claim_coupon(
                s.coupon_batch("new-guest").unwrap(),
                "safe",
                "o1",
                now(),
                None,
            )
            .unwrap()
            .unwrap();
        // The shop batch ended in 2020: nothing to claim.
        let refused =
            store.claim_coupon(s.coupon_batch("shop").unwrap(), "safe", "o1", now(), None);
        assert!(refused.unwrap().is_err());
        // An expired code, issued by a batch that ended long ago.
        let mut past = s.coupon_batch("new-guest").unwrap().clone();
        past.name = "new-guest".into();
        let old = store
            .claim_coupon(&past, "safe", "o2", 1_000, None)
            .unwrap()
            .unwrap();
        store.flush().unwrap();
        (fresh, old)
    };
    let (code, out, err) = siyu(&["coupon", "--config", &config, "redeem", &fresh.code]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("redeemed {}", fresh.code)), "{out}");
    let (code, _, err) = siyu(&["coupon", "--config", &config, "redeem", &fresh.code]);
    assert_eq!(code, 1);
    assert!(err.contains("already redeemed"), "{err}");
    let (code, _, err) = siyu(&["coupon", "--config", &config, "redeem", &old.code]);
    assert_eq!(code, 1);
    assert!(err.contains("expired"), "{err}");
    let (code, _, err) = siyu(&["coupon", "--config", &config, "redeem", "NOPE-0000"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown coupon code"), "{err}");
    let (code, out, err) = siyu(&["coupon", "--config", &config, "stats", "new-guest"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("issued 2, redeemed 1, expired 1, left 98"),
        "{out}"
    );
    let (code, _, err) = siyu(&["coupon", "--config", &config, "stats", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no coupon batch `nope`"), "{err}");

    // A typo in the coupons file is refused with its place, by every command.
    std::fs::write(
        dir.path().join("coupons.toml"),
        COUPONS.replace("stock = 100", "stock = -1"),
    )
    .unwrap();
    let (code, _, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("coupons.toml:6:9: stock must be at least 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyword_issues_a_coupon_once_even_under_concurrent_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.coupons_file = Some(write_coupons(dir.path()));
    s.load_coupons().unwrap();
    std::fs::write(
        s.replies_dir.join("zz_coupon.toml"),
        "[[rule]]\nname = \"claim\"\nkeywords = [\"领券\"]\nissue_coupon = \"new-guest\"\n\
         reply = \"{coupon.title}：{coupon.code}（{coupon.value}，{coupon.expires} 前有效）\"\n\
         coupon_refused = \"抱歉，{coupon.title}{coupon.refused}\"\n",
    )
    .unwrap();
    let batch = s.coupon_batch("new-guest").unwrap().clone();
    let app = spawn_with(s).await;
    let content = |reply: Option<String>| tag(&reply.unwrap(), "Content").unwrap();

    let first = content(app.exchange(SAFE, &SAFE.text("o_c1", "领券", 1)).await);
    assert!(first.starts_with("新客礼："), "{first}");
    let code = first["新客礼：".len()..]
        .split('（')
        .next()
        .unwrap()
        .to_string();
    let owned = app
        .store
        .coupon(&code)
        .unwrap()
        .expect("the code is stored");
    assert_eq!(
        (owned.openid.as_str(), owned.account.as_str()),
        ("o_c1", "safe")
    );
    assert!(first.contains("满 30 减 10"), "{first}");

    // WeChat retrying the callback gets the same reply and no second code.
    let retry = content(app.exchange(SAFE, &SAFE.text("o_c1", "领券", 1)).await);
    assert_eq!(retry, first);
    // Asking again: one per follower.
    let again = content(app.exchange(SAFE, &SAFE.text("o_c1", "领券", 2)).await);
    assert_eq!(again, "抱歉，新客礼已领取过");

    // 20 callbacks of one new follower at once: exactly one gets a code.
    let calls = (0..20).map(|i| {
        let app = &app;
        async move {
            let xml = SAFE.text("o_c2", "领券", 100 + i);
            content(app.exchange(SAFE, &xml).await)
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let winners: Vec<&String> = replies
        .iter()
        .filter(|r| r.starts_with("新客礼："))
        .collect();
    assert_eq!(winners.len(), 1, "{replies:#?}");
    assert_eq!(
        replies
            .iter()
            .filter(|r| *r == "抱歉，新客礼已领取过")
            .count(),
        19
    );
    let stats = app.store.coupon_stats(&batch, now()).unwrap();
    assert_eq!((stats.issued, stats.left), (2, 98));
    app.stop().await;
}
