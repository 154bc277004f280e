//! Segments: an audience as an expression over one follower's state (PURE).
//!
//! ```text
//! tag:vip AND NOT tag:blocked
//! (tag:vip OR tag:"老客户") AND subscribed
//! scene = "spring-poster" AND counter.orders >= 3 AND attr.city = 上海
//! subscribed_within 7d AND last_message_before 30d
//! person.follows = shop2 AND NOT person.staff = zhangsan
//! ```
//!
//! Parsed once into a tree; `matches` walks it without allocating, so one segment over a
//! million followers costs only the store's scan. Every mistake names its column.

use std::fmt;

use crate::follower::Follower;

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    And(Box<Segment>, Box<Segment>),
    Or(Box<Segment>, Box<Segment>),
    Not(Box<Segment>),
    Tag(String),
    Subscribed,
    InCsWindow,
    HasAttr(String),
    /// `scene = "x"`: the first scene (the channel that brought the follower in).
    Scene(Cmp, String),
    /// `any_scene = "x"`: any scene ever seen.
    AnyScene(String),
    /// `subscribe_scene = ADD_SCENE_QR_CODE`: how WeChat says the follower came (a sync).
    SubscribeScene(Cmp, String),
    /// `staff = zhangsan`: a WeCom contact this staff member has added.
    Staff(String),
    Attr(String, Cmp, String),
    Counter(String, Cmp, i64),
    MessagesIn(Cmp, i64),
    /// Last subscribe within this many seconds.
    SubscribedWithin(i64),
    LastMessageWithin(i64),
    /// Last message longer ago than this (or never).
    LastMessageBefore(i64),
    /// `person.follows = shop2`: the same person (one unionid) follows that account, or is
    /// its WeCom contact; this follower's own account counts.
    PersonFollows(String),
    /// `person.staff = zhangsan`: the person is this staff member's WeCom contact, through
    /// any of the brand's WeCom accounts.
    PersonStaff(String),
}

/// The rest of a follower's person, for the `person.*` conditions: the follower's own
/// account and the person's other identities (account, follower) that share its unionid.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    pub account: &'a str,
    pub others: &'a [(String, Follower)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A mistake in an expression, at a 1-based column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct SegmentError {
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    /// Nesting of `(` and `NOT`: bounded, so hostile input is an error, not a stack overflow.
    depth: usize,
    /// About one follower only (rules, autotags): `person.*` is refused.
    alone: bool,
}

/// The deepest nesting of parentheses and NOTs accepted.
pub const MAX_DEPTH: usize = 100;

const FIELDS: &str = "tag:NAME, subscribed, in_cs_window, has_attr NAME, scene, any_scene, \
                      subscribe_scene, staff, person.follows, person.staff, \
                      attr.NAME, counter.NAME, messages_in, subscribed_within, \
                      last_message_within, last_message_before";

impl Segment {
    pub fn parse(source: &str) -> Result<Segment, SegmentError> {
        Segment::parse_with(source, false)
    }

    /// An expression about the one follower a rule or an autotag sees: `person.*`
    /// conditions, which read the person's other accounts, are refused (they are for
    /// audiences: campaigns and follower lists).
    pub fn parse_alone(source: &str) -> Result<Segment, SegmentError> {
        Segment::parse_with(source, true)
    }

    fn parse_with(source: &str, alone: bool) -> Result<Segment, SegmentError> {
        let toks = lex(source)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: source.chars().count() + 1,
            depth: 0,
            alone,
        };
        if p.toks.is_empty() {
            return Err(err(
                1,
                "empty expression: expected a condition such as tag:vip",
            ));
        }
        let seg = p.or()?;
        if let Some((t, col)) = p.toks.get(p.pos) {
            return Err(err(
                *col,
                &format!("unexpected {} after a complete expression", show(t)),
            ));
        }
        Ok(seg)
    }

    /// Whether the follower belongs to the segment at `now` (unix seconds), seen alone:
    /// `person.follows` holds for no account and `person.staff` looks at this follower's
    /// own staff links. Where a segment [asks about the person](Segment::about_person),
    /// callers that can load the person use [`Segment::matches_person`].
    pub fn matches(&self, f: &Follower, now: i64) -> bool {
        self.eval(f, None, now)
    }

    /// Whether the follower belongs to the segment, with the rest of its person.
    pub fn matches_person(&self, f: &Follower, person: &Person<'_>, now: i64) -> bool {
        self.eval(f, Some(person), now)
    }

    /// Whether any condition asks about the person (then the caller loads the person's
    /// other identities; otherwise it saves those reads).
    pub fn about_person(&self) -> bool {
        match self {
            Segment::And(a, b) | Segment::Or(a, b) => a.about_person() || b.about_person(),
            Segment::Not(a) => a.about_person(),
            Segment::PersonFollows(_) | Segment::PersonStaff(_) => true,
            _ => false,
        }
    }

    /// The accounts `person.follows` names, for checking them against the config.
    pub fn accounts_named(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |s| {
            if let Segment::PersonFollows(a) = s {
                out.push(a.as_str());
            }
        });
        out
    }

    fn visit<'s>(&'s self, each: &mut dyn FnMut(&'s Segment)) {
        each(self);
        match self {
            Segment::And(a, b) | Segment::Or(a, b) => {
                a.visit(each);
                b.visit(each);
            }
            Segment::Not(a) => a.visit(each),
            _ => {}
        }
    }

    fn eval(&self, f: &Follower, person: Option<&Person<'_>>, now: i64) -> bool {
        match self {
            Segment::And(a, b) => a.eval(f, person, now) && b.eval(f, person, now),
            Segment::Or(a, b) => a.eval(f, person, now) || b.eval(f, person, now),
            Segment::Not(a) => !a.eval(f, person, now),
            Segment::Tag(t) => f.tags.contains(t),
            Segment::Subscribed => f.subscribed,
            Segment::InCsWindow => f.cs_open(now).is_ok(),
            Segment::HasAttr(a) => f.attributes.contains_key(a),
            Segment::Scene(cmp, v) => compare(f.first_scene.as_deref().unwrap_or(""), *cmp, v),
            Segment::SubscribeScene(cmp, v) => {
                compare(f.subscribe_scene.as_deref().unwrap_or(""), *cmp, v)
            }
            Segment::Staff(v) => f.staff.iter().any(|l| l.userid == *v),
            Segment::AnyScene(v) => {
                f.first_scene.as_deref() == Some(v.as_str())
                    || f.scenes.iter().any(|s| s.scene == *v)
            }
            Segment::Attr(name, cmp, v) => {
                compare(f.attributes.get(name).map_or("", String::as_str), *cmp, v)
            }
            Segment::Counter(name, cmp, v) => {
                compare(&f.counters.get(name).copied().unwrap_or(0), *cmp, v)
            }
            Segment::MessagesIn(cmp, v) => compare(&(f.messages_in as i64), *cmp, v),
            Segment::SubscribedWithin(secs) => f
                .last_subscribed_at
                .is_some_and(|t| f.subscribed && now - t <= *secs),
            Segment::LastMessageWithin(secs) => f.last_inbound_at.is_some_and(|t| now - t <= *secs),
            Segment::LastMessageBefore(secs) => f.last_inbound_at.is_none_or(|t| now - t > *secs),
            Segment::PersonFollows(account) => person.is_some_and(|p| {
                (p.account == account && f.subscribed)
                    || p.others.iter().any(|(a, o)| a == account && o.subscribed)
            }),
            Segment::PersonStaff(userid) => {
                let mine = f.staff.iter().any(|l| l.userid == *userid);
                mine || person.is_some_and(|p| {
                    p.others
                        .iter()
                        .any(|(_, o)| o.staff.iter().any(|l| l.userid == *userid))
                })
            }
        }
    }
}

/// Strings compare by their order, numbers by value: one rule for both.
fn compare<T: PartialOrd + ?Sized>(have: &T, cmp: Cmp, want: &T) -> bool {
    match cmp {
        Cmp::Eq => have == want,
        Cmp::Ne => have != want,
        Cmp::Gt => have > want,
        Cmp::Ge => have >= want,
        Cmp::Lt => have < want,
        Cmp::Le => have <= want,
    }
}

fn err(column: usize, message: &str) -> SegmentError {
    SegmentError {
        column,
        message: message.to_string(),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Op(o) => format!("`{o}`"),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Full-width punctuation typed with a Chinese input method, as its ASCII twin (outside
/// quotes only: a quoted tag keeps its own characters). One character for one, so columns
/// stay right.
fn half_width_outside_quotes(source: &str) -> Vec<char> {
    // The closing quote expected while inside a quoted value.
    let mut closing: Option<char> = None;
    let mut escaped = false;
    source
        .chars()
        .map(|c| {
            if let Some(close) = closing {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == close {
                    closing = None;
                    return '"';
                }
                return c;
            }
            match c {
                '"' => {
                    closing = Some('"');
                    '"'
                }
                '“' => {
                    closing = Some('”');
                    '"'
                }
                '（' => '(',
                '）' => ')',
                '：' => ':',
                '＝' => '=',
                '！' => '!',
                '＞' => '>',
                '＜' => '<',
                '＆' => '&',
                '｜' => '|',
                other => other,
            }
        })
        .collect()
}

fn lex(source: &str) -> Result<Vec<(Tok, usize)>, SegmentError> {
    let chars: Vec<char> = half_width_outside_quotes(source);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(col, "unterminated string: a closing \" is missing")),
                    Some('"') => break,
                    Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\')) => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            // Inside `tag:"…"` the string belongs to the word before it.
            if let Some((Tok::Word(w), _)) = out.last_mut() {
                if w.ends_with(':') {
                    w.push_str(&s);
                    i += 1;
                    continue;
                }
            }
            out.push((Tok::Str(s), col));
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let op = ["!=", ">=", "<=", "&&", "||"]
            .into_iter()
            .find(|o| two == *o)
            .or_else(|| {
                ["=", ">", "<", "(", ")", "!"]
                    .into_iter()
                    .find(|o| o.starts_with(c))
            });
        if let Some(op) = op {
            out.push((Tok::Op(op), col));
            i += op.len();
            continue;
        }
        if is_word_char(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), col));
            continue;
        }
        return Err(err(col, &format!("unexpected character `{c}`")));
    }
    Ok(out)
}

impl Parser {
    fn peek_word(&self, words: &[&str]) -> bool {
        matches!(self.toks.get(self.pos), Some((Tok::Word(w), _)) if words.iter().any(|k| w.eq_ignore_ascii_case(k)))
    }

    fn peek_op(&self, ops: &[&str]) -> bool {
        matches!(self.toks.get(self.pos), Some((Tok::Op(o), _)) if ops.contains(o))
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1)
    }

    fn found(&self) -> String {
        self.toks
            .get(self.pos)
            .map_or("end of input".to_string(), |(t, _)| show(t))
    }

    fn or(&mut self) -> Result<Segment, SegmentError> {
        let mut left = self.and()?;
        while self.peek_word(&["or"]) || self.peek_op(&["||"]) {
            self.pos += 1;
            left = Segment::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Segment, SegmentError> {
        let mut left = self.not()?;
        while self.peek_word(&["and"]) || self.peek_op(&["&&"]) {
            self.pos += 1;
            left = Segment::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Segment, SegmentError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                self.col(),
                &format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let result = if self.peek_word(&["not"]) || self.peek_op(&["!"]) {
            self.pos += 1;
            self.not().map(|s| Segment::Not(Box::new(s)))
        } else {
            self.atom()
        };
        self.depth -= 1;
        result
    }

    fn atom(&mut self) -> Result<Segment, SegmentError> {
        let col = self.col();
        match self.toks.get(self.pos).cloned() {
            Some((Tok::Op("("), _)) => {
                self.pos += 1;
                let inner = self.or()?;
                if !self.peek_op(&[")"]) {
                    return Err(err(
                        self.col(),
                        &format!(
                            "expected `)` to close the `(` at column {col}, found {}",
                            self.found()
                        ),
                    ));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some((Tok::Word(w), _)) => {
                self.pos += 1;
                self.condition(&w, col)
            }
            _ => Err(err(
                col,
                &format!("expected a condition ({FIELDS}), found {}", self.found()),
            )),
        }
    }

    fn condition(&mut self, w: &str, col: usize) -> Result<Segment, SegmentError> {
        let lower = w.to_ascii_lowercase();
        if let Some(tag) = w.strip_prefix("tag:") {
            if tag.is_empty() {
                return Err(err(col, "tag: needs a tag name, e.g. tag:vip"));
            }
            return Ok(Segment::Tag(tag.to_string()));
        }
        match lower.as_str() {
            "subscribed" => return Ok(Segment::Subscribed),
            "in_cs_window" => return Ok(Segment::InCsWindow),
            "has_attr" => return Ok(Segment::HasAttr(self.value("an attribute name")?)),
            "subscribed_within" => return Ok(Segment::SubscribedWithin(self.duration()?)),
            "last_message_within" => return Ok(Segment::LastMessageWithin(self.duration()?)),
            "last_message_before" => return Ok(Segment::LastMessageBefore(self.duration()?)),
            _ => {}
        }
        let named = |p: &str| {
            w.strip_prefix(p)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        if lower == "scene" {
            let cmp = self.cmp()?;
            return Ok(Segment::Scene(cmp, self.value("a scene")?));
        }
        if lower == "subscribe_scene" {
            let cmp = self.cmp()?;
            return Ok(Segment::SubscribeScene(
                cmp,
                self.value("a subscribe scene")?,
            ));
        }
        if lower == "staff" {
            if !self.peek_op(&["="]) {
                return Err(err(
                    self.col(),
                    &format!("expected `=` after staff, found {}", self.found()),
                ));
            }
            self.pos += 1;
            return Ok(Segment::Staff(self.value("a staff member's userid")?));
        }
        if lower == "any_scene" {
            if !self.peek_op(&["="]) {
                return Err(err(
                    self.col(),
                    &format!("expected `=` after any_scene, found {}", self.found()),
                ));
            }
            self.pos += 1;
            return Ok(Segment::AnyScene(self.value("a scene")?));
        }
        if lower == "person.follows" || lower == "person.staff" {
            if self.alone {
                return Err(err(
                    col,
                    &format!(
                        "`{lower}` asks about the person's other accounts: use it in audiences \
                         (campaigns, follower lists); a rule sees only the follower writing \
                         (person.* 条件只用于人群，规则只看当前粉丝)"
                    ),
                ));
            }
            if !self.peek_op(&["="]) {
                return Err(err(
                    self.col(),
                    &format!("expected `=` after {lower}, found {}", self.found()),
                ));
            }
            self.pos += 1;
            return Ok(if lower == "person.follows" {
                Segment::PersonFollows(self.value("an account id")?)
            } else {
                Segment::PersonStaff(self.value("a staff member's userid")?)
            });
        }
        if let Some(name) = named("attr.") {
            let cmp = self.cmp()?;
            return Ok(Segment::Attr(name, cmp, self.value("a value")?));
        }
        if let Some(name) = named("counter.") {
            let cmp = self.cmp()?;
            return Ok(Segment::Counter(name, cmp, self.number()?));
        }
        if lower == "messages_in" {
            let cmp = self.cmp()?;
            return Ok(Segment::MessagesIn(cmp, self.number()?));
        }
        Err(err(
            col,
            &format!("unknown condition `{w}` (known: {FIELDS})"),
        ))
    }

    fn cmp(&mut self) -> Result<Cmp, SegmentError> {
        let c = match self.toks.get(self.pos) {
            Some((Tok::Op("="), _)) => Cmp::Eq,
            Some((Tok::Op("!="), _)) => Cmp::Ne,
            Some((Tok::Op(">"), _)) => Cmp::Gt,
            Some((Tok::Op(">="), _)) => Cmp::Ge,
            Some((Tok::Op("<"), _)) => Cmp::Lt,
            Some((Tok::Op("<="), _)) => Cmp::Le,
            _ => {
                return Err(err(
                    self.col(),
                    &format!(
                        "expected a comparison (= != > >= < <=), found {}",
                        self.found()
                    ),
                ))
            }
        };
        self.pos += 1;
        Ok(c)
    }

    fn value(&mut self, what: &str) -> Result<String, SegmentError> {
        match self.toks.get(self.pos).cloned() {
            Some((Tok::Str(s), _)) => {
                self.pos += 1;
                Ok(s)
            }
            Some((Tok::Word(w), _))
                if !["and", "or", "not"].contains(&w.to_ascii_lowercase().as_str()) =>
            {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(err(
                self.col(),
                &format!("expected {what}, found {}", self.found()),
            )),
        }
    }

    fn number(&mut self) -> Result<i64, SegmentError> {
        let col = self.col();
        let raw = match self.toks.get(self.pos).cloned() {
            Some((Tok::Word(w), _)) => w,
            Some((Tok::Op("<" | ">" | "="), _)) | None | Some(_) => {
                return Err(err(
                    col,
                    &format!("expected a number, found {}", self.found()),
                ))
            }
        };
        // `-3` lexes as one word.
        let n = raw
            .parse::<i64>()
            .map_err(|_| err(col, &format!("`{raw}` is not a whole number")))?;
        self.pos += 1;
        Ok(n)
    }

    fn duration(&mut self) -> Result<i64, SegmentError> {
        let col = self.col();
        let Some((Tok::Word(w), _)) = self.toks.get(self.pos).cloned() else {
            return Err(err(
                col,
                &format!(
                    "expected a duration such as 7d, 12h or 30m, found {}",
                    self.found()
                ),
            ));
        };
        let (num, unit) = w.split_at(w.len().saturating_sub(1));
        let secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            _ => {
                return Err(err(
                    col,
                    &format!("`{w}` is not a duration: write 7d, 12h or 30m"),
                ))
            }
        };
        let n: i64 = num.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            err(
                col,
                &format!("`{w}` is not a duration: write 7d, 12h or 30m"),
            )
        })?;
        self.pos += 1;
        Ok(n.saturating_mul(secs))
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
        })
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dur(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else {
        format!("{}m", secs / 60)
    }
}

impl fmt::Display for Segment {
    /// A normalised form that parses back to the same segment: operators upper-case,
    /// values quoted, every AND/OR group in parentheses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::And(a, b) => write!(f, "({a} AND {b})"),
            Segment::Or(a, b) => write!(f, "({a} OR {b})"),
            Segment::Not(a) => write!(f, "NOT {a}"),
            Segment::Tag(t) => write!(f, "tag:{}", quoted(t)),
            Segment::Subscribed => f.write_str("subscribed"),
            Segment::InCsWindow => f.write_str("in_cs_window"),
            Segment::HasAttr(a) => write!(f, "has_attr {}", quoted(a)),
            Segment::Scene(c, v) => write!(f, "scene {c} {}", quoted(v)),
            Segment::AnyScene(v) => write!(f, "any_scene = {}", quoted(v)),
            Segment::SubscribeScene(c, v) => write!(f, "subscribe_scene {c} {}", quoted(v)),
            Segment::Staff(v) => write!(f, "staff = {}", quoted(v)),
            Segment::Attr(n, c, v) => write!(f, "attr.{n} {c} {}", quoted(v)),
            Segment::Counter(n, c, v) => write!(f, "counter.{n} {c} {v}"),
            Segment::MessagesIn(c, v) => write!(f, "messages_in {c} {v}"),
            Segment::SubscribedWithin(s) => write!(f, "subscribed_within {}", dur(*s)),
            Segment::LastMessageWithin(s) => write!(f, "last_message_within {}", dur(*s)),
            Segment::LastMessageBefore(s) => write!(f, "last_message_before {}", dur(*s)),
            Segment::PersonFollows(a) => write!(f, "person.follows = {}", quoted(a)),
            Segment::PersonStaff(u) => write!(f, "person.staff = {}", quoted(u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::{CsWindow, SceneVisit};

    const NOW: i64 = 1_000_000_000;
    const DAY: i64 = 86_400;

    #[test]
    fn parses_and_prints_a_normal_form() {
        let cases = [
            ("tag:vip", "tag:\"vip\""),
            (
                "tag:vip AND NOT tag:blocked",
                "(tag:\"vip\" AND NOT tag:\"blocked\")",
            ),
            (
                "tag:a or tag:b and tag:c",
                "(tag:\"a\" OR (tag:\"b\" AND tag:\"c\"))",
            ),
            (
                "(tag:a || tag:b) && !subscribed",
                "((tag:\"a\" OR tag:\"b\") AND NOT subscribed)",
            ),
            (
                "tag:\"老客户\" AND scene = spring-poster",
                "(tag:\"老客户\" AND scene = \"spring-poster\")",
            ),
            ("counter.orders >= 3", "counter.orders >= 3"),
            ("counter.debt < -2", "counter.debt < -2"),
            ("attr.city != \"上海\"", "attr.city != \"上海\""),
            ("messages_in > 10", "messages_in > 10"),
            ("subscribed_within 7d", "subscribed_within 7d"),
            ("last_message_before 36h", "last_message_before 36h"),
            ("last_message_within 90m", "last_message_within 90m"),
            (
                "has_attr email AND in_cs_window",
                "(has_attr \"email\" AND in_cs_window)",
            ),
            ("any_scene = \"store-7\"", "any_scene = \"store-7\""),
            (
                "attr.note = \"say \\\"hi\\\"\"",
                "attr.note = \"say \\\"hi\\\"\"",
            ),
        ];
        for (src, want) in cases {
            let s = Segment::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(s.to_string(), want, "{src}");
            let again = Segment::parse(&s.to_string()).unwrap();
            assert_eq!(again, s, "{src}: the normal form parses back");
        }
    }

    #[test]
    fn mistakes_name_their_column() {
        let cases = [
            ("", 1, "empty expression"),
            ("tag:vip AND", 12, "expected a condition"),
            (
                "(tag:vip OR tag:a",
                18,
                "expected `)` to close the `(` at column 1",
            ),
            ("tag:vip tag:a", 9, "unexpected `tag:a`"),
            ("tags:vip", 1, "unknown condition `tags:vip`"),
            ("counter.orders >= x3", 19, "`x3` is not a whole number"),
            ("counter.orders 3", 16, "expected a comparison"),
            ("subscribed_within 7w", 19, "`7w` is not a duration"),
            ("attr.city = \"上海", 13, "unterminated string"),
            ("tag:vip AND # x", 13, "unexpected character `#`"),
            ("scene =", 8, "expected a scene, found end of input"),
            ("tag:", 1, "tag: needs a tag name"),
            (&"!".repeat(200), 101, "nested more than 100 levels deep"),
        ];
        for (src, column, fragment) in cases {
            let e = Segment::parse(src).expect_err(src);
            assert_eq!(e.column, column, "{src}: {e}");
            assert!(e.message.contains(fragment), "{src}: {e}");
        }
    }

    #[test]
    fn what_a_sync_brings_is_in_the_language() {
        let mut f = follower();
        f.subscribe_scene = Some("ADD_SCENE_QR_CODE".into());
        f.staff.push(crate::follower::StaffLink {
            userid: "zhangsan".into(),
            ..Default::default()
        });
        for (expr, want) in [
            ("subscribe_scene = ADD_SCENE_QR_CODE", true),
            ("subscribe_scene != ADD_SCENE_SEARCH", true),
            ("staff = zhangsan", true),
            ("staff = lisi", false),
            ("NOT staff = lisi AND counter.orders >= 3", true),
        ] {
            let seg = Segment::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(seg.matches(&f, NOW), want, "{expr}");
            let again = Segment::parse(&seg.to_string()).unwrap();
            assert_eq!(again, seg, "{expr} prints as it parses");
        }
        let e = Segment::parse("staff zhangsan").unwrap_err();
        assert!(e.message.contains("expected `=` after staff"), "{e}");
    }

    #[test]
    fn person_conditions_see_the_persons_other_identities() {
        let link = |u: &str| crate::follower::StaffLink {
            userid: u.into(),
            ..Default::default()
        };
        let mut here = follower();
        here.unionid = Some("u1".into());
        let mut at_b = Follower::new("ob");
        at_b.subscribed = true;
        let mut gone_c = Follower::new("oc");
        gone_c.subscribed = false;
        let mut contact = Follower::new("wm1");
        contact.subscribed = true;
        contact.staff.push(link("zhangsan"));
        let others = vec![
            ("b".to_string(), at_b),
            ("c".to_string(), gone_c),
            ("wecom".to_string(), contact),
        ];
        let person = Person {
            account: "a",
            others: &others,
        };
        let alone = Person {
            account: "a",
            others: &[],
        };
        for (expr, with_person, alone_person, seen_alone) in [
            ("person.follows = a", true, true, false),
            ("person.follows = b", true, false, false),
            ("person.follows = c", false, false, false),
            ("person.follows = wecom", true, false, false),
            ("person.follows = nope", false, false, false),
            ("person.staff = zhangsan", true, false, false),
            ("person.staff = lisi", false, false, false),
            ("NOT person.follows = b AND tag:vip", false, true, true),
            (
                "person.follows = b OR person.staff = lisi",
                true,
                false,
                false,
            ),
        ] {
            let seg = Segment::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert!(seg.about_person(), "{expr}");
            assert_eq!(
                seg.matches_person(&here, &person, NOW),
                with_person,
                "{expr}"
            );
            assert_eq!(
                seg.matches_person(&here, &alone, NOW),
                alone_person,
                "{expr} alone"
            );
            assert_eq!(
                seg.matches(&here, NOW),
                seen_alone,
                "{expr} without a person"
            );
            assert_eq!(
                Segment::parse(&seg.to_string()).unwrap(),
                seg,
                "{expr} prints back"
            );
        }
        // An own staff link counts without loading anyone.
        here.staff.push(link("lisi"));
        assert!(Segment::parse("person.staff = lisi")
            .unwrap()
            .matches(&here, NOW));
        // Unsubscribed here: following account a is about this follower.
        here.subscribed = false;
        let own = Segment::parse("person.follows = a").unwrap();
        assert!(!own.matches_person(&here, &person, NOW));
        assert!(!Segment::parse("tag:vip AND staff = x")
            .unwrap()
            .about_person());
        let named =
            Segment::parse("person.follows = b OR NOT (person.follows = c AND tag:x)").unwrap();
        assert_eq!(named.accounts_named(), vec!["b", "c"]);
        let e = Segment::parse_alone("tag:vip AND person.staff = x").unwrap_err();
        assert_eq!(e.column, 13, "{e}");
        assert!(e.message.contains("use it in audiences"), "{e}");
        assert!(Segment::parse_alone("tag:vip AND staff = x").is_ok());
        let e = Segment::parse("person.follows b").unwrap_err();
        assert!(
            e.message.contains("expected `=` after person.follows"),
            "{e}"
        );
        let e = Segment::parse("person.follows =").unwrap_err();
        assert!(e.message.contains("expected an account id"), "{e}");
    }

    fn follower() -> Follower {
        let mut f = Follower::new("o1");
        f.subscribed = true;
        f.last_subscribed_at = Some(NOW - 3 * DAY);
        f.last_inbound_at = Some(NOW - 40 * DAY);
        f.first_scene = Some("spring-poster".into());
        f.scenes.push(SceneVisit {
            scene: "store-7".into(),
            at: NOW - DAY,
        });
        f.tags.insert("vip".into());
        f.attributes.insert("city".into(), "上海".into());
        f.counters.insert("orders".into(), 3);
        f.messages_in = 12;
        f.cs_window = Some(CsWindow {
            remaining: 1,
            until: NOW + 10,
        });
        f
    }

    #[test]
    fn evaluates_every_condition() {
        let f = follower();
        let never = Follower::new("o2");
        let cases = [
            ("tag:vip", true, false),
            ("NOT tag:vip", false, true),
            ("tag:vip AND tag:blocked", false, false),
            ("tag:vip OR tag:blocked", true, false),
            ("subscribed", true, false),
            ("in_cs_window", true, false),
            ("has_attr city", true, false),
            ("scene = spring-poster", true, false),
            ("scene != spring-poster", false, true),
            ("any_scene = store-7", true, false),
            ("any_scene = spring-poster", true, false),
            ("attr.city = 上海", true, false),
            ("attr.city != 上海", false, true),
            ("counter.orders >= 3", true, false),
            ("counter.orders > 3", false, false),
            ("counter.orders = 0", false, true),
            ("messages_in > 10", true, false),
            ("subscribed_within 3d", true, false),
            ("subscribed_within 2d", false, false),
            ("last_message_before 30d", true, true),
            ("last_message_before 40d", false, true),
            ("last_message_within 40d", true, false),
        ];
        for (src, on_f, on_never) in cases {
            let s = Segment::parse(src).unwrap();
            assert_eq!(s.matches(&f, NOW), on_f, "{src} on a follower");
            assert_eq!(
                s.matches(&never, NOW),
                on_never,
                "{src} on a blank follower"
            );
        }
        let closed = Segment::parse("in_cs_window").unwrap();
        assert!(!closed.matches(&f, NOW + 10), "window over");
    }

    #[test]
    fn full_width_punctuation_reads_as_ascii_outside_quotes() {
        let typed =
            Segment::parse("（tag：vip ｜｜ tag：“老客户（VIP）”）＆＆ counter.orders ＞＝ 3")
                .unwrap();
        let ascii =
            Segment::parse("(tag:vip || tag:\"老客户（VIP）\") && counter.orders >= 3").unwrap();
        assert_eq!(typed, ascii);
        assert_eq!(typed.to_string(), ascii.to_string());
        // Columns still count the characters as typed.
        let e = Segment::parse("tag：vip ＆＆ ＞").unwrap_err();
        assert_eq!(e.column, 12, "{e}");
    }
}
