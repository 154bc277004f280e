//! `siyu coupon`: the batches of `coupons.toml`, and a shop counter's two questions:
//! `redeem CODE` (marks it used, once) and `stats NAME` (issued / redeemed / expired /
//! left). Works on the store, so stop `siyu serve` first, or use
//! `POST /coupons/v1/redeem` while it runs.

use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct CouponArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: CouponAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum CouponAction {
    /// Mark a code used (once); refuses unknown, expired and already redeemed codes.
    Redeem { code: String },
    /// Issued, redeemed, expired and left for a batch.
    Stats { batch: String },
    /// The batches defined in the coupons file.
    List,
}

pub fn run(args: &CouponArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let now = crate::outbox::now_ms() / 1000;
    let zone = settings.utc_offset;
    if let CouponAction::List = args.action {
        if settings.coupons.is_empty() {
            outln!("(no coupon batches: add [coupons] file = \"coupons.toml\" to the config)");
        }
        for b in &settings.coupons {
            outln!(
                "{:<16} {}  {}  stock {}, {} per follower, valid {}",
                b.name,
                b.title,
                b.value,
                b.stock,
                b.per_follower,
                b.validity.describe(zone)
            );
        }
        return ExitCode::SUCCESS;
    }
    let store = match crate::store::open(&settings) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = match &args.action {
        CouponAction::Redeem { code } => store
            .redeem_coupon(code.trim(), now)
            // On disk before "redeemed" is printed: the shop will not ask again.
            .and_then(|r| store.flush().map(|()| r))
            .map(|r| match r {
                Ok(c) => {
                    outln!(
                        "redeemed {} ({}) of {}/{}, issued at {}",
                        c.code,
                        c.batch,
                        c.account,
                        c.openid,
                        zone.date_time(c.issued_at)
                    );
                    ExitCode::SUCCESS
                }
                Err(refused) => {
                    errln!("error: {}", refused.describe(zone));
                    ExitCode::from(EXIT_INVALID)
                }
            }),
        CouponAction::Stats { batch } => {
            let Some(b) = settings.coupon_batch(batch) else {
                errln!("error: no coupon batch `{batch}` (see `siyu coupon list`)");
                return ExitCode::from(EXIT_INVALID);
            };
            store.coupon_stats(b, now).map(|s| {
                outln!(
                    "{}: issued {}, redeemed {}, expired {}, left {}",
                    b.name,
                    s.issued,
                    s.redeemed,
                    s.expired,
                    s.left
                );
                ExitCode::SUCCESS
            })
        }
        CouponAction::List => unreachable!("handled above"),
    };
    let result = result.and_then(|code| store.flush().map(|()| code));
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
