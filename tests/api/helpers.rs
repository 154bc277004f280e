//! Spawning the real app on a random port with a temp-dir sled store, and playing WeChat's
//! servers: building signed (and encrypted) callbacks, opening encrypted replies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use siyu::config::Settings;
use siyu::protocol::{sign, AesKey, MsgCrypt};
use siyu::server::Application;
use tempfile::TempDir;

pub const OFFICIAL_TOKEN: &str = "siyutoken";
pub const OFFICIAL_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const OFFICIAL_APP_ID: &str = "wx0123456789abcdef";
pub const CORP_TOKEN: &str = "QDG6eK";
pub const CORP_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
pub const CORP_ID: &str = "wx5823bf96d3bd56c7";
pub const GH_ID: &str = "gh_0123456789ab";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How an account's callbacks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Plaintext,
    /// Compatible mode with `encrypt_type=aes`: both plaintext fields and `<Encrypt>`.
    Compatible,
    Safe,
    Wecom,
}

/// One account as WeChat's servers see it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub account: &'static str,
    pub wire: Wire,
}

pub const SAFE: Peer = Peer {
    account: "safe",
    wire: Wire::Safe,
};
pub const COMPAT: Peer = Peer {
    account: "compat",
    wire: Wire::Compatible,
};
pub const PLAIN: Peer = Peer {
    account: "plain",
    wire: Wire::Plaintext,
};
pub const CORP: Peer = Peer {
    account: "corp",
    wire: Wire::Wecom,
};

impl Peer {
    pub fn token(&self) -> &'static str {
        if self.wire == Wire::Wecom {
            CORP_TOKEN
        } else {
            OFFICIAL_TOKEN
        }
    }

    pub fn crypt(&self) -> MsgCrypt {
        if self.wire == Wire::Wecom {
            MsgCrypt::new(AesKey::parse(CORP_KEY).unwrap(), CORP_ID)
        } else {
            MsgCrypt::new(AesKey::parse(OFFICIAL_KEY).unwrap(), OFFICIAL_APP_ID)
        }
    }

    /// The query string and body WeChat would send for `xml` at `timestamp`.
    pub fn request(&self, xml: &str, timestamp: i64, nonce: &str) -> (String, String) {
        let ts = timestamp.to_string();
        let token = self.token();
        let signature = sign(token, &[&ts, nonce]);
        let openid = tag(xml, "FromUserName").unwrap_or_default();
        match self.wire {
            Wire::Plaintext => (
                format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid={openid}"),
                xml.to_string(),
            ),
            Wire::Safe | Wire::Compatible | Wire::Wecom => {
                let encrypt = self.crypt().encrypt(xml, [7u8; 16]);
                let msg_signature = sign(token, &[&ts, nonce, &encrypt]);
                let to = tag(xml, "ToUserName").unwrap_or_default();
                let body = match self.wire {
                    Wire::Safe => format!(
                        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
                    ),
                    // Compatible mode: the plaintext fields plus <Encrypt>.
                    Wire::Compatible => xml.replacen(
                        "</xml>",
                        &format!("<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
                        1,
                    ),
                    _ => format!(
                        "<xml><AgentID><![CDATA[218]]></AgentID><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
                    ),
                };
                let query = if self.wire == Wire::Wecom {
                    format!("msg_signature={msg_signature}&timestamp={ts}&nonce={nonce}")
                } else {
                    format!(
                        "signature={signature}&timestamp={ts}&nonce={nonce}&openid={openid}&encrypt_type=aes&msg_signature={msg_signature}"
                    )
                };
                (query, body)
            }
        }
    }

    /// The plaintext reply XML inside an answer, after checking its signature; `None` for
    /// `success`.
    pub fn open_reply(&self, body: &str) -> Option<String> {
        if body == "success" || body.is_empty() {
            return None;
        }
        if self.wire == Wire::Plaintext {
            return Some(body.to_string());
        }
        let encrypt = tag(body, "Encrypt").expect("encrypted reply has <Encrypt>");
        let signature = tag(body, "MsgSignature").expect("reply has <MsgSignature>");
        let ts = tag(body, "TimeStamp").expect("reply has <TimeStamp>");
        let nonce = tag(body, "Nonce").expect("reply has <Nonce>");
        assert_eq!(
            sign(self.token(), &[&ts, &nonce, &encrypt]),
            signature,
            "reply MsgSignature must verify"
        );
        Some(self.crypt().decrypt(&encrypt).expect("reply decrypts"))
    }

    /// ToUserName of inbound messages: the gh id, or the corp id for WeCom.
    pub fn to(&self) -> &'static str {
        if self.wire == Wire::Wecom {
            CORP_ID
        } else {
            GH_ID
        }
    }

    pub fn text(&self, openid: &str, content: &str, msg_id: u64) -> String {
        let agent = self.agent();
        format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{}]]></Content><MsgId>{msg_id}</MsgId>{agent}</xml>",
            self.to(),
            now(),
            content.replace("]]>", "]]]]><![CDATA[>")
        )
    }

    pub fn event(&self, openid: &str, event: &str, key: Option<&str>) -> String {
        self.event_at(openid, event, key, now())
    }

    pub fn event_at(&self, openid: &str, event: &str, key: Option<&str>, at: i64) -> String {
        let key = key
            .map(|k| format!("<EventKey><![CDATA[{k}]]></EventKey>"))
            .unwrap_or_default();
        let agent = self.agent();
        format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{key}{agent}</xml>",
            self.to()
        )
    }

    fn agent(&self) -> &'static str {
        if self.wire == Wire::Wecom {
            "<AgentID>218</AgentID>"
        } else {
            ""
        }
    }
}

/// The text of the first `<name>` element, CDATA sections joined (test-side, independent
/// of the crate's parser).
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let inner = &xml[start..end];
    if !inner.contains("<![CDATA[") {
        return Some(inner.to_string());
    }
    let mut out = String::new();
    for part in inner.split("<![CDATA[").skip(1) {
        out.push_str(
            part.strip_suffix("]]>")
                .unwrap_or(part)
                .split("]]>")
                .next()
                .unwrap(),
        );
    }
    Some(out)
}

/// Percent-encodes a query value (WeCom's echostr carries `+ / =`).
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store_path: PathBuf,
    /// The app's own store, for reading follower state while it runs.
    pub store: std::sync::Arc<dyn siyu::store::Store>,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Loads the test config with a store and a copy of the fixture rules under `dir`, so
/// tests that change rules change only their own copy.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::load(&fixtures().join("config.toml")).expect("test config loads");
    s.storage_path = dir.join("siyu.sled");
    s.bind = "127.0.0.1:0".into();
    let replies = dir.join("replies");
    if !replies.exists() {
        std::fs::create_dir_all(&replies).unwrap();
        for e in std::fs::read_dir(fixtures().join("replies")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, replies.join(p.file_name().unwrap())).unwrap();
        }
    }
    for a in &mut s.accounts {
        a.replies_dir = replies.clone();
    }
    s.replies_dir = replies;
    s
}

pub const VIEWER: &str = "viewer-secret-0123456789";
pub const OPERATOR: &str = "operator-secret-0123456789";
pub const ADMIN: &str = "admin-secret-0123456789";

pub async fn spawn_app(dir: &TempDir) -> TestApp {
    spawn_with(settings(dir.path())).await
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    let store_path = settings.storage_path.clone();
    // A store the test closed a moment ago may still be locked by sled's background
    // threads (see `open_store`): wait that out rather than fail.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let app = loop {
        match Application::build(settings.clone()) {
            Err(siyu::server::StartupError::Store(siyu::store::StoreError::Locked { .. }))
                if std::time::Instant::now() < until =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => break other.expect("app builds"),
        }
    };
    let port = app.port();
    let handle = app.handle();
    let store = app.store();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        store_path,
        store,
        handle,
        task,
    }
}

impl TestApp {
    /// Stops gracefully and waits until the store is flushed and closed.
    pub async fn stop(self) {
        drop(self.store);
        self.handle.stop(true).await;
        self.task.await.unwrap().unwrap();
    }

    pub async fn post(&self, path_and_query: &str, body: impl Into<String>) -> Response {
        let r = self
            .client
            .post(format!("{}{path_and_query}", self.base))
            .body(body.into())
            .send()
            .await
            .expect("request sent");
        Response {
            status: r.status().as_u16(),
            body: r.text().await.unwrap(),
        }
    }

    /// An admin API call with an optional bearer token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Response {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let r = r.send().await.expect("request sent");
        Response {
            status: r.status().as_u16(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("request sent");
        Response {
            status: r.status().as_u16(),
            body: r.text().await.unwrap(),
        }
    }

    /// Sends `xml` as WeChat would for `peer`, now.
    pub async fn callback(&self, peer: Peer, xml: &str) -> Response {
        let (query, body) = peer.request(xml, now(), "1320562132");
        self.post(&format!("/wx/{}?{query}", peer.account), body)
            .await
    }

    /// Sends and returns the opened reply XML (None for `success`), asserting 200.
    pub async fn exchange(&self, peer: Peer, xml: &str) -> Option<String> {
        let r = self.callback(peer, xml).await;
        assert_eq!(r.status, 200, "body: {}", r.body);
        peer.open_reply(&r.body)
    }
}

/// Runs the `siyu` binary: (exit code, stdout, stderr).
pub fn siyu(args: &[&str]) -> (i32, String, String) {
    siyu_env(args, &[])
}

/// Runs the `siyu` binary with these environment variables set (and none of siyu's own
/// from the test's environment): (exit code, stdout, stderr).
pub fn siyu_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = siyu_command(args, env).output().expect("siyu runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `siyu` behind a reader that takes at most `keep` bytes of stdout and then closes
/// the pipe, as `| head -c KEEP` does (0: closed before the first write): (exit code, the
/// bytes read, stderr).
pub fn siyu_closing_stdout(args: &[&str], keep: usize) -> (i32, Vec<u8>, String) {
    siyu_closing_stdout_env(args, keep, &[])
}

/// [`siyu_closing_stdout`] with these environment variables set.
pub fn siyu_closing_stdout_env(
    args: &[&str],
    keep: usize,
    env: &[(&str, &str)],
) -> (i32, Vec<u8>, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = siyu_command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("siyu runs");
    let stdout = child.stdout.take().expect("piped");
    let mut read = Vec::new();
    // The reader is dropped at the end of this statement, closing the pipe while siyu
    // still has output to write.
    stdout.take(keep as u64).read_to_end(&mut read).unwrap();
    let out = child.wait_with_output().expect("siyu ends");
    (
        out.status.code().unwrap_or(-1),
        read,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `siyu` binary with `args`, its environment cleared of what would change where it
/// looks (the config, the server's address, an admin token), then `env` set.
pub fn siyu_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_siyu"));
    command
        .args(args)
        .env_remove("SIYU_CONFIG")
        .env_remove("SIYU_BIND")
        .env_remove("SIYU_ADMIN_TOKEN")
        .envs(env.iter().copied());
    command
}

/// A config in `dir` whose rules come from `replies` and whose store is in `dir`.
pub fn config_in(dir: &Path, replies: &Path) -> String {
    let text = std::fs::read_to_string(fixtures().join("config.toml"))
        .unwrap()
        .replace(
            "[storage]",
            &format!(
                "[replies]\ndir = {:?}\n\n[storage]",
                replies.display().to_string()
            ),
        );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Opens a sled store the test (or a process it ran) closed a moment ago: sled releases its
/// file lock only once its background threads let go, so a reopen in the same process can
/// briefly see `Locked`.
pub fn open_store(path: &Path) -> siyu::store::SledStore {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match siyu::store::SledStore::open(path) {
            Ok(store) => return store,
            Err(siyu::store::StoreError::Locked { .. }) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("store {}: {e}", path.display()),
        }
    }
}

/// Posts a text message from `openid` to the `plain` account of the server at `base`, as
/// WeChat's servers do, and returns the reply's body (asserting the 200).
pub async fn post_plain(
    client: &reqwest::Client,
    base: &str,
    openid: &str,
    content: &str,
    msg_id: u64,
) -> String {
    let (query, body) = PLAIN.request(&PLAIN.text(openid, content, msg_id), now(), "7");
    let r = client
        .post(format!("{base}/wx/plain?{query}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}
