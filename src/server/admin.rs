//! The admin API under `/admin/v1`: JSON, bearer tokens with roles (viewer < operator <
//! admin), compared in constant time. Every change is validated first, applied
//! atomically, and recorded in the audit trail under the token's name. Described in
//! `openapi.yaml`.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::reload::{audit, reload_book};
use super::webhook::Entropy;
use super::AppState;
use crate::audit::diff_summary;
use crate::config::{AdminToken, Role};
use crate::coupon::RedeemRefused;
use crate::engine::{self, Context};
use crate::outbox::{now_ms, NewItem};
use crate::rulebook::{LoadError, Reloaded, RuleBook};
use crate::store::StoreError;
use crate::trial::Trial;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .wrap(actix_web::middleware::from_fn(super::durable_writes))
            .route("/rules", web::get().to(list_rules))
            .route("/rules/{file}", web::get().to(read_rule))
            .route("/rules/{file}", web::put().to(write_rule))
            .route("/reload", web::post().to(reload))
            .route("/tests", web::post().to(run_tests))
            .route("/simulate", web::post().to(simulate))
            .route("/simulate/commit", web::post().to(simulate_commit))
            // Before `/followers/{account}/{openid}`, which would take `sync` for an openid.
            .configure(super::admin_sync::configure)
            .configure(super::admin_import::configure)
            .configure(super::admin_people::configure)
            .route("/followers/{account}/{openid}", web::get().to(follower))
            .route(
                "/followers/{account}/{openid}/tags/{tag}",
                web::put().to(add_tag),
            )
            .route(
                "/followers/{account}/{openid}/tags/{tag}",
                web::delete().to(remove_tag),
            )
            .route("/tags/{account}", web::get().to(tags))
            .route("/qrcode", web::post().to(qrcode))
            .route("/audit", web::get().to(audit_list))
            .route("/outbox", web::get().to(outbox))
            .route("/outbox/{id}/retry", web::post().to(outbox_retry))
            .configure(super::admin_campaigns::configure)
            .configure(super::admin_coupons::configure)
            .configure(super::admin_segments::configure)
            .configure(super::admin_reports::configure)
            .configure(super::channel_codes::configure)
            .configure(super::admin_referrals::configure),
    );
}

/// An operator's tag edit is mirrored to WeChat like a rule's. Queued right after the
/// follower write (not in the same write: a crash between the two leaves this one
/// change unsynced; rule actions have no such gap).
fn queue_tag_sync(
    state: &AppState,
    account: &str,
    f: &crate::follower::Follower,
    tag: &str,
    add: bool,
) -> Result<(), AdminError> {
    let Some(outbound) = state.accounts[account].settings.outbound() else {
        return Ok(());
    };
    let Some(effect) = engine::tag_effect(outbound, f, None, tag, add) else {
        return Ok(());
    };
    let now = now_ms();
    state.store.enqueue(
        account,
        vec![NewItem {
            effect,
            origin: "admin".into(),
            not_before_ms: now,
        }],
        now,
    )?;
    state.outbox_wake.notify_one();
    Ok(())
}

#[derive(Debug, Deserialize)]
struct OutboxQuery {
    account: Option<String>,
    limit: Option<usize>,
}

/// Per account: pending, retrying, dead and the sync lag; the retrying items and the
/// dead letters (first `limit`, default 50).
async fn outbox(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<OutboxQuery>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    if let Some(a) = &q.account {
        known_account(&state, a)?;
    }
    let limit = q.limit.unwrap_or(50).min(1000);
    let account = q.into_inner().account;
    let r = on_pool(&state, move |state| {
        Ok(crate::outbox::report::report(
            state.store.as_ref(),
            account.as_deref(),
            now_ms(),
            limit,
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(r))
}

/// Requeues one dead letter (after fixing its cause: a config, a template, a window).
async fn outbox_retry(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<u64>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let id = path.into_inner();
    let item = on_pool(&state, move |state| {
        let item = state
            .store
            .requeue_dead(id, now_ms())?
            .ok_or_else(|| AdminError::NotFound(format!("no dead letter #{id}")))?;
        state.outbox_wake.notify_one();
        audit(
            state,
            &who,
            "outbox.retry",
            &format!("{}/#{id}", item.account),
            item.effect.describe(),
        );
        Ok(item)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "requeued": item })))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this needs the {0:?} role")]
    Forbidden(Role),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rules refused")]
    Refused(Vec<String>),
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    #[error("WeChat refused: {0}")]
    Upstream(String),
    /// A coupon code that cannot be redeemed; the body carries it as `refused` too.
    #[error(transparent)]
    Redeem(#[from] RedeemRefused),
}

/// Runs `f`, which uses the store, on actix's blocking pool: with PostgreSQL every store
/// call is a network round trip, and no worker thread may wait on one (the webhook's
/// workers serve WeChat meanwhile). Admin calls are rare, so sled goes the same way.
pub(super) async fn on_pool<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    let state = state.clone();
    web::block(move || f(&state)).await?
}

/// The blocking pool refused the work: the server is stopping (500, try again).
impl From<actix_web::error::BlockingError> for AdminError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        AdminError::Store(StoreError::Backend("the server is stopping".into()))
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Upstream(_) => StatusCode::BAD_GATEWAY,
            // As the shop's redeem endpoint answers them.
            AdminError::Redeem(r) => match r {
                RedeemRefused::Unknown(_) => StatusCode::NOT_FOUND,
                RedeemRefused::AlreadyRedeemed { .. } => StatusCode::CONFLICT,
                RedeemRefused::Expired { .. } => StatusCode::GONE,
                RedeemRefused::NotYetValid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if let AdminError::Unauthorized = self {
            r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let errors = match self {
            AdminError::Refused(errors) => errors.clone(),
            _ => Vec::new(),
        };
        match self {
            AdminError::Redeem(refused) => {
                r.json(json!({ "error": self.to_string(), "errors": errors, "refused": refused }))
            }
            _ => r.json(json!({ "error": self.to_string(), "errors": errors })),
        }
    }
}

impl From<LoadError> for AdminError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Rules(errors) => {
                AdminError::Refused(errors.0.iter().map(|e| e.to_string()).collect())
            }
            LoadError::StillRefused(shown) => {
                AdminError::Refused(shown.lines().map(str::to_string).collect())
            }
            LoadError::BadName(_) => AdminError::BadRequest(e.to_string()),
            LoadError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                AdminError::NotFound(e.to_string())
            }
            LoadError::Io { .. } => AdminError::BadRequest(e.to_string()),
        }
    }
}

/// The token that signed this request, if it has at least `need`. Every configured
/// secret is compared (in constant time) so timing tells nothing about which was close.
pub(super) fn authorize<'s>(
    state: &'s AppState,
    req: &HttpRequest,
    need: Role,
) -> Result<&'s AdminToken, AdminError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AdminError::Unauthorized)?;
    let mut found = None;
    for t in &state.settings.admin_tokens {
        if bool::from(t.secret.expose().as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(t);
        }
    }
    let token = found.ok_or(AdminError::Unauthorized)?;
    if token.role < need {
        return Err(AdminError::Forbidden(need));
    }
    Ok(token)
}

#[derive(Debug, Deserialize)]
struct FolderQuery {
    account: Option<String>,
}

/// The rule folder a request means: the named account's, or the only one there is.
fn book(state: &AppState, q: &FolderQuery) -> Result<Arc<RuleBook>, AdminError> {
    match &q.account {
        Some(id) => state
            .accounts
            .get(id)
            .map(|a| a.rules.clone())
            .ok_or_else(|| AdminError::NotFound(format!("unknown account `{id}`"))),
        None if state.books.len() == 1 => Ok(state.books[0].clone()),
        None => Err(AdminError::BadRequest(
            "several rule folders are in use: name one with ?account=ID".into(),
        )),
    }
}

async fn list_rules(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let folders: Vec<_> = state
        .books
        .iter()
        .map(|b| {
            let loaded = b.current();
            let files = b.file_names().unwrap_or_default();
            let accounts: Vec<&str> = state
                .accounts
                .iter()
                .filter(|(_, a)| std::ptr::eq(a.rules.as_ref(), b.as_ref()))
                .map(|(id, _)| id.as_str())
                .collect();
            json!({
                "dir": b.dir().display().to_string(),
                "accounts": accounts,
                "version": loaded.version,
                "summary": loaded.table.summary().to_string(),
                "warnings": loaded
                    .table
                    .warnings()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                "files": files,
                "last_error": b.last_error(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "folders": folders })))
}

async fn read_rule(
    state: web::Data<AppState>,
    req: HttpRequest,
    file: web::Path<String>,
    q: web::Query<FolderQuery>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let text = book(&state, &q)?.read_file(&file)?;
    Ok(HttpResponse::Ok()
        .content_type("application/toml; charset=utf-8")
        .body(text))
}

async fn write_rule(
    state: web::Data<AppState>,
    req: HttpRequest,
    file: web::Path<String>,
    q: web::Query<FolderQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let token = authorize(&state, &req, Role::Operator)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AdminError::BadRequest("the rule file must be UTF-8".into()))?;
    let book = book(&state, &q)?;
    let old = book.read_file(&file).unwrap_or_default();
    let (name, text_owned, token_name) = (file.into_inner(), text.to_string(), token.name.clone());
    let (writer, state2, who) = (book.clone(), state.clone(), token_name.clone());
    // Compiling, writing and publishing to the other instances are blocking work: off
    // the async worker.
    let result = web::block(move || {
        let written = writer.write_file(&name, &text_owned, Entropy::fresh().now);
        if matches!(written, Ok(Reloaded::Replaced(_))) {
            super::rule_sync::publish(&state2, &writer, &who);
        }
        written.map(|r| (r, name))
    })
    .await?;
    let (reloaded, name) = result?;
    let version = match reloaded {
        Reloaded::Replaced(v) | Reloaded::Unchanged(v) => v,
    };
    state.metrics.reload(true);
    audit(
        &state,
        &token_name,
        "rules.write",
        &format!("{}/{name}", book.dir().display()),
        format!("{}; version {}", diff_summary(&old, text), version.hash),
    );
    tracing::info!(file = %name, who = %token_name, version = %version, "rule file written");
    Ok(HttpResponse::Ok().json(json!({ "version": version })))
}

async fn reload(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let state2 = state.clone();
    let results = web::block(move || {
        state2
            .books
            .iter()
            .map(|b| {
                let r = reload_book(&state2, b, &who);
                json!({
                    "dir": b.dir().display().to_string(),
                    "changed": matches!(r, Ok(Reloaded::Replaced(_))),
                    "version": b.current().version,
                    "error": r.err().map(|e| e.to_string()),
                })
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "folders": results })))
}

/// Runs an operator regression suite (the body: a `[[case]]` TOML file, as for
/// `siyu check --tests`) against the rules in force; 200 with the report either way, 422
/// when the suite file itself is wrong.
async fn run_tests(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<FolderQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AdminError::BadRequest("the suite must be UTF-8".into()))?;
    let suite = crate::rules::Suite::parse("suite.toml", text)
        .map_err(|e| AdminError::Refused(e.0.iter().map(ToString::to_string).collect()))?;
    let loaded = book(&state, &q)?.current();
    let report = loaded.table.run_suite(&suite);
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    Ok(HttpResponse::Ok().json(json!({
        "rules_version": loaded.version,
        "passed": report.passed,
        "failed": failures.len(),
        "failures": failures,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateBody {
    account: String,
    #[serde(flatten)]
    trial: Trial,
    seed: Option<u64>,
}

/// A dry run through the engine against the live store: nothing is written.
async fn simulate(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Viewer)?.name.clone();
    let r = on_pool(&state, move |state| {
        run_simulation(state, who, &body, false)
    })
    .await?;
    Ok(HttpResponse::Ok().json(r))
}

/// The same, applied for real as if WeChat had called (`siyu simulate --commit`): the
/// follower's state changes and what the rules queue for WeChat is queued. Audited.
async fn simulate_commit(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let r = on_pool(&state, move |state| run_simulation(state, who, &body, true)).await?;
    Ok(HttpResponse::Ok().json(r))
}

/// `who` passed the token check: the body is parsed only after it, so a caller without
/// a token learns nothing from the body's errors (and gets 401, not 400).
fn run_simulation(
    state: &AppState,
    who: String,
    body: &[u8],
    commit: bool,
) -> Result<serde_json::Value, AdminError> {
    let body: SimulateBody = serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("simulate body: {e}")))?;
    let account = state
        .accounts
        .get(&body.account)
        .ok_or_else(|| AdminError::NotFound(format!("unknown account `{}`", body.account)))?;
    let entropy = Entropy::fresh();
    let msg = body
        .trial
        .message(
            account.settings.kind,
            &account.settings.receive_id,
            entropy.now,
            entropy.seed,
        )
        .map_err(AdminError::BadRequest)?;
    let loaded = account.rules.current();
    let ctx = Context {
        account: &body.account,
        rules: &loaded.table,
        now: entropy.now,
        now_ms: entropy.now_ms,
        seed: body.seed.unwrap_or(entropy.seed),
        dedupe_ttl_secs: state.settings.dedupe_ttl_secs,
        channels: &state.settings.channels,
        zone: state.settings.utc_offset,
        coupons: &state.settings.coupons,
        outbound: account.settings.outbound(),
        referral: None,
    };
    // A commit is one follower's write, as a callback's is (the flush is the scope's).
    let (outcome, after) = if commit {
        let o = engine::handle(state.store.as_ref(), ctx, &msg)?;
        if !o.effects.is_empty() {
            state.outbox_wake.notify_one();
        }
        let after = state.store.follower(&body.account, &o.follower_id)?;
        let rules = if o.answer.rules.is_empty() {
            "(no rule)".to_string()
        } else {
            o.answer.rules.join(" → ")
        };
        audit(
            state,
            &who,
            "simulate.commit",
            &format!("{}/{}", body.account, o.follower_id),
            rules,
        );
        (o, after)
    } else {
        engine::dry_run(state.store.as_ref(), ctx, &msg)?
    };
    let actions: Vec<String> = outcome.actions.iter().map(|a| a.to_string()).collect();
    // What would be queued for WeChat: each effect, and its delay after the reply.
    let start = entropy.now_ms;
    let effects: Vec<serde_json::Value> = outcome
        .effects
        .iter()
        .map(|e| {
            json!({
                "effect": e.effect,
                "describe": e.effect.describe(),
                "after_ms": (e.not_before_ms - start).max(0),
            })
        })
        .collect();
    Ok(json!({
        "rules_version": loaded.version,
        "follower": outcome.follower_id,
        "rules": outcome.answer.rules,
        "reply": outcome.answer.reply,
        "actions": actions,
        "effects": effects,
        "follower_after": after,
        "committed": commit,
    }))
}

async fn follower(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let (account, openid) = path.into_inner();
    known_account(&state, &account)?;
    let f = on_pool(&state, move |state| {
        state
            .store
            .follower(&account, &openid)?
            .ok_or_else(|| AdminError::NotFound(format!("no follower `{openid}` in `{account}`")))
    })
    .await?;
    Ok(HttpResponse::Ok().json(f))
}

async fn add_tag(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, AdminError> {
    change_tag(state, req, path.into_inner(), true).await
}

async fn remove_tag(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, AdminError> {
    change_tag(state, req, path.into_inner(), false).await
}

async fn change_tag(
    state: web::Data<AppState>,
    req: HttpRequest,
    (account, openid, tag): (String, String, String),
    add: bool,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    known_account(&state, &account)?;
    if tag.trim().is_empty() || tag.chars().count() > 64 {
        return Err(AdminError::BadRequest("a tag is 1 to 64 characters".into()));
    }
    let f = on_pool(&state, move |state| {
        let mut changed = false;
        let f = state
            .store
            .update_follower(&account, &openid, &mut |f| {
                changed = if add {
                    f.tags.insert(tag.clone())
                } else {
                    f.tags.remove(&tag)
                };
            })?
            .ok_or_else(|| {
                AdminError::NotFound(format!("no follower `{openid}` in `{account}`"))
            })?;
        if changed {
            queue_tag_sync(state, &account, &f, &tag, add)?;
            let action = if add {
                "follower.tag_add"
            } else {
                "follower.tag_remove"
            };
            audit(state, &who, action, &format!("{account}/{openid}"), tag);
        }
        Ok(f)
    })
    .await?;
    Ok(HttpResponse::Ok().json(f))
}

async fn tags(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    known_account(&state, &account)?;
    let state2 = state.clone();
    let account = account.into_inner();
    // A scan of every follower: streamed from the store, off the async worker.
    let counted = web::block(move || {
        let (mut followers, mut subscribed) = (0u64, 0u64);
        let mut tags: BTreeMap<String, u64> = BTreeMap::new();
        state2.store.for_each_follower(&account, &mut |f| {
            followers += 1;
            subscribed += u64::from(f.subscribed);
            for t in f.tags {
                *tags.entry(t).or_default() += 1;
            }
        })?;
        Ok::<_, StoreError>(
            json!({ "followers": followers, "subscribed": subscribed, "tags": tags }),
        )
    })
    .await??;
    Ok(HttpResponse::Ok().json(counted))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QrcodeBody {
    account: String,
    scene: String,
    #[serde(default)]
    permanent: bool,
    expire_seconds: Option<u32>,
}

/// Creates a channel QR code with the server's own client (and its access token).
async fn qrcode(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let body: QrcodeBody = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("qrcode body: {e}")))?;
    known_account(&state, &body.account)?;
    let client = state.clients.get(&body.account).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "account `{}` has no [account.api] settings",
            body.account
        ))
    })?;
    let ticket = client
        .create_qrcode(
            &body.scene,
            body.permanent,
            body.expire_seconds
                .unwrap_or(crate::api::MAX_QR_EXPIRE_SECONDS),
        )
        .await
        .map_err(|e| match e {
            // Worded as `siyu qrcode` words it.
            e @ crate::api::ApiError::Invalid(_) => AdminError::BadRequest(e.to_string()),
            other => AdminError::Upstream(other.to_string()),
        })?;
    let kind = if body.permanent {
        "permanent"
    } else {
        "temporary"
    };
    audit(
        &state,
        &who,
        "qrcode.create",
        &format!("{}/{}", body.account, body.scene),
        kind.to_string(),
    );
    Ok(HttpResponse::Ok().json(json!({
        "scene": body.scene,
        "ticket": ticket.ticket,
        "expire_seconds": ticket.expire_seconds,
        "url": ticket.url,
        "image_url": ticket.image_url,
    })))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_list(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Admin)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let entries = on_pool(&state, move |state| Ok(state.store.audit(limit)?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}

pub(super) fn known_account(state: &AppState, account: &str) -> Result<(), AdminError> {
    if state.accounts.contains_key(account) {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("unknown account `{account}`")))
    }
}
