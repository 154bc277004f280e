//! Reports end to end over real HTTP, on sled and on PostgreSQL: two channels with their
//! own arrival tags and welcomes, followers arriving (one callback retried), scanning,
//! writing, unfollowing, coming back and ordering, the server SIGKILLed in the middle;
//! then the channel and daily reports' figures exact (admin API, and the CLI beside the
//! server and without it), and `siyu report rebuild` agreeing with the live counters.

use std::path::Path;

use serde_json::{json, Value};

use crate::crash::{serve_env, Serve};
use crate::helpers::*;
use crate::ingest::{ingest_config, TOKEN};

const VIEWER: &str = "viewer-secret-0123456789";
const REDEEM: &str = "shop-redeem-0123456789";

fn reports_config(dir: &Path) -> String {
    let config = ingest_config(dir, &format!("token = \"{TOKEN}\"\n"));
    std::fs::write(
        dir.join("replies/welcome.toml"),
        r#"
[[rule]]
name = "poster-welcome"
event = "subscribe"
if_tag = "poster"
reply = "海报欢迎"

[[rule]]
name = "store-welcome"
event = "subscribe"
if_tag = "store"
reply = "门店欢迎"

[[rule]]
name = "hello"
keywords = ["你好"]
reply = "你好呀"

[[rule]]
name = "coupon"
keywords = ["领券"]
issue_coupon = "new-guest"
reply = "券码 {coupon.code} 。"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("channels.toml"),
        r#"
[[channel]]
name = "poster"
account = "plain"
kind = "qr_temporary"
title = "春季海报"
tags = ["poster"]

[[channel]]
name = "store-7"
account = "plain"
kind = "qr_permanent"
title = "七号门店"
tags = ["store"]

[[channel]]
name = "quiet"
account = "plain"
kind = "scene"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("coupons.toml"),
        "[[batch]]\nname = \"new-guest\"\ntitle = \"新客礼\"\nvalue = \"满 30 减 10\"\nstock = 100\nvalid_days = 7\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[channels]\nfile = \"channels.toml\"\n"
        + &format!("\n[coupons]\nfile = \"coupons.toml\"\nredeem_token = \"{REDEEM}\"\n");
    std::fs::write(&config, text).unwrap();
    config
}

async fn callback(client: &reqwest::Client, base: &str, xml: &str) -> String {
    let (query, body) = PLAIN.request(xml, now(), "5");
    let r = client
        .post(format!("{base}/wx/plain?{query}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn subscribe(
    client: &reqwest::Client,
    base: &str,
    openid: &str,
    scene: Option<&str>,
) -> String {
    let key = scene.map(|s| format!("qrscene_{s}"));
    callback(
        client,
        base,
        &PLAIN.event(openid, "subscribe", key.as_deref()),
    )
    .await
}

fn order(id: &str, openid: &str, yuan: i64) -> Value {
    // A few seconds ahead: after every scan of the test, so the last touch is known.
    json!({"id": id, "account": "plain", "openid": openid, "type": "order_paid",
           "at": now() + 5, "props": {"amount": yuan, "sku": "tea"}})
}

async fn shop(client: &reqwest::Client, base: &str, events: &[Value]) -> Vec<String> {
    let r = client
        .post(format!("{base}/ingest/v1/events"))
        .bearer_auth(TOKEN)
        .body(json!({ "events": events }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

async fn admin_get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = client
        .get(format!("{base}{path}"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The days around today: the scenario may straddle a local midnight.
fn span() -> (String, String) {
    let today = siyu::local_time::UtcOffset::CHINA.day(now());
    (
        siyu::local_time::day_date(today - 1),
        siyu::local_time::day_date(today + 1),
    )
}

fn row<'a>(report: &'a Value, channel: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == channel)
        .unwrap_or_else(|| panic!("no row for `{channel}`: {report}"))
}

/// The figures of one row, by field name.
fn figures(row: &Value, fields: &[&str]) -> Vec<i64> {
    fields
        .iter()
        .map(|f| {
            f.split('.')
                .fold(row, |v, k| match k.parse::<usize>() {
                    Ok(i) => &v[i],
                    Err(_) => &v[k],
                })
                .as_i64()
                .unwrap_or_else(|| panic!("no `{f}` in {row}"))
        })
        .collect()
}

async fn scenario(config: &str, env: &[(&str, &str)]) {
    let client = reqwest::Client::new();
    let mut first = serve_env(config, env);
    let base = first.base.clone();
    for i in 1..=5 {
        let xml = PLAIN.event(&format!("p{i}"), "subscribe", Some("qrscene_poster"));
        let reply = callback(&client, &base, &xml).await;
        assert!(reply.contains("海报欢迎"), "{reply}");
        if i == 1 {
            // WeChat retries p1's subscribe (the same callback): counted once.
            let again = callback(&client, &base, &xml).await;
            assert_eq!(tag(&again, "Content"), tag(&reply, "Content"), "{again}");
        }
    }
    for i in 1..=3 {
        let reply = subscribe(&client, &base, &format!("s{i}"), Some("store-7")).await;
        assert!(reply.contains("门店欢迎"), "{reply}");
    }
    for i in 1..=2 {
        subscribe(&client, &base, &format!("d{i}"), None).await;
    }
    // SIGKILL: everything answered above is on disk.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let second: Serve = serve_env(config, env);
    let base = second.base.clone();
    callback(&client, &base, &PLAIN.event("p2", "SCAN", Some("store-7"))).await;
    for (i, openid) in ["p1", "p2", "s1"].iter().enumerate() {
        let reply = callback(&client, &base, &PLAIN.text(openid, "你好", 100 + i as u64)).await;
        assert!(reply.contains("你好呀"), "{reply}");
    }
    callback(&client, &base, &PLAIN.event("p4", "unsubscribe", None)).await;
    callback(&client, &base, &PLAIN.event("p5", "unsubscribe", None)).await;
    // p5 comes back through the store's code.
    let reply = subscribe(&client, &base, "p5", Some("store-7")).await;
    assert!(reply.contains("欢迎"), "{reply}");
    // p1 takes a coupon and redeems it at the shop.
    let reply = callback(&client, &base, &PLAIN.text("p1", "领券", 200)).await;
    let code = reply
        .split("券码 ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    let r = client
        .post(format!("{base}/coupons/v1/redeem"))
        .bearer_auth(REDEEM)
        .body(json!({ "code": code }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let orders = [
        order("o-1", "p1", 100),
        order("o-2", "p2", 50),
        order("o-3", "s1", 20),
    ];
    assert_eq!(shop(&client, &base, &orders).await, ["applied"; 3]);
    assert_eq!(
        shop(&client, &base, &orders).await,
        ["duplicate"; 3],
        "a resend counts nothing"
    );

    let (from, to) = span();
    let q = format!("account=plain&from={from}&to={to}");
    let report = admin_get(&client, &base, &format!("/admin/v1/reports/channels?{q}")).await;
    assert_eq!(report["attribution"], "first_touch");
    let fields = [
        "scans",
        "new",
        "returning",
        "unfollows",
        "left_1d",
        "left_7d",
        "left_30d",
        "still_7d",
        "ordered",
        "messages",
        "active",
        "shop_events",
        "shop.orders",
        "shop.spend_fen",
        "last_touch_shop_events",
        "last_touch_shop.spend_fen",
        "coupons_claimed",
        "coupons_redeemed",
    ];
    let poster = row(&report, "poster");
    assert_eq!(poster["title"], "春季海报");
    assert_eq!(
        figures(poster, &fields),
        [5, 5, 0, 2, 2, 2, 2, 3, 2, 3, 5, 2, 2, 15_000, 1, 10_000, 1, 1],
        "{poster}"
    );
    assert_eq!(
        figures(poster, &["funnel.0", "funnel.1", "funnel.2", "funnel.3"]),
        [5, 5, 3, 2]
    );
    let store = row(&report, "store-7");
    assert_eq!(
        figures(store, &fields[..12]),
        [5, 3, 1, 0, 0, 0, 0, 4, 1, 1, 3, 1],
        "{store}"
    );
    assert_eq!(
        figures(
            store,
            &[
                "shop.spend_fen",
                "last_touch_shop_events",
                "last_touch_shop.spend_fen"
            ]
        ),
        [2_000, 2, 7_000]
    );
    let direct = row(&report, "");
    assert_eq!(
        figures(direct, &["scans", "new", "active"]),
        [0, 2, 2],
        "{direct}"
    );
    // A channel nobody came through is still a row (of zeros).
    assert_eq!(figures(row(&report, "quiet"), &["scans", "new"]), [0, 0]);

    let daily = admin_get(&client, &base, &format!("/admin/v1/reports/daily?{q}")).await;
    let days = daily["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    let sum = |f: &str| -> i64 {
        days.iter()
            .map(|d| f.split('.').fold(d, |v, k| &v[k]).as_i64().unwrap_or(0))
            .sum()
    };
    let totals: Vec<i64> = [
        "new",
        "returning",
        "unfollows",
        "net",
        "active",
        "messages",
        "rule_hits",
        "shop_events",
        "shop.orders",
        "shop.spend_fen",
        "coupons_claimed",
        "coupons_redeemed",
    ]
    .iter()
    .map(|f| sum(f))
    .collect();
    // Rule hits: 8 channel welcomes, p5's second welcome, 3 hellos, 1 coupon (the direct
    // followers' subscribes match no rule).
    assert_eq!(
        totals,
        [10, 1, 2, 9, 10, 4, 13, 3, 3, 17_000, 1, 1],
        "{daily}"
    );
    // Today's figures as Prometheus gauges.
    let today = siyu::local_time::day_date(siyu::local_time::UtcOffset::CHINA.day(now()));
    let today_new = days
        .iter()
        .find(|d| d["date"] == today.as_str())
        .map_or(0, |d| d["new"].as_i64().unwrap());
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = format!("siyu_report_today{{account=\"plain\",metric=\"new\"}} {today_new}");
    assert!(metrics.contains(&gauge), "{gauge} not in {metrics}");

    // The CLI beside the running server reads the same report through the admin API.
    let mut beside = env.to_vec();
    let bind = base.trim_start_matches("http://").to_string();
    beside.push(("SIYU_ADMIN_TOKEN", VIEWER));
    beside.push(("SIYU_BIND", &bind));
    let (code, out, err) = siyu_env(
        &[
            "report",
            "channels",
            "--config",
            config,
            "--account",
            "plain",
            "--from",
            &from,
            "--to",
            &to,
            "--json",
        ],
        &beside,
    );
    assert_eq!(code, 0, "{err}");
    let through_server: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(through_server, report);
    let live = admin_get(&client, &base, "/admin/v1/reports/rebuild?account=plain").await;
    assert_eq!(live["differences"], json!([]), "{live}");
    drop(second);

    // The server stopped: the CLI reads the store itself.
    let (code, out, err) = siyu_env(
        &[
            "report",
            "channels",
            "--config",
            config,
            "--account",
            "plain",
            "--from",
            &from,
            "--to",
            &to,
            "--csv",
        ],
        env,
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{head:?}"))
    };
    let poster_line: Vec<&str> = lines
        .find(|l| l.starts_with("poster,"))
        .unwrap_or_else(|| panic!("{out}"))
        .split(',')
        .collect();
    assert_eq!(poster_line[col("title")], "春季海报");
    assert_eq!(poster_line[col("still_7d")], "3");
    assert_eq!(poster_line[col("shop:spend_fen")], "15000");
    let (code, out, err) = siyu_env(
        &[
            "report",
            "rebuild",
            "--config",
            config,
            "--account",
            "plain",
        ],
        env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agree"), "{out}");
    let (code, out, err) = siyu_env(
        &[
            "report",
            "daily",
            "--config",
            config,
            "--account",
            "plain",
            "--from",
            &to,
            "--to",
            &from,
        ],
        env,
    );
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("--from must not be after --to"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_daily_reports_are_exact_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = reports_config(dir.path());
    scenario(&config, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_daily_reports_are_exact_across_a_sigkill_on_postgres() {
    let Some(db) = siyu::store::postgres::testing::TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = crate::postgres::on_postgres(&reports_config(dir.path()));
    scenario(&config, &[("SIYU_DATABASE_URL", db.url.as_str())]).await;
}
