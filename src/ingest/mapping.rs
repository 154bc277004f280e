//! `[[ingest.event]]`: what each event type the shop posts does to a follower.
//!
//! Two stages: [`RawIngest`] is what the operator wrote (unknown keys refused by serde at
//! their `file:line:column`), [`compile`] checks it whole (every mistake reported at once)
//! into a [`Mapping`]. Money is kept in whole fen (分) as `i64` counters, never as a float:
//! a `sum` into a counter whose name ends in `_fen` reads the prop in yuan and adds it ×100,
//! rounded half away from zero ([`yuan_to_fen`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::event::{Event, Refusal};
use crate::config::Secret;
use crate::follower::{Follower, HistoryEntry, HISTORY_LEN};
use crate::located::FileError;

/// `[ingest]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub token_env: Option<String>,
    pub token: Option<Secret>,
    #[serde(default)]
    pub unknown: UnknownFollower,
    #[serde(default)]
    pub event: Vec<Spanned<RawEventType>>,
}

/// One `[[ingest.event]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventType {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    count: Vec<Spanned<String>>,
    sum: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    set: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    history: bool,
}

/// What an event for an openid the store does not know does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFollower {
    /// The follower is created (not subscribed), so the counters are there when they
    /// subscribe.
    #[default]
    Keep,
    /// The event is refused.
    Refuse,
}

/// `[ingest]`, validated.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The shop system's bearer token; `None`: the endpoint answers 503.
    pub token: Option<Secret>,
    pub unknown: UnknownFollower,
    pub mapping: Mapping,
}

/// Every event type the config maps, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    types: BTreeMap<String, EventType>,
}

/// What one event type does.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    /// Counters incremented by 1.
    pub count: Vec<String>,
    /// (counter, prop): the counter grows by the prop (in fen for `*_fen` counters).
    pub sum: Vec<(String, String)>,
    /// (attribute, source).
    pub set: Vec<(String, Source)>,
    pub tags: Vec<String>,
    pub history: bool,
}

/// Where an attribute's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The event's time (unix seconds, as text).
    At,
    /// `props.<name>`.
    Prop(String),
}

/// What one event does to a follower, decided before anything is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub add: Vec<(String, i64)>,
    pub set: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub history: Option<HistoryEntry>,
}

/// The longest history detail kept (the prop values the event's mapping read).
const DETAIL_CHARS: usize = 200;

/// Checks `[[ingest.event]]` whole: every mistake, each at its place in `text`.
pub fn compile(
    events: &[Spanned<RawEventType>],
    file: &str,
    text: &str,
) -> Result<Mapping, Vec<FileError>> {
    let mut errors = Vec::new();
    let mut types: BTreeMap<String, EventType> = BTreeMap::new();
    let mut first_at: BTreeMap<String, usize> = BTreeMap::new();
    let at = |offset: usize, message: String| FileError::at(file, text, offset, message);
    for raw in events {
        let e = raw.get_ref();
        let name = e.kind.get_ref().trim().to_string();
        let name_at = e.kind.span().start;
        if name.is_empty() {
            errors.push(at(name_at, "[[ingest.event]]: `type` is empty".into()));
            continue;
        }
        if let Some(&first) = first_at.get(&name) {
            let (line, _) = crate::located::line_column(text, first);
            errors.push(at(
                name_at,
                format!("[[ingest.event]]: type `{name}` is mapped twice (first at line {line})"),
            ));
            continue;
        }
        first_at.insert(name.clone(), name_at);
        let mut check = |what: &str, value: &Spanned<String>| {
            let v = value.get_ref().trim();
            if v.is_empty() {
                errors.push(at(
                    value.span().start,
                    format!("[[ingest.event]] `{name}`: {what} is empty"),
                ));
            }
            v.to_string()
        };
        let count = e
            .count
            .iter()
            .map(|c| check("a `count` counter name", c))
            .collect();
        let tags = e.tags.iter().map(|t| check("a tag in `tags`", t)).collect();
        let no_table = BTreeMap::new();
        let ((sum_at, sum), (set_at, set)) = (table(&e.sum, &no_table), table(&e.set, &no_table));
        let sum = sum
            .iter()
            .map(|(counter, prop)| {
                let p = check(&format!("the prop of `sum.{counter}`"), prop);
                (counter.trim().to_string(), p)
            })
            .collect::<Vec<_>>();
        let set = set
            .iter()
            .map(|(attr, source)| {
                let s = check(&format!("the source of `set.{attr}`"), source);
                let source = if s == "at" {
                    Source::At
                } else {
                    Source::Prop(s)
                };
                (attr.trim().to_string(), source)
            })
            .collect::<Vec<_>>();
        // Keys are not spanned one by one: an empty one is reported at its table.
        if sum.iter().any(|(c, _)| c.is_empty()) {
            errors.push(at(
                sum_at,
                format!("[[ingest.event]] `{name}`: a `sum` counter name is empty"),
            ));
        }
        if set.iter().any(|(a, _)| a.is_empty()) {
            errors.push(at(
                set_at,
                format!("[[ingest.event]] `{name}`: a `set` attribute name is empty"),
            ));
        }
        types.insert(
            name.clone(),
            EventType {
                name,
                count,
                sum,
                set,
                tags,
                history: e.history,
            },
        );
    }
    if errors.is_empty() {
        Ok(Mapping { types })
    } else {
        Err(errors)
    }
}

/// An optional inline table with where it starts (nowhere: an empty one).
fn table<'t>(
    t: &'t Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    none: &'t BTreeMap<String, Spanned<String>>,
) -> (usize, &'t BTreeMap<String, Spanned<String>>) {
    t.as_ref()
        .map_or((0, none), |t| (t.span().start, t.get_ref()))
}

impl Mapping {
    pub fn event_type(&self, name: &str) -> Option<&EventType> {
        self.types.get(name)
    }

    /// The mapped types, for the message refusing an unknown one.
    pub fn known(&self) -> String {
        if self.types.is_empty() {
            return "none are mapped: add [[ingest.event]] tables to the config".into();
        }
        let names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        format!("known types: {}", names.join(", "))
    }

    /// What `event` does, or why it is refused (a type not mapped, a prop the mapping
    /// needs missing or of the wrong type).
    pub fn change(&self, event: &Event) -> Result<Change, Refusal> {
        let Some(t) = self.event_type(&event.kind) else {
            return Err(Refusal(format!(
                "unknown event type `{}` ({})",
                event.kind,
                self.known()
            )));
        };
        t.change(event)
    }
}

impl EventType {
    pub fn change(&self, event: &Event) -> Result<Change, Refusal> {
        let mut change = Change::default();
        let mut detail = Vec::new();
        for c in &self.count {
            change.add.push((c.clone(), 1));
        }
        for (counter, prop) in &self.sum {
            let value = prop_of(event, prop)?;
            let n = if counter.ends_with("_fen") {
                yuan_to_fen(value).map_err(|m| Refusal(format!("props.{prop}: {m}")))?
            } else {
                whole_number(value).map_err(|m| Refusal(format!("props.{prop}: {m}")))?
            };
            change.add.push((counter.clone(), n));
            detail.push(format!("{prop}={}", shown(value)));
        }
        for (attr, source) in &self.set {
            let value = match source {
                Source::At => event.at.to_string(),
                Source::Prop(prop) => {
                    let v = prop_of(event, prop)?;
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            return Err(Refusal(format!(
                                "props.{prop}: want a string, number or boolean for attribute `{attr}`, got {}",
                                kind_of(v)
                            )))
                        }
                    };
                    detail.push(format!("{prop}={text}"));
                    text
                }
            };
            change.set.push((attr.clone(), value));
        }
        change.tags = self.tags.clone();
        if self.history {
            detail.dedup();
            let detail = detail.join(" ");
            change.history = Some(HistoryEntry {
                at: event.at,
                kind: format!("event:{}", self.name),
                detail: (!detail.is_empty()).then(|| detail.chars().take(DETAIL_CHARS).collect()),
                rule: None,
            });
        }
        Ok(change)
    }
}

impl Change {
    /// Applies the change; returns the tags it added (for mirroring to WeChat).
    pub fn apply(&self, f: &mut Follower) -> Vec<String> {
        for (counter, n) in &self.add {
            let c = f.counters.entry(counter.clone()).or_default();
            *c = c.saturating_add(*n);
        }
        for (attr, value) in &self.set {
            f.attributes.insert(attr.clone(), value.clone());
        }
        let added = self
            .tags
            .iter()
            .filter(|t| f.tags.insert((*t).clone()))
            .cloned()
            .collect();
        if let Some(h) = &self.history {
            f.history.push(h.clone());
            let excess = f.history.len().saturating_sub(HISTORY_LEN);
            f.history.drain(..excess);
        }
        added
    }
}

/// The largest amount taken, in yuan: far above any order, far below `i64` fen.
const MAX_YUAN: i64 = 1_000_000_000_000;

/// A yuan amount (a JSON number or a numeric string like `"128.50"`) in whole fen, rounded
/// half away from zero at the third decimal: `128.5` → 12850, `0.125` → 13, `-0.125` → -13.
/// Read from its decimal text, never through a float product (`0.285 * 100` is
/// 28.499999999999996 in binary floating point).
pub fn yuan_to_fen(value: &Value) -> Result<i64, String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(format!("want an amount in yuan, got {}", kind_of(other))),
    };
    let bad = || format!("`{text}` is not an amount in yuan (e.g. 128.5 or \"128.50\")");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
        // A float serde_json prints with an exponent (1e-7, 1e16): through f64, bounded.
        if let (Value::Number(n), Some(f)) = (value, value.as_f64()) {
            if f.abs() < MAX_YUAN as f64 {
                return Ok((f * 100.0).round() as i64);
            }
            return Err(format!("{n} yuan is too large"));
        }
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<i64>()
            .ok()
            .filter(|w| *w < MAX_YUAN)
            .ok_or_else(|| format!("{text} yuan is too large"))?
    };
    let frac = frac.as_bytes();
    let digit = |i: usize| frac.get(i).map_or(0, |b| i64::from(b - b'0'));
    let mut fen = whole * 100 + digit(0) * 10 + digit(1);
    if digit(2) >= 5 {
        fen += 1;
    }
    Ok(if negative { -fen } else { fen })
}

/// An integer prop (a JSON integer, a float without fraction, or an integer string).
fn whole_number(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("want a whole number, got {n}")),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("want a whole number, got \"{s}\"")),
        other => Err(format!("want a whole number, got {}", kind_of(other))),
    }
}

fn prop_of<'e>(event: &'e Event, prop: &str) -> Result<&'e Value, Refusal> {
    match event.props.get(prop) {
        None | Some(Value::Null) => Err(Refusal(format!(
            "props.{prop} is missing (type `{}` needs it)",
            event.kind
        ))),
        Some(v) => Ok(v),
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ingest::Identity;

    const CONFIG: &str = r#"
[[event]]
type = "order_paid"
count = ["orders"]
sum = { spend_fen = "amount", items = "qty" }
set = { last_order_at = "at", last_sku = "sku" }
tags = ["buyer"]
history = true

[[event]]
type = "coupon_used"
count = ["coupons_used"]
"#;

    #[derive(Deserialize)]
    struct File {
        event: Vec<Spanned<RawEventType>>,
    }

    fn mapping(text: &str) -> Result<Mapping, Vec<String>> {
        let file: File = toml::from_str(text).expect("valid TOML");
        compile(&file.event, "c.toml", text)
            .map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    fn event(kind: &str, props: Value) -> Event {
        Event {
            id: "e1".into(),
            account: "demo".into(),
            who: Identity::OpenId("o1".into()),
            kind: kind.into(),
            at: 1_733_040_000,
            props: props.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn yuan_become_fen_rounded_half_away_from_zero() {
        let cases: &[(&str, Value, Result<i64, &str>)] = &[
            ("integer", json!(128), Ok(12800)),
            ("one decimal", json!(128.5), Ok(12850)),
            ("string with trailing zero", json!("128.50"), Ok(12850)),
            ("half a fen rounds up", json!(0.125), Ok(13)),
            ("just below half", json!(0.124), Ok(12)),
            ("binary float trap 0.285", json!(0.285), Ok(29)),
            ("binary float trap 1.005", json!("1.005"), Ok(101)),
            ("many decimals", json!("9.9999"), Ok(1000)),
            (
                "negative (a refund) rounds away from zero",
                json!(-0.125),
                Ok(-13),
            ),
            ("leading dot", json!(".5"), Ok(50)),
            ("spaces around a string", json!(" 12 "), Ok(1200)),
            ("zero", json!(0), Ok(0)),
            ("exponent float", json!(1e-7), Ok(0)),
            (
                "not a number",
                json!("12元"),
                Err("`12元` is not an amount"),
            ),
            ("empty string", json!(""), Err("is not an amount")),
            ("lone dot", json!("."), Err("is not an amount")),
            ("boolean", json!(true), Err("got a boolean")),
            ("object", json!({}), Err("got an object")),
            ("too large", json!("99999999999999999"), Err("too large")),
        ];
        for (name, input, want) in cases {
            let got = yuan_to_fen(input);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{name}: {input}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{name}: {input}: {g}"),
                _ => panic!("{name}: {input}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn an_order_changes_counters_attributes_tags_and_history() {
        let m = mapping(CONFIG).unwrap();
        let e = event(
            "order_paid",
            json!({"amount": "128.50", "qty": 2, "sku": "longjing-100g"}),
        );
        let change = m.change(&e).unwrap();
        let mut f = Follower::new("o1");
        f.counters.insert("orders".into(), 2);
        f.tags.insert("vip".into());
        let added = change.apply(&mut f);
        assert_eq!(f.counters["orders"], 3);
        assert_eq!(f.counters["spend_fen"], 12850);
        assert_eq!(f.counters["items"], 2);
        assert_eq!(f.attributes["last_order_at"], "1733040000");
        assert_eq!(f.attributes["last_sku"], "longjing-100g");
        assert_eq!(added, ["buyer"]);
        let h = f.history.last().unwrap();
        assert_eq!(h.kind, "event:order_paid");
        assert_eq!(
            h.detail.as_deref(),
            Some("qty=2 amount=128.50 sku=longjing-100g")
        );
        // A second one adds no tag again.
        assert!(change.apply(&mut f).is_empty());
        assert_eq!(f.counters["spend_fen"], 25700);
    }

    #[test]
    fn bad_props_and_unknown_types_are_refused_with_the_reason() {
        let m = mapping(CONFIG).unwrap();
        let ok = json!({"amount": 1, "qty": 1, "sku": "x"});
        let with = |k: &str, v: Value| {
            let mut p = ok.clone();
            p[k] = v;
            p
        };
        let without = |k: &str| {
            let mut p = ok.clone();
            p.as_object_mut().unwrap().remove(k);
            p
        };
        let cases: Vec<(&str, Event, &str)> = vec![
            ("unknown type lists the known", event("refund", ok.clone()),
             "unknown event type `refund` (known types: coupon_used, order_paid)"),
            ("amount missing", event("order_paid", without("amount")),
             "props.amount is missing (type `order_paid` needs it)"),
            ("amount null", event("order_paid", with("amount", Value::Null)), "props.amount is missing"),
            ("amount not a number", event("order_paid", with("amount", json!("lots"))),
             "props.amount: `lots` is not an amount in yuan"),
            ("fractional count", event("order_paid", with("qty", json!(1.5))),
             "props.qty: want a whole number, got 1.5"),
            ("count as array", event("order_paid", with("qty", json!([1]))),
             "props.qty: want a whole number, got an array"),
            ("sku an object", event("order_paid", with("sku", json!({"a": 1}))),
             "props.sku: want a string, number or boolean for attribute `last_sku`, got an object"),
        ];
        for (name, e, want) in cases {
            let got = m.change(&e);
            match got {
                Err(Refusal(msg)) => assert!(msg.contains(want), "{name}: {msg}"),
                Ok(c) => panic!("{name}: accepted: {c:?}"),
            }
        }
        let empty = Mapping::default();
        let Err(Refusal(msg)) = empty.change(&event("x", json!({}))) else {
            panic!("accepted")
        };
        assert!(msg.contains("none are mapped"), "{msg}");
    }

    #[test]
    fn mapping_mistakes_are_all_reported_with_their_place() {
        let text = "[[event]]\ntype = \"\"\n\n[[event]]\ntype = \"a\"\ncount = [\"\"]\nset = { x = \" \" }\n\n[[event]]\ntype = \"a\"\n\n[[event]]\ntype = \"b\"\nsum = { \"\" = \"amount\" }\n";
        let errors = mapping(text).unwrap_err();
        assert_eq!(
            errors,
            [
                "c.toml:2:8: [[ingest.event]]: `type` is empty",
                "c.toml:6:10: [[ingest.event]] `a`: a `count` counter name is empty",
                "c.toml:7:13: [[ingest.event]] `a`: the source of `set.x` is empty",
                "c.toml:10:8: [[ingest.event]]: type `a` is mapped twice (first at line 5)",
                "c.toml:14:7: [[ingest.event]] `b`: a `sum` counter name is empty",
            ]
        );
        let unknown: Result<File, _> = toml::from_str("[[event]]\ntype = \"a\"\ncounts = []\n");
        let msg = unknown.err().unwrap().to_string();
        assert!(msg.contains("unknown field `counts`"), "{msg}");
    }
}
