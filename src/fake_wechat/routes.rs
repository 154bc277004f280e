//! The fake's HTTP surface: WeChat's and WeCom's API paths with their JSON shapes
//! (protocol.md §8–§11), and the `/fake/*` control endpoints.
//!
//! Every API call goes through one handler, [`api`], so that recording and fault injection
//! are uniform; it then dispatches on method and path to a plain function of the state and
//! the request that returns the JSON answer: tokens here, the rest in `official` and
//! `wecom`. Errors are answered as WeChat does: HTTP 200
//! with `{"errcode", "errmsg"}`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::state::{Fault, HoldRequest, Issued, RecordedCall, State, WindowRequest};
use super::{official, population, wecom, Shared};

/// After a new `/cgi-bin/token`, the previous one keeps working this long (§8).
const SUPERSEDED_GRACE: Duration = Duration::from_secs(300);

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fake/calls", web::get().to(calls))
        .route("/fake/calls", web::delete().to(clear_calls))
        .route("/fake/faults", web::post().to(faults))
        .route("/fake/window", web::post().to(window))
        .route("/fake/expire_tokens", web::post().to(expire_tokens))
        .route("/fake/qrcode", web::post().to(qrcode_knob))
        .route("/fake/hold", web::post().to(hold))
        .route("/fake/hold", web::get().to(held))
        .route("/fake/hold", web::delete().to(release))
        .route("/fake/followers", web::post().to(population::http_populate))
        .route("/fake/followers", web::get().to(population::http_followers))
        .route(
            "/fake/followers/unsubscribe",
            web::post().to(population::http_unsubscribe),
        )
        .route(
            "/fake/followers/subscribe",
            web::post().to(population::http_subscribe),
        )
        .route(
            "/fake/contacts",
            web::post().to(population::http_populate_contacts),
        )
        .route("/fake/contacts", web::get().to(population::http_contacts))
        .default_service(web::to(api));
}

async fn calls(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.lock().calls)
}

async fn clear_calls(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().calls.clear();
    HttpResponse::NoContent().finish()
}

async fn faults(shared: web::Data<Shared>, body: web::Json<Vec<Fault>>) -> HttpResponse {
    let mut state = shared.lock();
    state.faults.extend(body.into_inner());
    HttpResponse::Ok().json(json!({ "queued": state.faults.len() }))
}

async fn window(shared: web::Data<Shared>, body: web::Json<WindowRequest>) -> HttpResponse {
    shared.lock().open_window(&body);
    HttpResponse::NoContent().finish()
}

async fn hold(shared: web::Data<Shared>, body: web::Json<HoldRequest>) -> HttpResponse {
    shared.lock().hold = Some(body.into_inner());
    HttpResponse::NoContent().finish()
}

async fn held(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "held": shared.lock().held }))
}

async fn release(shared: web::Data<Shared>) -> HttpResponse {
    shared.release();
    HttpResponse::NoContent().finish()
}

/// Ages every issued token past its expiry: the next call with one gets 42001.
async fn expire_tokens(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().expire_tokens();
    HttpResponse::NoContent().finish()
}

/// `{"expire_seconds": N}`: temporary QR codes live at most N seconds from now on
/// (`null`: as asked).
async fn qrcode_knob(shared: web::Data<Shared>, body: web::Json<Value>) -> HttpResponse {
    shared.lock().qr_expire_cap = body["expire_seconds"].as_u64();
    HttpResponse::NoContent().finish()
}

/// Every WeChat API call: record, apply the next fault, answer.
async fn api(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = req.path().to_string();
    // An upload is multipart: recorded (and handled) as a summary of its one part.
    let upload = (path == "/cgi-bin/media/upload").then(|| {
        let content_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        official::multipart_media(content_type, &body)
    });
    let json_body: Option<Value> = match &upload {
        Some((summary, _)) => Some(summary.clone()),
        None => serde_json::from_slice(&body).ok(),
    };
    let call = RecordedCall {
        method: req.method().to_string(),
        path: path.clone(),
        query: redact_query(req.query_string()),
        body: match &json_body {
            Some(v) => redact_body(v.clone()),
            None if body.is_empty() => Value::Null,
            None => Value::String(String::from_utf8_lossy(&body).into_owned()),
        },
        at: unix_millis(),
        errcode: None,
    };
    // Registered before the hold is checked, so a release in between is seen.
    let release = shared.1.clone();
    let released = release.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    // The hold decision and the recording under ONE lock: calls arriving together each
    // see the others' records, so exactly `after` calls pass a hold, never more.
    let admitted = {
        let mut state = shared.lock();
        let seen = || state.calls.iter().filter(|c| c.path == path).count();
        let held = state
            .hold
            .as_ref()
            .is_some_and(|h| h.path == path && seen() >= h.after);
        if held {
            state.held += 1;
            None
        } else {
            let index = state.calls.len();
            state.calls.push(call);
            Some((index, state.take_fault(&path)))
        }
    };
    let Some((index, fault)) = admitted else {
        // Held calls hang until released, then are dropped: WeChat never took them.
        released.await;
        shared.lock().held -= 1;
        return dropped();
    };
    if let Some(fault) = fault {
        if let Some(ms) = fault.delay_ms {
            // The lock is released: other calls go on while this one waits.
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.drop {
            return dropped();
        }
        if let Some(status) = fault.status {
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            return HttpResponse::build(status).finish();
        }
        if let Some(code) = fault.errcode {
            let msg = fault.errmsg.unwrap_or_else(|| "injected fault".into());
            shared.lock().calls[index].errcode = Some(code);
            return HttpResponse::Ok().json(err(code, &msg));
        }
    }
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let method = req.method().as_str();
    let mut state = shared.lock();
    let answer = match (method, path.as_str()) {
        ("GET", "/cgi-bin/token") => official_token(&mut state, &query),
        ("POST", "/cgi-bin/stable_token") => with_body(json_body, |b| stable_token(&mut state, b)),
        ("GET", "/cgi-bin/gettoken") => wecom_token(&mut state, &query),
        ("POST", "/cgi-bin/media/upload") => match check_token(&state, &query) {
            Err(e) => e,
            Ok(_) => {
                let bytes = upload.map(|(_, b)| b).unwrap_or_default();
                official::upload_media(&mut state, &query, json_body.as_ref(), bytes)
            }
        },
        ("POST", "/cgi-bin/webhook/send") => {
            with_body(json_body, |b| wecom::robot_send(&mut state, &query, b))
        }
        (m, p) => {
            let Some(handler) = authorised_handler(m, p) else {
                return HttpResponse::NotFound().json(err(404, "no such API in the fake"));
            };
            match check_token(&state, &query) {
                Err(e) => e,
                Ok(owner) => handler(&mut state, &owner, &query, json_body.as_ref()),
            }
        }
    };
    // Answers without an errcode (tokens, tag creation) are successes.
    state.calls[index].errcode = Some(answer["errcode"].as_i64().unwrap_or(0));
    HttpResponse::Ok().json(answer)
}

/// An API that needs a token: the state, the token's owner (AppID or CorpID, which picks
/// the population), the query and the JSON body.
type Handler = fn(&mut State, &str, &HashMap<String, String>, Option<&Value>) -> Value;

/// The API paths that need an access token.
fn authorised_handler(method: &str, path: &str) -> Option<Handler> {
    let handler: Handler = match (method, path) {
        ("POST", "/cgi-bin/message/custom/send") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::custom_send(s, b))
        }
        ("POST", "/cgi-bin/message/template/send") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::template_send(s, b))
        }
        ("POST", "/cgi-bin/message/mass/send") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::mass_send(s, b))
        }
        ("GET", "/cgi-bin/user/info") => |s, o, q, _| official::user_info(s, o, q),
        ("POST", "/cgi-bin/tags/create") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::create_tag(s, b))
        }
        ("GET", "/cgi-bin/tags/get") => |s, _, _, _| official::list_tags(s),
        ("POST", "/cgi-bin/tags/members/batchtagging") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::batch(s, b, true))
        }
        ("POST", "/cgi-bin/tags/members/batchuntagging") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::batch(s, b, false))
        }
        ("GET", "/cgi-bin/user/get") => |s, o, q, _| population::user_get(s, o, q),
        ("POST", "/cgi-bin/user/info/batchget") => {
            |s, o, _, b| with_body(b.cloned(), |b| population::user_batchget(s, o, b))
        }
        ("POST", "/cgi-bin/qrcode/create") => {
            |s, _, _, b| with_body(b.cloned(), |b| official::create_qrcode(s, b))
        }
        ("POST", "/cgi-bin/message/send") => {
            |s, _, _, b| with_body(b.cloned(), |b| wecom::app_message(s, b))
        }
        ("POST", "/cgi-bin/externalcontact/mark_tag") => {
            |s, _, _, b| with_body(b.cloned(), |b| wecom::mark_tag(s, b))
        }
        ("GET", "/cgi-bin/externalcontact/get_follow_user_list") => {
            |s, o, _, _| population::follow_user_list(s, o)
        }
        ("POST", "/cgi-bin/externalcontact/batch/get_by_user") => {
            |s, o, _, b| with_body(b.cloned(), |b| population::get_by_user(s, o, b))
        }
        // The filters are optional: no body lists every tag.
        ("POST", "/cgi-bin/externalcontact/get_corp_tag_list") => {
            |s, o, _, b| population::corp_tag_list(s, o, b.unwrap_or(&Value::Null))
        }
        ("POST", "/cgi-bin/externalcontact/add_contact_way") => {
            |s, _, _, b| with_body(b.cloned(), |b| wecom::add_contact_way(s, b))
        }
        ("POST", "/cgi-bin/externalcontact/send_welcome_msg") => {
            |s, _, _, b| with_body(b.cloned(), |b| wecom::welcome(s, b))
        }
        _ => return None,
    };
    Some(handler)
}

// --- Tokens (§8) ---

fn official_token(state: &mut State, q: &HashMap<String, String>) -> Value {
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    let (Some(appid), Some(_secret)) = (nonempty(q, "appid"), nonempty(q, "secret")) else {
        return err(41002, "appid or secret missing");
    };
    // A new token retires the old ones after a grace period.
    let grace = Instant::now() + SUPERSEDED_GRACE;
    for t in state.tokens.values_mut().filter(|t| t.owner == appid) {
        t.expires = t.expires.min(grace);
    }
    let (token, expires_in) = issue(state, appid);
    json!({ "access_token": token, "expires_in": expires_in })
}

fn stable_token(state: &mut State, b: &Value) -> Value {
    let (Some(appid), Some(_secret)) = (str_field(b, "appid"), str_field(b, "secret")) else {
        return err(41002, "appid or secret missing");
    };
    let force = b["force_refresh"].as_bool().unwrap_or(false);
    let now = Instant::now();
    let current = state
        .stable
        .get(appid)
        .and_then(|t| Some((t.clone(), state.tokens.get(t)?.expires)))
        .filter(|(_, expires)| *expires > now);
    match current {
        // Normal mode: the same token while it is valid.
        Some((token, expires)) if !force => {
            json!({ "access_token": token, "expires_in": (expires - now).as_secs() })
        }
        previous => {
            if let Some((old, _)) = previous {
                state.tokens.remove(&old);
            }
            let (token, expires_in) = issue(state, appid);
            state.stable.insert(appid.to_string(), token.clone());
            json!({ "access_token": token, "expires_in": expires_in })
        }
    }
}

fn wecom_token(state: &mut State, q: &HashMap<String, String>) -> Value {
    let (Some(corpid), Some(_secret)) = (nonempty(q, "corpid"), nonempty(q, "corpsecret")) else {
        return err(41002, "corpid or corpsecret missing");
    };
    let (token, expires_in) = issue(state, corpid);
    json!({ "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in })
}

fn issue(state: &mut State, owner: &str) -> (String, u64) {
    let token = format!("FAKE-{}", hex::encode(rand::random::<[u8; 24]>()));
    state.tokens.insert(
        token.clone(),
        Issued {
            owner: owner.to_string(),
            expires: Instant::now() + state.token_lifetime,
        },
    );
    (token, state.token_lifetime.as_secs().max(1))
}

/// The token's owner (AppID or CorpID), or the error WeChat answers.
fn check_token(state: &State, q: &HashMap<String, String>) -> Result<String, Value> {
    let Some(token) = nonempty(q, "access_token") else {
        return Err(err(41001, "access_token missing"));
    };
    match state.tokens.get(token) {
        None => Err(err(40014, "invalid access_token")),
        Some(t) if t.expires <= Instant::now() => Err(err(42001, "access_token expired")),
        Some(t) => Ok(t.owner.clone()),
    }
}

// --- Small pieces ---

pub(super) fn with_body(body: Option<Value>, f: impl FnOnce(&Value) -> Value) -> Value {
    match body {
        Some(b) if b.is_object() => f(&b),
        _ => err(47001, "data format error"),
    }
}

pub(super) fn ok() -> Value {
    json!({ "errcode": 0, "errmsg": "ok" })
}

pub(super) fn err(code: i64, msg: &str) -> Value {
    json!({ "errcode": code, "errmsg": msg })
}

pub(super) fn nonempty<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

pub(super) fn str_field<'a>(b: &'a Value, key: &str) -> Option<&'a str> {
    b[key].as_str().filter(|v| !v.is_empty())
}

/// Answers headers and then fails the body, which makes actix close the connection: the
/// client sees a connection cut mid-answer.
fn dropped() -> HttpResponse {
    let failing = futures_util::stream::once(async {
        Err::<web::Bytes, actix_web::Error>(actix_web::error::ErrorInternalServerError(
            "connection dropped by an injected fault",
        ))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(failing)
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k @ ("secret" | "corpsecret"), _)) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn redact_body(mut v: Value) -> Value {
    if let Some(secret) = v.get_mut("secret") {
        *secret = Value::String("***".into());
    }
    v
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
