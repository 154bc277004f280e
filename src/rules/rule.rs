//! One rule, checked: a raw `[[rule]]` → a compiled [`Rule`] with its [`Trigger`].
//!
//! Every check of a rule runs even after another failed, so one pass reports all of its
//! mistakes; each check records its errors and returns `Err(Reported)`. The trigger goes
//! into the table's indexes (which is what matching uses); the rule keeps it too, with
//! the position of every keyword, regex and value, for the warnings of `warnings.rs`.

use std::collections::HashMap;

use regex::Regex;
use toml::Spanned;

use super::action::Actions;
use super::error::{FileErrors, Pos};
use super::event::{EventKind, Filter};
use super::followup::FollowUpTemplate;
use super::format::{items, MatchKind, RawRule, Strings};
use super::matcher::regex_builder;
use super::normalise::normalise;
use super::render::Template;
use super::reply::ReplyTemplate;
use super::RuleContext;

/// A compiled rule: what runs once its trigger matched.
#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub priority: i64,
    pub if_tags: Vec<String>,
    pub unless_tags: Vec<String>,
    /// `when`: a segment expression the follower must match (at the message's time).
    pub when: Option<crate::segment::Segment>,
    pub reply: Option<ReplyTemplate>,
    pub actions: Actions,
    pub continues: bool,
    /// Sent after the reply, in order; at most `MAX_FOLLOWUPS`.
    pub followups: Vec<FollowUpTemplate>,
    /// The coupon batch this rule issues from, if any.
    pub issue_coupon: Option<String>,
    /// The text reply when the coupon is refused (out of stock, limit reached…).
    pub coupon_refused: Option<Template>,
    /// Whether a template uses `{match.N}`: captures are computed only then.
    pub uses_captures: bool,
    /// The file the rule is written in: an index into the table's file names.
    pub file: usize,
    /// Where its `name` is written.
    pub at: Pos,
    /// Its trigger as written (the indexes hold their own copy, shaped for matching).
    pub trigger: Trigger,
}

impl Rule {
    /// Whether the rule, once tried, surely ends the search: no condition can skip it
    /// and it does not `continue`. Such a rule hides every rule tried after it.
    pub fn always_ends(&self) -> bool {
        self.if_tags.is_empty()
            && self.unless_tags.is_empty()
            && self.when.is_none()
            && !self.continues
    }

    /// Every template of the rule: its reply's, its `set` values', its follow-ups'.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let reply = self.reply.iter().flat_map(ReplyTemplate::templates);
        let set = self.actions.set.iter().map(|(_, t)| t);
        let followups = self.followups.iter().flat_map(FollowUpTemplate::templates);
        reply
            .chain(set)
            .chain(followups)
            .chain(self.coupon_refused.iter())
    }
}

/// A rule's validated trigger.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    /// All keywords of a rule share one match kind (`match` applies to the list).
    Text {
        keywords: Vec<Written<String>>,
        match_kind: MatchKind,
        regexes: Vec<Written<Regex>>,
        intents: Vec<Written<usize>>,
    },
    Event {
        kind: EventKind,
        values: Option<Vec<Written<String>>>,
    },
    Default,
}

/// A value and where it is written: keywords normalised, regexes compiled.
#[derive(Debug, Clone)]
pub(crate) struct Written<T> {
    pub value: T,
    pub at: Pos,
}

/// Checks and compiles `raw`, written in file number `file`; `None` if it has any error
/// (each recorded in `errors`). `intents` maps intent names to their ids;
/// `known_intents` lists them for messages; `context` is what the config defines that a
/// rule may name (coupon batches).
pub(crate) fn compile_rule(
    raw: &RawRule,
    file: usize,
    errors: &mut FileErrors<'_>,
    intents: &HashMap<&str, usize>,
    known_intents: &str,
    context: &RuleContext,
) -> Option<Rule> {
    RuleCx {
        errors,
        intents,
        known_intents,
        context,
    }
    .rule(raw, file)
    .ok()
}

/// Normalises a keyword or phrase; empty after normalisation is an error.
pub(crate) fn keyword(
    s: &Spanned<String>,
    what: &str,
    errors: &mut FileErrors<'_>,
) -> Option<String> {
    let normalised = normalise(s.get_ref());
    if normalised.is_empty() {
        let message = format!(
            "{what} {:?} is empty after normalisation (whitespace and punctuation at the ends are ignored)",
            s.get_ref()
        );
        errors.push(s.span().start, message);
        return None;
    }
    Some(normalised)
}

/// The error was recorded in the file's errors; the caller just gives up on the value.
#[derive(Debug)]
struct Reported;

/// Collects every item of an iterator of checks, so that each one reports its error.
fn all<T>(checks: impl IntoIterator<Item = Result<T, Reported>>) -> Result<Vec<T>, Reported> {
    let checks: Vec<Result<T, Reported>> = checks.into_iter().collect();
    checks.into_iter().collect()
}

/// Compiling one rule of one file. Every check runs even after another failed, so that
/// one pass reports all of a rule's mistakes.
struct RuleCx<'e, 'a> {
    errors: &'e mut FileErrors<'a>,
    intents: &'e HashMap<&'e str, usize>,
    known_intents: &'e str,
    context: &'e RuleContext,
}

impl RuleCx<'_, '_> {
    fn rule(&mut self, raw: &RawRule, file: usize) -> Result<Rule, Reported> {
        let before = self.errors.errors.len();
        let name = raw.name.get_ref();
        if name.trim().is_empty() {
            self.errors
                .push(raw.name.span().start, "rule name is empty");
        }
        let trigger = self.trigger(raw);
        let groups = match &trigger {
            Ok(Trigger::Text { regexes, .. }) => {
                regexes.iter().map(|r| r.value.captures_len() - 1).max()
            }
            Ok(_) => None,
            // The trigger is broken and reported: don't pile `{match.N}` errors on top.
            Err(Reported) => Some(usize::MAX),
        };
        let reply = raw
            .reply
            .as_ref()
            .map(|r| ReplyTemplate::compile(r, groups, self.errors).ok_or(Reported));
        let actions = self.actions(raw, groups);
        let followups = raw
            .followups
            .as_ref()
            .map(|list| FollowUpTemplate::compile_all(list, groups, self.errors).ok_or(Reported));
        let if_tags = self.tags(&raw.if_tag);
        let unless_tags = self.tags(&raw.unless_tag);
        let when = raw.when.as_ref().map(|w| self.condition(w)).transpose();
        let issue_coupon = raw
            .issue_coupon
            .as_ref()
            .map(|b| b.get_ref().trim().to_string());
        if let (Some(b), Some(name)) = (&raw.issue_coupon, &issue_coupon) {
            if name.is_empty() {
                self.errors
                    .push(b.span().start, "issue_coupon names no batch");
            } else if !self.context.coupon_batches.contains(name) {
                let message = format!(
                    "unknown coupon batch `{name}` ({})",
                    self.context.known_coupon_batches()
                );
                self.errors.push(b.span().start, message);
            }
        }
        let coupon_refused = raw
            .coupon_refused
            .as_ref()
            .map(|t| Template::compile(t, groups, self.errors).ok_or(Reported));
        if let (Some(t), None) = (&raw.coupon_refused, &raw.issue_coupon) {
            self.errors.push(
                t.span().start,
                "coupon_refused is the reply when `issue_coupon` fails; this rule issues none",
            );
        }
        let (trigger, reply, actions, followups, coupon_refused) = (
            trigger?,
            reply.transpose()?,
            actions?,
            followups.transpose()?,
            coupon_refused.transpose()?,
        );
        if self.errors.errors.len() > before {
            return Err(Reported);
        }
        let mut rule = Rule {
            name: name.clone(),
            priority: raw.priority,
            if_tags: if_tags?,
            unless_tags: unless_tags?,
            when: when?,
            reply,
            actions,
            continues: raw.continues,
            followups: followups.unwrap_or_default(),
            issue_coupon,
            coupon_refused,
            uses_captures: false,
            file,
            at: self.errors.position(raw.name.span().start),
            trigger,
        };
        let uses_captures = rule.templates().any(|t| t.match_groups().next().is_some());
        rule.uses_captures = uses_captures;
        Ok(rule)
    }

    fn trigger(&mut self, raw: &RawRule) -> Result<Trigger, Reported> {
        let name = raw.name.get_ref();
        let default = raw.default.as_ref().filter(|d| *d.get_ref());
        let present: Vec<(&str, usize)> = [
            ("keywords", raw.keywords.as_ref().map(Spanned::span)),
            ("regex", raw.regex.as_ref().map(Spanned::span)),
            ("intent", raw.intent.as_ref().map(Spanned::span)),
            ("event", raw.event.as_ref().map(Spanned::span)),
            ("default", default.map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?.start)))
        .collect();
        let text_keys = present
            .iter()
            .filter(|(k, _)| matches!(*k, "keywords" | "regex" | "intent"))
            .count();
        // Text triggers combine; each of the others is a kind of its own.
        let kinds = present.len() - text_keys.saturating_sub(1);
        let shape = match kinds {
            0 => {
                let message = format!(
                    "rule `{name}` has no trigger: give `keywords`, `regex`, `intent`, `event` or `default = true`"
                );
                self.errors.push(raw.name.span().start, message);
                Err(Reported)
            }
            1 => Ok(()),
            _ => {
                let found: Vec<String> = present.iter().map(|(k, _)| format!("`{k}`")).collect();
                let message = format!(
                    "rule `{name}` mixes trigger kinds ({}): a rule has text triggers (`keywords`, `regex`, \
                     `intent`), one `event`, or `default = true`",
                    found.join(", ")
                );
                // At the last of them: usually the one added by mistake.
                self.errors
                    .push(present.last().map_or(0, |(_, at)| *at), message);
                Err(Reported)
            }
        };
        if let (Some(m), None) = (&raw.match_kind, &raw.keywords) {
            self.errors.push(
                m.span().start,
                "`match` applies to `keywords`, and this rule has none (an intent takes its match kind in [intents])",
            );
        }
        let event = self.event(raw);
        let keywords = self.keywords(raw);
        let regexes = self.regexes(raw);
        let intents = self.intent_refs(raw);
        shape?;
        if default.is_some() {
            return Ok(Trigger::Default);
        }
        if let Some(event) = event? {
            return Ok(event);
        }
        let (keywords, match_kind) = keywords?;
        Ok(Trigger::Text {
            keywords,
            match_kind,
            regexes: regexes?,
            intents: intents?,
        })
    }

    /// The event trigger, `scene`/`key` included; `Ok(None)` when the rule has no `event`
    /// (a `scene` or `key` is then an error).
    fn event(&mut self, raw: &RawRule) -> Result<Option<Trigger>, Reported> {
        let kind = raw.event.as_ref().map(|event| {
            EventKind::parse(event.get_ref()).ok_or_else(|| {
                let valid: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                let message = format!(
                    "unknown event `{}` (valid events: {})",
                    event.get_ref(),
                    valid.join(", ")
                );
                self.errors.push(event.span().start, message);
                Reported
            })
        });
        let known = kind.as_ref().and_then(|k| k.as_ref().ok().copied());
        let scene = self.filter(
            &raw.scene,
            "scene",
            Filter::Scene,
            raw.event.is_some(),
            known,
        );
        let key = self.filter(&raw.key, "key", Filter::Key, raw.event.is_some(), known);
        let Some(kind) = kind else {
            return scene.and(key).map(|_| None);
        };
        let (kind, scene, key) = (kind?, scene?, key?);
        Ok(Some(Trigger::Event {
            kind,
            values: scene.or(key),
        }))
    }

    /// A `scene` or `key` list (`Ok(None)` when absent), checked against the event kind.
    fn filter(
        &mut self,
        values: &Option<Spanned<Strings>>,
        field: &str,
        filter: Filter,
        has_event: bool,
        kind: Option<EventKind>,
    ) -> Result<Option<Vec<Written<String>>>, Reported> {
        let Some(values) = values else {
            return Ok(None);
        };
        let at = values.span().start;
        let allowed: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| k.filter() == filter)
            .map(|k| k.name())
            .collect();
        let allowed = allowed.join(", ");
        match kind {
            _ if !has_event => {
                self.errors.push(
                    at,
                    format!("`{field}` needs an `event` trigger ({allowed})"),
                );
                return Err(Reported);
            }
            // An unknown event name is reported already.
            None => return Err(Reported),
            Some(kind) if kind.filter() != filter => {
                let message = format!(
                    "`{field}` applies to {allowed} events, not `{}`",
                    kind.name()
                );
                self.errors.push(at, message);
                return Err(Reported);
            }
            Some(_) => {}
        }
        let values = self.non_empty(values, field)?;
        all(values.into_iter().map(|v| {
            if v.get_ref().is_empty() {
                let message = format!("empty {field}: use \"*\" for any non-empty {field}");
                self.errors.push(v.span().start, message);
                return Err(Reported);
            }
            Ok(self.written(v.span().start, v.into_inner()))
        }))
        .map(Some)
    }

    fn keywords(&mut self, raw: &RawRule) -> Result<(Vec<Written<String>>, MatchKind), Reported> {
        let kind = raw
            .match_kind
            .as_ref()
            .map_or(MatchKind::Exact, |m| *m.get_ref());
        let Some(list) = &raw.keywords else {
            return Ok((Vec::new(), kind));
        };
        let keywords = self.non_empty(list, "keyword")?;
        let keywords = all(keywords.iter().map(|k| {
            let normalised = keyword(k, "keyword", self.errors).ok_or(Reported)?;
            Ok(self.written(k.span().start, normalised))
        }))?;
        Ok((keywords, kind))
    }

    fn regexes(&mut self, raw: &RawRule) -> Result<Vec<Written<Regex>>, Reported> {
        let Some(list) = &raw.regex else {
            return Ok(Vec::new());
        };
        let patterns = self.non_empty(list, "regex")?;
        all(patterns
            .iter()
            .map(|pattern| match regex_builder(pattern.get_ref()).build() {
                Ok(regex) => Ok(self.written(pattern.span().start, regex)),
                Err(e) => {
                    let message = format!(
                        "invalid regex `{}`: {}",
                        pattern.get_ref(),
                        regex_message(&e)
                    );
                    self.errors.push(pattern.span().start, message);
                    Err(Reported)
                }
            }))
    }

    fn intent_refs(&mut self, raw: &RawRule) -> Result<Vec<Written<usize>>, Reported> {
        let Some(list) = &raw.intent else {
            return Ok(Vec::new());
        };
        let names = self.non_empty(list, "intent")?;
        all(names
            .iter()
            .map(|name| match self.intents.get(name.get_ref().as_str()) {
                Some(&id) => Ok(self.written(name.span().start, id)),
                None => {
                    let message = format!(
                        "unknown intent `{}` ({})",
                        name.get_ref(),
                        self.known_intents
                    );
                    self.errors.push(name.span().start, message);
                    Err(Reported)
                }
            }))
    }

    fn actions(&mut self, raw: &RawRule, groups: Option<usize>) -> Result<Actions, Reported> {
        let remove_tags = self.tags(&raw.remove_tags);
        let add_tags = self.tags(&raw.add_tags);
        let set = all(raw.set.iter().flatten().map(|(key, value)| {
            let template = Template::compile(value, groups, self.errors).ok_or(Reported);
            if key.trim().is_empty() {
                self.errors
                    .push(value.span().start, "empty attribute name in `set`");
                return Err(Reported);
            }
            Ok((key.clone(), template?))
        }));
        let incr = all(raw.incr.iter().flatten().map(|(counter, by)| {
            if counter.trim().is_empty() {
                self.errors
                    .push(by.span().start, "empty counter name in `incr`");
                return Err(Reported);
            }
            Ok((counter.clone(), *by.get_ref()))
        }));
        Ok(Actions {
            remove_tags: remove_tags?,
            add_tags: add_tags?,
            set: set?,
            incr: incr?,
        })
    }

    /// Tag names, as written: tags are identifiers, not text, so they are not normalised.
    /// `when`: the expression parsed, a mistake reported at its column inside the string.
    fn condition(&mut self, w: &Spanned<String>) -> Result<crate::segment::Segment, Reported> {
        crate::segment::Segment::parse_alone(w.get_ref()).map_err(|e| {
            let offset = super::compile::expression_offset(w, e.column);
            self.errors.push(offset, format!("when: {}", e.message));
            Reported
        })
    }

    fn tags(&mut self, list: &Option<Spanned<Strings>>) -> Result<Vec<String>, Reported> {
        let tags = list.as_ref().map(items).unwrap_or_default();
        all(tags.into_iter().map(|tag| {
            if tag.get_ref().trim().is_empty() {
                self.errors.push(tag.span().start, "empty tag name");
                return Err(Reported);
            }
            Ok(tag.into_inner())
        }))
    }

    fn written<T>(&self, offset: usize, value: T) -> Written<T> {
        Written {
            value,
            at: self.errors.position(offset),
        }
    }

    fn non_empty(
        &mut self,
        list: &Spanned<Strings>,
        what: &str,
    ) -> Result<Vec<Spanned<String>>, Reported> {
        let items = items(list);
        if items.is_empty() {
            self.errors
                .push(list.span().start, format!("empty {what} list"));
            return Err(Reported);
        }
        Ok(items)
    }
}

/// The gist of a regex error, on one line: its Display is a multi-line excerpt whose last
/// line reads "error: …".
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: ").map(str::to_string))
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_messages_are_one_line() {
        let e = regex_builder("(").build().expect_err("bad");
        assert_eq!(regex_message(&e), "unclosed group");
    }
}
