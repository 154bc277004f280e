//! `POST /ingest/v1/events`: the shop system posts what followers did there (orders paid,
//! coupons used, …); `[[ingest.event]]` says what each type does to the follower.
//!
//! Authenticated with the bearer token of `[ingest] token(_env)`, compared in constant time;
//! without one configured the endpoint answers 503 (it exists, and says how to turn it on).
//! Every event is applied at most once per (account, id): the id is recorded in the same
//! atomic write as the follower's change (`Store::ingest_event`). A bad event is refused
//! alone; the answer lists each event's result in request order. The scope's
//! `durable_writes` flushes the store before the 200 leaves.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::engine;
use crate::ingest::{Event, Identity, Refusal, UnknownFollower, MAX_EVENTS};
use crate::outbox::now_ms;
use crate::store::Ingested;

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
    for raw in events {
        let id = Event::id_of(raw);
        let refused = |Refusal(m): Refusal| json!({"id": id, "status": "refused", "error": m});
        let event = match Event::parse(raw, |a| state.accounts.contains_key(a), now) {
            Ok(e) => e,
            Err(r) => {
                results.push(refused(r));
                continue;
            }
        };
        let change = match settings.mapping.change(&event) {
            Ok(c) => c,
            Err(r) => {
                results.push(refused(r));
                continue;
            }
        };
        let openid = match &event.who {
            Identity::OpenId(o) => o.clone(),
            Identity::UnionId(u) => {
                let known = state.store.people(u)?;
                match known.into_iter().find(|(a, _)| *a == event.account) {
                    Some((_, openid)) => openid,
                    None => {
                        results.push(refused(Refusal(format!(
                            "no follower of account `{}` is known with unionid `{u}`: sync the account first (`siyu followers sync`), or send the openid (未找到该 unionid 的粉丝)",
                            event.account
                        ))));
                        continue;
                    }
                }
            }
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        // The account's automatic tags, re-evaluated in the same write as the event.
        let rules = state.accounts[&event.account].rules.current();
        let ingested =
            state
                .store
                .ingest_event(&event.account, &openid, &event.id, &mut |stored| {
                    let mut f = match (stored, settings.unknown) {
                        (Some(f), _) => f,
                        (None, UnknownFollower::Keep) => crate::follower::Follower::new(&openid),
                        (None, UnknownFollower::Refuse) => return None,
                    };
                    added = change.apply(&mut f);
                    let (auto, auto_removed) = rules.table.autotag(&mut f, now);
                    added.extend(auto);
                    removed = auto_removed;
                    Some(f)
                })?;
        results.push(match ingested {
            Ingested::Applied(f) => {
                mirror_tags(state, &event.account, &f, &added, &removed)?;
                json!({"id": id, "status": "applied"})
            }
            Ingested::Duplicate => json!({"id": id, "status": "duplicate"}),
            Ingested::Declined => refused(Refusal(format!(
                "unknown follower `{}` of account `{}` ([ingest] unknown = \"refuse\")",
                openid, event.account
            ))),
        });
    }
    Ok(results)
}

/// Tags an event added, and automatic tags it took off (`remove = true`), are mirrored to
/// WeChat like an operator's edit (queued right after the follower's write, so a crash
/// between the two leaves that change unsynced). Only for subscribed followers: WeChat
/// cannot tag an openid that does not follow the account.
fn mirror_tags(
    state: &AppState,
    account: &str,
    f: &crate::follower::Follower,
    added: &[String],
    removed: &[String],
) -> Result<(), crate::store::StoreError> {
    // `Event::parse` refused accounts not in `state.accounts`: the index holds.
    let outbound = state.accounts[account].settings.outbound();
    let changes = added
        .iter()
        .map(|t| (t.clone(), true))
        .chain(removed.iter().map(|t| (t.clone(), false)));
    let now = now_ms();
    let items = engine::tag_items(outbound, f, changes, "ingest", now);
    if !items.is_empty() {
        state.store.enqueue(account, items, now)?;
        state.outbox_wake.notify_one();
    }
    Ok(())
}
