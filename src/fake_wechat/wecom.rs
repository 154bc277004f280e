//! The fake's WeCom APIs (protocol.md §11): app messages, external-contact tags, welcome
//! messages and group robots. Plain functions of the state and the request body.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::routes::{err, nonempty, ok, str_field};
use super::state::State;

/// Group robots take 20 messages a minute (§11).
const ROBOT_PER_MINUTE: usize = 20;

pub(super) fn app_message(_state: &mut State, b: &Value) -> Value {
    if b["agentid"].as_i64().is_none() {
        return err(40056, "invalid agentid");
    }
    let Some(touser) = str_field(b, "touser") else {
        return err(40003, "invalid userid");
    };
    // Users named `unknown…` do not exist: they come back in invaliduser.
    let invalid: Vec<&str> = touser
        .split('|')
        .filter(|u| u.starts_with("unknown"))
        .collect();
    json!({ "errcode": 0, "errmsg": "ok", "invaliduser": invalid.join("|") })
}

pub(super) fn mark_tag(_state: &mut State, b: &Value) -> Value {
    if str_field(b, "userid").is_none() || str_field(b, "external_userid").is_none() {
        return err(40097, "invalid args");
    }
    ok()
}

/// A "contact me" code (§11): `type` 1 (one staff member) or 2 (several), `scene` 1 (a
/// mini-program button) or 2 (a QR code, which comes with `qr_code`), `state` at most 30
/// characters. Users named `unknown…` do not exist (40003, as for app messages); other
/// refusals are WeCom's generic 40097.
pub(super) fn add_contact_way(state: &mut State, b: &Value) -> Value {
    let kind = b["type"].as_i64();
    let scene = b["scene"].as_i64();
    let users: Vec<&str> = b["user"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let valid = match kind {
        Some(1) => users.len() == 1,
        Some(2) => (1..=100).contains(&users.len()),
        _ => false,
    };
    if !valid || !matches!(scene, Some(1 | 2)) {
        return err(40097, "invalid args");
    }
    if let Some(s) = b.get("state") {
        if s.as_str().is_none_or(|s| s.chars().count() > 30) {
            return err(40097, "invalid state: at most 30 characters");
        }
    }
    if users.iter().any(|u| u.starts_with("unknown")) {
        return err(40003, "invalid userid");
    }
    state.contact_ways += 1;
    let config_id = format!("{:032x}", state.contact_ways);
    let mut answer = json!({ "errcode": 0, "errmsg": "ok", "config_id": config_id });
    if scene == Some(2) {
        answer["qr_code"] = json!(format!(
            "https://wework.qq.com/q/fake/{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
    }
    answer
}

/// WelcomeCodes work once (§11); the errcode for a reused one is not in protocol.md, so
/// the fake answers the generic 40097.
pub(super) fn welcome(state: &mut State, b: &Value) -> Value {
    let Some(code) = str_field(b, "welcome_code") else {
        return err(40097, "invalid args");
    };
    if !state.used_welcome_codes.insert(code.to_string()) {
        return err(40097, "invalid welcome_code: already used");
    }
    ok()
}

pub(super) fn robot_send(state: &mut State, q: &HashMap<String, String>, b: &Value) -> Value {
    let Some(key) = nonempty(q, "key") else {
        return err(93000, "invalid webhook url");
    };
    if !matches!(str_field(b, "msgtype"), Some("text" | "markdown")) {
        return err(40008, "invalid message type");
    }
    let now = Instant::now();
    let sends = state.robot_sends.entry(key.to_string()).or_default();
    while sends
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        sends.pop_front();
    }
    if sends.len() >= ROBOT_PER_MINUTE {
        return err(45009, "api freq out of limit");
    }
    sends.push_back(now);
    ok()
}
