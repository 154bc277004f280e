//! The HTTP layer: thin. Routes call the webhook flow, which goes through the engine;
//! errors become HTTP statuses in exactly one place (`error.rs`).

pub mod admin;
pub mod admin_campaigns;
pub mod admin_coupons;
pub mod admin_import;
pub mod admin_people;
pub mod admin_referrals;
pub mod admin_reports;
pub mod admin_segments;
pub mod admin_sync;
pub mod channel_codes;
pub mod coupons;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod reload;
pub mod rule_sync;
pub mod startup;
pub mod sync_schedule;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::config::{Account, Settings};
use crate::protocol::{MsgCrypt, ProtocolError};
use crate::rulebook::RuleBook;
use crate::store::Store;
pub use error::WebhookError;
pub use startup::{build_state, Application, StartupError};

/// Shared by every worker thread: settings, one entry per account, the store.
pub struct AppState {
    pub settings: Settings,
    pub accounts: HashMap<String, AccountState>,
    /// Every distinct rule folder, once.
    pub books: Vec<Arc<RuleBook>>,
    pub store: Arc<dyn Store>,
    pub metrics: metrics::Metrics,
    /// One API client per account with `[account.api]`: the server's voice towards WeChat.
    /// Never called from a callback handler (design.md): only from admin calls and,
    /// later, the outbox worker.
    pub clients: HashMap<String, Arc<crate::api::ApiClient>>,
    /// Wakes the outbox worker when a callback queued something.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Group commit shared by callbacks that must be on disk before they are answered and
    /// the outbox worker.
    pub flusher: Arc<crate::store::GroupFlush>,
    /// The follower syncs running in this server.
    pub syncs: admin_sync::Syncs,
}

/// One served account and the rule table it answers from (shared with the other accounts
/// that read the same folder).
pub struct AccountState {
    pub settings: Account,
    pub rules: Arc<RuleBook>,
}

impl AppState {
    pub fn account(&self, id: &str) -> Result<&AccountState, WebhookError> {
        self.accounts
            .get(id)
            .ok_or_else(|| WebhookError::UnknownAccount(id.chars().take(64).collect()))
    }
}

impl AccountState {
    /// The account's cipher; config validation guarantees one unless the account is in
    /// plaintext mode, which never reaches the encrypted path.
    pub fn crypt(&self) -> Result<&MsgCrypt, WebhookError> {
        self.settings
            .crypt
            .as_ref()
            .ok_or(WebhookError::Protocol(ProtocolError::InvalidAesKey))
    }
}

/// The routes, shared by `serve` and the in-process tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics_text))
        .service(
            web::resource("/wx/{account}")
                .route(web::get().to(webhook::get))
                .route(web::post().to(webhook::post)),
        )
        .configure(admin::configure)
        .configure(coupons::configure)
        .configure(ingest::configure);
}

/// Every change acknowledged over HTTP (an admin API write, a coupon redemption) is on
/// disk before its answer leaves: the caller will not send it again. Wraps the admin and
/// coupon scopes as one mechanism rather than a flush in each handler; reads (GET, HEAD)
/// wait for nothing. A failed flush turns the answer into a 500, so nobody is told "done"
/// for a change a crash could still undo.
pub(crate) async fn durable_writes(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::http::Method;
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let flusher = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.flusher.clone());
    let res = next.call(req).await?;
    if let (true, Some(flusher)) = (writes, flusher) {
        if let Err(e) = flusher.flush().await {
            tracing::error!(error = %e, path = %res.request().path(), "store flush failed: the change is not acknowledged");
            return Err(actix_web::error::ErrorInternalServerError(
                "the change could not be written to disk; try again",
            ));
        }
    }
    Ok(res)
}

/// 200 when the store answers and every rule folder's last load succeeded; 503 otherwise
/// (the rules in force still answer then, but an operator must look).
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store_ok = state.store.follower("", "").is_ok();
    let rules: Vec<serde_json::Value> = state
        .books
        .iter()
        .map(|b| {
            serde_json::json!({
                "dir": b.dir().display().to_string(),
                "version": b.current().version,
                "last_error": b.last_error(),
            })
        })
        .collect();
    let healthy = store_ok && state.books.iter().all(|b| b.last_error().is_none());
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "store": if store_ok { "ok" } else { "unreadable" },
        "store_bytes": state.store.size_on_disk(),
        "rules": rules,
    });
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    // Today's report figures: a few counter rows per account, read off the workers (a
    // round trip on PostgreSQL). A failed read leaves the gauges as they were.
    let reader = state.clone();
    let today = web::block(move || {
        let day = reader
            .settings
            .utc_offset
            .day(crate::outbox::now_ms().div_euclid(1000));
        reader
            .accounts
            .keys()
            .map(|a| {
                crate::report::query::today(reader.store.as_ref(), a, day).map(|c| (a.clone(), c))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    match today {
        Ok(Ok(accounts)) => {
            for (account, counts) in accounts {
                state.metrics.report_today(&account, &counts);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: today's report figures unreadable"),
        Err(_) => {}
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(
            state.metrics.render(
                state.store.size_on_disk(),
                state
                    .store
                    .as_postgres()
                    .map(crate::store::PgStore::pool_status),
            ),
        )
}
