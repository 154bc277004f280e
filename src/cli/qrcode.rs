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
    /// Also draw the code as a PNG for print (from the code's `url`), e.g. `poster.png`.
    #[arg(long, value_name = "FILE")]
    pub png: Option<std::path::PathBuf>,
    /// The PNG's pixels per QR module (1 to 64; with the border a code is about 37 modules).
    #[arg(long, default_value_t = crate::qr::DEFAULT_MODULE_PX)]
    pub module_px: u32,
}

pub fn run(args: &QrcodeArgs) -> ExitCode {
    if args.png.is_some() && !(1..=64).contains(&args.module_px) {
        // Before the code is made at WeChat, not after.
        errln!("error: --module-px must be 1 to 64, not {}", args.module_px);
        return ExitCode::from(EXIT_INVALID);
    }
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
            Ok(t) => print(args, &t),
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
            args,
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

fn print(args: &QrcodeArgs, t: &QrTicket) -> ExitCode {
    outln!("scene     {}", args.scene);
    match t.expire_seconds {
        Some(s) => outln!("expires   in {s} s"),
        None => outln!("expires   never (permanent)"),
    }
    outln!("ticket    {}", t.ticket);
    outln!("url       {}", t.url);
    outln!("image     {}", t.image_url);
    if let Some(path) = &args.png {
        // The code exists at WeChat now; a PNG that cannot be written is said plainly, and
        // the url above still draws it.
        let written = crate::qr::png(&t.url, args.module_px)
            .map_err(|e| e.to_string())
            .and_then(|bytes| write_file(path, &bytes).map_err(|e| e.to_string()));
        match written {
            Ok(()) => outln!("png       {}", path.display()),
            Err(e) => {
                errln!(
                    "error: the QR code was created, but its PNG {} could not be written: {e} (二维码已创建，但图片未能保存)",
                    path.display()
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Written beside itself and renamed: a reader never sees half an image.
fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
