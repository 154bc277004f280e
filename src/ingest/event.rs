//! One event as the shop posts it, validated field by field into an [`Event`]; a mistake
//! refuses that event alone (the others of the request still apply).

use serde_json::{Map, Value};

/// Events per request. A shop's hourly batch fits; a bigger body is refused whole (413)
/// rather than half-applied, and one request's writes stay a bounded wait for the flush.
pub const MAX_EVENTS: usize = 1000;

/// An event id's length: room for any order number with a prefix, bounded so the ids
/// kept forever (one per event applied) stay small.
pub const MAX_ID_CHARS: usize = 128;

/// The earliest `at` taken: 2000-01-01. Anything earlier is a mistake (a zero, a date in
/// days), not an order.
const EARLIEST_AT: i64 = 946_684_800;
/// How far ahead of this server's clock an `at` may be (clocks differ; a day is a mistake).
const FUTURE_SLACK_SECS: i64 = 24 * 3600;

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub account: String,
    pub who: Identity,
    /// `type`.
    pub kind: String,
    /// Unix seconds.
    pub at: i64,
    pub props: Map<String, Value>,
}

/// Whose event it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    OpenId(String),
    /// The person, resolved to their openid in the event's account through the people
    /// index (written by `siyu followers sync`).
    UnionId(String),
}

/// Why one event was refused: the message the shop sees in its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const FIELDS: &[&str] = &["id", "account", "openid", "unionid", "type", "at", "props"];

impl Event {
    /// The event's `id` as sent, for its result line even when it is refused.
    pub fn id_of(raw: &Map<String, Value>) -> Value {
        raw.get("id").cloned().unwrap_or(Value::Null)
    }

    /// Validates one event: `known_account` says whether an account id is configured,
    /// `now` is this server's clock (unix seconds).
    pub fn parse(
        raw: &Map<String, Value>,
        known_account: impl Fn(&str) -> bool,
        now: i64,
    ) -> Result<Event, Refusal> {
        let refuse = |m: String| Err(Refusal(m));
        if let Some(k) = raw.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return refuse(format!(
                "unknown field `{k}` (an event has {})",
                FIELDS.join(", ")
            ));
        }
        let id = text(raw, "id")?;
        if id.chars().count() > MAX_ID_CHARS {
            return refuse(format!("`id` is longer than {MAX_ID_CHARS} characters"));
        }
        if id.chars().any(char::is_control) {
            return refuse("`id` has a control character".into());
        }
        let account = text(raw, "account")?;
        if !known_account(&account) {
            return refuse(format!("unknown account `{account}`"));
        }
        let who = match (raw.get("openid"), raw.get("unionid")) {
            (Some(_), Some(_)) => return refuse("give `openid` or `unionid`, not both".into()),
            (None, Some(_)) => {
                let unionid = text(raw, "unionid")?;
                if unionid.chars().any(char::is_control) {
                    return refuse("`unionid` has a control character".into());
                }
                Identity::UnionId(unionid)
            }
            _ => {
                let openid = text(raw, "openid")?;
                if openid.chars().any(char::is_control) {
                    return refuse("`openid` has a control character".into());
                }
                Identity::OpenId(openid)
            }
        };
        let kind = text(raw, "type")?;
        let at = match raw.get("at") {
            None => return refuse("`at` is missing (unix seconds)".into()),
            Some(v) => v.as_i64().ok_or_else(|| {
                Refusal(format!(
                    "`at` must be unix seconds (a whole number), got {v}"
                ))
            })?,
        };
        if at > now + FUTURE_SLACK_SECS {
            let hint = if at > 100_000_000_000 {
                " (milliseconds? `at` is in seconds)"
            } else {
                ""
            };
            return refuse(format!("`at` {at} is in the future{hint}"));
        }
        if at < EARLIEST_AT {
            return refuse(format!("`at` {at} is before 2000: want unix seconds"));
        }
        let props = match raw.get("props") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return refuse(format!("`props` must be an object, got {other}")),
        };
        Ok(Event {
            id,
            account,
            who,
            kind,
            at,
            props,
        })
    }

    /// The openid the event names, if it names one (else its unionid must be resolved).
    pub fn openid(&self) -> Option<&str> {
        match &self.who {
            Identity::OpenId(o) => Some(o),
            Identity::UnionId(_) => None,
        }
    }
}

/// A required, non-empty string field.
fn text(raw: &Map<String, Value>, field: &str) -> Result<String, Refusal> {
    match raw.get(field) {
        None | Some(Value::Null) => Err(Refusal(format!("`{field}` is missing"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(Refusal(format!("`{field}` is empty")))
        }
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(other) => Err(Refusal(format!("`{field}` must be a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_733_040_000;

    fn parse(v: Value) -> Result<Event, Refusal> {
        Event::parse(v.as_object().unwrap(), |a| a == "demo", NOW)
    }

    #[test]
    fn events_are_checked_field_by_field() {
        let good = json!({"id": "shop-1", "account": "demo", "openid": "o1",
                          "type": "order_paid", "at": NOW, "props": {"amount": 1}});
        let e = parse(good.clone()).unwrap();
        assert_eq!(
            (e.id.as_str(), e.openid(), e.at),
            ("shop-1", Some("o1"), NOW)
        );
        let with = |k: &str, v: Value| {
            let mut e = good.clone();
            e[k] = v;
            e
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            ("empty id", with("id", json!("")), "`id` is empty"),
            (
                "long id",
                with("id", json!("x".repeat(129))),
                "longer than 128",
            ),
            (
                "numeric id",
                with("id", json!(7)),
                "`id` must be a string, got 7",
            ),
            (
                "unknown account",
                with("account", json!("nope")),
                "unknown account `nope`",
            ),
            (
                "empty openid",
                with("openid", json!(" ")),
                "`openid` is empty",
            ),
            (
                "ms timestamp",
                with("at", json!(NOW * 1000)),
                "milliseconds?",
            ),
            ("ancient", with("at", json!(12)), "before 2000"),
            ("fractional at", with("at", json!(1.5)), "whole number"),
            (
                "props a list",
                with("props", json!([1])),
                "`props` must be an object",
            ),
            (
                "typo field",
                with("prop", json!({})),
                "unknown field `prop`",
            ),
        ];
        for (name, input, want) in cases {
            match parse(input) {
                Err(Refusal(m)) => assert!(m.contains(want), "{name}: {m}"),
                Ok(e) => panic!("{name}: accepted {e:?}"),
            }
        }
    }
}
