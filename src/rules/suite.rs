//! Regression suites for operators: a TOML file of test messages, each with the rule
//! expected to answer it, run against a compiled table.
//!
//! Pure like the rest of the module: the suite comes in as a string and each case runs
//! [`RuleTable::decide`] on a follower built from the case alone (seed 0), so a suite
//! gives the same result on every machine and never touches a store. The engine's own
//! bookkeeping (subscription state, scene history, message count) is not applied: give
//! the state a case needs (`tags`, `attributes`, `counters`, `first_scene`).
//!
//! ```toml
//! [[case]]
//! name = "coupon keyword"        # optional: how failures name the case
//! text = "我要优惠券"              # a text message…
//! expect = "coupon"              # the FIRST rule that fires; "none" for no rule
//! reply_contains = "领取"         # optional: the reply must contain this
//! followups = ["第二条", "image"] # optional: the follow-ups, one piece of each
//!
//! [[case]]
//! event = "subscribe"            # …or an event, named as in rule files
//! scene = "spring-poster"        # subscribe, scan, add_external_contact (scan: required)
//! # key = "MENU_COUPON"          # click, view (the URL), scancode: required
//! expect = "welcome-spring-poster"
//!
//! [[case]]
//! text = "会员"
//! tags = ["vip"]                 # the follower before the message (all optional):
//! # attributes = { city = "上海" } # tags, attributes, counters, first_scene
//! # counters = { points = 120 }
//! expect = "member-points"
//! ```
//!
//! `reply_contains` looks at the reply's text: a text reply's content; for news, every
//! article's title, description and URL; for image and voice, the media id; for video and
//! music, the title and description; for a hand-over, "transfer to customer service" and
//! the kf account. `followups` lists every follow-up expected, in order (`[]`: none):
//! each entry is a piece of the follow-up at its position, of its text for a text
//! follow-up, of its kind (`image`, `voice`, `video`, `music`, `news`) for the others; the
//! count must match too. Mistakes in the file are reported like rule-file errors, all at once,
//! each at `file:line:column`; unknown keys are refused.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{FileErrors, RuleErrors};
use super::event::{EventKind, Filter};
use super::format::toml_offset;
use super::RuleTable;
use crate::follower::Follower;
use crate::protocol::{Event, ExternalContactChange, Inbound, InboundKind, Reply};

/// The openid of every case's follower (what `{openid}` renders).
pub const SUITE_OPENID: &str = "o_suite_follower";

/// A parsed suite: test messages and what each expects.
#[derive(Debug, Clone)]
pub struct Suite {
    name: String,
    cases: Vec<Case>,
}

/// What a suite run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteReport {
    pub passed: usize,
    /// In the suite's order.
    pub failures: Vec<CaseFailure>,
}

/// One case whose expectation did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The suite's name, as given to [`Suite::parse`].
    pub file: String,
    /// The line of the expectation that failed (`expect` or `reply_contains`).
    pub line: usize,
    /// `case "coupon keyword"`, or for a case without a name its message:
    /// `text "我要优惠券"`, `event subscribe scene "spring-poster"`.
    pub case: String,
    /// What was expected and what happened, on one line.
    pub message: String,
}

impl fmt::Display for CaseFailure {
    /// `tests.toml:7: case "coupon keyword": expected rule `coupon`, got `greeting` (reply: "…")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.case, self.message
        )
    }
}

#[derive(Debug, Clone)]
struct Case {
    label: String,
    message: Inbound,
    follower: Follower,
    /// The rule expected first; `None`: no rule.
    expect: Option<String>,
    expect_line: usize,
    /// The text and its line.
    reply_contains: Option<(String, usize)>,
    /// A piece of each follow-up expected, and the line.
    followups: Option<(Vec<String>, usize)>,
}

/// One `[[case]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<String>,
    text: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    scene: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    expect: Spanned<String>,
    reply_contains: Option<Spanned<String>>,
    followups: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    counters: BTreeMap<String, i64>,
    first_scene: Option<String>,
}

impl Suite {
    /// Parses a suite file; `name` is how errors and failures name it. Every mistake is
    /// returned, each at `file:line:column`.
    pub fn parse(name: &str, text: &str) -> Result<Suite, RuleErrors> {
        let mut found = Vec::new();
        let mut errors = FileErrors::new(name, text, &mut found);
        let cases = parse_cases(text, &mut errors);
        found.sort_by_key(|e| (e.line, e.column));
        if found.is_empty() {
            Ok(Suite {
                name: name.to_string(),
                cases,
            })
        } else {
            Err(RuleErrors(found))
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}

impl RuleTable {
    /// Runs every case of `suite`: `decide` on the case's message and follower, seed 0.
    pub fn run_suite(&self, suite: &Suite) -> SuiteReport {
        let names: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let mut report = SuiteReport::default();
        for case in &suite.cases {
            let mut follower = case.follower.clone();
            let decision = self.decide(&case.message, &mut follower, 0);
            let reply = decision.reply.as_ref().map(reply_text);
            let shown = match &reply {
                Some(text) => format!("reply: {text:?}"),
                None => "no reply".to_string(),
            };
            let got = decision.rules.first();
            let failure = match (&case.expect, got) {
                (None, None) => None,
                (Some(want), Some(got)) if want == got => None,
                (None, Some(got)) => Some(format!("expected no rule, got `{got}` ({shown})")),
                (Some(want), got) => {
                    let got = got.map_or_else(|| "no rule".to_string(), |g| format!("`{g}`"));
                    let unknown = if names.contains(want.as_str()) {
                        ""
                    } else {
                        " (no rule has that name)"
                    };
                    Some(format!(
                        "expected rule `{want}`{unknown}, got {got} ({shown})"
                    ))
                }
            };
            let failure = failure
                .map(|message| (case.expect_line, message))
                .or_else(|| {
                    let (want, line) = case.reply_contains.as_ref()?;
                    match &reply {
                        Some(text) if text.contains(want.as_str()) => None,
                        _ => Some((
                            *line,
                            format!("the reply does not contain {want:?} ({shown})"),
                        )),
                    }
                })
                .or_else(|| {
                    let (want, line) = case.followups.as_ref()?;
                    let got: Vec<String> = decision
                        .followups
                        .iter()
                        .map(|f| followup_text(&f.message))
                        .collect();
                    let holds = want.len() == got.len()
                        && want.iter().zip(&got).all(|(w, g)| g.contains(w.as_str()));
                    (!holds).then(|| (*line, format!("expected follow-ups {want:?}, got {got:?}")))
                });
            match failure {
                None => report.passed += 1,
                Some((line, message)) => report.failures.push(CaseFailure {
                    file: suite.name.clone(),
                    line,
                    case: case.label.clone(),
                    message,
                }),
            }
        }
        report
    }
}

/// The text `reply_contains` looks in (see the module's documentation).
fn reply_text(reply: &Reply) -> String {
    let join = |parts: Vec<Option<&String>>| {
        let parts: Vec<&str> = parts.into_iter().flatten().map(String::as_str).collect();
        parts.join("\n")
    };
    match reply {
        Reply::Text { content } => content.clone(),
        Reply::Image { media_id } | Reply::Voice { media_id } => media_id.clone(),
        Reply::Video {
            media_id,
            title,
            description,
        } => join(vec![title.as_ref(), description.as_ref(), Some(media_id)]),
        Reply::Music {
            title, description, ..
        } => join(vec![title.as_ref(), description.as_ref()]),
        Reply::News { articles } => join(
            articles
                .iter()
                .flat_map(|a| [Some(&a.title), a.description.as_ref(), a.url.as_ref()])
                .collect(),
        ),
        Reply::TransferCustomerService { kf_account } => match kf_account {
            Some(kf) => format!("transfer to customer service {kf}"),
            None => "transfer to customer service".to_string(),
        },
    }
}

/// What a suite's `followups` looks in: a text follow-up's text, the kind of the others.
fn followup_text(message: &Reply) -> String {
    match message {
        Reply::Text { content } => content.clone(),
        Reply::Image { .. } => "image".to_string(),
        Reply::Voice { .. } => "voice".to_string(),
        Reply::Video { .. } => "video".to_string(),
        Reply::Music { .. } => "music".to_string(),
        Reply::News { .. } => "news".to_string(),
        // Never a follow-up (the rules refuse it); named for completeness.
        Reply::TransferCustomerService { .. } => "transfer".to_string(),
    }
}

/// Reads every `[[case]]`, recording what is wrong; the cases that are right are returned.
fn parse_cases(text: &str, errors: &mut FileErrors<'_>) -> Vec<Case> {
    let mut cases = Vec::new();
    // As for rule files: only the earliest syntax error, the others are its echoes.
    let (root, syntax) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax.iter().min_by_key(|e| toml_offset(e, 0)) {
        errors.push(toml_offset(e, 0), e.message().trim());
        return cases;
    }
    let mut read_any = false;
    for (key, value) in root.into_inner() {
        let span = value.span();
        match (key.get_ref().as_ref(), value.into_inner()) {
            ("case", DeValue::Array(items)) => {
                for value in items {
                    read_any = true;
                    let at = value.span().start;
                    match RawCase::deserialize(ValueDeserializer::from(value)) {
                        Ok(raw) => cases.extend(case(raw, at, errors)),
                        Err(e) => errors.push(toml_offset(&e, at), e.message().trim()),
                    }
                }
            }
            ("case", _) => errors.push(
                span.start,
                "`case` must be an array of tables: write `[[case]]` (double brackets)",
            ),
            (other, _) => errors.push(
                key.span().start,
                format!("unknown top-level key `{other}` (a test file holds `[[case]]` tables)"),
            ),
        }
    }
    if !read_any && errors.errors.is_empty() {
        errors.push(0, "no test cases: add `[[case]]` tables");
    }
    cases
}

/// Checks one case; `None` if anything is wrong with it (each problem recorded).
fn case(raw: RawCase, at: usize, errors: &mut FileErrors<'_>) -> Option<Case> {
    let before = errors.errors.len();
    let message = match (&raw.text, &raw.event) {
        (Some(_), Some(event)) => {
            errors.push(
                event.span().start,
                "a case is a `text` message or an `event`, not both",
            );
            None
        }
        (None, None) => {
            errors.push(at, "a case needs `text` (a message) or `event`");
            None
        }
        (Some(text), None) => {
            for (field, value) in [("scene", &raw.scene), ("key", &raw.key)] {
                if let Some(value) = value {
                    let message = format!("`{field}` applies to an `event` case");
                    errors.push(value.span().start, message);
                }
            }
            Some(InboundKind::Text {
                content: text.get_ref().clone(),
                msg_id: 0,
            })
        }
        (None, Some(event)) => {
            event_case(event, &raw.scene, &raw.key, errors).map(InboundKind::Event)
        }
    };
    let expect = raw.expect.get_ref().trim();
    if expect.is_empty() {
        errors.push(
            raw.expect.span().start,
            "`expect` is empty: give the name of the rule expected to answer first, or \"none\"",
        );
    }
    if let Some(want) = raw
        .reply_contains
        .as_ref()
        .filter(|w| w.get_ref().is_empty())
    {
        errors.push(
            want.span().start,
            "`reply_contains` is empty: leave it out to check only the rule",
        );
    }
    let message = message?;
    if errors.errors.len() > before {
        return None;
    }
    let label = match (&raw.name, &message) {
        (Some(name), _) => format!("case {name:?}"),
        (None, InboundKind::Text { content, .. }) => format!("text {content:?}"),
        (None, _) => {
            let mut label = format!("event {}", raw.event.as_ref()?.get_ref());
            for (field, value) in [("scene", &raw.scene), ("key", &raw.key)] {
                if let Some(value) = value {
                    label.push_str(&format!(" {field} {:?}", value.get_ref()));
                }
            }
            label
        }
    };
    let mut follower = Follower::new(SUITE_OPENID);
    follower.tags.extend(raw.tags);
    follower.attributes = raw.attributes;
    follower.counters = raw.counters;
    follower.first_scene = raw.first_scene;
    let line = |s: &Spanned<String>| errors.position(s.span().start).line;
    Some(Case {
        label,
        message: Inbound {
            to: "gh_suite".to_string(),
            from: SUITE_OPENID.to_string(),
            create_time: 0,
            agent_id: None,
            kind: message,
        },
        follower,
        expect: (expect != "none").then(|| expect.to_string()),
        expect_line: line(&raw.expect),
        reply_contains: raw
            .reply_contains
            .as_ref()
            .map(|w| (w.get_ref().clone(), line(w))),
        followups: raw.followups.as_ref().map(|f| {
            let line = errors.position(f.span().start).line;
            (f.get_ref().clone(), line)
        }),
    })
}

/// The event of an event case, as WeChat would send it; `None` if it can't be built.
fn event_case(
    event: &Spanned<String>,
    scene: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    errors: &mut FileErrors<'_>,
) -> Option<Event> {
    let Some(kind) = EventKind::parse(event.get_ref()) else {
        let valid: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        let message = format!(
            "unknown event `{}` (valid events: {})",
            event.get_ref(),
            valid.join(", ")
        );
        errors.push(event.span().start, message);
        return None;
    };
    let mut ok = true;
    for (field, value, filter) in [("scene", scene, Filter::Scene), ("key", key, Filter::Key)] {
        if let Some(value) = value.as_ref().filter(|_| kind.filter() != filter) {
            let allowed: Vec<&str> = EventKind::ALL
                .iter()
                .filter(|k| k.filter() == filter)
                .map(|k| k.name())
                .collect();
            let message = format!(
                "`{field}` applies to {} events, not `{}`",
                allowed.join(", "),
                kind.name()
            );
            errors.push(value.span().start, message);
            ok = false;
        }
    }
    let scene = scene.as_ref().map(|s| s.get_ref().clone());
    let key = key.as_ref().map(|k| k.get_ref().clone());
    // WeChat always sends these events with a value: a case without one would test an
    // event that never comes.
    let required = |value: Option<String>, field: &str, errors: &mut FileErrors<'_>| {
        if value.is_none() {
            let message = format!("`{}` needs `{field}`", kind.name());
            errors.push(event.span().start, message);
        }
        value
    };
    let event = match kind {
        EventKind::Subscribe => Event::Subscribe {
            scene,
            ticket: None,
        },
        EventKind::Unsubscribe => Event::Unsubscribe,
        EventKind::Scan => Event::Scan {
            scene: required(scene, "scene", errors)?,
            ticket: None,
        },
        EventKind::Click => Event::Click {
            key: required(key, "key", errors)?,
        },
        EventKind::View => Event::View {
            url: required(key, "key", errors)?,
            menu_id: None,
        },
        EventKind::ScanCode => Event::ScanCode {
            wait: false,
            key: required(key, "key", errors)?,
            scan_type: "qrcode".to_string(),
            scan_result: String::new(),
        },
        EventKind::Location => Event::ReportLocation {
            latitude: 0.0,
            longitude: 0.0,
            precision: 0.0,
        },
        EventKind::EnterAgent => Event::EnterAgent { key: None },
        EventKind::AddExternalContact | EventKind::DelExternalContact => Event::ExternalContact {
            change: if kind == EventKind::AddExternalContact {
                ExternalContactChange::Add
            } else {
                ExternalContactChange::Del
            },
            user_id: "suite-staff".to_string(),
            external_user_id: SUITE_OPENID.to_string(),
            state: scene,
            welcome_code: None,
        },
        EventKind::TemplateFinish => Event::TemplateSendJobFinish {
            msg_id: 0,
            status: "success".to_string(),
        },
        EventKind::MassFinish => Event::MassSendJobFinish {
            msg_id: 0,
            status: "send success".to_string(),
            total_count: 1,
            filter_count: 1,
            sent_count: 1,
            error_count: 0,
        },
    };
    ok.then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{RuleContext, RuleSource};

    const RULES: &str = r#"
[intents]
greeting = ["你好", "hello"]

[[rule]]
name = "greeting"
intent = "greeting"
reply = "你好呀"

[[rule]]
name = "coupon"
keywords = ["优惠券"]
match = "contains"
reply = "领券：https://x/c?u={openid}（第 {counter.asks} 次）"
incr = { asks = 1 }

[[rule]]
name = "vip"
priority = 10
keywords = "会员"
if_tag = "vip"
reply = "尊敬的{attr.title}"

[[rule]]
name = "join"
keywords = "会员"
reply = "开通会员"

[[rule]]
name = "silent"
keywords = "stop"

[[rule]]
name = "welcome-spring"
event = "subscribe"
scene = "spring"
reply = "春天好"

[[rule]]
name = "menu"
event = "click"
key = "M1"
reply.news = [{ title = "本周优惠", url = "https://x/m" }]

[[rule]]
name = "human"
keywords = "人工"
reply.transfer = true

[[rule]]
name = "new-tea"
keywords = "新品"
reply = "今天有新品"
followups = [
  { after = 2, text = "第二条：桂花乌龙 {openid}" },
  { after = 5, image = "MEDIA_ID" },
]
"#;

    fn table() -> RuleTable {
        RuleTable::compile(
            &[RuleSource {
                name: "r.toml".into(),
                text: RULES.into(),
            }],
            &RuleContext::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn runs() {
        let suite = r#"
[[case]]
name = "coupon keyword"
text = "我要优惠券！"
expect = "coupon"
reply_contains = "第 1 次"

[[case]]
text = "你好"
expect = "greeting"

[[case]]
text = "会员"
tags = ["vip"]
attributes = { title = "茶友" }
expect = "vip"
reply_contains = "尊敬的茶友"

[[case]]
text = "会员"
expect = "join"

[[case]]
text = "stop"
expect = "silent"

[[case]]
text = "天气"
expect = "none"

[[case]]
event = "subscribe"
scene = "spring"
expect = "welcome-spring"

[[case]]
event = "subscribe"
expect = "none"

[[case]]
event = "click"
key = "M1"
expect = "menu"
reply_contains = "https://x/m"

[[case]]
text = "人工"
expect = "human"
reply_contains = "transfer"

[[case]]
text = "优惠券"
counters = { asks = 4 }
expect = "coupon"
reply_contains = "u=o_suite_follower（第 5 次）"

[[case]]
text = "新品"
expect = "new-tea"
followups = ["桂花乌龙 o_suite_follower", "image"]

[[case]]
text = "你好"
expect = "greeting"
followups = []
"#;
        let suite = Suite::parse("t.toml", suite).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(suite.len(), 13);
        let report = table().run_suite(&suite);
        assert_eq!(
            report,
            SuiteReport {
                passed: 13,
                failures: vec![]
            }
        );
    }

    #[test]
    fn failures() {
        let suite = r#"[[case]]
name = "coupon keyword"
text = "你好"
expect = "coupon"

[[case]]
text = "会员"
expect = "vip"

[[case]]
text = "天气"
expect = "greting"

[[case]]
text = "优惠券"
expect = "none"

[[case]]
text = "优惠券"
expect = "coupon"
reply_contains = "第 2 次"

[[case]]
text = "stop"
expect = "silent"
reply_contains = "x"

[[case]]
event = "click"
key = "M2"
expect = "menu"

[[case]]
text = "新品"
expect = "new-tea"
followups = ["桂花乌龙", "news"]

[[case]]
text = "新品"
expect = "new-tea"
followups = ["桂花乌龙"]

[[case]]
text = "你好"
expect = "greeting"
followups = ["x"]
"#;
        let suite = Suite::parse("tests.toml", suite).unwrap_or_else(|e| panic!("{e}"));
        let report = table().run_suite(&suite);
        assert_eq!(report.passed, 0);
        let shown: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tests.toml:4: case \"coupon keyword\": expected rule `coupon`, got `greeting` (reply: \"你好呀\")",
                "tests.toml:8: text \"会员\": expected rule `vip`, got `join` (reply: \"开通会员\")",
                "tests.toml:12: text \"天气\": expected rule `greting` (no rule has that name), got no rule (no reply)",
                "tests.toml:16: text \"优惠券\": expected no rule, got `coupon` \
                 (reply: \"领券：https://x/c?u=o_suite_follower（第 1 次）\")",
                "tests.toml:21: text \"优惠券\": the reply does not contain \"第 2 次\" \
                 (reply: \"领券：https://x/c?u=o_suite_follower（第 1 次）\")",
                "tests.toml:26: text \"stop\": the reply does not contain \"x\" (no reply)",
                "tests.toml:31: event click key \"M2\": expected rule `menu`, got no rule (no reply)",
                "tests.toml:36: text \"新品\": expected follow-ups [\"桂花乌龙\", \"news\"], got \
                 [\"第二条：桂花乌龙 o_suite_follower\", \"image\"]",
                "tests.toml:41: text \"新品\": expected follow-ups [\"桂花乌龙\"], got \
                 [\"第二条：桂花乌龙 o_suite_follower\", \"image\"]",
                "tests.toml:46: text \"你好\": expected follow-ups [\"x\"], got []",
            ]
        );
    }

    /// Every case must fail with exactly the listed errors (`file:line:column`, fragment).
    #[test]
    fn parse_errors() {
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "bad TOML",
                "[[case]]\ntext = \"a\nexpect = \"x\"\n",
                vec![("t.toml:2:", "")],
            ),
            (
                "unknown field",
                "[[case]]\ntext = \"a\"\nexpected = \"x\"\n",
                vec![("t.toml:3:1", "unknown field `expected`")],
            ),
            (
                "missing expect",
                "[[case]]\ntext = \"a\"\n",
                vec![("t.toml:1:", "missing field `expect`")],
            ),
            (
                "wrong type",
                "[[case]]\ntext = \"a\"\nexpect = \"x\"\ntags = \"vip\"\n",
                vec![("t.toml:4:8", "invalid type: string \"vip\", expected a sequence")],
            ),
            (
                "text and event",
                "[[case]]\ntext = \"a\"\nevent = \"subscribe\"\nexpect = \"x\"\n",
                vec![("t.toml:3:9", "not both")],
            ),
            (
                "neither text nor event",
                "\n[[case]]\nexpect = \"x\"\n",
                vec![("t.toml:2:1", "needs `text` (a message) or `event`")],
            ),
            (
                "unknown event, and the next case is still checked",
                "[[case]]\nevent = \"subcribe\"\nexpect = \"x\"\n\n[[case]]\nevent = \"click\"\nscene = \"s\"\nexpect = \"\"\n",
                vec![
                    ("t.toml:2:9", "unknown event `subcribe` (valid events: subscribe, unsubscribe"),
                    ("t.toml:6:9", "`click` needs `key`"),
                    ("t.toml:7:9", "`scene` applies to subscribe, scan, add_external_contact events, not `click`"),
                    ("t.toml:8:10", "`expect` is empty"),
                ],
            ),
            (
                "scene on a text case",
                "[[case]]\ntext = \"a\"\nscene = \"s\"\nexpect = \"x\"\n",
                vec![("t.toml:3:9", "`scene` applies to an `event` case")],
            ),
            (
                "scan without a scene",
                "[[case]]\nevent = \"scan\"\nexpect = \"x\"\n",
                vec![("t.toml:2:9", "`scan` needs `scene`")],
            ),
            (
                "empty reply_contains",
                "[[case]]\ntext = \"a\"\nexpect = \"x\"\nreply_contains = \"\"\n",
                vec![("t.toml:4:18", "`reply_contains` is empty")],
            ),
            (
                "followups not a list of strings",
                "[[case]]\ntext = \"a\"\nexpect = \"x\"\nfollowups = [{ text = \"b\" }]\n",
                vec![("t.toml:4:14", "invalid type: map, expected a string")],
            ),
            (
                "single brackets",
                "[case]\ntext = \"a\"\nexpect = \"x\"\n",
                vec![("t.toml:1:1", "write `[[case]]`")],
            ),
            (
                "unknown top-level key",
                "[[cases]]\ntext = \"a\"\nexpect = \"x\"\n",
                vec![("t.toml:1:3", "unknown top-level key `cases`")],
            ),
            ("no cases", "# nothing yet\n", vec![("t.toml:1:1", "no test cases")]),
        ];
        for (name, text, expected) in cases {
            let errors = match Suite::parse("t.toml", text) {
                Ok(_) => panic!("{name}: parsed"),
                Err(RuleErrors(errors)) => errors,
            };
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(errors.len(), expected.len(), "{name}: {shown:#?}");
            for (error, (at, fragment)) in errors.iter().zip(&expected) {
                let location = format!("{}:{}:{}", error.file, error.line, error.column);
                assert!(location.starts_with(at), "{name}: {error}");
                assert!(
                    error.message.contains(fragment),
                    "{name}: {error}\nwanted: {fragment}"
                );
            }
        }
    }

    #[test]
    fn events_of_every_kind_parse() {
        let mut text = String::new();
        for kind in EventKind::ALL {
            let value = match kind.filter() {
                Filter::Scene => "scene = \"s\"\n",
                Filter::Key => "key = \"k\"\n",
                Filter::None => "",
            };
            text.push_str(&format!(
                "[[case]]\nevent = \"{}\"\n{value}expect = \"none\"\n\n",
                kind.name()
            ));
        }
        let suite = Suite::parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(suite.len(), EventKind::ALL.len());
        let report = table().run_suite(&suite);
        assert_eq!(report.passed, EventKind::ALL.len(), "{:?}", report.failures);
    }
}
