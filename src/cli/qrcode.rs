//! `siyu qrcode`: create a channel QR code (a parametric QR code with a `scene_str`), so a
//! poster, a store counter or a campaign can be told apart in `first_scene` and in
//! `scene = …` rules. The access token is shared with the server through the store; while
//! `siyu serve` holds it, the server makes the code with its own client and token
//! (`POST /admin/v1/qrcode`, operator).

use std::process::ExitCode;

use serde::Deserialize;

use super::remote::Server;
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::api::{ApiClient, ApiError, QrTicket, MAX_QR_EXPIRE_SECONDS};
use crate::config::{Role, Settings};

#[derive(Debug, clap::Args)]
pub struct QrcodeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The account id (as in config.toml); it needs `[account.api]`.
    #[arg(long)]
    pub account: String,
    /// The scene: 1 to 64 characters, e.g. `spring-poster`.
    #[arg(long)]
    pub scene: String,
    /// A permanent code (at most 100,000 per account) instead of a temporary one.
    #[arg(long)]
    pub permanent: bool,
    /// How long a temporary code lives, at most 30 days.
    #[arg(long, default_value_t = MAX_QR_EXPIRE_SECONDS)]
    pub expire_seconds: u32,
}

pub fn run(args: &QrcodeArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let Some(api) = settings.account(&args.account).map(|a| a.api.clone()) else {
        errln!("error: no account `{}`", args.account);
        return ExitCode::from(EXIT_INVALID);
    };
    let Some(api) = api else {
        errln!(
            "error: account `{}` has no [account.api] secret (or SIYU_{}_APP_SECRET)",
            args.account,
            args.account.to_ascii_uppercase().replace('-', "_")
        );
        return ExitCode::from(EXIT_INVALID);
    };
    let store = match super::store_or_server(&settings, Role::Operator) {
        Ok(StoreOrServer::Local(store)) => store,
        Ok(StoreOrServer::Remote(server)) => return remote(&server, args),
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match ApiClient::new(api, store.clone()) {
            Ok(c) => c,
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match client
            .create_qrcode(&args.scene, args.permanent, args.expire_seconds)
            .await
        {
            Ok(t) => print(&args.scene, &t),
            // Refused before sending (a scene over WeChat's 64 characters, a lifetime past
            // 30 days, a WeCom account): the input, not the network.
            Err(e @ ApiError::Invalid(_)) => {
                errln!("error: {e}");
                ExitCode::from(EXIT_INVALID)
            }
            Err(e) => {
                errln!("error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

/// The same through `POST /admin/v1/qrcode`: the server's client, with its token.
fn remote(server: &Server, args: &QrcodeArgs) -> ExitCode {
    #[derive(Deserialize)]
    struct Created {
        ticket: String,
        expire_seconds: Option<u32>,
        url: String,
        image_url: String,
    }
    let body = serde_json::json!({
        "account": args.account,
        "scene": args.scene,
        "permanent": args.permanent,
        "expire_seconds": args.expire_seconds,
    });
    match server.post::<Created>(&["admin", "v1", "qrcode"], Some(&body)) {
        Ok(c) => print(
            &args.scene,
            &QrTicket {
                ticket: c.ticket,
                expire_seconds: c.expire_seconds,
                url: c.url,
                image_url: c.image_url,
            },
        ),
        Err(e) => e.exit(),
    }
}

fn print(scene: &str, t: &QrTicket) -> ExitCode {
    outln!("scene     {scene}");
    match t.expire_seconds {
        Some(s) => outln!("expires   in {s} s"),
        None => outln!("expires   never (permanent)"),
    }
    outln!("ticket    {}", t.ticket);
    outln!("url       {}", t.url);
    outln!("image     {}", t.image_url);
    ExitCode::SUCCESS
}
