//! `GET` and `POST /wx/{account}`: the callback as WeChat's servers make it.
//!
//! `verify_url` and `handle_callback` hold the whole flow without actix types, so the
//! benchmark measures exactly what a request costs; the handlers at the bottom only read
//! the request, take the time and randomness, and log one line.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;

use super::error::WebhookError;
use super::AppState;
use crate::config::{AccountKind, Mode};
use crate::engine::{self, Context, Outcome};
use crate::protocol::{
    encrypted_reply, parse_encrypt, parse_inbound, reply_xml, verify, Event, InboundKind,
    ProtocolError,
};

/// The query WeChat (official: `signature`, `openid`, `encrypt_type`…) and WeCom
/// (`msg_signature` only) put on callback URLs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackQuery {
    pub signature: Option<String>,
    pub msg_signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub encrypt_type: Option<String>,
    pub openid: Option<String>,
}

/// What a callback answered, with what the log line needs.
#[derive(Debug)]
pub struct CallbackReply {
    pub body: String,
    pub content_type: &'static str,
    /// `None` when the message type is not supported (answered `success`, nothing stored).
    pub outcome: Option<Outcome>,
    pub kind: String,
}

/// The per-request inputs that come from outside the request: time and randomness.
#[derive(Debug, Clone, Copy)]
pub struct Entropy {
    pub now: i64,
    /// The same instant in milliseconds.
    pub now_ms: i64,
    pub random: [u8; 16],
    pub seed: u64,
}

impl Entropy {
    pub fn fresh() -> Entropy {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Entropy {
            now: now_ms / 1000,
            now_ms,
            random: rand::random(),
            seed: rand::random(),
        }
    }
}

/// `GET`: URL verification. Official accounts echo `echostr` after the signature check;
/// WeCom answers the decrypted `echostr`.
pub fn verify_url(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery,
    now: i64,
) -> Result<String, WebhookError> {
    let account = state.account(account_id)?;
    let (timestamp, nonce) = check_time(state, q, now)?;
    let echostr = q
        .echostr
        .as_deref()
        .ok_or(WebhookError::MissingParam("echostr"))?;
    let token = account.settings.token.expose();
    match account.settings.kind {
        AccountKind::Official => {
            let sig = q
                .signature
                .as_deref()
                .ok_or(WebhookError::MissingParam("signature"))?;
            verify(token, &[timestamp, nonce], sig)?;
            Ok(echostr.to_string())
        }
        AccountKind::Wecom => {
            let sig = q
                .msg_signature
                .as_deref()
                .ok_or(WebhookError::MissingParam("msg_signature"))?;
            verify(token, &[timestamp, nonce, echostr], sig)?;
            Ok(account.crypt()?.decrypt(echostr)?)
        }
    }
}

/// `POST`: verify, decrypt, parse, de-duplicate, decide, commit, reply (encrypted when the
/// request was).
pub fn handle_callback(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery,
    body: &[u8],
    entropy: Entropy,
) -> Result<CallbackReply, WebhookError> {
    let account = state.account(account_id)?;
    let (timestamp, nonce) = check_time(state, q, entropy.now)?;
    let body = std::str::from_utf8(body).map_err(|_| WebhookError::NotUtf8)?;
    let token = account.settings.token.expose();
    let encrypted = match (account.settings.kind, account.settings.mode) {
        (AccountKind::Wecom, _) | (_, Mode::Safe) => {
            if account.settings.kind == AccountKind::Official
                && q.encrypt_type.as_deref() != Some("aes")
            {
                return Err(WebhookError::ModeMismatch(
                    "account is in safe mode: expected encrypt_type=aes",
                ));
            }
            true
        }
        (_, Mode::Compatible) => q.encrypt_type.as_deref() == Some("aes"),
        (_, Mode::Plaintext) => false,
    };
    let decrypted;
    let xml = if encrypted {
        let encrypt = parse_encrypt(body)?.ok_or(ProtocolError::MissingField("Encrypt"))?;
        let sig = q
            .msg_signature
            .as_deref()
            .ok_or(WebhookError::MissingParam("msg_signature"))?;
        verify(token, &[timestamp, nonce, &encrypt], sig)?;
        decrypted = account.crypt()?.decrypt(&encrypt)?;
        decrypted.as_str()
    } else {
        let sig = q
            .signature
            .as_deref()
            .ok_or(WebhookError::MissingParam("signature"))?;
        verify(token, &[timestamp, nonce], sig)?;
        body
    };
    let msg = parse_inbound(xml)?;
    let kind = msg.type_name();
    if let InboundKind::Other { .. } = msg.kind {
        return Ok(success(None, kind));
    }
    let rules = account.rules.current();
    let programmes = &state.settings.referrals;
    let outbound = account.settings.outbound();
    let ask = match outbound {
        Some(_) => crate::referral_flow::ask::ask(
            state.store.as_ref(),
            programmes,
            account_id,
            &msg,
            entropy.now,
        )?,
        None => None,
    };
    let mut outcome = engine::handle(
        state.store.as_ref(),
        Context {
            account: account_id,
            rules: &rules.table,
            now: entropy.now,
            now_ms: entropy.now_ms,
            seed: entropy.seed,
            dedupe_ttl_secs: state.settings.dedupe_ttl_secs,
            channels: &state.settings.channels,
            zone: state.settings.utc_offset,
            coupons: &state.settings.coupons,
            outbound,
            referral: ask.as_ref(),
        },
        &msg,
    )?;
    // Written before the answer, like the callback's own commit (on a retry too).
    if outbound.is_some() {
        let (wrote, queued) = crate::referral_flow::after_callback(
            state.store.as_ref(),
            programmes,
            account_id,
            &msg,
            &outcome,
            entropy.now,
        )?;
        outcome.changed |= wrote;
        outcome.effects.extend(queued);
    }
    // A customer-contact event comes from `sys`: a passive reply would reach nobody.
    let passive = !matches!(msg.kind, InboundKind::Event(Event::ExternalContact { .. }));
    let Some(reply) = outcome.answer.reply.as_ref().filter(|_| passive) else {
        return Ok(success(Some(outcome), kind));
    };
    let plain = reply_xml(reply, &msg.from, &msg.to, entropy.now);
    let body = if encrypted {
        encrypted_reply(
            account.crypt()?,
            token,
            &plain,
            entropy.random,
            timestamp,
            nonce,
        )
    } else {
        plain
    };
    Ok(CallbackReply {
        body,
        content_type: "application/xml; charset=utf-8",
        outcome: Some(outcome),
        kind,
    })
}

fn success(outcome: Option<Outcome>, kind: String) -> CallbackReply {
    CallbackReply {
        body: "success".to_string(),
        content_type: "text/plain; charset=utf-8",
        outcome,
        kind,
    }
}

/// Checks `timestamp` against our clock (a replayed capture is refused once it is older
/// than `max_clock_skew_secs`) and returns `(timestamp, nonce)`.
fn check_time<'q>(
    state: &AppState,
    q: &'q CallbackQuery,
    now: i64,
) -> Result<(&'q str, &'q str), WebhookError> {
    let timestamp = q
        .timestamp
        .as_deref()
        .ok_or(WebhookError::MissingParam("timestamp"))?;
    let nonce = q
        .nonce
        .as_deref()
        .ok_or(WebhookError::MissingParam("nonce"))?;
    let limit = state.settings.max_clock_skew_secs;
    if limit > 0 {
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| WebhookError::BadTimestamp(timestamp.chars().take(20).collect()))?;
        let skew = now.saturating_sub(ts);
        if skew.unsigned_abs() > limit {
            return Err(WebhookError::StaleTimestamp {
                skew_secs: skew,
                limit_secs: limit,
            });
        }
    }
    Ok((timestamp, nonce))
}

// ---- actix handlers: read the request, call the flow above, log one line ----

#[tracing::instrument(name = "verify_url", skip_all, fields(account = %path))]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, WebhookError> {
    let now = Entropy::fresh().now;
    match verify_url(&state, &path, &query, now) {
        Ok(echo) => {
            tracing::info!(account = %path, "url verified");
            Ok(HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .body(echo))
        }
        Err(e) => {
            tracing::warn!(account = %path, reason = e.reason(), error = %e, "url verification refused");
            Err(e)
        }
    }
}

// No span: the one summary line below carries the account, openid, rule and latency, and
// a span per request (entered at every poll, its fields formatted into each line) cost
// more than the rest of the logging.
pub async fn post(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, WebhookError> {
    let started = Instant::now();
    let (path, query) = (path.into_inner(), query.into_inner());
    let (result, path, query) = match read_body(&req, payload, state.settings.max_body_bytes).await
    {
        // A store whose calls wait on network round trips (PostgreSQL) is called on the
        // blocking pool: no worker thread may wait (it serves every other connection
        // meanwhile). An in-process store (sled) is called right here: the hop to the pool
        // cost it 20–30% of its throughput (README "Speed").
        Ok(body) if state.store.waits_on_network() => {
            let state = state.clone();
            let call = web::block(move || {
                let result = handle_callback(&state, &path, &query, &body, Entropy::fresh());
                (result, path, query)
            });
            match call.await {
                Ok(done) => done,
                Err(_) => {
                    // The pool is shutting down: answer 500 so that WeChat retries.
                    let e = WebhookError::Store(crate::store::StoreError::Backend(
                        "the server is stopping".into(),
                    ));
                    return Err(e);
                }
            }
        }
        Ok(body) => (
            handle_callback(&state, &path, &query, &body, Entropy::fresh()),
            path,
            query,
        ),
        Err(e) => (Err(e), path, query),
    };
    let result = match result {
        Ok(reply) if reply.outcome.as_ref().is_some_and(|o| o.changed) => {
            // WeChat never resends a callback it got a 200 for: what this one changed (its
            // dedupe key and cached answer, the follower, coupon claims, queued calls to
            // WeChat) is on disk before the answer goes out. Concurrent callbacks and the
            // outbox worker share fsyncs (group commit); a retry or an unsupported type
            // wrote nothing and waits for none.
            match state.flusher.flush().await {
                Ok(()) => {
                    if reply
                        .outcome
                        .as_ref()
                        .is_some_and(|o| !o.effects.is_empty())
                    {
                        state.outbox_wake.notify_one();
                    }
                    Ok(reply)
                }
                Err(e) => Err(WebhookError::from(e)),
            }
        }
        other => other,
    };
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    let openid = query.openid.as_deref().unwrap_or("");
    // Only configured ids become metric labels.
    let label = if state.accounts.contains_key(path.as_str()) {
        path.as_str()
    } else {
        "unknown"
    };
    match result {
        Ok(reply) => {
            match &reply.outcome {
                Some(o) => {
                    let outcome = match (o.duplicate, reply.body.as_str()) {
                        (true, _) => "duplicate",
                        (false, "success") => "success",
                        (false, _) => "replied",
                    };
                    state.metrics.answered(
                        label,
                        &reply.kind,
                        outcome,
                        &o.answer.rules,
                        o.duplicate,
                        elapsed.as_secs_f64(),
                    );
                    tracing::info!(
                        account = %path,
                        openid = %o.follower_id,
                        msg = %reply.kind,
                        rule = o.answer.rules.first().map(String::as_str).unwrap_or("-"),
                        duplicate = o.duplicate,
                        replied = o.answer.reply.is_some(),
                        latency_us,
                        "callback"
                    )
                }
                None => {
                    state.metrics.answered(
                        label,
                        "unsupported",
                        "success",
                        &[],
                        false,
                        elapsed.as_secs_f64(),
                    );
                    tracing::info!(
                        account = %path, openid, msg = %reply.kind, latency_us,
                        "callback of an unsupported type answered success"
                    )
                }
            }
            Ok(HttpResponse::Ok()
                .content_type(reply.content_type)
                .body(reply.body))
        }
        Err(e) => {
            state
                .metrics
                .rejected(label, e.reason(), elapsed.as_secs_f64());
            tracing::warn!(
                account = %path, openid, reason = e.reason(), error = %e, latency_us,
                "callback refused"
            );
            Err(e)
        }
    }
}

/// Reads the body, refusing it as soon as it passes `limit` (or when Content-Length
/// already says it will), so a flood costs us at most `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, WebhookError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(WebhookError::BodyTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            WebhookError::Protocol(ProtocolError::Xml("request body could not be read".into()))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
