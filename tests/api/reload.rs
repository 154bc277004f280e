//! Rule changes while serving: picked up from disk without a restart, refused when
//! invalid (the old rules keep answering), and never seen half-applied by a callback.
//!
//! The first tests run in process; the later ones run a real `siyu serve` the way the
//! README starts it (`siyu serve --config config.toml` from the folder that holds it), so
//! the watcher meets relative, `./`, symlinked and absolute folder names, and its log
//! lines and audit entries can be counted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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

/// Reading the folder (a console polling the rule list: inotify reports the reads too)
/// must not hold a reload off: the debounce waits for the folder's *changes* to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_takes_effect_while_the_rule_list_is_read_all_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(spawn_app(&dir).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = app
                    .admin(Method::GET, "/admin/v1/rules", Some(VIEWER), None)
                    .await;
                assert_eq!(r.status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    std::fs::write(dir.path().join("replies/zz_new.toml"), NEW_RULE).unwrap();
    let started = Instant::now();
    let mut id = 10;
    while coupon_reply(&app, id).await != "新版优惠：满 50 减 20" {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the new rule is not in force 3 s after the change"
        );
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.await.unwrap();
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

/// How long an idle server is watched for a reload it should not make: asserting an
/// absence, so a fixed wait; the old watcher re-read the folder every ~250 ms.
const IDLE: Duration = Duration::from_millis(1500);

/// The coupon reply of the fixture rules, and what the tests' edits make of it.
const COUPON_REPLY: &str = "领券成功，第 {counter.coupon_asks} 次";

/// A folder laid out as a new user has it: the test config (store in `data/`, port 0)
/// with the fixture rules beside it in `replies/`, the config's default rule folder.
fn lay_out(dir: &Path) {
    std::fs::create_dir_all(dir.join("replies")).unwrap();
    for e in std::fs::read_dir(fixtures().join("replies")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join("replies").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(fixtures().join("config.toml"), dir.join("config.toml")).unwrap();
}

/// `siyu ARGS` run from `cwd`: (exit code, stdout, stderr).
fn siyu_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SIYU_CONFIG")
        .env_remove("SIYU_BIND")
        .output()
        .expect("siyu runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `siyu serve` process, its log lines collected as they come.
struct Served {
    child: Child,
    base: String,
    client: reqwest::Client,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// `siyu serve --config CONFIG` from `cwd`, once it logs the port it serves on.
    fn start(cwd: &Path, config: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(["serve", "--config", config])
            .current_dir(cwd)
            .env_remove("SIYU_CONFIG")
            .env_remove("SIYU_BIND")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("siyu serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let collected = logs.clone();
        // Keeps draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("port=").nth(1) {
                    let port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                    let _ = port_tx.send(port);
                }
                collected.lock().unwrap().push(line);
            }
        });
        let mut served = Served {
            child,
            base: String::new(),
            client: reqwest::Client::new(),
            logs,
        };
        let port: u16 = match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => port,
            _ => panic!("serve logged no port:\n{}", served.logs()),
        };
        served.base = format!("http://127.0.0.1:{port}");
        served
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Log lines containing `fragment`.
    fn count(&self, fragment: &str) -> usize {
        let logs = self.logs.lock().unwrap();
        logs.iter().filter(|l| l.contains(fragment)).count()
    }

    async fn coupon_reply(&self, msg_id: u64) -> String {
        let (query, body) = PLAIN.request(&PLAIN.text("o_served", "优惠券", msg_id), now(), "7");
        let r = self
            .client
            .post(format!("{}/wx/plain?{query}", self.base))
            .body(body)
            .send()
            .await
            .expect("callback sent");
        assert_eq!(r.status(), 200);
        tag(&r.text().await.unwrap(), "Content").expect("a text reply")
    }

    /// Polls until the coupon keyword is answered with `expected` (10 s at most).
    async fn answers(&self, expected: &str, msg_id: &mut u64) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            *msg_id += 1;
            if self.coupon_reply(*msg_id).await == expected {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn health(&self) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Polls until `/healthz` answers `status` (10 s at most).
    async fn health_becomes(&self, status: u16) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.health().await.0 == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `(who, action)` of every audit entry, oldest first.
    async fn audit(&self) -> Vec<(String, String)> {
        let r = self
            .client
            .get(format!("{}/admin/v1/audit?limit=1000", self.base))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        let mut entries: Vec<(String, String)> = body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (field("who"), field("action"))
            })
            .collect();
        entries.reverse();
        entries
    }

    /// How many audit entries record `action` by the file watcher.
    async fn watcher_audits(&self, action: &str) -> usize {
        let entries = self.audit().await;
        entries
            .iter()
            .filter(|(who, a)| who == "file-watcher" && a == action)
            .count()
    }

    async fn put_rule(&self, file: &str, text: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .put(format!("{}/admin/v1/rules/{file}", self.base))
            .header("authorization", format!("Bearer {OPERATOR}"))
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status:?}\n{}", self.logs());
    }
}

/// A test that fails midway must not leave its server running.
impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts that nothing opens a file of `folder` for `IDLE`: an idle server does not read
/// its rules (the test itself stays away from the folder meanwhile).
fn assert_not_read_while_idle(folder: &Path, case: &str) {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx).unwrap();
    watcher.watch(folder, RecursiveMode::NonRecursive).unwrap();
    std::thread::sleep(IDLE);
    drop(watcher);
    let seen: Vec<notify::Event> = rx.try_iter().filter_map(Result::ok).collect();
    assert!(
        seen.is_empty(),
        "{case}: the idle server touched its rules: {seen:?}"
    );
}

/// Rewrites the coupon reply of `replies/main.toml` in place, as an editor saving it.
fn edit_coupon_reply(replies: &Path, reply: &str) {
    let main = replies.join("main.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    let current = text
        .lines()
        .find(|l| l.starts_with("reply = \"领券") || l.starts_with("reply = \"版本"))
        .expect("the coupon reply line")
        .to_string();
    std::fs::write(
        &main,
        text.replace(&current, &format!("reply = \"{reply}\"")),
    )
    .unwrap();
}

/// However the config is named, an edit on disk is answered, and each edit is one
/// reload: one log line, one audit entry, and no reading of the folder while idle.
#[tokio::test]
async fn every_edit_is_one_reload_however_the_config_is_named() {
    // (case, the folder laid out relative to the working directory, the --config value)
    let root = tempfile::tempdir().unwrap();
    let absolute = root.path().join("absolute");
    let cases: Vec<(&str, PathBuf, String)> = vec![
        (
            "relative, as the README",
            PathBuf::from("relative"),
            "config.toml".into(),
        ),
        ("with ./", PathBuf::from("dotted"), "./config.toml".into()),
        (
            "through a symlinked folder",
            PathBuf::from("real"),
            "../link/config.toml".into(),
        ),
        (
            "absolute",
            absolute.clone(),
            absolute.join("config.toml").display().to_string(),
        ),
    ];
    for (case, folder, config) in cases {
        let cwd = root.path().join(&folder);
        lay_out(&cwd);
        if case.contains("symlink") {
            // The config, and so its rule folder, is named through `link`, a symlink to
            // the folder the server runs in.
            std::os::unix::fs::symlink(&cwd, root.path().join("link")).unwrap();
        }
        let replies = cwd.join("replies");
        let served = Served::start(&cwd, &config);
        let mut id = 1;
        assert_eq!(served.coupon_reply(id).await, "领券成功，第 1 次", "{case}");

        for (edit, reply) in ["版本一", "版本二"].into_iter().enumerate() {
            let edits = edit + 1;
            edit_coupon_reply(&replies, reply);
            assert!(
                served.answers(reply, &mut id).await,
                "{case}: edit {edits} never answered\n{}",
                served.logs()
            );
            assert_not_read_while_idle(&replies, case);
            assert_eq!(
                served.count("rules reloaded"),
                edits,
                "{case}: one log line per edit\n{}",
                served.logs()
            );
            assert_eq!(
                served.watcher_audits("rules.reload").await,
                edits,
                "{case}: one audit entry per edit"
            );
        }
        served.stop();
    }
}

/// A broken file is refused once: one error line and one audit entry, however long the
/// server then idles with it, while the rules in force keep answering. The error names
/// the file as the config does (`replies/main.toml`), with line and column.
#[tokio::test]
async fn a_broken_file_is_one_error_line_and_one_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    let served = Served::start(dir.path(), "config.toml");
    let mut id = 1;
    assert_eq!(served.coupon_reply(id).await, "领券成功，第 1 次");

    let main = dir.path().join("replies/main.toml");
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        good.replace("intent = \"greeting\"", "intent = \"greting\""),
    )
    .unwrap();
    assert!(served.health_becomes(503).await, "{}", served.logs());
    let (_, health) = served.health().await;
    let error = health["rules"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("replies/main.toml:") && error.contains("unknown intent `greting`"),
        "{error}"
    );
    assert_not_read_while_idle(&dir.path().join("replies"), "refused");
    assert_eq!(served.count("rules refused"), 1, "{}", served.logs());
    assert_eq!(served.watcher_audits("rules.reload_failed").await, 1);
    assert_eq!(served.coupon_reply(100).await, "领券成功，第 2 次");

    // Fixed with an edit: one reload, the refusal is over.
    std::fs::write(&main, good.replace(COUPON_REPLY, "修好了")).unwrap();
    assert!(served.answers("修好了", &mut id).await, "{}", served.logs());
    assert!(served.health_becomes(200).await);
    assert_eq!(served.count("rules reloaded"), 1, "{}", served.logs());
    assert_eq!(served.count("rules refused"), 1, "{}", served.logs());
    served.stop();
}

/// A rule naming a coupon batch the config does not define is refused the same way, with
/// the same `file:line:column` error, by the admin PUT (422), the watcher, `siyu check`
/// and `siyu serve` at startup: one validation, whoever runs it.
#[tokio::test]
async fn an_unknown_coupon_batch_is_refused_by_put_watcher_check_and_startup() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    let claim = "[[rule]]\nname = \"claim\"\nkeywords = [\"领券\"]\nissue_coupon = \"no-such-batch\"\nreply = \"{coupon.code}\"\n";
    let expected = "replies/claim.toml:4:16: unknown coupon batch `no-such-batch` (no coupon batches are defined)";
    let served = Served::start(dir.path(), "config.toml");

    let (status, body) = served.put_rule("claim.toml", claim).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"], serde_json::json!([expected]), "{body}");
    assert!(
        !dir.path().join("replies/claim.toml").exists(),
        "refused, not written"
    );

    std::fs::write(dir.path().join("replies/claim.toml"), claim).unwrap();
    assert!(served.health_becomes(503).await, "{}", served.logs());
    let (_, health) = served.health().await;
    assert_eq!(health["rules"][0]["last_error"], expected, "{health}");
    assert_eq!(served.watcher_audits("rules.reload_failed").await, 1);
    assert_eq!(
        served.coupon_reply(1).await,
        "领券成功，第 1 次",
        "the rules in force answer"
    );
    served.stop();

    let (code, out, err) = siyu_in(dir.path(), &["check", "--config", "config.toml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        !out.contains("rules replies: ok"),
        "never ok for what it refuses: {out}"
    );
    assert!(
        err.contains("rules replies: refused") && err.contains(expected),
        "{err}"
    );

    let (code, out, err) = siyu_in(dir.path(), &["serve", "--config", "config.toml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(expected), "{err}");
}
