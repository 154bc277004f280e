//! Automatic tags put on or taken off outside a callback reach WeChat: a sync's, an
//! import's (both beside a running sled server, through its admin API) and a shop event's
//! removal. The real binaries over real HTTP, against the fake WeChat, from the config's
//! folder with relative paths. WeChat's own tags, brought in by the sync, are not sent
//! back.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};
use siyu::fake_wechat::{FakeWechat, FakeWechatHandle, PopulationRequest};

use crate::beside_server::Server;
use crate::helpers::*;
use crate::outbox::eventually;

const BATCH_TAG: &str = "/cgi-bin/tags/members/batchtagging";
const BATCH_UNTAG: &str = "/cgi-bin/tags/members/batchuntagging";
const OPERATOR: &str = "operator-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";
const SHOP: &str = "shop-ingest-secret-0123";

const AUTOTAGS: &str = r#"
[[autotag]]
tag = "newbie"
when = "counter.orders < 1"
remove = true

[[autotag]]
tag = "big-spender"
when = "counter.spend_fen >= 100000"
"#;

/// `config.toml` in `dir`: the `safe` account talks to the fake, its rules are `AUTOTAGS`,
/// the shop may post `order_paid`.
fn config(dir: &Path, fake: &FakeWechatHandle) -> String {
    let replies = dir.join("replies");
    std::fs::create_dir_all(&replies).unwrap();
    std::fs::write(replies.join("autotags.toml"), AUTOTAGS).unwrap();
    let config = config_in(dir, &replies);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "mode = \"safe\"\n",
        &format!(
            "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"{}\"\nrate_per_sec = 0.0\ntimeout_ms = 2000\n",
            fake.base_url()
        ),
        1,
    ) + &format!(
        "\n[ingest]\ntoken = \"{SHOP}\"\n\n[[ingest.event]]\ntype = \"order_paid\"\ncount = [\"orders\"]\ntags = [\"buyer\"]\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// `siyu ARGS --config config.toml` run in `dir`, beside the server when `env` says so.
async fn siyu_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--config".to_string(), "config.toml".to_string()]);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = siyu_command(&args, &env)
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn admin(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{}{path}", server.bind))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The openids of every accepted call to `path` for WeChat's tag `tag_id`.
fn sent(fake: &FakeWechatHandle, path: &str, tag_id: i64) -> Vec<String> {
    fake.accepted(path)
        .iter()
        .filter(|c| c.body["tagid"] == tag_id)
        .flat_map(|c| {
            c.body["openid_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autotags_of_a_sync_an_import_and_a_shop_event_reach_wechat() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let mut population = PopulationRequest::new(3, 11);
    population.tags = [("老客".to_string(), 1)].into();
    let wechat_tags = fake.populate(population).unwrap();
    let openids = fake.followers(None, 0, 3).openids;
    let (a, b) = (openids[0].clone(), openids[1].clone());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake);
    let server = Server::start(&config);
    let env = [
        ("SIYU_BIND", server.bind.as_str()),
        ("SIYU_ADMIN_TOKEN", OPERATOR),
    ];

    // A sync beside the server: every follower meets `newbie`; WeChat is told.
    let (code, out, err) = siyu_in(
        dir.path(),
        &["followers", "sync", "--account", "safe"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    eventually(20, "the sync's autotag on WeChat", || {
        openids.iter().all(|o| fake.has_tag(o, "newbie"))
    })
    .await;

    // An import beside the server, the file named relative to the config's folder.
    std::fs::write(
        dir.path().join("shop.csv"),
        format!("openid,counters\n{a},spend_fen=150000\n,orders=1\n"),
    )
    .unwrap();
    let import = ["followers", "import", "shop.csv", "--account", "safe"];
    let dry: Vec<&str> = import.iter().copied().chain(["--dry-run"]).collect();
    let (code, out, err) = siyu_in(dir.path(), &dry, &env).await;
    assert_eq!(code, 1, "a bad line: {out}{err}");
    assert_eq!(
        out.trim(),
        "new 0, updated 1, unchanged 0, bad lines 1 (dry run: nothing changed)"
    );
    assert_eq!(err.trim(), "shop.csv:3: the openid is empty");
    let follower = format!("/admin/v1/followers/safe/{a}");
    let (_, f) = admin(&server, Method::GET, &follower, VIEWER, "").await;
    assert!(f["counters"].get("spend_fen").is_none(), "a dry run: {f}");
    let (code, out, err) = siyu_in(dir.path(), &import, &env).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.trim(), "new 0, updated 1, unchanged 0, bad lines 1");
    assert_eq!(err.trim(), "shop.csv:3: the openid is empty");
    let (_, f) = admin(&server, Method::GET, &follower, VIEWER, "").await;
    assert_eq!(f["counters"]["spend_fen"], 150000, "{f}");
    let tags: Vec<&str> = f["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&"big-spender") && tags.contains(&"老客"),
        "{f}"
    );
    eventually(20, "the import's autotag on WeChat", || {
        fake.has_tag(&a, "big-spender")
    })
    .await;
    assert!(!fake.has_tag(&b, "big-spender"));
    // Audited under the token's name, with what it did.
    let (_, audit) = admin(
        &server,
        Method::GET,
        "/admin/v1/audit?limit=5",
        "admin-secret-0123456789",
        "",
    )
    .await;
    let entry = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .find(|e| e["action"] == "followers.import")
        .unwrap_or_else(|| panic!("no import audited: {audit}"))
        .clone();
    assert_eq!(entry["who"], "ops-li", "{entry}");
    assert_eq!(entry["target"], "safe/shop.csv", "{entry}");
    assert_eq!(
        entry["detail"], "new 0, updated 1, unchanged 0, bad lines 1",
        "{entry}"
    );

    // The route itself: a refused header refuses the file; a viewer may not import.
    let (status, body) = admin(
        &server,
        Method::POST,
        "/admin/v1/followers/safe/import?file=up.csv",
        OPERATOR,
        "tags\nvip\n",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"],
        json!(["up.csv:1: the header has no `openid` column"])
    );
    let (status, _) = admin(
        &server,
        Method::POST,
        "/admin/v1/followers/safe/import",
        VIEWER,
        "openid\no1\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = admin(
        &server,
        Method::POST,
        "/admin/v1/followers/nope/import",
        OPERATOR,
        "openid\no1\n",
    )
    .await;
    assert_eq!(status, 404);

    // A shop event: b's first order ends `newbie` (remove = true), and WeChat is told.
    let event = json!({"events": [{"id": "order-1", "account": "safe", "openid": b,
        "type": "order_paid", "at": now() - 60}]});
    let (status, body) = admin(
        &server,
        Method::POST,
        "/ingest/v1/events",
        SHOP,
        &event.to_string(),
    )
    .await;
    assert_eq!(
        (status, body["results"][0]["status"].clone()),
        (200, json!("applied")),
        "{body}"
    );
    eventually(20, "the event's autotag removal on WeChat", || {
        !fake.has_tag(&b, "newbie") && fake.has_tag(&b, "buyer")
    })
    .await;
    assert!(fake.has_tag(&a, "newbie"), "the others keep it");
    let untagged: Vec<String> = fake
        .accepted(BATCH_UNTAG)
        .iter()
        .flat_map(|c| {
            c.body["openid_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(untagged, std::slice::from_ref(&b));
    // WeChat's own tag, brought in by the sync, was never sent back.
    assert!(sent(&fake, BATCH_TAG, wechat_tags["老客"]).is_empty());

    // The same dry run on its own, once the server is gone, prints the same.
    let beside = siyu_in(dir.path(), &dry, &env).await;
    server.stop();
    let alone = siyu_in(dir.path(), &dry, &[]).await;
    assert_eq!(beside, alone);
    assert_eq!(
        alone.1.trim(),
        "new 0, updated 0, unchanged 1, bad lines 1 (dry run: nothing changed)"
    );
    fake.stop().await;
}
