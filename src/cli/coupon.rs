//! `siyu coupon`: the batches of `coupons.toml`, and a shop counter's two questions:
//! `redeem CODE` (marks it used, once) and `stats NAME` (issued / redeemed / expired /
//! left). Works on the store, or while `siyu serve` holds it through the admin API
//! (`POST /admin/v1/coupons/redeem`, operator; `GET /admin/v1/coupons/{batch}/stats`,
//! viewer).

use std::process::ExitCode;

use serde::Deserialize;

use super::remote::{Failure, Server};
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::coupon::{Batch, Coupon, CouponStats, RedeemRefused};
use crate::local_time::UtcOffset;
use crate::server::admin_coupons::BatchStats;

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
    // Known batches are checked here, before any store: the same refusal either way.
    let batch = match &args.action {
        CouponAction::Stats { batch } => match settings.coupon_batch(batch) {
            Some(b) => Some(b),
            None => {
                errln!("error: no coupon batch `{batch}` (see `siyu coupon list`)");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        _ => None,
    };
    let need = match args.action {
        CouponAction::Redeem { .. } => Role::Operator,
        _ => Role::Viewer,
    };
    let store = match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => store,
        Ok(StoreOrServer::Remote(server)) => {
            return remote(&server, &args.action, batch, zone).unwrap_or_else(Failure::exit)
        }
        Err(code) => return code,
    };
    let result = match (&args.action, batch) {
        (CouponAction::Redeem { code }, _) => store
            .redeem_coupon(code.trim(), now, zone)
            // On disk before "redeemed" is printed: the shop will not ask again.
            .and_then(|r| store.flush().map(|()| r))
            .map(|r| redeemed(r, zone)),
        (CouponAction::Stats { .. }, Some(b)) => {
            store.coupon_stats(b, now).map(|s| print_stats(b, &s))
        }
        _ => unreachable!("List is handled above, Stats always has its batch"),
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

/// The same through the admin API.
fn remote(
    server: &Server,
    action: &CouponAction,
    batch: Option<&Batch>,
    zone: UtcOffset,
) -> Result<ExitCode, Failure> {
    match (action, batch) {
        (CouponAction::Redeem { code }, _) => {
            #[derive(Deserialize)]
            struct Redeemed {
                redeemed: Coupon,
            }
            let body = serde_json::json!({ "code": code.trim() });
            match server.post::<Redeemed>(&["admin", "v1", "coupons", "redeem"], Some(&body)) {
                Ok(r) => Ok(redeemed(Ok(r.redeemed), zone)),
                // The refusal itself, so that its time is shown as here.
                Err(Failure::Refused {
                    body,
                    message,
                    status,
                }) => match serde_json::from_value::<RedeemRefused>(body["refused"].clone()) {
                    Ok(refused) => Ok(redeemed(Err(refused), zone)),
                    Err(_) => Err(Failure::Refused {
                        status,
                        message,
                        body,
                    }),
                },
                Err(e) => Err(e),
            }
        }
        (CouponAction::Stats { .. }, Some(b)) => {
            let s: BatchStats = server.get(&["admin", "v1", "coupons", &b.name, "stats"], &[])?;
            Ok(print_stats(b, &s.stats))
        }
        _ => unreachable!("List needs no store, Stats always has its batch"),
    }
}

fn redeemed(r: Result<Coupon, RedeemRefused>, zone: UtcOffset) -> ExitCode {
    match r {
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
    }
}

fn print_stats(b: &Batch, s: &CouponStats) -> ExitCode {
    outln!(
        "{}: issued {}, redeemed {}, expired {}, left {}",
        b.name,
        s.issued,
        s.redeemed,
        s.expired,
        s.left
    );
    ExitCode::SUCCESS
}
