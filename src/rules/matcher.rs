//! Finding the candidate rules for one message without looking at every rule.
//!
//! All keywords, phrases and regexes of the whole table are compiled once into four
//! indexes, so a table of thousands of keyword rules costs about what ten cost:
//!
//! - exact keywords and exact intent phrases: one `HashMap` lookup of the normalised text;
//! - prefix and contains keywords and phrases: ONE Aho-Corasick automaton, searched with
//!   overlapping matches (every pattern that occurs is reported, `MatchKind::Standard`);
//!   a prefix match is one that starts at 0. Identical strings share one pattern;
//! - regexes: ONE `RegexSet` says which match; a rule's own `Regex` is run afterwards only
//!   if it fires and its templates use `{match.N}`;
//! - events: a map from event kind to its rules, split by `scene`/`key` value.
//!
//! The result is an unsorted list of candidates with their specificity; `decide` sorts it.

use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind as AcMatchKind};
use regex::{Regex, RegexSet, RegexSetBuilder};

use super::event::EventKind;
use super::format::MatchKind;

/// Specificity of the trigger that matched: higher is tried first at equal priority.
pub(crate) mod specificity {
    pub const EXACT: u8 = 5;
    pub const PREFIX: u8 = 4;
    pub const CONTAINS: u8 = 3;
    pub const REGEX: u8 = 2;
    pub const INTENT: u8 = 1;
    /// An event rule whose `scene`/`key` lists the value the event carries.
    pub const EVENT_VALUE: u8 = 2;
    /// An event rule with `scene = "*"` / `key = "*"`.
    pub const EVENT_ANY_VALUE: u8 = 1;
    pub const EVENT_UNFILTERED: u8 = 0;

    /// The specificity of a keyword or phrase of match kind `kind`.
    pub fn of(kind: super::MatchKind) -> u8 {
        match kind {
            super::MatchKind::Exact => EXACT,
            super::MatchKind::Prefix => PREFIX,
            super::MatchKind::Contains => CONTAINS,
        }
    }
}

/// A rule that matched, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub rule: usize,
    pub specificity: u8,
    /// The first of the rule's regexes that matched (an index into the table's regexes).
    pub regex: Option<usize>,
}

/// Who a keyword or phrase belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Rule(usize),
    Intent(usize),
}

/// Regexes are compiled case-insensitively: the text they see is lower-cased already, and
/// this keeps `^VIP\d+` from silently never matching.
pub(crate) fn regex_builder(pattern: &str) -> regex::RegexBuilder {
    let mut builder = regex::RegexBuilder::new(pattern);
    builder.case_insensitive(true);
    builder
}

/// Collects triggers while rules are compiled; [`TextIndexBuilder::build`] makes the index.
#[derive(Debug, Default)]
pub(crate) struct TextIndexBuilder {
    exact: HashMap<String, Vec<Owner>>,
    pattern_ids: HashMap<String, usize>,
    patterns: Vec<String>,
    pattern_owners: Vec<Vec<(Owner, MatchKind)>>,
    regexes: Vec<Regex>,
    regex_rules: Vec<usize>,
    intent_rules: Vec<Vec<usize>>,
}

impl TextIndexBuilder {
    /// A normalised, non-empty keyword of `rule`.
    pub fn keyword(&mut self, rule: usize, keyword: String, kind: MatchKind) {
        self.phrase(Owner::Rule(rule), keyword, kind);
    }

    /// Declares intent number `intent` (in declaration order) and its normalised phrases.
    pub fn intent(&mut self, intent: usize, phrases: Vec<String>, kind: MatchKind) {
        if self.intent_rules.len() <= intent {
            self.intent_rules.resize(intent + 1, Vec::new());
        }
        for phrase in phrases {
            self.phrase(Owner::Intent(intent), phrase, kind);
        }
    }

    pub fn intent_ref(&mut self, rule: usize, intent: usize) {
        let rules = &mut self.intent_rules[intent];
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }

    /// A valid regex of `rule`; returns its index, which `Candidate::regex` reports.
    pub fn regex(&mut self, rule: usize, regex: Regex) -> usize {
        self.regexes.push(regex);
        self.regex_rules.push(rule);
        self.regexes.len() - 1
    }

    fn phrase(&mut self, owner: Owner, phrase: String, kind: MatchKind) {
        if kind == MatchKind::Exact {
            self.exact.entry(phrase).or_default().push(owner);
            return;
        }
        let next = self.patterns.len();
        let id = *self.pattern_ids.entry(phrase.clone()).or_insert(next);
        if id == next {
            self.patterns.push(phrase);
            self.pattern_owners.push(Vec::new());
        }
        self.pattern_owners[id].push((owner, kind));
    }

    pub fn build(self) -> Result<TextIndex, String> {
        let automaton = if self.patterns.is_empty() {
            None
        } else {
            let automaton = AhoCorasickBuilder::new()
                .match_kind(AcMatchKind::Standard)
                .build(&self.patterns)
                .map_err(|e| format!("cannot build the keyword automaton: {e}"))?;
            Some(automaton)
        };
        let regex_set = if self.regexes.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(self.regexes.iter().map(Regex::as_str))
                .case_insensitive(true)
                // Thousands of regexes exceed the default 10 MiB; still bounded, since the
                // set is built once per reload from operator files.
                .size_limit(256 << 20)
                .build()
                .map_err(|e| format!("cannot build the regex set: {e}"))?;
            Some(set)
        };
        Ok(TextIndex {
            exact: self.exact,
            automaton,
            pattern_owners: self.pattern_owners,
            regex_set,
            regexes: self.regexes,
            regex_rules: self.regex_rules,
            intent_rules: self.intent_rules,
        })
    }
}

/// Every text trigger of the table.
#[derive(Debug)]
pub(crate) struct TextIndex {
    exact: HashMap<String, Vec<Owner>>,
    automaton: Option<AhoCorasick>,
    pattern_owners: Vec<Vec<(Owner, MatchKind)>>,
    regex_set: Option<RegexSet>,
    regexes: Vec<Regex>,
    regex_rules: Vec<usize>,
    intent_rules: Vec<Vec<usize>>,
}

impl TextIndex {
    /// The rules whose text triggers match `text` (normalised), each once, with the
    /// specificity of the most specific trigger that matched.
    pub fn candidates(&self, text: &str) -> Vec<Candidate> {
        let mut found = Found::default();
        for owner in self.exact.get(text).into_iter().flatten() {
            found.owner(*owner, specificity::EXACT);
        }
        if let Some(automaton) = &self.automaton {
            // Sized by the matches, not the patterns: a message must not cost O(table).
            let mut seen = HashSet::new();
            for m in automaton.find_overlapping_iter(text) {
                let id = m.pattern().as_usize();
                // Matches come by end position, so a pattern's first report is its leftmost
                // occurrence; later ones add nothing (`contains` is known, `prefix` is not
                // at 0).
                if !seen.insert(id) {
                    continue;
                }
                for &(owner, kind) in &self.pattern_owners[id] {
                    match kind {
                        MatchKind::Prefix if m.start() == 0 => {
                            found.owner(owner, specificity::PREFIX)
                        }
                        MatchKind::Contains => found.owner(owner, specificity::CONTAINS),
                        _ => {}
                    }
                }
            }
        }
        if let Some(set) = &self.regex_set {
            // `matches` yields indexes in increasing order, so the first regex of a rule
            // that matched is the one kept for its captures.
            for id in set.matches(text).iter() {
                found.rule(self.regex_rules[id], specificity::REGEX, Some(id));
            }
        }
        for intent in std::mem::take(&mut found.intents) {
            for &rule in &self.intent_rules[intent] {
                found.rule(rule, specificity::INTENT, None);
            }
        }
        found.candidates
    }

    /// Capture groups of regex `id` on `text`, group 0 first; "" for groups that did not
    /// take part.
    pub fn captures(&self, id: usize, text: &str) -> Vec<String> {
        self.regexes[id]
            .captures(text)
            .map(|caps| {
                caps.iter()
                    .map(|g| g.map_or(String::new(), |g| g.as_str().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Candidates gathered so far, one per rule; matched intents wait to be expanded.
#[derive(Default)]
struct Found {
    candidates: Vec<Candidate>,
    /// rule → index in `candidates`.
    by_rule: HashMap<usize, usize>,
    intents: Vec<usize>,
}

impl Found {
    fn owner(&mut self, owner: Owner, specificity: u8) {
        match owner {
            Owner::Rule(rule) => self.rule(rule, specificity, None),
            Owner::Intent(intent) => {
                if !self.intents.contains(&intent) {
                    self.intents.push(intent);
                }
            }
        }
    }

    fn rule(&mut self, rule: usize, specificity: u8, regex: Option<usize>) {
        match self.by_rule.get(&rule) {
            Some(&i) => {
                let c = &mut self.candidates[i];
                c.specificity = c.specificity.max(specificity);
                c.regex = c.regex.or(regex);
            }
            None => {
                self.by_rule.insert(rule, self.candidates.len());
                self.candidates.push(Candidate {
                    rule,
                    specificity,
                    regex,
                });
            }
        }
    }
}

/// Event rules by kind and by `scene`/`key` value.
#[derive(Debug, Default)]
pub(crate) struct EventIndex {
    kinds: HashMap<EventKind, EventRules>,
}

#[derive(Debug, Default)]
struct EventRules {
    unfiltered: Vec<usize>,
    any_value: Vec<usize>,
    by_value: HashMap<String, Vec<usize>>,
}

impl EventIndex {
    /// Registers an event rule. `values` is its `scene`/`key` list (`None`: no filter);
    /// `"*"` in it means any non-empty value.
    pub fn add(&mut self, rule: usize, kind: EventKind, values: Option<&[String]>) {
        let rules = self.kinds.entry(kind).or_default();
        let Some(values) = values else {
            rules.unfiltered.push(rule);
            return;
        };
        for value in values {
            let list = if value == "*" {
                &mut rules.any_value
            } else {
                rules.by_value.entry(value.clone()).or_default()
            };
            if !list.contains(&rule) {
                list.push(rule);
            }
        }
    }

    /// The rules for an event of `kind` carrying `value` (non-empty, or `None`).
    pub fn candidates(&self, kind: EventKind, value: Option<&str>) -> Vec<Candidate> {
        self.gather(kind, value, value.is_some())
    }

    /// The rules for an event of `kind` carrying a value that no rule lists: what every
    /// value a `"*"` rule covers meets at least (for `warnings.rs`).
    pub fn candidates_unlisted(&self, kind: EventKind) -> Vec<Candidate> {
        self.gather(kind, None, true)
    }

    /// `listed`: the value, if rules may list it; `has_value`: the event carries one.
    fn gather(&self, kind: EventKind, listed: Option<&str>, has_value: bool) -> Vec<Candidate> {
        let Some(rules) = self.kinds.get(&kind) else {
            return Vec::new();
        };
        let mut found = Found::default();
        if let Some(value) = listed {
            for &rule in rules.by_value.get(value).into_iter().flatten() {
                found.rule(rule, specificity::EVENT_VALUE, None);
            }
        }
        if has_value {
            for &rule in &rules.any_value {
                found.rule(rule, specificity::EVENT_ANY_VALUE, None);
            }
        }
        for &rule in &rules.unfiltered {
            found.rule(rule, specificity::EVENT_UNFILTERED, None);
        }
        found.candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate as (rule, specificity, regex).
    type Found = (usize, u8, Option<usize>);

    fn sorted(mut c: Vec<Candidate>) -> Vec<Found> {
        c.sort_by_key(|c| c.rule);
        c.into_iter()
            .map(|c| (c.rule, c.specificity, c.regex))
            .collect()
    }

    fn index() -> TextIndex {
        let mut b = TextIndexBuilder::default();
        b.keyword(0, "coupon".into(), MatchKind::Exact);
        b.keyword(1, "coupon".into(), MatchKind::Contains);
        b.keyword(2, "cou".into(), MatchKind::Prefix);
        b.keyword(3, "pon".into(), MatchKind::Prefix);
        b.keyword(3, "pon".into(), MatchKind::Contains);
        b.intent(0, vec!["hello".into()], MatchKind::Exact);
        b.intent(1, vec!["price".into()], MatchKind::Contains);
        b.intent_ref(4, 0);
        b.intent_ref(5, 1);
        b.intent_ref(6, 1);
        let id = b.regex(7, regex_builder(r"^order (\d+)$").build().unwrap());
        assert_eq!(id, 0);
        b.regex(8, regex_builder(r"\d").build().unwrap());
        b.keyword(8, "order 12".into(), MatchKind::Exact);
        b.build().unwrap()
    }

    #[test]
    fn text_candidates() {
        let index = index();
        let cases: Vec<(&str, &str, Vec<Found>)> = vec![
            (
                "exact, contains, prefix and contains",
                "coupon",
                vec![(0, 5, None), (1, 3, None), (2, 4, None), (3, 3, None)],
            ),
            (
                "contains only",
                "a coupon please",
                vec![(1, 3, None), (3, 3, None)],
            ),
            ("prefix must start at 0", "xcou", vec![]),
            ("exact intent phrase", "hello", vec![(4, 1, None)]),
            (
                "contains intent shared by two rules",
                "the price?",
                vec![(5, 1, None), (6, 1, None)],
            ),
            (
                "regex and exact keep the best specificity and the regex",
                "order 12",
                vec![(7, 2, Some(0)), (8, 5, Some(1))],
            ),
            ("nothing", "你好", vec![]),
        ];
        for (name, text, expected) in cases {
            assert_eq!(sorted(index.candidates(text)), expected, "{name}: {text:?}");
        }
        assert_eq!(index.captures(0, "order 42"), ["order 42", "42"]);
        assert!(index.captures(0, "nope").is_empty());
    }

    #[test]
    fn regexes_ignore_case() {
        let mut b = TextIndexBuilder::default();
        b.regex(0, regex_builder("^VIP(\\d+)$").build().unwrap());
        assert_eq!(
            sorted(b.build().unwrap().candidates("vip7")),
            [(0, 2, Some(0))]
        );
    }

    #[test]
    fn event_candidates() {
        let s = |v: &[&str]| v.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        let mut index = EventIndex::default();
        index.add(0, EventKind::Subscribe, None);
        index.add(1, EventKind::Subscribe, Some(&s(&["spring-poster"])));
        index.add(2, EventKind::Subscribe, Some(&s(&["*"])));
        index.add(3, EventKind::Subscribe, Some(&s(&["*", "spring-poster"])));
        index.add(4, EventKind::Click, Some(&s(&["MENU_COUPON"])));
        let cases: Vec<(&str, EventKind, Option<&str>, Vec<Found>)> = vec![
            (
                "matching scene",
                EventKind::Subscribe,
                Some("spring-poster"),
                vec![(0, 0, None), (1, 2, None), (2, 1, None), (3, 2, None)],
            ),
            (
                "other scene",
                EventKind::Subscribe,
                Some("summer"),
                vec![(0, 0, None), (2, 1, None), (3, 1, None)],
            ),
            ("no scene", EventKind::Subscribe, None, vec![(0, 0, None)]),
            (
                "click key",
                EventKind::Click,
                Some("MENU_COUPON"),
                vec![(4, 2, None)],
            ),
            ("other key", EventKind::Click, Some("MENU_X"), vec![]),
            ("no rules of that kind", EventKind::Scan, Some("x"), vec![]),
        ];
        for (name, kind, value, expected) in cases {
            assert_eq!(sorted(index.candidates(kind, value)), expected, "{name}");
        }
    }
}
