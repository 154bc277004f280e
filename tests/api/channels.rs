//! Channel codes siyu makes (`code = "auto"` in channels.toml): the real `siyu serve` over
//! real HTTP with a sled store in a temp dir, and the fake WeChat/WeCom API (its own HTTP
//! knobs: `/fake/faults`, `/fake/qrcode`, `/fake/calls`). The server's look queues each
//! auto channel's code, the outbox makes it (through a transient failure), the code is
//! stored and listed (admin API and `siyu channels`), a code near its end is re-issued,
//! a WeCom contact code carries the channel as its state, and a refused one is left
//! failed rather than asked for again and again.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::beside_server::Server;
use crate::helpers::*;

const QRCODE: &str = "/cgi-bin/qrcode/create";
const CONTACT_WAY: &str = "/cgi-bin/externalcontact/add_contact_way";

/// The `safe` (official) and `corp` (WeCom) accounts talking to the fake; three auto
/// channels, one by hand; the look every second, retries after ~0.1 s.
fn config(dir: &Path, fake: &str) -> String {
    let path = config_in(dir, &fixtures().join("replies"));
    let api = |extra: &str| {
        format!("[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"{fake}\"\nrate_per_sec = 0.0\ntimeout_ms = 2000\n{extra}")
    };
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(
            "mode = \"safe\"\n",
            &format!("mode = \"safe\"\n{}", api("")),
            1,
        )
        .replacen(
            "encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n",
            &format!(
                "encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n{}",
                api("")
            ),
            1,
        )
        + "\n[channels]\nfile = \"channels.toml\"\ncheck_secs = 1\n\n[outbox]\nretry_base_ms = 100\nretry_max_ms = 200\n";
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        dir.join("channels.toml"),
        r#"
[[channel]]
name = "poster"
account = "safe"
kind = "qr_temporary"
title = "春季海报"
code = "auto"
expire_days = 7

[[channel]]
name = "store-7"
account = "corp"
kind = "contact_way"
code = "auto"
staff = ["zhangsan", "lisi"]

[[channel]]
name = "nobody"
account = "corp"
kind = "contact_way"
code = "auto"
staff = ["unknown-1"]

[[channel]]
name = "printed"
account = "safe"
kind = "qr_permanent"
"#,
    )
    .unwrap();
    path
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn channels(base: &str) -> Vec<Value> {
    let r = client()
        .get(format!("{base}/admin/v1/channels"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["channels"]
        .as_array()
        .unwrap()
        .clone()
}

async fn channel(base: &str, name: &str) -> Value {
    channels(base)
        .await
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel {name} listed"))
}

/// The fake's calls to `path`, as `GET /fake/calls` reports them.
async fn calls(fake: &str, path: &str) -> Vec<Value> {
    let all: Vec<Value> = client()
        .get(format!("{fake}/fake/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.into_iter().filter(|c| c["path"] == path).collect()
}

async fn accepted(fake: &str, path: &str) -> Vec<Value> {
    calls(fake, path)
        .await
        .into_iter()
        .filter(|c| c["errcode"] == 0)
        .collect()
}

/// Polls `ok` every 100 ms; fails the test naming `what` after `within`.
macro_rules! wait_until {
    ($what:expr, $within:expr, $ok:expr) => {{
        let until = Instant::now() + $within;
        while !$ok {
            assert!(
                Instant::now() < until,
                "not within {:?}: {}",
                $within,
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// A `siyu` command, off the async threads.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        siyu_env(&args, &env)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_channels_get_their_codes_through_the_outbox_and_temporary_ones_are_reissued() {
    let fake = siyu::fake_wechat::FakeWechat::start("127.0.0.1:0").unwrap();
    let f = fake.base_url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &f);
    let (code, out, err) = run(&["check", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("channel poster (春季海报): account safe, qr_temporary, code made by siyu (7 days, re-issued)"),
        "{out}"
    );
    // The first QR code call fails transiently (system busy): retried, and still made.
    let r = client()
        .post(format!("{f}/fake/faults"))
        .json(&json!([{ "path": QRCODE, "errcode": -1 }]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let server = Server::start(&config);
    let base = format!("http://{}", server.bind);
    wait_until!("poster and store-7 issued", Duration::from_secs(20), {
        let l = channels(&base).await;
        let state = |n: &str| l.iter().find(|c| c["name"] == n).unwrap()["state"].clone();
        state("poster") == "issued" && state("store-7") == "issued"
    });

    // The official code: QR_STR_SCENE for 7 days with the channel as its scene, after one
    // refusal (-1).
    let qr = calls(&f, QRCODE).await;
    assert_eq!(qr[0]["errcode"], -1, "{qr:?}");
    let made = accepted(&f, QRCODE).await;
    assert_eq!(made.len(), 1, "{qr:?}");
    assert_eq!(made[0]["body"]["action_name"], "QR_STR_SCENE");
    assert_eq!(
        made[0]["body"]["action_info"]["scene"]["scene_str"],
        "poster"
    );
    assert_eq!(made[0]["body"]["expire_seconds"], 7 * 86_400);
    let poster = channel(&base, "poster").await;
    assert_eq!(poster["code"], "auto");
    assert_eq!(poster["title"], "春季海报");
    let url = poster["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://weixin.qq.com/q/"), "{poster}");
    assert!(poster["ticket"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(poster["image_url"]
        .as_str()
        .unwrap()
        .starts_with("https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket="));
    let (issued_at, expires_at) = (
        poster["issued_at"].as_i64().unwrap(),
        poster["expires_at"].as_i64().unwrap(),
    );
    assert_eq!(expires_at - issued_at, 7 * 86_400, "{poster}");

    // The WeCom contact code: the channel's name as its state, two staff, a QR code.
    let cw = accepted(&f, CONTACT_WAY).await;
    let store7: Vec<&Value> = cw
        .iter()
        .filter(|c| c["body"]["state"] == "store-7")
        .collect();
    assert_eq!(store7.len(), 1, "{cw:?}");
    assert_eq!(store7[0]["body"]["type"], 2);
    assert_eq!(store7[0]["body"]["scene"], 2);
    assert_eq!(store7[0]["body"]["user"], json!(["zhangsan", "lisi"]));
    let s7 = channel(&base, "store-7").await;
    assert!(
        s7["config_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{s7}"
    );
    assert!(s7["url"].as_str().unwrap().starts_with("https://"), "{s7}");
    assert_eq!(s7["expires_at"], Value::Null, "a contact code lasts");

    // A refused code (an unknown staff member, 40003) is failed, with WeCom's reason, and
    // not asked for again at every look.
    wait_until!("nobody failed", Duration::from_secs(10), {
        channel(&base, "nobody").await["state"] == "failed"
    });
    assert!(channel(&base, "printed").await["state"] == "manual");
    // Several looks later: still one code each, one refused call.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        accepted(&f, QRCODE).await.len(),
        1,
        "queued once, made once"
    );
    let nobody = calls(&f, CONTACT_WAY)
        .await
        .into_iter()
        .filter(|c| c["body"]["state"] == "nobody")
        .count();
    assert_eq!(nobody, 1, "a refusal is not repeated");
    let failed = channel(&base, "nobody").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("40003"),
        "{failed}"
    );

    // `siyu channels` beside the server (viewer), and the stored code drawn for print.
    let env = [
        ("SIYU_BIND", server.bind.as_str()),
        ("SIYU_ADMIN_TOKEN", VIEWER),
    ];
    let (code, out, err) = run(&["channels", "--config", &config], &env).await;
    assert_eq!(code, 0, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_string()
    };
    assert!(line("poster").contains("issued until"), "{out}");
    assert!(line("poster").contains(&url), "{out}");
    assert!(line("nobody").contains("failed:"), "{out}");
    assert!(line("printed").contains("manual"), "{out}");
    let png = dir.path().join("poster.png");
    let (code, _, err) = run(
        &[
            "channels",
            "png",
            "poster",
            "--config",
            &config,
            "--out",
            png.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_qr(&std::fs::read(&png).unwrap()), url);
    let (code, _, err) = run(
        &[
            "channels",
            "png",
            "store-7",
            "--config",
            &config,
            "--out",
            png.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 1, "a contact code's image is WeCom's: {err}");

    // Re-issue: the fake now makes codes of 4 s; an operator issues poster by hand (a
    // viewer may not), and the look re-issues the short code before it ends.
    let r = client()
        .post(format!("{f}/fake/qrcode"))
        .json(&json!({ "expire_seconds": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let issue = |token: &'static str| {
        client()
            .post(format!("{base}/admin/v1/channels/poster/issue"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(issue(VIEWER).await.unwrap().status(), 403);
    let r = issue(OPERATOR).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["queued"], true, "{answer}");
    wait_until!("the short code issued", Duration::from_secs(10), {
        let p = channel(&base, "poster").await;
        p["expires_at"]
            .as_i64()
            .zip(p["issued_at"].as_i64())
            .is_some_and(|(e, i)| e - i == 4)
    });
    let short = channel(&base, "poster").await["ticket"].clone();
    wait_until!("re-issued before its end", Duration::from_secs(10), {
        channel(&base, "poster").await["ticket"] != short
    });
    let p = channel(&base, "poster").await;
    assert_eq!(p["state"], "issued", "{p}");
    assert!(accepted(&f, QRCODE).await.len() >= 3);
    let r = client()
        .get(format!("{base}/admin/v1/audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let audit: Value = r.json().await.unwrap();
    let issued = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "channel.issue" && e["who"] == "ops-li")
        .count();
    assert_eq!(issued, 1, "the operator's issue is audited: {audit}");
    // `siyu channels issue` beside the server: queued through the admin API (an operator
    // token), shown once the outbox made it.
    let before = accepted(&f, CONTACT_WAY).await.len();
    let env = [
        ("SIYU_BIND", server.bind.as_str()),
        ("SIYU_ADMIN_TOKEN", OPERATOR),
    ];
    let (code, out, err) = run(&["channels", "issue", "store-7", "--config", &config], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state     issued (lasts)"), "{out}");
    assert!(out.contains("config_id"), "{out}");
    assert_eq!(accepted(&f, CONTACT_WAY).await.len(), before + 1);
    server.stop();

    // Without a server: `issue` makes the code now, stores it, and draws it.
    let made_before = accepted(&f, QRCODE).await.len();
    let (code, out, err) = run(
        &[
            "channels",
            "issue",
            "poster",
            "--config",
            &config,
            "--png",
            png.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(accepted(&f, QRCODE).await.len(), made_before + 1);
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("url       "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_eq!(read_qr(&std::fs::read(&png).unwrap()), url);
    let (code, out, _) = run(&["channels", "--config", &config], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&url),
        "the code made offline is the one stored:\n{out}"
    );
    let (code, _, err) = run(&["channels", "issue", "printed", "--config", &config], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("code = \"auto\""), "{err}");
    fake.stop().await;
}

/// The text of the one QR code in a PNG, read by a decoder independent of siyu's encoder.
fn read_qr(bytes: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one code");
    grids[0].decode().unwrap().1
}

/// Two `siyu serve` on one PostgreSQL database, both looking every second: each channel's
/// code is queued once and made once between them, both list the same code, and an
/// operator's issue sent to both at once queues one item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_make_each_code_once() {
    let Some(db) = siyu::store::postgres::testing::TestDatabase::new() else {
        return;
    };
    let fake = siyu::fake_wechat::FakeWechat::start("127.0.0.1:0").unwrap();
    let f = fake.base_url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::postgres::on_postgres(&config(dir.path(), &f));
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let a = crate::crash::serve_env(&config, &env);
    let b = crate::crash::serve_env(&config, &env);
    wait_until!("poster and store-7 issued", Duration::from_secs(20), {
        let l = channels(&a.base).await;
        let state = |n: &str| l.iter().find(|c| c["name"] == n).unwrap()["state"].clone();
        state("poster") == "issued" && state("store-7") == "issued"
    });
    // A few looks of each instance later.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(accepted(&f, QRCODE).await.len(), 1);
    let cw = calls(&f, CONTACT_WAY).await;
    let per_state = |s: &str| cw.iter().filter(|c| c["body"]["state"] == s).count();
    assert_eq!(
        (per_state("store-7"), per_state("nobody")),
        (1, 1),
        "{cw:?}"
    );
    for name in ["poster", "store-7", "nobody"] {
        assert_eq!(
            channel(&a.base, name).await,
            channel(&b.base, name).await,
            "{name}: the same on both"
        );
    }
    // The operator asks both at once: one item. WeChat holds the new code's call until both
    // have answered, or a quick delivery could settle the first before the second asks.
    fake.hold(CONTACT_WAY, calls(&f, CONTACT_WAY).await.len());
    let issue = |base: String| async move {
        let r = client()
            .post(format!("{base}/admin/v1/channels/store-7/issue"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["queued"] == true
    };
    let (qa, qb) = tokio::join!(issue(a.base.clone()), issue(b.base.clone()));
    assert!(qa ^ qb, "one of the two queued ({qa}, {qb})");
    fake.release();
    wait_until!("the second store-7 code", Duration::from_secs(10), {
        accepted(&f, CONTACT_WAY)
            .await
            .iter()
            .filter(|c| c["body"]["state"] == "store-7")
            .count()
            == 2
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let made = accepted(&f, CONTACT_WAY).await;
    assert_eq!(
        made.iter()
            .filter(|c| c["body"]["state"] == "store-7")
            .count(),
        2
    );
    drop((a, b));
    fake.stop().await;
}
