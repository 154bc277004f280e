//! `siyu channels`: the channels of `channels.toml` with their codes (none, queued, issued
//! until …, failed); `issue NAME` makes a channel's code (`code = "auto"`), `png NAME`
//! draws the stored one for print. Beside a running server the listing is `GET
//! /admin/v1/channels` (viewer) and `issue` queues through `POST
//! /admin/v1/channels/{name}/issue` (operator) and waits for the outbox to make it; on its
//! own, `issue` makes the code now with the account's API client, as `siyu qrcode` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::remote::Server;
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::local_time::UtcOffset;
use crate::server::channel_codes::{list_channels, order_for, Issued, Listed};

#[derive(Debug, clap::Args)]
pub struct ChannelsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: Option<ChannelsAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelsAction {
    /// Make the channel's code now (`code = "auto"`); beside a running server, queue it
    /// and wait for the outbox to make it.
    Issue {
        name: String,
        /// The account, when several have a channel of this name.
        #[arg(long)]
        account: Option<String>,
        /// Also draw the code as a PNG for print (official QR codes).
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        #[arg(long, default_value_t = crate::qr::DEFAULT_MODULE_PX)]
        module_px: u32,
    },
    /// Draw the channel's stored code as a PNG (official QR codes).
    Png {
        name: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, default_value_t = crate::qr::DEFAULT_MODULE_PX)]
        module_px: u32,
    },
}

/// How long `issue` beside a server waits for the outbox to make the code.
const WAIT: Duration = Duration::from_secs(30);

pub fn run(args: &ChannelsArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Some(
        ChannelsAction::Issue {
            module_px,
            png: Some(_),
            ..
        }
        | ChannelsAction::Png { module_px, .. },
    ) = &args.action
    {
        if !(1..=64).contains(module_px) {
            errln!("error: --module-px must be 1 to 64, not {module_px}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    // The channel is looked up before any store: the same refusal either way.
    if let Some(ChannelsAction::Issue { name, account, .. }) = &args.action {
        if let Err(e) = order_for(&settings, name, account.as_deref()) {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let need = match args.action {
        Some(ChannelsAction::Issue { .. }) => Role::Operator,
        _ => Role::Viewer,
    };
    let zone = settings.utc_offset;
    match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => {
            let listed = || list_channels(&settings, store.as_ref(), now());
            match &args.action {
                None => match listed() {
                    Ok(l) => print_list(&l, zone),
                    Err(e) => runtime_error(e),
                },
                Some(ChannelsAction::Png {
                    name,
                    account,
                    out,
                    module_px,
                }) => match listed() {
                    Ok(l) => draw(&l, name, account.as_deref(), out, *module_px),
                    Err(e) => runtime_error(e),
                },
                Some(ChannelsAction::Issue {
                    name,
                    account,
                    png,
                    module_px,
                }) => {
                    let code = issue_here(&settings, store.clone(), name, account.as_deref());
                    if code != ExitCode::SUCCESS {
                        return code;
                    }
                    match listed() {
                        Ok(l) => {
                            shown(&l, name, account.as_deref(), png.as_ref(), *module_px, zone)
                        }
                        Err(e) => runtime_error(e),
                    }
                }
            }
        }
        Ok(StoreOrServer::Remote(server)) => remote(&server, args, zone),
        Err(code) => code,
    }
}

fn now() -> i64 {
    crate::outbox::now_ms().div_euclid(1000)
}

fn runtime_error(e: impl std::fmt::Display) -> ExitCode {
    errln!("error: {e}");
    ExitCode::from(EXIT_RUNTIME)
}

/// Makes the code with the account's own client, and stores it.
fn issue_here(
    settings: &Settings,
    store: std::sync::Arc<dyn crate::store::Store>,
    name: &str,
    account: Option<&str>,
) -> ExitCode {
    let Ok(order) = order_for(settings, name, account) else {
        return ExitCode::from(EXIT_INVALID);
    };
    let Some(api) = settings.account(&order.account).and_then(|a| a.api.clone()) else {
        errln!(
            "error: account `{}` has no [account.api] secret (or SIYU_{}_APP_SECRET): nothing can make the code (账号未配置 API)",
            order.account,
            order.account.to_ascii_uppercase().replace('-', "_")
        );
        return ExitCode::from(EXIT_INVALID);
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match crate::api::ApiClient::new(api, store.clone()) {
            Ok(c) => c,
            Err(e) => return runtime_error(e),
        };
        match crate::outbox::channel_code::make(&client, &order.channel, &order.request).await {
            Ok(code) => match store.put_channel_code(&order.account, &order.channel, &code) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_error(format!(
                    "the code was made at WeChat, but could not be stored: {e} (渠道码已生成但未能保存)"
                )),
            },
            Err(e @ crate::api::ApiError::Invalid(_)) => {
                errln!("error: {e}");
                ExitCode::from(EXIT_INVALID)
            }
            Err(e) => runtime_error(e),
        }
    })
}

fn remote(server: &Server, args: &ChannelsArgs, zone: UtcOffset) -> ExitCode {
    #[derive(Deserialize)]
    struct Channels {
        channels: Vec<Listed>,
    }
    let listed = || {
        server
            .get::<Channels>(&["admin", "v1", "channels"], &[])
            .map(|c| c.channels)
    };
    match &args.action {
        None => match listed() {
            Ok(l) => print_list(&l, zone),
            Err(e) => e.exit(),
        },
        Some(ChannelsAction::Png {
            name,
            account,
            out,
            module_px,
        }) => match listed() {
            Ok(l) => draw(&l, name, account.as_deref(), out, *module_px),
            Err(e) => e.exit(),
        },
        Some(ChannelsAction::Issue {
            name,
            account,
            png,
            module_px,
        }) => {
            let before = match listed() {
                Ok(l) => find(&l, name, account.as_deref()).and_then(|c| c.issued_at),
                Err(e) => return e.exit(),
            };
            let path = ["admin", "v1", "channels", name.as_str(), "issue"];
            let query: Vec<(&str, &str)> =
                account.iter().map(|a| ("account", a.as_str())).collect();
            let issued = match server.post_bytes::<Issued>(
                &path,
                &query,
                "application/json",
                b"{}".to_vec(),
            ) {
                Ok(i) => i,
                Err(e) => return e.exit(),
            };
            if !issued.queued {
                outln!("already queued: the server's outbox makes it (已在队列中)");
            }
            // Wait for the outbox to make the code (a code newer than the one before).
            let started = Instant::now();
            loop {
                let l = match listed() {
                    Ok(l) => l,
                    Err(e) => return e.exit(),
                };
                let now_issued = find(&l, name, account.as_deref()).and_then(|c| c.issued_at);
                let failed =
                    find(&l, name, account.as_deref()).is_some_and(|c| c.state == "failed");
                if now_issued.is_some() && now_issued != before || failed {
                    return shown(&l, name, account.as_deref(), png.as_ref(), *module_px, zone);
                }
                if started.elapsed() > WAIT {
                    outln!(
                        "queued; not made within {} s: see `siyu channels` and `siyu outbox` (已排队，稍后查看)",
                        WAIT.as_secs()
                    );
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

fn find<'l>(listed: &'l [Listed], name: &str, account: Option<&str>) -> Option<&'l Listed> {
    listed
        .iter()
        .find(|c| c.name == name && account.is_none_or(|a| a == c.account))
}

fn print_list(listed: &[Listed], zone: UtcOffset) -> ExitCode {
    if listed.is_empty() {
        outln!("(no channels: add [channels] file = \"channels.toml\" to the config)");
    }
    for c in listed {
        outln!(
            "{:<10} {:<24} {:<12} {:<6} {}",
            c.account,
            c.name,
            c.kind,
            c.code,
            state_text(c, zone)
        );
    }
    ExitCode::SUCCESS
}

/// `issued until 2026-12-31 12:00:00  http://weixin.qq.com/q/…`, `queued since …`, …
fn state_text(c: &Listed, zone: UtcOffset) -> String {
    let url = c.url.as_deref().unwrap_or("");
    match c.state.as_str() {
        "issued" => match c.expires_at {
            Some(e) => format!("issued until {}  {url}", zone.date_time(e)),
            None => format!("issued (lasts)  {url}"),
        },
        "expired" => format!(
            "expired {}  {url}",
            c.expires_at.map(|e| zone.date_time(e)).unwrap_or_default()
        ),
        "queued" => format!(
            "queued since {}",
            c.queued_at.map(|q| zone.date_time(q)).unwrap_or_default()
        ),
        "failed" => format!(
            "failed: {} (run `siyu channels issue {}` after fixing it)",
            c.last_error.as_deref().unwrap_or(""),
            c.name
        ),
        other => other.to_string(),
    }
}

/// Prints the channel's code after `issue`, and draws it if asked.
fn shown(
    listed: &[Listed],
    name: &str,
    account: Option<&str>,
    png: Option<&PathBuf>,
    module_px: u32,
    zone: UtcOffset,
) -> ExitCode {
    let Some(c) = find(listed, name, account) else {
        errln!("error: no channel `{name}`");
        return ExitCode::from(EXIT_INVALID);
    };
    outln!("channel   {} ({})", c.name, c.account);
    outln!("state     {}", state_text(c, zone));
    if c.state == "failed" {
        return ExitCode::from(EXIT_RUNTIME);
    }
    for (label, v) in [
        ("ticket", &c.ticket),
        ("url", &c.url),
        ("image", &c.image_url),
        ("config_id", &c.config_id),
    ] {
        if let Some(v) = v {
            outln!("{label:<9} {v}");
        }
    }
    match png {
        Some(path) => draw(listed, name, account, path, module_px),
        None => ExitCode::SUCCESS,
    }
}

fn draw(
    listed: &[Listed],
    name: &str,
    account: Option<&str>,
    out: &std::path::Path,
    module_px: u32,
) -> ExitCode {
    let Some(c) = find(listed, name, account) else {
        errln!("error: no channel `{name}` in the channels file (渠道文件中没有该渠道)");
        return ExitCode::from(EXIT_INVALID);
    };
    let Some(url) = &c.url else {
        errln!(
            "error: channel `{name}` has no code yet: `siyu channels issue {name}` (该渠道还没有渠道码)"
        );
        return ExitCode::from(EXIT_INVALID);
    };
    if c.kind == "contact_way" {
        errln!(
            "error: a WeCom contact code's image is WeCom's own; download it from {url} (企业微信联系我二维码请从该链接下载)"
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let written = crate::qr::png(url, module_px)
        .map_err(|e| e.to_string())
        .and_then(|bytes| write_file(out, &bytes).map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            outln!("png       {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => runtime_error(format!(
            "the PNG {} could not be written: {e} (图片未能保存)",
            out.display()
        )),
    }
}

/// Written beside itself and renamed: a reader never sees half an image.
fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
