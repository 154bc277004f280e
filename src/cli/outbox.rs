//! `siyu outbox`: what waits to be sent to WeChat, per account (pending, retrying, dead,
//! and how far behind), the retrying items with their last error and the dead letters
//! with their reason. `siyu outbox retry ID…` puts dead letters back in the queue. Reads
//! the store, or while `siyu serve` holds it `GET /admin/v1/outbox` (viewer) and
//! `POST /admin/v1/outbox/{id}/retry` (operator).

use std::process::ExitCode;

use serde::Deserialize;

use super::remote::{Failure, Server};
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::local_time::UtcOffset;
use crate::outbox::report::{report, OutboxReport};
use crate::outbox::{now_ms, OutboxItem};
use crate::store::{Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this account.
    #[arg(long)]
    pub account: Option<String>,
    /// How many retrying items and dead letters to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(subcommand)]
    pub action: Option<OutboxAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxAction {
    /// Requeue dead letters by id: due at once, attempts reset.
    Retry {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

pub fn run(args: &OutboxArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Some(a) = &args.account {
        if settings.account(a).is_none() {
            errln!("error: no account `{a}` in {}", settings.source.display());
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let need = match args.action {
        None => Role::Viewer,
        Some(OutboxAction::Retry { .. }) => Role::Operator,
    };
    let zone = settings.utc_offset;
    match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => {
            let result = match &args.action {
                None => report(
                    store.as_ref(),
                    args.account.as_deref(),
                    now_ms(),
                    args.limit,
                )
                .map(|r| print(&r, zone)),
                Some(OutboxAction::Retry { ids }) => retry(store.as_ref(), ids),
            };
            match result {
                Ok(code) => code,
                Err(e) => {
                    errln!("error: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Ok(StoreOrServer::Remote(server)) => {
            let result = match &args.action {
                None => {
                    let limit = args.limit.to_string();
                    let mut query = vec![("limit", limit.as_str())];
                    if let Some(a) = &args.account {
                        query.push(("account", a));
                    }
                    server
                        .get::<OutboxReport>(&["admin", "v1", "outbox"], &query)
                        .map(|r| print(&r, zone))
                }
                Some(OutboxAction::Retry { ids }) => retry_remote(&server, ids),
            };
            result.unwrap_or_else(Failure::exit)
        }
        Err(code) => code,
    }
}

fn print(r: &OutboxReport, zone: UtcOffset) -> ExitCode {
    let now = now_ms();
    if r.accounts.is_empty() {
        outln!("(the outbox is empty)");
        return ExitCode::SUCCESS;
    }
    outln!(
        "{:<16} {:>9} {:>9} {:>9}  oldest",
        "account",
        "pending",
        "retrying",
        "dead"
    );
    for (account, q) in &r.accounts {
        let oldest = q
            .oldest_secs
            .map_or("-".to_string(), |s| format!("{s} s ago"));
        outln!(
            "{account:<16} {:>9} {:>9} {:>9}  {oldest}",
            q.pending,
            q.retrying,
            q.dead
        );
    }
    if !r.retrying.is_empty() {
        outln!("\nretrying:");
        for i in &r.retrying {
            outln!(
                "  #{:<20} {:<10} {}  attempt {}, next in {} s: {}",
                i.id,
                i.account,
                i.effect.describe(),
                i.attempts,
                ((i.due_ms - now).max(0) + 999) / 1000,
                i.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    if !r.dead.is_empty() {
        outln!("\ndead (requeue with `siyu outbox retry ID`):");
        for d in &r.dead {
            outln!(
                "  #{:<20} {:<10} {}  after {} attempt(s), dead since {}, from {}: {}",
                d.item.id,
                d.item.account,
                d.item.effect.describe(),
                d.item.attempts + 1,
                zone.date_time(d.died_ms.div_euclid(1000)),
                d.item.origin,
                d.reason
            );
        }
    }
    ExitCode::SUCCESS
}

fn retry(store: &dyn Store, ids: &[u64]) -> Result<ExitCode, StoreError> {
    let mut missing = false;
    for &id in ids {
        match store.requeue_dead(id, now_ms())? {
            Some(item) => {
                // On disk before it is reported done.
                store.flush()?;
                requeued(id, &item)
            }
            None => {
                no_dead_letter(id);
                missing = true;
            }
        }
    }
    store.flush()?;
    Ok(if missing {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}

/// The same through `POST /admin/v1/outbox/{id}/retry`, one id after the other.
fn retry_remote(server: &Server, ids: &[u64]) -> Result<ExitCode, Failure> {
    #[derive(Deserialize)]
    struct Requeued {
        requeued: OutboxItem,
    }
    let mut missing = false;
    for &id in ids {
        let path = id.to_string();
        match server.post::<Requeued>(&["admin", "v1", "outbox", &path, "retry"], None) {
            Ok(r) => requeued(id, &r.requeued),
            Err(Failure::Refused { status: 404, .. }) => {
                no_dead_letter(id);
                missing = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if missing {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}

fn requeued(id: u64, item: &OutboxItem) {
    outln!("requeued #{id}: {}", item.effect.describe())
}

fn no_dead_letter(id: u64) {
    errln!("error: no dead letter #{id} (see `siyu outbox`)");
}
