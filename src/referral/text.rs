//! The programme's texts and their placeholders (PURE): `{valid}`, `{pending}`,
//! `{next_tier}`, `{missing}`…
//!
//! The syntax is the rule files' (`src/rules/render.rs`): `{name}` is a placeholder,
//! `{name|fallback}` shows the fallback when the value is empty, `{{` and `}}` are literal
//! braces, and a lone brace is an error, so a half-typed placeholder never reaches a
//! follower. The rules' own template type is tied to a follower and a rule's context, so
//! this is a second, small parser of the same syntax over the referral's fields. Each text
//! takes only the placeholders that mean something in it (a reward notice has a coupon, an
//! invitation has no counts), checked when the file is read.

use crate::rules::CouponView;

/// A placeholder of a referral text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `{valid}`: the inviter's valid invites.
    Valid,
    /// `{pending}`: invites waiting for their hold period (or an operator's review).
    Pending,
    /// `{next_tier}`: the invites of the next tier not reached ("" when all are).
    NextTier,
    /// `{missing}`: how many valid invites the next tier still needs ("" when all are reached).
    Missing,
    /// `{tier}`: the invites of the tier just reached (reward notices).
    Tier,
    /// `{title}`: the programme's title.
    Title,
    /// `{end}`: the programme's last moment, `YYYY-MM-DD HH:MM` local time.
    End,
    /// `{coupon.code}`, `{coupon.title}`, `{coupon.value}`, `{coupon.expires}`: the coupon a
    /// reward gave, as the rules show it.
    CouponCode,
    CouponTitle,
    CouponValue,
    CouponExpires,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "valid" => Field::Valid,
            "pending" => Field::Pending,
            "next_tier" => Field::NextTier,
            "missing" => Field::Missing,
            "tier" => Field::Tier,
            "title" => Field::Title,
            "end" => Field::End,
            "coupon.code" => Field::CouponCode,
            "coupon.title" => Field::CouponTitle,
            "coupon.value" => Field::CouponValue,
            "coupon.expires" => Field::CouponExpires,
            _ => return None,
        })
    }

    /// The placeholder as written.
    pub fn name(self) -> &'static str {
        match self {
            Field::Valid => "{valid}",
            Field::Pending => "{pending}",
            Field::NextTier => "{next_tier}",
            Field::Missing => "{missing}",
            Field::Tier => "{tier}",
            Field::Title => "{title}",
            Field::End => "{end}",
            Field::CouponCode => "{coupon.code}",
            Field::CouponTitle => "{coupon.title}",
            Field::CouponValue => "{coupon.value}",
            Field::CouponExpires => "{coupon.expires}",
        }
    }

    /// Whether the value can be empty, and so a fallback can show.
    fn can_be_empty(self) -> bool {
        matches!(
            self,
            Field::NextTier
                | Field::Missing
                | Field::CouponCode
                | Field::CouponTitle
                | Field::CouponValue
                | Field::CouponExpires
        )
    }
}

/// Which placeholders each text takes.
pub const INVITATION_FIELDS: &[Field] = &[Field::Title, Field::End];
pub const PROGRESS_FIELDS: &[Field] = &[
    Field::Valid,
    Field::Pending,
    Field::NextTier,
    Field::Missing,
    Field::Title,
    Field::End,
];
pub const REWARD_FIELDS: &[Field] = &[
    Field::Valid,
    Field::Tier,
    Field::Title,
    Field::CouponCode,
    Field::CouponTitle,
    Field::CouponValue,
    Field::CouponExpires,
];

/// A parsed text.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Placeholder {
        field: Field,
        fallback: Option<String>,
    },
}

/// Why a text was refused: the offending fragment as written (to point at its column) and
/// the message.
#[derive(Debug, Clone, PartialEq)]
pub struct TextError {
    pub fragment: String,
    pub message: String,
}

/// The values a text is rendered with; fields the text does not take are never read.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    pub valid: u32,
    pub pending: u32,
    pub next_tier: Option<u32>,
    pub tier: Option<u32>,
    pub title: &'a str,
    pub end: String,
    pub coupon: Option<&'a CouponView>,
}

impl Text {
    /// Parses `source`, taking only the placeholders in `allowed`.
    pub fn parse(source: &str, allowed: &[Field]) -> Result<Text, TextError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(TextError {
                    fragment: "}".into(),
                    message: "unmatched `}`; write `}}` for a literal brace".into(),
                });
            }
            let Some(end) = tail[1..]
                .find(['{', '}'])
                .map(|e| e + 1)
                .filter(|&e| tail[e..].starts_with('}'))
            else {
                return Err(TextError {
                    fragment: tail.chars().take(12).collect(),
                    message: "unclosed `{`; write `{{` for a literal brace".into(),
                });
            };
            let inner = &tail[1..end];
            let (name, fallback) = match inner.split_once('|') {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (inner, None),
            };
            let fragment = tail[..=end].to_string();
            let listed = || {
                allowed
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let field = Field::parse(name.trim())
                .filter(|f| allowed.contains(f))
                .ok_or_else(|| TextError {
                    fragment: fragment.clone(),
                    message: format!(
                        "unknown placeholder `{fragment}` here; this text takes {}",
                        listed()
                    ),
                })?;
            if let Some(fallback) = fallback {
                if !field.can_be_empty() {
                    return Err(TextError {
                        fragment,
                        message: format!(
                            "`{}` is never empty, so it takes no fallback",
                            field.name()
                        ),
                    });
                }
                if fallback.contains('|') {
                    return Err(TextError {
                        fragment,
                        message: "a fallback may not contain `|`".into(),
                    });
                }
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Placeholder {
                field,
                fallback: fallback.map(str::to_string),
            });
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Text { segments })
    }

    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Placeholder { field, fallback } => {
                    let value = value(*field, v);
                    match fallback {
                        Some(f) if value.is_empty() => out.push_str(f),
                        _ => out.push_str(&value),
                    }
                }
            }
        }
        out
    }
}

fn value(field: Field, v: &Values<'_>) -> String {
    let coupon = |f: fn(&CouponView) -> &String| v.coupon.map(f).cloned().unwrap_or_default();
    match field {
        Field::Valid => v.valid.to_string(),
        Field::Pending => v.pending.to_string(),
        Field::NextTier => v.next_tier.map(|t| t.to_string()).unwrap_or_default(),
        Field::Missing => v
            .next_tier
            .map(|t| t.saturating_sub(v.valid).to_string())
            .unwrap_or_default(),
        Field::Tier => v.tier.map(|t| t.to_string()).unwrap_or_default(),
        Field::Title => v.title.to_string(),
        Field::End => v.end.clone(),
        Field::CouponCode => coupon(|c| &c.code),
        Field::CouponTitle => coupon(|c| &c.title),
        Field::CouponValue => coupon(|c| &c.value),
        Field::CouponExpires => coupon(|c| &c.expires),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_renders_counts_and_the_next_tier() {
        let t = Text::parse(
            "已邀请 {valid} 位，待确认 {pending} 位；下一档 {next_tier|无}，还差 {missing|0} 位 {{ok}}",
            PROGRESS_FIELDS,
        )
        .unwrap();
        let v = Values {
            valid: 2,
            pending: 1,
            next_tier: Some(3),
            ..Values::default()
        };
        assert_eq!(
            t.render(&v),
            "已邀请 2 位，待确认 1 位；下一档 3，还差 1 位 {ok}"
        );
        let all = Values {
            valid: 12,
            next_tier: None,
            ..Values::default()
        };
        assert_eq!(
            t.render(&all),
            "已邀请 12 位，待确认 0 位；下一档 无，还差 0 位 {ok}"
        );
    }

    #[test]
    fn rewards_show_the_coupon() {
        let t = Text::parse(
            "{title}：第 {tier} 档，{coupon.title} {coupon.code|稍后发放}",
            REWARD_FIELDS,
        )
        .unwrap();
        let coupon = CouponView {
            code: "7KQ2M9XHPA".into(),
            title: "新客礼".into(),
            ..CouponView::default()
        };
        let v = Values {
            tier: Some(3),
            title: "春季",
            coupon: Some(&coupon),
            ..Values::default()
        };
        assert_eq!(t.render(&v), "春季：第 3 档，新客礼 7KQ2M9XHPA");
        let none = Values {
            tier: Some(3),
            title: "春季",
            ..Values::default()
        };
        assert_eq!(t.render(&none), "春季：第 3 档， 稍后发放");
    }

    #[test]
    fn mistakes_are_refused_with_the_fragment() {
        for (case, source, fields, fragment, message) in [
            (
                "unknown",
                "{nope}",
                PROGRESS_FIELDS,
                "{nope}",
                "unknown placeholder `{nope}`",
            ),
            (
                "not in this text",
                "{valid}",
                INVITATION_FIELDS,
                "{valid}",
                "unknown placeholder `{valid}` here; this text takes {title}, {end}",
            ),
            (
                "coupon in progress",
                "{coupon.code}",
                PROGRESS_FIELDS,
                "{coupon.code}",
                "unknown placeholder",
            ),
            (
                "never empty",
                "{valid|0}",
                PROGRESS_FIELDS,
                "{valid|0}",
                "`{valid}` is never empty",
            ),
            ("lone close", "a } b", PROGRESS_FIELDS, "}", "unmatched `}`"),
            (
                "unclosed",
                "a {valid",
                PROGRESS_FIELDS,
                "{valid",
                "unclosed `{`",
            ),
            (
                "nested",
                "a {valid{x}",
                PROGRESS_FIELDS,
                "{valid{x}",
                "unclosed `{`",
            ),
            (
                "pipe in fallback",
                "{missing|a|b}",
                PROGRESS_FIELDS,
                "{missing|a|b}",
                "a fallback may not contain `|`",
            ),
        ] {
            let e = Text::parse(source, fields).expect_err(case);
            assert_eq!(e.fragment, fragment, "{case}");
            assert!(e.message.starts_with(message), "{case}: {}", e.message);
        }
    }
}
