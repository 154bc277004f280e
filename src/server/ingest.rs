//! `POST /ingest/v1/events`: the shop system posts what followers did there (orders paid,
//! coupons used, …); `[[ingest.event]]` says what each type does to the follower.
//!
//! Authenticated with the bearer token of `[ingest] token(_env)`, compared in constant time;
//! without one configured the endpoint answers 503 (it exists, and says how to turn it on).
//! Every event is applied at most once per (account, id): the id is recorded in the same
//! atomic write as the follower's change (`Store::ingest_event`); an event by a unionid
//! no follower has yet is kept (`[ingest] unknown = "keep"`) and applied when a sync links
//! it (`ingest::Writer`, the same code path). A bad event is refused
//! alone; the answer lists each event's result in request order. The scope's
//! `durable_writes` flushes the store before the 200 leaves.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::ingest::{Event, Outcome, Refusal, Writer, MAX_EVENTS};
use crate::outbox::now_ms;

/// A full batch of [`MAX_EVENTS`] events with room for long props (~1 KiB each); a bigger
/// body is refused by actix with 413 before it is read whole.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/ingest/v1")
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(actix_web::middleware::from_fn(super::durable_writes))
            .route("/events", web::post().to(events)),
    );
}

/// The request's shape; anything else is refused whole (400) and nothing is applied.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Map<String, Value>>,
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

#[tracing::instrument(skip_all, fields(events))]
async fn events(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(token) = &state.settings.ingest.token else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ingest API is off: set [ingest] token_env in the config (README \"Behaviour from the shop\")".into(),
        );
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed =
        presented.is_some_and(|p| bool::from(token.expose().as_bytes().ct_eq(p.as_bytes())));
    if !allowed {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(json!({ "error": "missing or invalid bearer token" }));
    }
    // Parsed after the token check, whatever the Content-Type says (shop systems vary).
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON {{\"events\": [{{…}}, …]}}, each event an object: {e}"
                ),
            )
        }
    };
    tracing::Span::current().record("events", batch.events.len());
    if batch.events.len() > MAX_EVENTS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one request; at most {MAX_EVENTS}: send them in several requests (nothing was applied)",
                batch.events.len()
            ),
        );
    }
    let state2 = state.clone();
    match web::block(move || apply_all(&state2, &batch.events)).await {
        Ok(Ok(results)) => {
            let count = |s: &str| results.iter().filter(|r| r["status"] == s).count();
            tracing::info!(
                applied = count("applied"),
                kept = count("kept"),
                duplicate = count("duplicate"),
                refused = count("refused"),
                "shop events ingested"
            );
            HttpResponse::Ok().json(json!({ "results": results }))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ingesting shop events failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error: events before the failure may be applied; send the request again (they answer duplicate)".into(),
            )
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ingest task failed".into(),
        ),
    }
}

/// Each event in order, one atomic store write each; the result lines.
fn apply_all(
    state: &AppState,
    events: &[Map<String, Value>],
) -> Result<Vec<Value>, crate::store::StoreError> {
    let now = now_ms() / 1000;
    let settings = &state.settings.ingest;
    let mut results = Vec::with_capacity(events.len());
    let mut queued = false;
    for raw in events {
        let id = Event::id_of(raw);
        let refused = |Refusal(m): Refusal| json!({"id": id, "status": "refused", "error": m});
        let checked = Event::parse(raw, |a| state.accounts.contains_key(a), now)
            .and_then(|e| settings.mapping.change(&e).map(|c| (e, c)));
        let (event, change) = match checked {
            Ok(ok) => ok,
            Err(r) => {
                results.push(refused(r));
                continue;
            }
        };
        // `Event::parse` refused accounts not in `state.accounts`: the index holds.
        let account = &state.accounts[&event.account];
        // The account's automatic tags, re-evaluated in the same write as the event.
        let rules = account.rules.current();
        let writer = Writer {
            store: state.store.as_ref(),
            settings,
            account: &event.account,
            rules: &rules.table,
            outbound: account.settings.outbound(),
            zone: state.settings.utc_offset,
        };
        let outcome = writer.ingest(raw, &event, &change, now)?;
        queued |= matches!(outcome, Outcome::Applied { queued: true });
        results.push(match outcome {
            Outcome::Refused(r) => refused(r),
            other => json!({"id": id, "status": other.status()}),
        });
    }
    if queued {
        state.outbox_wake.notify_one();
    }
    Ok(results)
}
