//! The command line's way to the store while `siyu serve` holds it: the server's admin API.
//!
//! sled lets one process open a store. When a command finds it locked, it asks the running
//! server instead ([`super::store_or_server`]): at the config's `bind` (a `0.0.0.0:port`
//! bind is reached at `127.0.0.1:port`), with the admin token in `SIYU_ADMIN_TOKEN`. Each
//! command prints what the server answers exactly as it prints what it read itself, so a
//! script cannot tell (and need not care) which path ran.
//!
//! The commands are plain functions, so each call runs on a current-thread tokio runtime
//! of its own, with the reqwest client the crate already has for WeChat's API: no second
//! HTTP stack, no thread pool for what is one request at a time.
//!
//! What goes wrong here is about the machine, not the command's input (no token, a token
//! the server does not know or whose role is too low, no server answering): every such
//! case says what to do, in Chinese and English, and exits [`EXIT_RUNTIME`] like the
//! locked store it stands for. What the server refuses (an unknown campaign, a dead letter
//! that is not dead) is the input's fault and exits [`EXIT_INVALID`](super::EXIT_INVALID),
//! as it would locally.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Secret, Settings};

/// The environment variable holding the admin token the command line presents.
pub const TOKEN_ENV: &str = "SIYU_ADMIN_TOKEN";

/// A server to be reached is on this machine or next to it: a connection not made within
/// this long will not be made. No limit on the whole request: a count or an export over a
/// large store takes as long as the scan.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running server, as the command line reaches it.
pub struct Server {
    base: reqwest::Url,
    token: Secret,
    /// The least role the command needs, for the message when the token's is lower.
    need: Role,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// Why a request gave no answer the command can print.
#[derive(Debug)]
pub enum Failure {
    /// The server refused the input (a 4xx other than 401/403), with its message: the
    /// command's own refusal, exit 1. `body` is the whole JSON error.
    Refused {
        status: u16,
        message: String,
        body: serde_json::Value,
    },
    /// Everything else (unreachable, the token refused, a server failure, an answer this
    /// version does not understand), described for the operator: exit 3.
    Runtime(String),
}

impl Failure {
    /// Prints the failure as the command would print its own, and the exit code for it.
    pub fn exit(self) -> ExitCode {
        match self {
            Failure::Refused { message, .. } => {
                errln!("error: {message}");
                ExitCode::from(EXIT_INVALID)
            }
            Failure::Runtime(message) => {
                errln!("error: {message}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    }
}

impl Server {
    /// The server of `settings`, with the token from [`TOKEN_ENV`]; without a token, or
    /// without an address to reach, prints what to do and gives the exit code.
    pub fn connect(settings: &Settings, need: Role) -> Result<Server, ExitCode> {
        let fail = |hint: Hint| {
            errln!("error: {}", hint.text());
            ExitCode::from(EXIT_RUNTIME)
        };
        let base = admin_base(&settings.bind).map_err(|bind| fail(Hint::PortZero { bind }))?;
        let base = reqwest::Url::parse(&base).map_err(|e| {
            fail(Hint::BadBind {
                bind: settings.bind.clone(),
                error: e.to_string(),
            })
        })?;
        let token = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => Secret::new(t.trim()),
            _ => {
                return Err(fail(Hint::NoToken {
                    store: settings.storage_path.display().to_string(),
                    url: base.to_string(),
                    need,
                }))
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                errln!("error: cannot start the async runtime: {e}");
                ExitCode::from(EXIT_RUNTIME)
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The server is this machine's (or the config's own address): a proxy from
            // HTTP_PROXY would only stand in the way.
            .no_proxy()
            .build()
            .map_err(|e| {
                errln!("error: cannot build the HTTP client: {e}");
                ExitCode::from(EXIT_RUNTIME)
            })?;
        Ok(Server {
            base,
            token,
            need,
            http,
            runtime,
        })
    }

    /// `GET` the path (its segments, each percent-encoded) with `query`; the JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, Failure> {
        let url = self.url(path, query);
        self.runtime
            .block_on(self.json(self.http.get(url.clone()), &url))
    }

    /// `POST` the path with a JSON body (or none); the JSON answer.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<T, Failure> {
        let url = self.url(path, &[]);
        let mut request = self.http.post(url.clone());
        if let Some(b) = body {
            request = request.json(b);
        }
        self.runtime.block_on(self.json(request, &url))
    }

    /// `POST` the path with a text body of `content_type`; the JSON answer.
    pub fn post_text<T: DeserializeOwned>(
        &self,
        path: &[&str],
        content_type: &str,
        body: String,
    ) -> Result<T, Failure> {
        self.post_bytes(path, &[], content_type, body.into_bytes())
    }

    /// `POST` the path with `query` and a body of `content_type` (a file as it is read,
    /// not necessarily UTF-8); the JSON answer.
    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T, Failure> {
        let url = self.url(path, query);
        let request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.runtime.block_on(self.json(request, &url))
    }

    /// `GET` the path and hand each piece of the body to `each` as it arrives, until the
    /// end or until `each` returns false (then the connection is dropped, and the server
    /// stops producing).
    pub fn stream(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Failure> {
        let url = self.url(path, query);
        self.runtime.block_on(async {
            let mut response = self.send(self.http.get(url.clone()), &url).await?;
            loop {
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        if !each(&bytes) {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    // The server stopped mid-way (its store failed, it was stopped): what
                    // was printed is incomplete.
                    Err(e) => {
                        return Err(Failure::Runtime(format!(
                            "the answer from {url} broke off: {e}"
                        )))
                    }
                }
            }
        })
    }

    /// Runs `f` on this client's runtime (a command that waits on the server, with Ctrl-C).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// An async `GET` of a JSON answer, for use inside [`Server::block_on`].
    pub async fn get_async<T: DeserializeOwned>(&self, path: &[&str]) -> Result<T, Failure> {
        let url = self.url(path, &[]);
        self.json(self.http.get(url.clone()), &url).await
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        // An http URL always has a path to extend (the `Err` is for `mailto:` and the like).
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
    ) -> Result<T, Failure> {
        let response = self.send(request, url).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Failure::Runtime(format!("the answer from {url} broke off: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Runtime(format!(
                "the answer from {url} is not what this siyu expects ({e}); is the server another version?"
            ))
        })
    }

    /// Sends with the token; a 2xx response, or the failure its status means.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
    ) -> Result<reqwest::Response, Failure> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| {
                Failure::Runtime(
                    Hint::Unreachable {
                        url: self.base.to_string(),
                        error: error_chain(&e),
                    }
                    .text(),
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
        let message = body
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string);
        Err(match (status.as_u16(), message) {
            (401, _) => Failure::Runtime(Hint::Unauthorized { need: self.need }.text()),
            (403, _) => Failure::Runtime(Hint::Forbidden { need: self.need }.text()),
            (400..=499, Some(message)) => Failure::Refused {
                status: status.as_u16(),
                message,
                body,
            },
            // WeChat (or the network to it) failed behind the server: as it would here.
            (502, Some(message)) => Failure::Runtime(message),
            // A 404 without siyu's JSON error: no such route, so an older server.
            (404, None) => Failure::Runtime(format!(
                "{url}: the server has no such endpoint; is it an older siyu? (update it, or stop `siyu serve`)"
            )),
            (_, message) => Failure::Runtime(format!(
                "the server failed ({status}): {}",
                message.unwrap_or(text)
            )),
        })
    }
}

/// Where the admin API of a server bound at `bind` is reached: `http://host:port`, with
/// an any-address bind (`0.0.0.0`, `[::]`) reached on the loopback. `Err(bind)` when the
/// port is 0 or missing (a random port: nothing tells where it is).
pub fn admin_base(bind: &str) -> Result<String, String> {
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bind.to_string());
        }
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        return Ok(format!("http://{}", SocketAddr::new(ip, addr.port())));
    }
    // A host name (`localhost:8080`), as the server's bind accepts one.
    match bind.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(format!("http://{host}:{port}"))
        }
        _ => Err(bind.to_string()),
    }
}

/// The role's name as the config writes it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// An error with its sources ("error sending request: … connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the operator is told when the server cannot be asked, each in Chinese and in
/// English, all in one place.
enum Hint {
    NoToken {
        store: String,
        url: String,
        need: Role,
    },
    PortZero {
        bind: String,
    },
    BadBind {
        bind: String,
        error: String,
    },
    Unreachable {
        url: String,
        error: String,
    },
    Unauthorized {
        need: Role,
    },
    Forbidden {
        need: Role,
    },
}

impl Hint {
    fn text(&self) -> String {
        match self {
            Hint::NoToken { store, url, need } => {
                let need = role_name(*need);
                format!(
                    "服务正在运行并占用存储 / the server is running and holds the store ({store})\n  \
                     设置 {TOKEN_ENV} 为角色 {need} 或更高的管理令牌（配置中的 [[admin.token]]），命令即经由 {url} 的管理 API 执行；或先停止 `siyu serve`\n  \
                     set {TOKEN_ENV} to an admin token with role {need} or higher ([[admin.token]] in the config) and this command goes through the admin API at {url}; or stop `siyu serve`"
                )
            }
            Hint::PortZero { bind } => format!(
                "存储被占用，而配置的 bind `{bind}` 没有固定端口 / the store is in use and the config's bind `{bind}` names no fixed port\n  \
                 设置 SIYU_BIND=主机:端口 为 `siyu serve` 实际监听的地址；或先停止 `siyu serve`\n  \
                 set SIYU_BIND=host:port to the address `siyu serve` listens on; or stop `siyu serve`"
            ),
            Hint::BadBind { bind, error } => format!(
                "存储被占用，而无法由 bind `{bind}` 得出服务地址 / the store is in use and bind `{bind}` gives no address to reach the server at ({error})\n  \
                 设置 SIYU_BIND=主机:端口；或先停止 `siyu serve`\n  \
                 set SIYU_BIND=host:port; or stop `siyu serve`"
            ),
            Hint::Unreachable { url, error } => format!(
                "存储被另一个进程占用，且 {url} 上没有 siyu serve 应答 / the store is held by another process, and no `siyu serve` answers at {url} ({error})\n  \
                 停止占用存储的进程，或设置 SIYU_BIND 为服务的地址\n  \
                 stop the process that holds the store, or set SIYU_BIND to the server's address"
            ),
            Hint::Unauthorized { need } => {
                let need = role_name(*need);
                format!(
                    "服务不认识 {TOKEN_ENV} 中的令牌 / the server does not know the token in {TOKEN_ENV}\n  \
                     使用配置中角色 {need} 或更高的 [[admin.token]] 的密钥；或先停止 `siyu serve`\n  \
                     use the secret of an [[admin.token]] with role {need} or higher; or stop `siyu serve`"
                )
            }
            Hint::Forbidden { need } => {
                let need = role_name(*need);
                format!(
                    "{TOKEN_ENV} 中的令牌角色不足，此命令需要 {need} 或更高 / the token in {TOKEN_ENV} has too low a role: this command needs {need} or higher\n  \
                     换用角色 {need} 或更高的令牌；或先停止 `siyu serve`\n  \
                     use a token with role {need} or higher; or stop `siyu serve`"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bind_says_where_the_server_is_reached() {
        let cases: &[(&str, &str, Result<&str, ()>)] = &[
            ("loopback", "127.0.0.1:8080", Ok("http://127.0.0.1:8080")),
            (
                "any IPv4 address",
                "0.0.0.0:9000",
                Ok("http://127.0.0.1:9000"),
            ),
            ("any IPv6 address", "[::]:9000", Ok("http://[::1]:9000")),
            ("one interface", "10.1.2.3:80", Ok("http://10.1.2.3:80")),
            ("a host name", "localhost:8080", Ok("http://localhost:8080")),
            ("port 0: a random port", "127.0.0.1:0", Err(())),
            ("no port", "localhost", Err(())),
            ("a host name on port 0", "localhost:0", Err(())),
        ];
        for (name, bind, want) in cases {
            let got = admin_base(bind);
            assert_eq!(
                got.as_deref().map_err(|_| ()),
                want.map(|s| s),
                "case {name}: {bind}"
            );
        }
    }

    #[test]
    fn every_hint_says_it_in_chinese_and_english() {
        let hints = [
            Hint::NoToken {
                store: "data/siyu.sled".into(),
                url: "http://127.0.0.1:8080/".into(),
                need: Role::Operator,
            },
            Hint::PortZero { bind: "x:0".into() },
            Hint::BadBind {
                bind: "x".into(),
                error: "e".into(),
            },
            Hint::Unreachable {
                url: "u".into(),
                error: "e".into(),
            },
            Hint::Unauthorized { need: Role::Admin },
            Hint::Forbidden { need: Role::Admin },
        ];
        for h in hints {
            let text = h.text();
            let han = text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
            assert!(han && text.contains(" / the "), "{text}");
            assert!(text.contains("siyu serve"), "says how else: {text}");
        }
    }
}
