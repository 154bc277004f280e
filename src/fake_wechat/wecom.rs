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
