//! `siyu qrcode`: create a channel QR code (a parametric QR code with a `scene_str`), so a
//! poster, a store counter or a campaign can be told apart in `first_scene` and in
//! `scene = …` rules. The access token is shared with the server through the store, so
//! this needs the store free: stop `siyu serve` first.

use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::api::{ApiClient, ApiError, MAX_QR_EXPIRE_SECONDS};
use crate::config::Settings;

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
    let store = match crate::store::open(&settings) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
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
            Ok(t) => {
                outln!("scene     {}", args.scene);
                match t.expire_seconds {
                    Some(s) => outln!("expires   in {s} s"),
                    None => outln!("expires   never (permanent)"),
                }
                outln!("ticket    {}", t.ticket);
                outln!("url       {}", t.url);
                outln!("image     {}", t.image_url);
                ExitCode::SUCCESS
            }
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
