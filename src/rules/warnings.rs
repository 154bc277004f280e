//! Warnings: rules that compile but probably do not do what their author meant.
//!
//! Errors refuse a folder; warnings never do. They point at `file:line:column` of the
//! value at fault, like errors, and are computed from the compiled table (positions kept
//! in [`Rule`], templates and intents), on demand: `siyu check` asks, serving never does.
//!
//! What is caught:
//!
//! - **Shadowed triggers**: a keyword of rule B is shadowed when, for every message it
//!   matches, one rule A is tried before B (by the real order: priority, specificity,
//!   declaration) and A surely ends the search (no `if_tag`/`unless_tag`, no `continue`).
//!   All of B's keywords share one match kind, and regexes and intents are less specific,
//!   so B's specificity on such messages is its keyword's. For an *exact* keyword `k` the
//!   only message is `k` itself, and the table's own matcher and order decide, so every
//!   kind of trigger of A counts (keyword, phrase, regex). For a *prefix* or *contains*
//!   keyword `k`, A must match every text that starts with / contains `k`: A's exact
//!   keywords never do; A's prefix keyword `p` does when `k` starts with `p` (for a
//!   prefix `k`); A's contains keyword `c` does when `k` contains `c`. A contains `优惠`
//!   shadows B's contains `优惠券` at equal priority when A is declared first, and at
//!   any specificity when A has the higher priority. Intent phrases count the same way,
//!   at the intent's specificity. A's regexes are not compared with B's prefix and
//!   contains keywords (whether one regex covers every such text is not decidable
//!   cheaply), and B's regexes and intents are never reported, so a rule that has one is
//!   never called dead. Event rules: B's `scene`/`key` value, its `"*"`, or B's
//!   unfiltered trigger is shadowed when the event index's own candidates, in the real
//!   order, put such an A first. Default rules: by an earlier default A. When every
//!   trigger of B is shadowed, one warning says that B can never fire. Several rules
//!   whose conditions together always hold (`if_tag = ["vip"]` and `unless_tag =
//!   ["vip"]`) are not combined: only one rule alone shadows.
//! - **Duplicate keywords**: the same normalised keyword with the same match kind in two
//!   rules of the same priority (reported on the later rule, unless it is reported
//!   shadowed already).
//! - **Unused intents**: defined in `[intents]`, named by no rule.
//! - **Placeholders that may render empty**: `{attr.X}` when no rule's `set` sets `X`
//!   (`wecom_staff` is set by the engine); `{match.N}` when group N of one of the rule's
//!   regexes is optional or missing, or when the rule can also fire by a keyword or
//!   intent (which capture nothing); `{scene}`/`{first_scene}` outside a `subscribe`,
//!   `scan` or `add_external_contact` rule with a `scene` filter; `{content}` in an event
//!   rule. A placeholder with a fallback (`{attr.name|朋友}`) is never reported: its
//!   author said what an empty value shows.
//! - **Regexes that match the empty string** (`a*`, `^$`, `(x)?`): they match more
//!   messages than they seem to, often all of them.
//! - **Follow-ups WeChat would refuse**: customer-service messages go out only inside a
//!   window the follower opened. None opens after `unsubscribe`, `del_external_contact`,
//!   the `*_finish` reports, `view` and `location`, and WeCom events (`enter_agent`,
//!   `add_external_contact`) cannot use the customer-service API at all, so an event rule
//!   of those kinds with follow-ups is reported. After `subscribe`, `scan`, `click` and
//!   `scancode` the window is 3 messages within a minute (unless the follower wrote in
//!   the last 48 hours, which opens 5 within 48 hours): a fourth follow-up, or one later
//!   than 60 seconds, is reported as one that may be refused. Message rules (text,
//!   default) get 5 within 48 hours, which the format's limits (5, a day) always fit.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

use regex::Regex;

use super::error::Pos;
use super::event::{EventKind, Filter};
use super::format::MatchKind;
use super::matcher::{regex_builder, specificity, Candidate};
use super::render::Field;
use super::rule::{Rule, Trigger};
use super::RuleTable;

/// Something in a rule file worth a second look. Never refuses the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleWarning {
    /// `replies/a.toml:12:5: warning: …`, as errors but marked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// The attribute the engine sets itself (the WeCom staff member who added a contact).
const ENGINE_ATTRIBUTES: [&str; 1] = ["wecom_staff"];

impl RuleTable {
    /// Every warning about this table, in file order, then line and column.
    pub fn warnings(&self) -> Vec<RuleWarning> {
        let mut found = Found {
            table: self,
            warnings: Vec::new(),
        };
        found.shadowed_rules();
        found.unused_intents();
        found.placeholders();
        found.empty_regexes();
        found.followup_windows();
        let mut warnings = found.warnings;
        warnings.sort_by_key(|w| (w.0, w.1));
        warnings
            .into_iter()
            .map(|(file, at, message)| RuleWarning {
                file: self.files[file].clone(),
                line: at.line,
                column: at.column,
                message,
            })
            .collect()
    }
}

/// Warnings found so far: (file number, position, message).
struct Found<'t> {
    table: &'t RuleTable,
    warnings: Vec<(usize, Pos, String)>,
}

/// Rule `by` takes every message (or event) some trigger would have fired the shadowed
/// rule for, and is tried first for the reason `why`.
struct Shadow {
    by: usize,
    why: &'static str,
}

impl Found<'_> {
    fn push(&mut self, file: usize, at: Pos, message: String) {
        self.warnings.push((file, at, message));
    }

    /// `rule `a` (replies/a.toml:3)`.
    fn named(&self, id: usize) -> String {
        let rule = &self.table.rules[id];
        format!(
            "rule `{}` ({}:{})",
            rule.name, self.table.files[rule.file], rule.at.line
        )
    }

    /// Follow-ups on an event after which WeChat opens no customer-service window (or on
    /// WeCom, which has no customer-service API): they could only ever be refused.
    fn shadowed_rules(&mut self) {
        let table = self.table;
        // (keyword, kind, priority) → the first rule that has it, for duplicates.
        let mut first: HashMap<(&str, MatchKind, i64), usize> = HashMap::new();
        for (id, rule) in table.rules.iter().enumerate() {
            if let Trigger::Text {
                keywords,
                match_kind,
                ..
            } = &rule.trigger
            {
                for k in keywords {
                    first
                        .entry((k.value.as_str(), *match_kind, rule.priority))
                        .or_insert(id);
                }
            }
        }
        for (id, rule) in table.rules.iter().enumerate() {
            // (what, where it is written, its shadow if any); `alive` counts triggers that
            // are not analysed and so may fire.
            let mut triggers: Vec<(String, Pos, Option<Shadow>)> = Vec::new();
            let mut alive = 0;
            match &rule.trigger {
                Trigger::Text {
                    keywords,
                    match_kind,
                    regexes,
                    intents,
                } => {
                    alive = regexes.len() + intents.len();
                    for k in keywords {
                        let shadow = self.keyword_shadow(id, &k.value, *match_kind);
                        let what = format!("keyword {:?}", k.value);
                        if shadow.is_none() {
                            let earlier = first[&(k.value.as_str(), *match_kind, rule.priority)];
                            if earlier != id {
                                let message = format!(
                                    "{what} ({}) of rule `{}` is also a keyword of {} at the same \
                                     priority; that rule is tried first",
                                    kind_name(*match_kind),
                                    rule.name,
                                    self.named(earlier)
                                );
                                self.push(rule.file, k.at, message);
                            }
                        }
                        triggers.push((what, k.at, shadow));
                    }
                }
                Trigger::Event { kind, values } => {
                    let field = match kind.filter() {
                        Filter::Key => "key",
                        _ => "scene",
                    };
                    match values {
                        None => {
                            let shadow = self.first_before(
                                id,
                                table.events.candidates(*kind, None),
                                specificity::EVENT_UNFILTERED,
                            );
                            triggers.push((format!("event {}", kind.name()), rule.at, shadow));
                        }
                        Some(values) => {
                            for v in values {
                                let (candidates, own) = if v.value == "*" {
                                    let c = table.events.candidates_unlisted(*kind);
                                    (c, specificity::EVENT_ANY_VALUE)
                                } else {
                                    let c = table.events.candidates(*kind, Some(&v.value));
                                    (c, specificity::EVENT_VALUE)
                                };
                                let shadow = self.first_before(id, candidates, own);
                                triggers.push((format!("{field} {:?}", v.value), v.at, shadow));
                            }
                        }
                    }
                }
                Trigger::Default => {
                    let candidates = table.defaults.iter().map(|&rule| Candidate {
                        rule,
                        specificity: 0,
                        regex: None,
                    });
                    let shadow = self.first_before(id, candidates.collect(), 0);
                    triggers.push(("default".to_string(), rule.at, shadow));
                }
            }
            self.report_shadows(rule, alive, triggers);
        }
    }

    /// One warning per shadowed trigger, or one for the rule when all are shadowed.
    fn report_shadows(
        &mut self,
        rule: &Rule,
        alive: usize,
        triggers: Vec<(String, Pos, Option<Shadow>)>,
    ) {
        let shadows: Vec<(&String, &Shadow)> = triggers
            .iter()
            .filter_map(|(what, _, shadow)| Some((what, shadow.as_ref()?)))
            .collect();
        if alive == 0 && !triggers.is_empty() && shadows.len() == triggers.len() {
            let (_, first) = shadows[0];
            let one = shadows
                .iter()
                .all(|(_, s)| s.by == first.by && s.why == first.why);
            let message = if one {
                format!(
                    "rule `{}` can never fire: {} takes everything it matches and is tried first \
                     ({})",
                    rule.name,
                    self.named(first.by),
                    first.why
                )
            } else {
                let causes: Vec<String> = shadows
                    .iter()
                    .map(|(what, s)| format!("{what} by {}, {}", self.named(s.by), s.why))
                    .collect();
                format!(
                    "rule `{}` can never fire: each of its triggers is taken first by a rule that \
                     always ends the search ({})",
                    rule.name,
                    causes.join("; ")
                )
            };
            self.push(rule.file, rule.at, message);
            return;
        }
        for (what, at, shadow) in triggers {
            if let Some(s) = shadow {
                let message = format!(
                    "{what} of rule `{}` never fires: {} takes everything it matches and is \
                     tried first ({})",
                    rule.name,
                    self.named(s.by),
                    s.why
                );
                self.push(rule.file, at, message);
            }
        }
    }

    /// For keyword `k` of rule `b`: the rule, if any, tried first for every text `k`
    /// matches and sure to end the search there.
    fn keyword_shadow(&self, b: usize, k: &str, kind: MatchKind) -> Option<Shadow> {
        let table = self.table;
        // Every rule that can cover `k` matches the text `k` itself, so the matcher's
        // candidates for that text are the only rules to look at.
        let candidates = table.text.candidates(k);
        if kind == MatchKind::Exact {
            // The only text `k` matches: the real candidates and order decide.
            return self.first_before(b, candidates, specificity::EXACT);
        }
        let own = specificity::of(kind);
        let covering = candidates.into_iter().filter_map(|c| {
            let a = &table.rules[c.rule];
            let spec = self.covering(a, k, kind)?;
            Some(Candidate {
                specificity: spec,
                ..c
            })
        });
        self.first_before(b, covering.collect(), own)
    }

    /// The specificity of rule `a`'s most specific trigger that matches every text that
    /// `k` (of match kind `kind`) matches; `None` if it has none.
    fn covering(&self, a: &Rule, k: &str, kind: MatchKind) -> Option<u8> {
        let Trigger::Text {
            keywords,
            match_kind,
            intents,
            ..
        } = &a.trigger
        else {
            return None;
        };
        let by_keyword = keywords
            .iter()
            .any(|t| covers(&t.value, *match_kind, k, kind))
            .then(|| specificity::of(*match_kind));
        let by_intent = intents
            .iter()
            .any(|i| {
                let intent = &self.table.intents[i.value];
                let mut phrases = intent.phrases.iter();
                phrases.any(|p| covers(p, intent.match_kind, k, kind))
            })
            .then_some(specificity::INTENT);
        by_keyword.max(by_intent)
    }

    /// The first candidate tried before rule `b` (which would be tried with specificity
    /// `own`) that surely ends the search.
    fn first_before(&self, b: usize, candidates: Vec<Candidate>, own: u8) -> Option<Shadow> {
        let rules = &self.table.rules;
        let order = |rule: usize, spec: u8| (Reverse(rules[rule].priority), Reverse(spec), rule);
        let mine = order(b, own);
        let first = candidates
            .into_iter()
            .filter(|c| c.rule != b && rules[c.rule].always_ends())
            .map(|c| (order(c.rule, c.specificity), c))
            .filter(|(key, _)| *key < mine)
            .min_by_key(|(key, _)| *key)?
            .1;
        let a = &rules[first.rule];
        let why = if a.priority > rules[b].priority {
            "higher priority"
        } else if first.specificity > own {
            "more specific"
        } else {
            "declared earlier"
        };
        Some(Shadow {
            by: first.rule,
            why,
        })
    }

    fn unused_intents(&mut self) {
        let used: HashSet<usize> = self
            .table
            .rules
            .iter()
            .flat_map(|rule| match &rule.trigger {
                Trigger::Text { intents, .. } => intents.iter().map(|i| i.value).collect(),
                _ => Vec::new(),
            })
            .collect();
        for (id, intent) in self.table.intents.iter().enumerate() {
            if !used.contains(&id) {
                let message = format!("intent `{}` is not used by any rule", intent.name);
                self.push(intent.file, intent.at, message);
            }
        }
    }

    fn placeholders(&mut self) {
        let table = self.table;
        let set: HashSet<&str> = table
            .rules
            .iter()
            .flat_map(|r| r.actions.set.iter().map(|(key, _)| key.as_str()))
            .chain(ENGINE_ATTRIBUTES)
            .collect();
        for rule in &table.rules {
            for template in rule.templates() {
                for (placeholder, at) in template.placeholders() {
                    // A fallback is the author saying what an empty value shows.
                    if placeholder.fallback.is_some() {
                        continue;
                    }
                    let field = &placeholder.field;
                    let at = at.unwrap_or(rule.at);
                    let why = match field {
                        Field::Attr(name) if !set.contains(name.as_str()) => {
                            format!("no rule sets attribute `{name}` (with `set`)")
                        }
                        Field::Match(n) => {
                            let gaps = match_gaps(&rule.trigger, *n);
                            if gaps.is_empty() {
                                continue;
                            }
                            gaps.join("; ")
                        }
                        Field::Scene | Field::FirstScene if !scene_filtered(&rule.trigger) => {
                            "only a subscribe, scan or add_external_contact rule with a `scene` \
                             filter is sure to have one"
                                .to_string()
                        }
                        Field::Content if matches!(rule.trigger, Trigger::Event { .. }) => {
                            "events carry no text".to_string()
                        }
                        _ => continue,
                    };
                    let message = format!(
                        "`{field}` in rule `{}` may be empty: {why}; give it a fallback to show instead: \
                         `{}|…}}`",
                        rule.name,
                        field.to_string().trim_end_matches('}')
                    );
                    self.push(rule.file, at, message);
                }
            }
        }
    }

    fn followup_windows(&mut self) {
        for rule in &self.table.rules {
            let (Some(first), Trigger::Event { kind, .. }) =
                (rule.followups.first(), &rule.trigger)
            else {
                continue;
            };
            let event = kind.name();
            match window(*kind) {
                Window::Closed(why) => {
                    let message = format!(
                        "rule `{}` has follow-ups, but WeChat opens no customer-service window \
                         after `{event}` ({why}): sending them would fail",
                        rule.name
                    );
                    self.push(rule.file, first.at, message);
                }
                Window::Short => {
                    let unless = "unless the follower wrote in the last 48 hours";
                    if let Some(extra) = rule.followups.get(SHORT_WINDOW_MESSAGES) {
                        let message = format!(
                            "rule `{}` has {} follow-ups, but after `{event}` WeChat allows \
                             {SHORT_WINDOW_MESSAGES} customer-service messages within a minute: \
                             the ones from here may be refused ({unless})",
                            rule.name,
                            rule.followups.len()
                        );
                        self.push(rule.file, extra.at, message);
                    }
                    let late = rule.followups[..rule.followups.len().min(SHORT_WINDOW_MESSAGES)]
                        .iter()
                        .filter(|f| f.after_secs > SHORT_WINDOW_SECS);
                    for f in late {
                        let message = format!(
                            "a follow-up of rule `{}` comes {} seconds after the reply, but after \
                             `{event}` WeChat's customer-service window lasts \
                             {SHORT_WINDOW_SECS} seconds: it may be refused ({unless})",
                            rule.name, f.after_secs
                        );
                        self.push(rule.file, f.at, message);
                    }
                }
            }
        }
    }

    fn empty_regexes(&mut self) {
        for rule in &self.table.rules {
            let Trigger::Text { regexes, .. } = &rule.trigger else {
                continue;
            };
            for regex in regexes.iter().filter(|r| r.value.is_match("")) {
                let message = format!(
                    "regex `{}` of rule `{}` matches the empty string, so it may match any \
                     message (require at least one character: `+` rather than `*`, or anchor it)",
                    regex.value.as_str(),
                    rule.name
                );
                self.push(rule.file, regex.at, message);
            }
        }
    }
}

/// WeChat's customer-service window after an event: 3 messages within a minute after
/// these (protocol notes, "Sending messages").
const SHORT_WINDOW_MESSAGES: usize = 3;
const SHORT_WINDOW_SECS: u32 = 60;

/// The customer-service window an event of this kind opens.
enum Window {
    /// 3 messages within a minute (or the 48-hour one of a recent message, if larger).
    Short,
    /// None, and why.
    Closed(&'static str),
}

/// Exhaustive on purpose: a new event kind must say what window it opens.
fn window(kind: EventKind) -> Window {
    match kind {
        EventKind::Subscribe | EventKind::Scan | EventKind::Click | EventKind::ScanCode => {
            Window::Short
        }
        EventKind::Unsubscribe => Window::Closed("the follower has just left"),
        EventKind::DelExternalContact => Window::Closed("the contact has just been removed"),
        EventKind::TemplateFinish | EventKind::MassFinish => {
            Window::Closed("a delivery report is not something the follower did")
        }
        EventKind::View => Window::Closed("opening a menu link opens no conversation"),
        EventKind::Location => Window::Closed("a location report opens no conversation"),
        EventKind::EnterAgent | EventKind::AddExternalContact => {
            Window::Closed("a WeCom event: WeCom contacts cannot be sent customer-service messages")
        }
    }
}

/// Whether every text matched by `k` (of kind `kind`) is matched by `t` (of kind
/// `t_kind`). Both are normalised.
fn covers(t: &str, t_kind: MatchKind, k: &str, kind: MatchKind) -> bool {
    match t_kind {
        MatchKind::Exact => kind == MatchKind::Exact && t == k,
        MatchKind::Prefix => kind != MatchKind::Contains && k.starts_with(t),
        MatchKind::Contains => k.contains(t),
    }
}

fn kind_name(kind: MatchKind) -> &'static str {
    match kind {
        MatchKind::Exact => "exact",
        MatchKind::Prefix => "prefix",
        MatchKind::Contains => "contains",
    }
}

/// An event rule that only fires for events that carry a scene.
fn scene_filtered(trigger: &Trigger) -> bool {
    matches!(trigger, Trigger::Event { kind, values: Some(_) } if kind.filter() == Filter::Scene)
}

/// Why `{match.n}` may render empty in a rule with this trigger: nothing if it can't.
fn match_gaps(trigger: &Trigger, n: usize) -> Vec<String> {
    let Trigger::Text {
        keywords,
        regexes,
        intents,
        ..
    } = trigger
    else {
        return Vec::new();
    };
    let mut gaps = Vec::new();
    if !keywords.is_empty() || !intents.is_empty() {
        gaps.push("the rule also fires by keyword or intent, which capture nothing".to_string());
    }
    for regex in regexes {
        let pattern = regex.value.as_str();
        if n >= regex.value.captures_len() {
            gaps.push(format!("regex `{pattern}` has no group {n}"));
        } else if n > 0 && optional_group(&regex.value, n) {
            gaps.push(format!("group {n} of regex `{pattern}` is optional"));
        }
    }
    gaps
}

/// Whether capture group `n` (1-based) of `regex` can be left out of a match: `(a)?`,
/// `(a)*`, `(a)|b`. The regex crate answers it for all groups at once
/// (`static_captures_len`); to ask about one, the others are made non-capturing first.
/// `false` when the pattern cannot be rewritten (verbose mode, say): no warning rather
/// than a wrong one.
fn optional_group(regex: &Regex, n: usize) -> bool {
    let pattern = regex.as_str();
    let Some(openings) = group_openings(pattern) else {
        return false;
    };
    if openings.len() != regex.captures_len() - 1 || n == 0 || n > openings.len() {
        return false;
    }
    let mut alone = String::with_capacity(pattern.len() + 2 * openings.len());
    let mut from = 0;
    for (i, opening) in openings.iter().enumerate() {
        alone.push_str(&pattern[from..opening.start]);
        alone.push_str(if i + 1 == n {
            &pattern[opening.clone()]
        } else {
            "(?:"
        });
        from = opening.end;
    }
    alone.push_str(&pattern[from..]);
    match regex_builder(&alone).build() {
        Ok(r) if r.captures_len() == 2 => r.static_captures_len() != Some(2),
        _ => false,
    }
}

/// The byte range of each capturing group's opening (`(`, `(?P<name>`, `(?<name>`), in
/// group order; `None` for a pattern in verbose mode (`x` flag), whose comments could hold
/// anything.
fn group_openings(pattern: &str) -> Option<Vec<Range<usize>>> {
    let b = pattern.as_bytes();
    let mut openings = Vec::new();
    let mut class_depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'[' => {
                class_depth += 1;
                i += 1;
                // A `]` first in a class (after an optional `^`) is a literal.
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                continue;
            }
            b']' if class_depth > 0 => class_depth -= 1,
            b'(' if class_depth == 0 => {
                let rest = &pattern[i + 1..];
                if let Some(name) = rest.strip_prefix("?P<").or_else(|| rest.strip_prefix("?<")) {
                    let close = name.find('>')?;
                    let end = i + 1 + (rest.len() - name.len()) + close + 1;
                    openings.push(i..end);
                } else if let Some(flags) = rest.strip_prefix('?') {
                    let flags = &flags[..flags.find([')', ':']).unwrap_or(flags.len())];
                    if flags.contains('x') {
                        return None;
                    }
                } else {
                    openings.push(i..i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(openings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{RuleContext, RuleSource};

    fn warnings(files: &[(&str, &str)]) -> Vec<RuleWarning> {
        let sources: Vec<RuleSource> = files
            .iter()
            .map(|(name, text)| RuleSource {
                name: name.to_string(),
                text: text.to_string(),
            })
            .collect();
        RuleTable::compile(&sources, &RuleContext::default())
            .unwrap_or_else(|e| panic!("compile:\n{e}"))
            .warnings()
    }

    /// A case: its name, the files, and every warning expected as (`file:line:column`, a
    /// fragment of the message). An empty list: the rules are clean.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);

    const A: &str = "r/a.toml";
    const B: &str = "r/b.toml";

    #[test]
    fn cases() {
        let cases: Vec<Case> = vec![
            (
                "follow-ups on an event without a window",
                vec![(A, "[[rule]]\nname = \"bye\"\nevent = \"unsubscribe\"\nfollowups = [{ text = \"x\" }]\n\n[[rule]]\nname = \"hi\"\nevent = \"subscribe\"\nfollowups = [{ text = \"x\" }]\n")],
                vec![(
                    "r/a.toml:4:14",
                    "rule `bye` has follow-ups, but WeChat opens no customer-service window after `unsubscribe` (the follower has just left): sending them would fail",
                )],
            ),
            // Shadowed keywords.
            (
                "exact keyword shadowed by an earlier exact keyword: the whole rule",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"hi\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"HI!\"\n")],
                vec![(
                    "r/a.toml:6:8",
                    "rule `b` can never fire: rule `a` (r/a.toml:2) takes everything it matches and is tried first \
                     (declared earlier)",
                )],
            ),
            (
                "one keyword of two shadowed, by a contains keyword",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"优惠\"\nmatch = \"contains\"\n\n[[rule]]\nname = \"b\"\nkeywords = [\"优惠券\", \"coupon\"]\nmatch = \"contains\"\n")],
                vec![(
                    "r/a.toml:8:13",
                    "keyword \"优惠券\" of rule `b` never fires: rule `a` (r/a.toml:2) takes everything it matches and \
                     is tried first (declared earlier)",
                )],
            ),
            (
                "contains shadows a later prefix and exact across files",
                vec![
                    (A, "[[rule]]\nname = \"a\"\nkeywords = \"vip\"\nmatch = \"contains\"\n"),
                    (B, "[[rule]]\nname = \"b\"\nkeywords = [\"vip card\"]\nmatch = \"prefix\"\npriority = -1\n\n[[rule]]\nname = \"c\"\nregex = \"^x\"\nkeywords = \"my vip\"\n"),
                ],
                vec![(
                    "r/b.toml:2:8",
                    "rule `b` can never fire: rule `a` (r/a.toml:2) takes everything it matches and is tried first \
                     (higher priority)",
                )],
            ),
            (
                "an exact keyword is more specific: the contains rule does not shadow it",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"vip\"\nmatch = \"contains\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"my vip\"\n")],
                vec![],
            ),
            (
                "a later, more specific shadow: the regex with a higher priority takes the exact keyword",
                vec![(A, "[[rule]]\nname = \"b\"\nkeywords = [\"order 1\", \"x\"]\nreply = \"b\"\n\n[[rule]]\nname = \"a\"\npriority = 1\nregex = \"^order \\\\d+$\"\n")],
                vec![("r/a.toml:3:13", "keyword \"order 1\" of rule `b` never fires: rule `a` (r/a.toml:7)")],
            ),
            (
                "prefix keywords: a shorter prefix shadows, a contains keyword is not shadowed by a prefix",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"订单\"\nmatch = \"prefix\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"订单号\"\nmatch = \"prefix\"\n\n[[rule]]\nname = \"c\"\nkeywords = \"订单号\"\nmatch = \"contains\"\npriority = -5\n")],
                vec![("r/a.toml:7:8", "rule `b` can never fire")],
            ),
            (
                "an intent phrase shadows at a higher priority",
                vec![(A, "[intents]\nhi = { phrases = [\"hello\"], match = \"contains\" }\n\n[[rule]]\nname = \"a\"\npriority = 2\nintent = \"hi\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"hello world\"\n")],
                vec![("r/a.toml:10:8", "rule `b` can never fire: rule `a` (r/a.toml:5) takes everything it matches and is tried first (higher priority)")],
            ),
            (
                "conditions and continue do not shadow",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"hi\"\nmatch = \"contains\"\nif_tag = \"vip\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"hi\"\nmatch = \"contains\"\ncontinue = true\n\n[[rule]]\nname = \"c\"\nkeywords = \"hi there\"\nmatch = \"contains\"\n")],
                vec![("r/a.toml:9:12", "keyword \"hi\" (contains) of rule `b` is also a keyword of rule `a` (r/a.toml:2) at the same priority")],
            ),
            (
                "a rule with a regex is never called dead",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"hi\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"hi\"\nregex = \"^yo\"\n")],
                vec![("r/a.toml:7:12", "keyword \"hi\" of rule `b` never fires: rule `a` (r/a.toml:2)")],
            ),
            // Events and defaults.
            (
                "two unfiltered welcome rules",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subscribe\"\nreply = \"x\"\n\n[[rule]]\nname = \"b\"\nevent = \"subscribe\"\nreply = \"y\"\n")],
                vec![("r/a.toml:7:8", "rule `b` can never fire: rule `a` (r/a.toml:2) takes everything it matches and is tried first (declared earlier)")],
            ),
            (
                "a listed key shadowed by a higher-priority rule for that key, another key not",
                vec![(A, "[[rule]]\nname = \"a\"\npriority = 1\nevent = \"click\"\nkey = [\"M1\"]\nreply = \"x\"\n\n[[rule]]\nname = \"b\"\nevent = \"click\"\nkey = [\"M1\", \"M2\"]\nreply = \"y\"\n")],
                vec![("r/a.toml:11:8", "key \"M1\" of rule `b` never fires: rule `a` (r/a.toml:2) takes everything it matches and is tried first (higher priority)")],
            ),
            (
                "\"*\" shadowed by an unfiltered rule of higher priority; specific scenes win over both",
                vec![(A, "[[rule]]\nname = \"a\"\npriority = 1\nevent = \"scan\"\n\n[[rule]]\nname = \"b\"\nevent = \"scan\"\nscene = \"*\"\n\n[[rule]]\nname = \"c\"\nevent = \"scan\"\nscene = \"s1\"\npriority = 1\n")],
                vec![("r/a.toml:7:8", "rule `b` can never fire")],
            ),
            (
                "each trigger taken by another rule",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\n\n[[rule]]\nname = \"c\"\npriority = 1\nkeywords = \"y\"\n\n[[rule]]\nname = \"b\"\nkeywords = [\"x\", \"y\"]\n")],
                vec![(
                    "r/a.toml:11:8",
                    "rule `b` can never fire: each of its triggers is taken first by a rule that always ends the search \
                     (keyword \"x\" by rule `a` (r/a.toml:2), declared earlier; keyword \"y\" by rule `c` (r/a.toml:6), \
                     higher priority)",
                )],
            ),
            (
                "events: scene rules are more specific than the unfiltered one",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subscribe\"\n\n[[rule]]\nname = \"b\"\nevent = \"subscribe\"\nscene = [\"*\", \"s\"]\n")],
                vec![],
            ),
            (
                "a second default",
                vec![(A, "[[rule]]\nname = \"a\"\ndefault = true\nreply = \"x\"\n\n[[rule]]\nname = \"b\"\ndefault = true\nreply = \"y\"\n")],
                vec![("r/a.toml:7:8", "rule `b` can never fire: rule `a` (r/a.toml:2) takes everything it matches and is tried first (declared earlier)")],
            ),
            (
                "a conditional default, then the catch-all",
                vec![(A, "[[rule]]\nname = \"a\"\ndefault = true\nif_tag = \"vip\"\n\n[[rule]]\nname = \"b\"\ndefault = true\n")],
                vec![],
            ),
            // Duplicates.
            (
                "duplicate keyword at the same priority, first rule conditional",
                vec![
                    (A, "[[rule]]\nname = \"a\"\nkeywords = [\"x\", \"Menu\"]\nunless_tag = \"blocked\"\n"),
                    (B, "\n[[rule]]\nname = \"b\"\nkeywords = \"menu\"\n"),
                ],
                vec![("r/b.toml:4:12", "keyword \"menu\" (exact) of rule `b` is also a keyword of rule `a` (r/a.toml:2) at the same priority; that rule is tried first")],
            ),
            (
                "same keyword, different priority or kind: no duplicate",
                vec![(A, "[[rule]]\nname = \"a\"\npriority = 1\nif_tag = \"vip\"\nkeywords = \"x\"\n\n[[rule]]\nname = \"b\"\nkeywords = \"x\"\n\n[[rule]]\nname = \"c\"\nkeywords = \"x\"\nmatch = \"contains\"\nif_tag = \"t\"\n")],
                vec![],
            ),
            // Intents.
            (
                "unused intent",
                vec![(A, "[intents]\nused = [\"a\"]\nunused = [\"b\"]\n\n[[rule]]\nname = \"a\"\nintent = \"used\"\n")],
                vec![("r/a.toml:3:1", "intent `unused` is not used by any rule")],
            ),
            // Placeholders.
            (
                "attribute nobody sets",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nset = { city = \"{content}\" }\nreply = \"{attr.city} {attr.cty}\"\n")],
                vec![("r/a.toml:5:22", "`{attr.cty}` in rule `a` may be empty: no rule sets attribute `cty` (with `set`)")],
            ),
            (
                "attribute set in another file, and the engine's own",
                vec![
                    (A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply = \"{attr.city} {attr.wecom_staff}\"\n"),
                    (B, "[[rule]]\nname = \"b\"\nkeywords = \"y\"\nset.city = \"{content}\"\n"),
                ],
                vec![],
            ),
            (
                "optional capture group",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = \"^order(?: (\\\\d+))?$\"\nreply = \"#{match.1}\"\n")],
                vec![("r/a.toml:4:11", "`{match.1}` in rule `a` may be empty: group 1 of regex `^order(?: (\\d+))?$` is optional")],
            ),
            (
                "capture group missing from another regex, and keywords",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"order\"\nregex = [\"^o (\\\\d+)$\", \"^order$\"]\nset = { n = \"{match.1}\" }\n")],
                vec![("r/a.toml:5:14", "the rule also fires by keyword or intent, which capture nothing; regex `^order$` has no group 1")],
            ),
            (
                "required groups, alternatives inside a group, {match.0}",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = \"^(?P<kind>vip|svip)(\\\\d+)?-(x|y)+$\"\nreply = \"{match.0} {match.1} {match.3}\"\n")],
                vec![],
            ),
            (
                "scene outside a scene-filtered rule; content in an event rule",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subscribe\"\nreply = \"{scene} {content}\"\n\n[[rule]]\nname = \"b\"\nevent = \"scan\"\nscene = \"*\"\nreply = \"{scene} {first_scene}\"\n\n[[rule]]\nname = \"c\"\nkeywords = \"x\"\nreply = \"{first_scene}\"\n")],
                vec![
                    ("r/a.toml:4:10", "`{scene}` in rule `a` may be empty: only a subscribe, scan or add_external_contact rule with a `scene` filter"),
                    ("r/a.toml:4:18", "`{content}` in rule `a` may be empty: events carry no text"),
                    ("r/a.toml:15:10", "`{first_scene}` in rule `c` may be empty"),
                ],
            ),
            (
                "placeholders in news and in a multi-line string",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply.news = [{ title = \"t\", url = \"https://x/?c={attr.c}\" }]\n\n[[rule]]\nname = \"b\"\nkeywords = \"y\"\nreply = \"\"\"\nline\n  {attr.d}\"\"\"\n")],
                vec![
                    ("r/a.toml:4:50", "`{attr.c}`"),
                    ("r/a.toml:11:3", "`{attr.d}`"),
                ],
            ),
            (
                "placeholders with a fallback are not reported; the others still point at their column",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subscribe\"\nreply = \"{attr.name|朋友} {scene|公众号} {content|-} {attr.cty}\"\n")],
                vec![("r/a.toml:4:49", "`{attr.cty}` in rule `a` may be empty: no rule sets attribute `cty` (with `set`); give it a fallback to show instead: `{attr.cty|…}`")],
            ),
            // Regexes.
            (
                "regexes matching the empty string",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = [\"^vip\", \"\\\\d*\", \"^$\"]\n")],
                vec![
                    ("r/a.toml:3:18", "regex `\\d*` of rule `a` matches the empty string"),
                    ("r/a.toml:3:26", "regex `^$` of rule `a` matches the empty string"),
                ],
            ),
            // Follow-ups.
            (
                "follow-ups after an event that opens no window",
                vec![(A, "[[rule]]\nname = \"bye\"\nevent = \"unsubscribe\"\nadd_tags = [\"churned\"]\nfollowups = [{ text = \"再见\" }, { text = \"x\" }]\n")],
                vec![(
                    "r/a.toml:5:14",
                    "rule `bye` has follow-ups, but WeChat opens no customer-service window after `unsubscribe` \
                     (the follower has just left): sending them would fail",
                )],
            ),
            (
                "a WeCom contact",
                vec![(A, "[[rule]]\nname = \"w\"\nevent = \"add_external_contact\"\nfollowups = [\n  { text = \"欢迎\" },\n]\n")],
                vec![("r/a.toml:5:3", "after `add_external_contact` (a WeCom event")],
            ),
            (
                "after a subscribe: a fourth follow-up, and one later than a minute",
                vec![(A, "[[rule]]\nname = \"hi\"\nevent = \"subscribe\"\nfollowups = [\n  { text = \"1\" },\n  { after = 61, text = \"2\" },\n  { after = 30, text = \"3\" },\n  { after = 90, text = \"4\" },\n]\n")],
                vec![
                    ("r/a.toml:6:3", "a follow-up of rule `hi` comes 61 seconds after the reply, but after `subscribe` WeChat's customer-service window lasts 60 seconds: it may be refused (unless the follower wrote in the last 48 hours)"),
                    ("r/a.toml:8:3", "rule `hi` has 4 follow-ups, but after `subscribe` WeChat allows 3 customer-service messages within a minute: the ones from here may be refused"),
                ],
            ),
            (
                "message rules fit the 48-hour window; a click within a minute fits",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nfollowups = [{ text = \"1\" }, { text = \"2\" }, { text = \"3\" }, { text = \"4\" }, { after = 86400, text = \"5\" }]\n\n[[rule]]\nname = \"b\"\ndefault = true\nfollowups = [{ after = 3600, image = \"m\" }]\n\n[[rule]]\nname = \"c\"\nevent = \"click\"\nfollowups = [{ after = 60, text = \"c\" }]\n")],
                vec![],
            ),
            (
                "placeholders in follow-ups are checked like the reply's",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nfollowups = [{ text = \"{attr.nope}\" }]\n")],
                vec![("r/a.toml:4:24", "`{attr.nope}` in rule `a` may be empty: no rule sets attribute `nope`")],
            ),
            (
                "a clean set of rules",
                vec![(A, "[intents]\nhi = [\"hi\"]\n\n[[rule]]\nname = \"hi\"\nintent = \"hi\"\nreply = \"hello {openid}\"\n\n[[rule]]\nname = \"coupon\"\nkeywords = \"优惠券\"\nmatch = \"contains\"\nset.topic = \"coupon\"\nreply = \"{attr.topic} {counter.n}\"\n\n[[rule]]\nname = \"order\"\nregex = \"^订单(\\\\d+)$\"\nreply = \"{match.1}\"\n\n[[rule]]\nname = \"welcome\"\nevent = \"subscribe\"\nscene = \"*\"\nreply = \"{scene}\"\n\n[[rule]]\nname = \"fallback\"\ndefault = true\nreply = \"{content}\"\n")],
                vec![],
            ),
        ];
        for (name, files, expected) in cases {
            let found = warnings(&files);
            let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
            assert_eq!(found.len(), expected.len(), "{name}: {shown:#?}");
            for (warning, (at, fragment)) in found.iter().zip(&expected) {
                let location = format!("{}:{}:{}", warning.file, warning.line, warning.column);
                assert_eq!(&location, at, "{name}: {warning}");
                assert!(
                    warning.message.contains(fragment),
                    "{name}: {warning}\nwanted: {fragment}"
                );
                assert!(!warning.message.contains('\n'), "{name}: one line");
            }
        }
    }

    /// Which event kinds draw the no-window warning for one follow-up right after the reply.
    #[test]
    fn followups_by_event_kind() {
        for kind in EventKind::ALL {
            let text = format!(
                "[[rule]]\nname = \"r\"\nevent = \"{}\"\nfollowups = [{{ text = \"x\" }}]\n",
                kind.name()
            );
            let found = warnings(&[(A, &text)]);
            let closed = !matches!(
                kind,
                EventKind::Subscribe | EventKind::Scan | EventKind::Click | EventKind::ScanCode
            );
            assert_eq!(
                found.len(),
                usize::from(closed),
                "{}: {found:?}",
                kind.name()
            );
            if closed {
                assert!(
                    found[0]
                        .message
                        .contains("opens no customer-service window"),
                    "{}",
                    found[0]
                );
            }
        }
    }

    #[test]
    fn display() {
        let w = RuleWarning {
            file: "replies/a.toml".into(),
            line: 3,
            column: 12,
            message: "intent `x` is not used by any rule".into(),
        };
        assert_eq!(
            w.to_string(),
            "replies/a.toml:3:12: warning: intent `x` is not used by any rule"
        );
    }

    #[test]
    fn optional_groups() {
        let cases = [
            ("plain group", r"^a(b)c$", 1, false),
            ("optional", r"^a(b)?$", 1, true),
            ("star", r"(b)*", 1, true),
            ("plus", r"(b)+", 1, false),
            ("alternative outside", r"(a)|b", 1, true),
            ("alternative inside", r"(a|b)", 1, false),
            ("second of two, first optional", r"(a)?(b)", 2, false),
            ("nested in an optional group", r"(?:x(y))?z", 1, true),
            ("named", r"(?P<n>a)?(?<m>b)", 2, false),
            ("named, optional", r"(?P<n>a)?(?<m>b)", 1, true),
            ("escaped and class parens", r"\((a)[(]?(b)?", 2, true),
            ("class with ] first", r"[]()](c)", 1, false),
            ("zero repetitions allowed", r"(a){0,2}", 1, true),
            (
                "verbose mode: unknown, no warning",
                r"(?x) (a)? # (",
                1,
                false,
            ),
        ];
        for (name, pattern, n, optional) in cases {
            let regex = regex_builder(pattern).build().unwrap();
            assert_eq!(optional_group(&regex, n), optional, "{name}: {pattern}");
        }
    }
}
