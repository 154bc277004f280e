//! Placeholders: `{openid}`, `{attr.city}`, `{match.1}`… in reply strings and `set` values.
//!
//! A template is parsed once, at compile time, into literal and placeholder segments, so a
//! typo is a compile error at the string's line and rendering is a straight walk with no
//! parsing. `{{` and `}}` stand for literal braces, as in Rust's `format!`; a lone brace is
//! an error rather than a guess, so a half-typed placeholder never reaches a follower.
//!
//! A placeholder may carry a fallback, `{attr.name|朋友}`: the text shown when its value
//! is empty (unset attribute, no scene, an event's `{content}`…), so that a message never
//! starts with a bare "，". The fallback is plain text up to the closing brace; it may be
//! empty (`{attr.name|}` says "empty is fine" and silences the workbench warning) but may
//! not hold `{`, `}` or `|`: braces would make the end of the placeholder ambiguous, and
//! `|` is kept free for a later chain of fallbacks. Placeholders that are never empty
//! (`{openid}`, `{counter.X}`, `{messages_in}`) refuse one, since it could never show.

use std::fmt;

use toml::Spanned;

use super::error::{FileErrors, Pos};
use crate::follower::Follower;

/// Every placeholder, as listed in error messages.
const KNOWN: &str = "{openid}, {content}, {scene}, {first_scene}, {tags}, {attr.NAME}, \
                     {counter.NAME}, {messages_in}, {match.N}, {event_key}, {coupon.code}, \
                     {coupon.title}, {coupon.value}, {coupon.expires}, {coupon.refused}";

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    /// Where each placeholder is written in its file, in order; empty for a template that
    /// was not read from a file (`parse`). Only `warnings.rs` looks at it.
    at: Vec<Pos>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Placeholder(Placeholder),
}

/// A placeholder as written: what it shows, and what instead when that is empty.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placeholder {
    pub field: Field,
    /// `{attr.name|朋友}`: "朋友". `None`: an empty value renders as nothing.
    pub fallback: Option<String>,
}

/// A placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    OpenId,
    Content,
    Scene,
    FirstScene,
    Tags,
    Attr(String),
    Counter(String),
    MessagesIn,
    Match(usize),
    EventKey,
    Coupon(CouponField),
}

/// What a reply can show of the coupon its rule issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CouponField {
    Code,
    Title,
    Value,
    /// The last day it is valid, `YYYY-MM-DD` (China time).
    Expires,
    /// Why no code was issued ("" when one was).
    Refused,
}

/// The coupon a callback issued (or why not), as replies show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CouponView {
    pub code: String,
    pub title: String,
    pub value: String,
    pub expires: String,
    pub refused: String,
}

/// Why a template was refused. `fragment` is the offending text as written, used to point
/// the error at its column when the string appears verbatim in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TemplateError {
    pub fragment: String,
    pub message: String,
}

/// What a template sees of the message besides the follower.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context<'a> {
    /// The message text as the follower sent it ("" for events and non-text messages).
    pub content: &'a str,
    /// This event's scene; `{scene}` falls back to the follower's latest scene.
    pub scene: Option<&'a str>,
    pub event_key: &'a str,
    /// Capture groups of the rule's regex that matched, group 0 first; empty if none.
    pub captures: &'a [String],
    /// The coupon issued by the fired rules, if any.
    pub coupon: Option<&'a CouponView>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                text.push_str(&tail[..1]);
                rest = &tail[2..];
            } else if tail.starts_with('}') {
                return Err(TemplateError {
                    fragment: "}".into(),
                    message: "unmatched `}`; write `}}` for a literal brace".into(),
                });
            } else {
                let Some(end) = tail.find('}') else {
                    return Err(TemplateError {
                        fragment: tail.chars().take(12).collect(),
                        message: format!(
                            "unclosed `{{` in {source:?}; write `{{{{` for a literal brace"
                        ),
                    });
                };
                let placeholder = Placeholder::parse(&tail[..=end])?;
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Placeholder(placeholder));
                rest = &tail[end + 1..];
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Template {
            segments,
            at: Vec::new(),
        })
    }

    /// Parses a string from a rule file, recording an error at the offending placeholder
    /// (at the string's start when escapes make its text differ from the source).
    /// `groups` is the highest capture group the rule's regexes have (`None`: the rule has
    /// no regex), which `{match.N}` must not exceed.
    pub fn compile(
        source: &Spanned<String>,
        groups: Option<usize>,
        errors: &mut FileErrors<'_>,
    ) -> Option<Template> {
        let result = Template::parse(source.get_ref()).and_then(|template| {
            let too_high = template.match_groups().find(|&n| groups.is_none_or(|max| n > max));
            match too_high {
                None => Ok(template),
                Some(n) => Err(TemplateError {
                    fragment: format!("{{match.{n}}}"),
                    message: match groups {
                        None => format!("`{{match.{n}}}` needs a `regex` trigger in this rule"),
                        Some(max) => format!(
                            "`{{match.{n}}}`: this rule's regexes have at most {max} capture group(s)"
                        ),
                    },
                }),
            }
        });
        match result {
            Ok(mut template) => {
                template.at = template.positions(source, errors);
                Some(template)
            }
            Err(e) => {
                let span = source.span();
                let within = errors
                    .text
                    .get(span.clone())
                    .and_then(|raw| raw.find(&e.fragment));
                errors.push(span.start + within.unwrap_or(0), e.message);
                None
            }
        }
    }

    pub fn render(&self, ctx: &Context<'_>, follower: &Follower) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Placeholder(p) => {
                    let before = out.len();
                    p.field.render(ctx, follower, &mut out);
                    if let (Some(fallback), true) = (&p.fallback, out.len() == before) {
                        out.push_str(fallback);
                    }
                }
            }
        }
        out
    }

    /// Every placeholder with where it is written (`None` for a template from `parse`).
    pub fn placeholders(&self) -> impl Iterator<Item = (&Placeholder, Option<Pos>)> + '_ {
        let placeholders = self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some(p),
            Segment::Text(_) => None,
        });
        placeholders
            .enumerate()
            .map(|(i, p)| (p, self.at.get(i).copied()))
    }

    /// The position of each placeholder of this template, read from `source`: each is
    /// looked for in the string as written, after the previous one; one that is not found
    /// verbatim (escapes in the TOML string) gets the string's own position.
    fn positions(&self, source: &Spanned<String>, errors: &FileErrors<'_>) -> Vec<Pos> {
        let span = source.span();
        let raw = errors.text.get(span.clone()).unwrap_or("");
        let mut from = 0;
        let mut at = Vec::new();
        for (placeholder, _) in self.placeholders() {
            let written = placeholder.to_string();
            let offset = match raw.get(from..).and_then(|rest| rest.find(&written)) {
                Some(i) => {
                    from += i + written.len();
                    span.start + from - written.len()
                }
                None => span.start,
            };
            at.push(errors.position(offset));
        }
        at
    }

    /// The capture groups `{match.N}` refers to, for checking them against the rule's regexes.
    pub fn match_groups(&self) -> impl Iterator<Item = usize> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(Placeholder {
                field: Field::Match(n),
                ..
            }) => Some(*n),
            _ => None,
        })
    }
}

impl Placeholder {
    /// `written` is the whole placeholder, braces included: `{attr.name|朋友}`.
    fn parse(written: &str) -> Result<Placeholder, TemplateError> {
        let inner = &written[1..written.len() - 1];
        let refuse = |message: String| TemplateError {
            fragment: written.into(),
            message,
        };
        let (name, fallback) = match inner.split_once('|') {
            None => (inner, None),
            Some((name, fallback)) => (name, Some(fallback)),
        };
        let field = Field::parse(name).ok_or_else(|| {
            refuse(format!(
                "unknown placeholder `{{{name}}}` (known: {KNOWN}; a fallback is written \
                 `{{attr.name|朋友}}`)"
            ))
        })?;
        if let Some(fallback) = fallback {
            if fallback.contains(['{', '|']) {
                return Err(refuse(format!(
                    "the fallback of `{written}` may not contain `{{`, `}}` or `|`"
                )));
            }
            if field.never_empty() {
                return Err(refuse(format!(
                    "`{field}` is never empty, so its fallback would never show"
                )));
            }
        }
        Ok(Placeholder {
            field,
            fallback: fallback.map(str::to_string),
        })
    }
}

/// The placeholder as written: `{attr.name|朋友}`.
impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fallback {
            None => self.field.fmt(f),
            Some(fallback) => {
                let field = self.field.to_string();
                write!(f, "{}|{fallback}}}", &field[..field.len() - 1])
            }
        }
    }
}

/// The placeholder without its fallback: `{attr.city}`.
impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::OpenId => f.write_str("{openid}"),
            Field::Content => f.write_str("{content}"),
            Field::Scene => f.write_str("{scene}"),
            Field::FirstScene => f.write_str("{first_scene}"),
            Field::Tags => f.write_str("{tags}"),
            Field::Attr(name) => write!(f, "{{attr.{name}}}"),
            Field::Counter(name) => write!(f, "{{counter.{name}}}"),
            Field::MessagesIn => f.write_str("{messages_in}"),
            Field::Match(n) => write!(f, "{{match.{n}}}"),
            Field::EventKey => f.write_str("{event_key}"),
            Field::Coupon(c) => f.write_str(match c {
                CouponField::Code => "{coupon.code}",
                CouponField::Title => "{coupon.title}",
                CouponField::Value => "{coupon.value}",
                CouponField::Expires => "{coupon.expires}",
                CouponField::Refused => "{coupon.refused}",
            }),
        }
    }
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        let named = |prefix: &str| {
            name.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty())
                .map(str::to_string)
        };
        Some(match name {
            "openid" => Field::OpenId,
            "content" => Field::Content,
            "scene" => Field::Scene,
            "first_scene" => Field::FirstScene,
            "tags" => Field::Tags,
            "messages_in" => Field::MessagesIn,
            "event_key" => Field::EventKey,
            "coupon.code" => Field::Coupon(CouponField::Code),
            "coupon.title" => Field::Coupon(CouponField::Title),
            "coupon.value" => Field::Coupon(CouponField::Value),
            "coupon.expires" => Field::Coupon(CouponField::Expires),
            "coupon.refused" => Field::Coupon(CouponField::Refused),
            _ => {
                if let Some(attr) = named("attr.") {
                    Field::Attr(attr)
                } else if let Some(counter) = named("counter.") {
                    Field::Counter(counter)
                } else {
                    let n = name.strip_prefix("match.")?;
                    // Digits only: `parse` would also accept "+1".
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    Field::Match(n.parse().ok()?)
                }
            }
        })
    }

    /// Placeholders that always render something: `0` for an unset counter, the openid
    /// of every follower.
    fn never_empty(&self) -> bool {
        matches!(self, Field::OpenId | Field::Counter(_) | Field::MessagesIn)
    }

    fn render(&self, ctx: &Context<'_>, f: &Follower, out: &mut String) {
        match self {
            Field::OpenId => out.push_str(&f.openid),
            Field::Content => out.push_str(ctx.content),
            Field::Scene => out.push_str(ctx.scene.or(f.latest_scene()).unwrap_or("")),
            Field::FirstScene => out.push_str(f.first_scene.as_deref().unwrap_or("")),
            Field::Tags => {
                for (i, tag) in f.tags.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(tag);
                }
            }
            Field::Attr(name) => out.push_str(f.attributes.get(name).map_or("", String::as_str)),
            Field::Counter(name) => out.push_str(&f.counters.get(name).unwrap_or(&0).to_string()),
            Field::MessagesIn => out.push_str(&f.messages_in.to_string()),
            Field::Match(n) => out.push_str(ctx.captures.get(*n).map_or("", String::as_str)),
            Field::EventKey => out.push_str(ctx.event_key),
            Field::Coupon(c) => {
                let Some(v) = ctx.coupon else { return };
                out.push_str(match c {
                    CouponField::Code => &v.code,
                    CouponField::Title => &v.title,
                    CouponField::Value => &v.value,
                    CouponField::Expires => &v.expires,
                    CouponField::Refused => &v.refused,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::SceneVisit;

    fn follower() -> Follower {
        let mut f = Follower::new("o123");
        f.first_scene = Some("spring-poster".into());
        f.scenes.push(SceneVisit {
            scene: "store-7".into(),
            at: 1,
        });
        f.tags
            .extend(["vip".to_string(), "coupon-seeker".to_string()]);
        f.attributes.insert("city".into(), "上海".into());
        f.counters.insert("checkin".into(), 3);
        f.messages_in = 9;
        f
    }

    /// The coupon both tables show.
    fn coupon() -> CouponView {
        CouponView {
            code: "7KQ2M9XHPA".into(),
            title: "新客礼".into(),
            value: "满 30 减 10".into(),
            expires: "2026-11-30".into(),
            refused: String::new(),
        }
    }

    #[test]
    fn renders() {
        let captures = ["订单 42".to_string(), "42".to_string()];
        let coupon = coupon();
        let ctx = Context {
            content: "订单 42",
            scene: None,
            event_key: "MENU_COUPON",
            captures: &captures,
            coupon: Some(&coupon),
        };
        let cases = [
            (
                "coupon",
                "{coupon.title}（{coupon.value}）：{coupon.code}，{coupon.expires} 前有效{coupon.refused}",
                "新客礼（满 30 减 10）：7KQ2M9XHPA，2026-11-30 前有效",
            ),
            ("plain text", "你好", "你好"),
            ("openid", "id={openid}", "id=o123"),
            ("content", "你说：{content}", "你说：订单 42"),
            ("scene falls back to the latest visit", "{scene}", "store-7"),
            ("first scene", "{first_scene}", "spring-poster"),
            (
                "tags sorted, comma-separated",
                "{tags}",
                "coupon-seeker, vip",
            ),
            ("attribute", "城市 {attr.city}", "城市 上海"),
            ("missing attribute is empty", "[{attr.nope}]", "[]"),
            ("counter", "第{counter.checkin}次", "第3次"),
            ("missing counter is 0", "{counter.nope}", "0"),
            ("messages in", "{messages_in}", "9"),
            ("capture group", "#{match.1}", "#42"),
            ("whole match", "{match.0}", "订单 42"),
            ("missing group is empty", "[{match.7}]", "[]"),
            ("event key", "{event_key}", "MENU_COUPON"),
            ("escaped braces", "{{openid}} }}{{", "{openid} }{"),
            ("adjacent placeholders", "{openid}{messages_in}", "o1239"),
            ("empty string", "", ""),
        ];
        let f = follower();
        for (name, source, expected) in cases {
            let t = Template::parse(source).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(t.render(&ctx, &f), expected, "{name}: {source:?}");
        }
    }

    /// `{NAME|fallback}`: the fallback shows exactly when the value is empty, for every
    /// kind that can be empty. `full` has every value set, `bare` none.
    #[test]
    fn fallbacks() {
        let captures = ["订单 42".to_string(), "42".to_string()];
        let coupon = coupon();
        let full = Context {
            content: "订单 42",
            scene: Some("store-7"),
            event_key: "MENU_COUPON",
            captures: &captures,
            coupon: Some(&coupon),
        };
        let mut empty_attr = Follower::new("o1");
        empty_attr.attributes.insert("name".into(), String::new());
        // (name, template, rendered with `full` and `follower()`, rendered with nothing set)
        let cases = [
            ("attribute set", "{attr.city|别处}", "上海", "别处"),
            (
                "attribute unset",
                "{attr.name|朋友}，你好",
                "朋友，你好",
                "朋友，你好",
            ),
            ("scene", "{scene|公众号}", "store-7", "公众号"),
            (
                "first scene",
                "{first_scene|直接关注}",
                "spring-poster",
                "直接关注",
            ),
            ("content", "{content|（无文字）}", "订单 42", "（无文字）"),
            ("capture group", "#{match.1|?}", "#42", "#?"),
            ("missing capture group", "[{match.7|无}]", "[无]", "[无]"),
            ("event key", "{event_key|-}", "MENU_COUPON", "-"),
            ("tags", "{tags|无标签}", "coupon-seeker, vip", "无标签"),
            (
                "coupon code",
                "{coupon.code|已领完}",
                "7KQ2M9XHPA",
                "已领完",
            ),
            (
                "coupon refused",
                "{coupon.refused|领取成功}",
                "领取成功",
                "领取成功",
            ),
            ("empty fallback", "[{attr.name|}]", "[]", "[]"),
            ("spaces kept", "{attr.name| 朋友 }", " 朋友 ", " 朋友 "),
            (
                "punctuation allowed",
                "{attr.name|亲爱的朋友，}",
                "亲爱的朋友，",
                "亲爱的朋友，",
            ),
            (
                "next to escapes",
                "{{{attr.name|朋友}}}",
                "{朋友}",
                "{朋友}",
            ),
        ];
        let (f, bare) = (follower(), Follower::new("o1"));
        for (name, source, with_values, without) in cases {
            let t = Template::parse(source).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(t.render(&full, &f), with_values, "{name}: {source:?}");
            assert_eq!(
                t.render(&Context::default(), &bare),
                without,
                "{name}: {source:?}"
            );
        }
        let t = Template::parse("{attr.name|朋友}").unwrap();
        assert_eq!(
            t.render(&Context::default(), &empty_attr),
            "朋友",
            "an attribute set to \"\" is empty too"
        );
    }

    #[test]
    fn placeholders_print_as_written() {
        for source in [
            "{attr.name|朋友}",
            "{match.2|}",
            "{coupon.code|无}",
            "{scene}",
        ] {
            let t = Template::parse(source).unwrap();
            let (p, _) = t.placeholders().next().unwrap();
            assert_eq!(p.to_string(), source);
        }
    }

    #[test]
    fn event_scene_wins_over_follower_scene() {
        let t = Template::parse("{scene}").unwrap();
        let ctx = Context {
            scene: Some("now"),
            ..Context::default()
        };
        assert_eq!(t.render(&ctx, &follower()), "now");
        assert_eq!(t.render(&Context::default(), &Follower::new("o")), "");
    }

    #[test]
    fn errors() {
        let cases = [
            (
                "unknown placeholder",
                "hi {nmae}",
                "{nmae}",
                "unknown placeholder `{nmae}`",
            ),
            (
                "attr without a name",
                "{attr.}",
                "{attr.}",
                "unknown placeholder",
            ),
            (
                "match with a name",
                "{match.x}",
                "{match.x}",
                "unknown placeholder",
            ),
            (
                "match with a sign",
                "{match.+1}",
                "{match.+1}",
                "unknown placeholder",
            ),
            (
                "spaces inside",
                "{ openid }",
                "{ openid }",
                "unknown placeholder",
            ),
            ("unclosed", "hello {openid", "{openid", "unclosed `{`"),
            (
                "unknown placeholder with a fallback",
                "{nmae|朋友}",
                "{nmae|朋友}",
                "unknown placeholder `{nmae}`",
            ),
            (
                "brace in a fallback",
                "{attr.name|{{x}",
                "{attr.name|{{x}",
                "may not contain",
            ),
            (
                "bar in a fallback",
                "{attr.name|a|b}",
                "{attr.name|a|b}",
                "may not contain",
            ),
            (
                "closing brace ends the fallback",
                "{attr.name|a}b}",
                "}",
                "unmatched `}`",
            ),
            (
                "fallback of a counter",
                "{counter.visits|0}",
                "{counter.visits|0}",
                "`{counter.visits}` is never empty",
            ),
            (
                "fallback of the openid",
                "{openid|x}",
                "{openid|x}",
                "never empty",
            ),
            (
                "fallback of messages_in",
                "{messages_in|x}",
                "{messages_in|x}",
                "never empty",
            ),
            ("lone closing brace", "a } b", "}", "unmatched `}`"),
        ];
        for (name, source, fragment, message) in cases {
            let e = Template::parse(source).expect_err(name);
            assert_eq!(e.fragment, fragment, "{name}");
            assert!(e.message.contains(message), "{name}: {}", e.message);
        }
    }

    #[test]
    fn match_groups_are_listed() {
        let t = Template::parse("{match.1}-{match.3}-{openid}").unwrap();
        assert_eq!(t.match_groups().collect::<Vec<_>>(), [1, 3]);
    }
}
