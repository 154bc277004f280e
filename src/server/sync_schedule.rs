//! The daily follower sync in `siyu serve`: for each account with `[account.sync]
//! daily_at`, a task that starts the account's sync once a day through the same code path
//! as `POST /admin/v1/followers/{account}/sync` (audited as `followers.sync` by
//! `schedule`).
//!
//! When the start is due is `sync::schedule::due`, on the day recorded in the stored run
//! (`scheduled_on`, written in the run's first atomic step): a restart after the day's
//! start does not start it again, and a server that was down at `daily_at` starts it when
//! it comes up that day. Several instances on PostgreSQL: the account's sync lease lets
//! one run it, and the runner looks at the recorded day again under the lease, so the
//! others start nothing. A sync already running (started by hand, or on another instance)
//! is left alone; the schedule looks again after [`RETRY`] and starts the day's run once
//! that one has ended.

use std::time::Duration;

use actix_web::web;
use tokio::sync::watch;

use super::admin::{on_pool, AdminError};
use super::admin_sync::{begin, End};
use super::AppState;
use crate::sync::schedule::{self, DailyAt};

/// Longest sleep between two looks: a clock stepped (NTP, a VM resumed) is noticed
/// within this, and a start refused because a sync was running is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// Who a scheduled start is by, in the run and the audit trail.
pub const BY: &str = "schedule";

/// One task per scheduled account, until `stopped` turns true.
pub fn spawn(
    state: web::Data<AppState>,
    stopped: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    state
        .settings
        .accounts
        .iter()
        .filter_map(|a| Some((a.id.clone(), a.sync_daily_at?)))
        .map(|(account, at)| {
            tracing::info!(%account, daily_at = %at, zone = %schedule::ZONE, "daily follower sync scheduled");
            tokio::spawn(run(state.clone(), account, at, stopped.clone()))
        })
        .collect()
}

async fn run(
    state: web::Data<AppState>,
    account: String,
    at: DailyAt,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        let wait = match look(&state, &account, at).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(%account, error = %e, "daily follower sync: cannot read the last run; looking again soon");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = stopped.changed() => if changed.is_err() { break },
        }
    }
}

/// Starts the sync if it is due, and waits for it to end; returns how long to sleep
/// before the next look.
async fn look(
    state: &web::Data<AppState>,
    account: &str,
    at: DailyAt,
) -> Result<Duration, AdminError> {
    let acc = account.to_string();
    let last = on_pool(state, move |s| Ok(s.store.sync_run(&acc)?)).await?;
    let last_day = last.and_then(|r| r.scheduled_on);
    let now = crate::outbox::now_ms().div_euclid(1000);
    if !schedule::due(now, at, last_day.as_deref()) {
        state.syncs.looked(account, now);
        let next = schedule::next_at(now, at, last_day.as_deref());
        return Ok(RETRY.min(Duration::from_secs((next - now).max(1).unsigned_abs())));
    }
    let today = schedule::day(now);
    let started = begin(state, account, false, BY, Some(today.clone())).await;
    state.syncs.looked(account, now);
    match started {
        Ok(started) if started.already_live => {
            tracing::info!(%account, "daily follower sync due, but a sync of the account is running here: starting it after that one");
            Ok(RETRY)
        }
        Ok(started) => {
            let id = started.run.as_ref().map(|r| r.id);
            tracing::info!(%account, day = %today, run = ?id, "daily follower sync started (定时同步开始)");
            let mut ended = started.ended;
            let end = ended
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|e| e.clone());
            let acc = account.to_string();
            let run = on_pool(state, move |s| Ok(s.store.sync_run(&acc)?)).await?;
            match (end, run) {
                (Some(End::Stored), Some(run)) => tracing::info!(
                    %account, state = %run.state, summary = %run.summary(),
                    "daily follower sync finished (定时同步结束)"
                ),
                (end, _) => {
                    tracing::warn!(%account, end = ?end, "daily follower sync ended without a stored run")
                }
            }
            Ok(Duration::ZERO)
        }
        Err(AdminError::Conflict(reason)) => {
            tracing::info!(%account, %reason, "daily follower sync due, but not started here");
            Ok(RETRY)
        }
        Err(e) => Err(e),
    }
}
