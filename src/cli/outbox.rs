//! `siyu outbox`: what waits to be sent to WeChat, per account (pending, retrying, dead,
//! and how far behind), the retrying items with their last error and the dead letters
//! with their reason. `siyu outbox retry ID…` puts dead letters back in the queue. Reads
//! the store, so stop `siyu serve` first, or use `GET /admin/v1/outbox` and
//! `POST /admin/v1/outbox/{id}/retry` while it runs.

use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;
use crate::local_time::UtcOffset;
use crate::outbox::now_ms;
use crate::outbox::report::report;
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
    let result = crate::store::open(&settings).and_then(|store| match &args.action {
        None => show(store.as_ref(), args, settings.utc_offset),
        Some(OutboxAction::Retry { ids }) => retry(store.as_ref(), ids),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn show(store: &dyn Store, args: &OutboxArgs, zone: UtcOffset) -> Result<ExitCode, StoreError> {
    let now = now_ms();
    let r = report(store, args.account.as_deref(), now, args.limit)?;
    if r.accounts.is_empty() {
        outln!("(the outbox is empty)");
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}

fn retry(store: &dyn Store, ids: &[u64]) -> Result<ExitCode, StoreError> {
    let mut missing = false;
    for &id in ids {
        match store.requeue_dead(id, now_ms())? {
            Some(item) => {
                // On disk before it is reported done.
                store.flush()?;
                outln!("requeued #{id}: {}", item.effect.describe())
            }
            None => {
                errln!("error: no dead letter #{id} (see `siyu outbox`)");
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
