//! `GET /admin/v1/reports/channels|daily?account=&from=&to=` and
//! `GET /admin/v1/reports/rebuild?account=` (viewer): the reports `siyu report` prints,
//! read from the counters (README "Reports"). The rebuild here only compares: replacing
//! the counters (`--write`) needs the servers stopped.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::admin::{authorize, known_account, on_pool, AdminError};
use super::AppState;
use crate::config::Role;
use crate::report::{query, Range};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/reports/channels", web::get().to(channels))
        .route("/reports/daily", web::get().to(daily))
        .route("/reports/rebuild", web::get().to(rebuild));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanQuery {
    account: String,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountQuery {
    account: String,
}

fn range(state: &AppState, q: &SpanQuery) -> Result<Range, AdminError> {
    let today = state
        .settings
        .utc_offset
        .day(crate::outbox::now_ms().div_euclid(1000));
    Range::or_default(q.from.as_deref(), q.to.as_deref(), today)
        .map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// A report over a range of days of one account, read on the blocking pool.
async fn span_report<T: serde::Serialize + Send + 'static>(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<SpanQuery>,
    read: fn(&AppState, &str, Range) -> Result<T, crate::store::StoreError>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    known_account(&state, &q.account)?;
    let range = range(&state, &q)?;
    let account = q.into_inner().account;
    let r = on_pool(&state, move |state| Ok(read(state, &account, range)?)).await?;
    Ok(HttpResponse::Ok().json(r))
}

async fn channels(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<SpanQuery>,
) -> Result<HttpResponse, AdminError> {
    span_report(state, req, q, |state, account, range| {
        query::channels(
            state.store.as_ref(),
            account,
            range,
            &state.settings.channels,
        )
    })
    .await
}

async fn daily(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<SpanQuery>,
) -> Result<HttpResponse, AdminError> {
    span_report(state, req, q, |state, account, range| {
        query::daily(state.store.as_ref(), account, range)
    })
    .await
}

async fn rebuild(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<AccountQuery>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    known_account(&state, &q.account)?;
    let account = q.into_inner().account;
    let r = on_pool(&state, move |state| {
        Ok(query::rebuild(state.store.as_ref(), &account, false)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(r))
}
