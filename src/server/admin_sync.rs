//! `POST /admin/v1/followers/{account}/sync`: import the account's followers from WeChat in
//! the background (the same runner as `siyu followers sync`); `GET` the same path for its
//! progress; `POST …/sync/stop` to stop it after the batch in hand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::admin::{authorize, known_account, on_pool, AdminError};
use super::AppState;
use crate::config::Role;
use crate::sync::runner::{self, SyncError, SyncOptions};
use crate::sync::SyncRun;

/// How long `stop` waits for the batch in hand.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// How long `start` waits for the run's first write, to answer it.
const START_WAIT: Duration = Duration::from_secs(10);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/followers/{account}/sync", web::post().to(start))
        .route("/followers/{account}/sync", web::get().to(status))
        .route("/followers/{account}/sync/stop", web::post().to(stop));
}

/// The syncs this server runs now, by account, and when the daily schedule last looked.
#[derive(Default)]
pub struct Syncs {
    running: Mutex<HashMap<String, Running>>,
    /// Account → unix seconds of the schedule's last decision (shown in the status, so an
    /// operator sees the schedule is alive).
    looked: Mutex<HashMap<String, i64>>,
}

struct Running {
    stop: watch::Sender<bool>,
    /// Turns `Some` when the run ends.
    ended: watch::Receiver<Option<End>>,
}

#[derive(Debug, Clone)]
pub(super) enum End {
    /// Done, failed or stopped: the stored run says which.
    Stored,
    /// Another instance holds the account's sync.
    Busy(String),
    /// The store failed.
    Error(String),
}

impl Syncs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The daily schedule decided, at `now`, whether to start the account's sync.
    pub(super) fn looked(&self, account: &str, now: i64) {
        self.looked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), now);
    }

    fn looked_at(&self, account: &str) -> Option<i64> {
        self.looked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
    }

    fn live(&self, account: &str) -> bool {
        self.running(account).is_some()
    }

    /// The account's run here, while it has not ended.
    fn running(&self, account: &str) -> Option<watch::Receiver<Option<End>>> {
        self.lock()
            .get(account)
            .filter(|r| r.ended.borrow().is_none())
            .map(|r| r.ended.clone())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    restart: bool,
}

fn refused(e: SyncError) -> AdminError {
    match e {
        SyncError::NoAccount(_) => AdminError::NotFound(e.to_string()),
        SyncError::Busy(_) | SyncError::ScheduledAlready(..) => AdminError::Conflict(e.to_string()),
        SyncError::Store(s) => AdminError::Store(s),
        SyncError::NoApi(_) => AdminError::BadRequest(e.to_string()),
    }
}

async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
    body: Option<web::Json<StartBody>>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let account = account.into_inner();
    known_account(&state, &account)?;
    let restart = body.map(|b| b.restart).unwrap_or(false);
    let started = begin(&state, &account, restart, &who, None).await?;
    Ok(if started.already_live {
        HttpResponse::Ok().json(with_live(started.run, true))
    } else {
        HttpResponse::Accepted().json(with_live(started.run, true))
    })
}

/// What [`begin`] did.
pub(super) struct Started {
    /// A sync of the account was running here already: nothing new was started.
    pub already_live: bool,
    /// The run as stored (after its first write, if that came within [`START_WAIT`]).
    pub run: Option<SyncRun>,
    /// Turns `Some` when the run ends.
    pub ended: watch::Receiver<Option<End>>,
}

/// Starts (or resumes) the account's sync in the background, as `POST …/sync` does:
/// the one code path for an operator's start and the daily schedule's. Refused while
/// another instance holds the account's lease (409), and for a schedule's start when the
/// day's is recorded already (409). Audited as `followers.sync` by `who`.
pub(super) async fn begin(
    state: &web::Data<AppState>,
    account: &str,
    restart: bool,
    who: &str,
    scheduled_on: Option<String>,
) -> Result<Started, AdminError> {
    let account = account.to_string();
    let api = runner::runnable(&state.settings, &account).map_err(refused)?;
    let client = state
        .clients
        .get(&account)
        .cloned()
        .ok_or_else(|| refused(SyncError::NoApi(account.clone())))?;
    if let Some(ended) = state.syncs.running(&account) {
        let run = read(state, &account).await?;
        return Ok(Started {
            already_live: true,
            run,
            ended,
        });
    }
    let (progress, mut first) = watch::channel(SyncRun::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ended_tx, mut ended) = watch::channel(None);
    state.syncs.lock().insert(
        account.clone(),
        Running {
            stop: stop_tx,
            ended: ended.clone(),
        },
    );
    let options = SyncOptions {
        restart,
        by: who.to_string(),
        rate_per_sec: api.rate_per_sec,
        owner: format!("server-{}", std::process::id()),
        // The rules in force at each step: a reload during a long sync applies from then on.
        autotag: Some({
            let book = state.accounts[&account].rules.clone();
            let outbound = state.accounts[&account].settings.outbound();
            std::sync::Arc::new(move |f: &mut crate::follower::Follower, now| {
                let rules = &book.current().table;
                crate::engine::autotag_effects(rules, outbound, f, now, "autotag:sync")
            })
        }),
        scheduled_on,
        kept: Some({
            let book = state.accounts[&account].rules.clone();
            let outbound = state.accounts[&account].settings.outbound();
            let zone = state.settings.utc_offset;
            let (shop, acc, wake) = (
                state.settings.ingest.clone(),
                account.clone(),
                state.outbox_wake.clone(),
            );
            std::sync::Arc::new(move |store: &dyn crate::store::Store, people: &[String]| {
                let rules = book.current();
                let writer = crate::ingest::Writer {
                    store,
                    settings: &shop,
                    account: &acc,
                    rules: &rules.table,
                    outbound,
                    zone,
                };
                let now = crate::outbox::now_ms().div_euclid(1000);
                if writer.apply_kept(people, now)?.1 {
                    wake.notify_one();
                }
                Ok(())
            })
        }),
    };
    let store = state.store.clone();
    let acc = account.clone();
    // A tokio task (not actix's thread-local one): the daily schedule starts syncs from
    // outside the HTTP workers too.
    tokio::spawn(async move {
        let end = match runner::run(store, client, &acc, options, progress, stop_rx).await {
            Ok(_) => End::Stored,
            Err(e @ (SyncError::Busy(_) | SyncError::ScheduledAlready(..))) => {
                End::Busy(e.to_string())
            }
            Err(e) => {
                tracing::warn!(account = %acc, error = %e, "follower sync ended in an error");
                End::Error(e.to_string())
            }
        };
        let _ = ended_tx.send(Some(end));
    });
    let waited = tokio::time::timeout(START_WAIT, async {
        tokio::select! {
            _ = first.changed() => {}
            _ = ended.changed() => {}
        }
    })
    .await;
    let ended_now = ended.borrow().clone();
    match ended_now {
        Some(End::Busy(e)) => {
            state.syncs.lock().remove(&account);
            return Err(AdminError::Conflict(e));
        }
        Some(End::Error(e)) => {
            state.syncs.lock().remove(&account);
            return Err(AdminError::Store(crate::store::StoreError::Backend(e)));
        }
        _ => {}
    }
    {
        let (acc, who) = (account.clone(), who.to_string());
        let detail = if restart { "restart" } else { "" };
        on_pool(state, move |state| {
            super::reload::audit(state, &who, "followers.sync", &acc, detail.to_string());
            Ok(())
        })
        .await?;
    }
    let run = match waited {
        Ok(()) => read(state, &account).await?,
        Err(_) => None,
    };
    Ok(Started {
        already_live: false,
        run,
        ended,
    })
}

async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let account = account.into_inner();
    known_account(&state, &account)?;
    let live = state.syncs.live(&account);
    match read(&state, &account).await? {
        Some(run) => {
            let schedule = schedule(&state, &account, &run);
            let mut body = with_live(Some(run), live);
            body["schedule"] = schedule;
            Ok(HttpResponse::Ok().json(body))
        }
        None => Err(AdminError::NotFound(format!(
            "account `{account}` has never been synced (该账号尚未同步)"
        ))),
    }
}

async fn stop(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let account = account.into_inner();
    known_account(&state, &account)?;
    let ended = {
        let syncs = state.syncs.lock();
        match syncs.get(&account) {
            Some(r) if r.ended.borrow().is_none() => {
                let _ = r.stop.send(true);
                Some(r.ended.clone())
            }
            _ => None,
        }
    };
    let Some(mut ended) = ended else {
        return Err(AdminError::Conflict(format!(
            "no sync of account `{account}` is running on this server (该账号没有正在进行的同步)"
        )));
    };
    let _ = tokio::time::timeout(STOP_WAIT, ended.wait_for(|e| e.is_some())).await;
    {
        let acc = account.clone();
        on_pool(&state, move |state| {
            super::reload::audit(state, &who, "followers.sync.stop", &acc, String::new());
            Ok(())
        })
        .await?;
    }
    let run = read(&state, &account).await?;
    Ok(HttpResponse::Ok().json(with_live(run, state.syncs.live(&account))))
}

async fn read(state: &web::Data<AppState>, account: &str) -> Result<Option<SyncRun>, AdminError> {
    let account = account.to_string();
    on_pool(state, move |state| Ok(state.store.sync_run(&account)?)).await
}

/// The account's daily schedule for the status: `{daily_at, zone, next_at, looked_at}`
/// (unix seconds; `looked_at`: this server's last decision, null before its first), or null
/// without one. `account` is known (checked by the caller).
fn schedule(state: &AppState, account: &str, run: &SyncRun) -> serde_json::Value {
    let Some(at) = state.accounts[account].settings.sync_daily_at else {
        return serde_json::Value::Null;
    };
    let now = crate::outbox::now_ms().div_euclid(1000);
    json!({
        "daily_at": at.to_string(),
        "zone": crate::sync::schedule::ZONE.to_string(),
        "next_at": crate::sync::schedule::next_at(now, at, run.scheduled_on.as_deref()),
        "looked_at": state.syncs.looked_at(account),
    })
}

fn with_live(run: Option<SyncRun>, live: bool) -> serde_json::Value {
    let mut v = match run {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => json!({ "state": "running" }),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("live".into(), json!(live));
    }
    v
}
