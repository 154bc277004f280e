//! The rule engine: operator-edited `replies/*.toml` files → a compiled [`RuleTable`] →
//! for each inbound message, a [`Decision`] (which rules fired, the reply, the actions).
//!
//! Pure: no I/O, no clock, no randomness. Sources come in as strings (`rulebook.rs` reads
//! the folder), the follower as an in-memory value, and the seed that picks among reply
//! variants as an argument, so every decision is reproducible in a test.
//!
//! # Layout
//! - `format.rs`: the file format as written (raw serde structs with spans), documented;
//! - `compile.rs`: raw files → validated table, collecting every error with
//!   `file:line:column`; `rule.rs`: the checks of one rule;
//! - `error.rs`: [`RuleError`], [`RuleErrors`];
//! - `normalise.rs`: the text normalisation shared by keywords and messages;
//! - `matcher.rs`: the indexes (hash map, one Aho-Corasick automaton, one `RegexSet`,
//!   events by kind) that find candidates without scanning every rule;
//! - `event.rs`: event names and how they map onto the protocol's events;
//! - `decide.rs`: ordering the candidates, conditions, `continue`, the [`Decision`];
//! - `render.rs`, `reply.rs`: placeholder templates and compiled replies;
//! - `action.rs`: [`Action`], the changes a rule makes to a follower;
//! - `warnings.rs`: [`RuleWarning`]s, for rules that compile but look wrong (shadowed
//!   keywords, duplicates, unused intents, placeholders that may be empty, …);
//! - `delivery.rs`: warnings about effects the account reading a folder cannot deliver
//!   (follow-ups, WeCom welcomes without `[account.api]`), given its [`Reach`];
//! - `suite.rs`: operators' regression suites ([`Suite`]) run against a table.

mod action;
mod compile;
mod decide;
mod delivery;
mod error;
mod event;
mod followup;
mod format;
mod matcher;
mod normalise;
pub(crate) mod render;
mod reply;
mod rule;
mod suite;
mod warnings;

use std::collections::BTreeSet;
use std::fmt;

pub use action::Action;
pub use decide::Decision;
pub use delivery::Reach;
pub use error::{RuleError, RuleErrors};
pub use followup::{kind_name as followup_kind, FollowUp};
pub use normalise::normalise;
pub use render::CouponView;
pub use suite::{CaseFailure, Suite, SuiteReport, SUITE_OPENID};
pub use warnings::RuleWarning;

/// One rule file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The path as shown in errors, e.g. "replies/welcome.toml". Files are ordered by it.
    pub name: String,
    pub text: String,
}

/// What rules may name that is defined outside the rule files: the coupon batches of the
/// coupons file (`issue_coupon`). Rules never read the config, so whoever compiles them
/// passes what it defines; startup, `siyu check`, every reload and the admin API pass the
/// same context (`Settings::rule_context`), so they accept and refuse the same folders,
/// with the same `file:line:column` errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleContext {
    /// Sorted, so the error that lists them reads the same on every run.
    pub coupon_batches: BTreeSet<String>,
}

impl RuleContext {
    pub fn with_coupon_batches<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        RuleContext {
            coupon_batches: names.into_iter().map(Into::into).collect(),
        }
    }

    /// "defined batches: a, b" or "no coupon batches are defined", for error messages.
    pub(crate) fn known_coupon_batches(&self) -> String {
        if self.coupon_batches.is_empty() {
            return "no coupon batches are defined".to_string();
        }
        let names: Vec<&str> = self.coupon_batches.iter().map(String::as_str).collect();
        format!("defined batches: {}", names.join(", "))
    }
}

/// A compiled, validated rule set. Immutable once built: reloading builds a new one and
/// swaps the `Arc` (see `rulebook.rs`), so a callback in flight keeps a consistent table.
pub struct RuleTable {
    /// In declaration order (file name, then position); a rule's index is its rank there.
    rules: Vec<rule::Rule>,
    text: matcher::TextIndex,
    events: matcher::EventIndex,
    /// Default rules, already in the order they are tried.
    defaults: Vec<usize>,
    summary: Summary,
    /// File names in name order; a rule's `file` indexes it.
    files: Vec<String>,
    /// By id, for warnings.
    intents: Vec<compile::Intent>,
    /// `[[autotag]]`s, in file order.
    autotags: Vec<AutoTag>,
}

/// A tag the follower carries while its condition holds (`[[autotag]]`), re-evaluated
/// after every change to the follower in the same commit.
#[derive(Debug, Clone)]
pub struct AutoTag {
    pub tag: String,
    pub when: crate::segment::Segment,
    /// Taken off when the condition stops holding.
    pub remove: bool,
}

impl RuleTable {
    /// The autotags' changes to `follower` at `now`, applied: (added, removed).
    pub fn autotag(
        &self,
        follower: &mut crate::follower::Follower,
        now: i64,
    ) -> (Vec<String>, Vec<String>) {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for a in &self.autotags {
            let holds = a.when.matches(follower, now);
            if holds && follower.tags.insert(a.tag.clone()) {
                added.push(a.tag.clone());
            } else if !holds && a.remove && follower.tags.remove(&a.tag) {
                removed.push(a.tag.clone());
            }
        }
        (added, removed)
    }

    pub fn autotags(&self) -> &[AutoTag] {
        &self.autotags
    }
}

impl RuleTable {
    /// Compiles rule files, in name order whatever order they are given in, checking what
    /// they name outside themselves against `context`. Any error refuses the whole set,
    /// and every error found is returned.
    pub fn compile(sources: &[RuleSource], context: &RuleContext) -> Result<RuleTable, RuleErrors> {
        compile::compile(sources, context)
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The automaton and regex set would print pages; the counts say what a table holds.
impl fmt::Debug for RuleTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleTable")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// What a table holds, for `siyu check` and the reload log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub rules: usize,
    /// Keyword strings over all rules (intent phrases not included).
    pub keywords: usize,
    pub regexes: usize,
    /// Intents defined.
    pub intents: usize,
    pub event_rules: usize,
    pub default_rules: usize,
    /// Follow-up messages over all rules.
    pub followups: usize,
}

impl fmt::Display for Summary {
    /// "4 files, 12 rules (9 keywords, 1 regex, 2 intents, 5 event rules, 1 default rule)",
    /// then ", 3 follow-ups" inside the brackets when there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        write!(
            f,
            "{}, {} ({}, {}, {}, {}, {}",
            n(self.files, "file", "files"),
            n(self.rules, "rule", "rules"),
            n(self.keywords, "keyword", "keywords"),
            n(self.regexes, "regex", "regexes"),
            n(self.intents, "intent", "intents"),
            n(self.event_rules, "event rule", "event rules"),
            n(self.default_rules, "default rule", "default rules"),
        )?;
        if self.followups > 0 {
            write!(f, ", {}", n(self.followups, "follow-up", "follow-ups"))?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::Follower;
    use crate::protocol::{Event, Inbound, InboundKind, Reply};

    /// The shipped example folder, as `rulebook::read_sources` would read it.
    fn shipped() -> Vec<RuleSource> {
        [
            (
                "replies/default.toml",
                include_str!("../../replies/default.toml"),
            ),
            (
                "replies/keywords.toml",
                include_str!("../../replies/keywords.toml"),
            ),
            ("replies/menu.toml", include_str!("../../replies/menu.toml")),
            (
                "replies/welcome.toml",
                include_str!("../../replies/welcome.toml"),
            ),
        ]
        .into_iter()
        .map(|(name, text)| RuleSource {
            name: name.into(),
            text: text.into(),
        })
        .collect()
    }

    fn inbound(kind: InboundKind) -> Inbound {
        Inbound {
            to: "gh_flower".into(),
            from: "o_alice".into(),
            create_time: 1_700_000_000,
            agent_id: None,
            kind,
        }
    }

    fn text(content: &str) -> Inbound {
        inbound(InboundKind::Text {
            content: content.into(),
            msg_id: 1,
        })
    }

    fn reply_text(d: &Decision) -> &str {
        match &d.reply {
            Some(Reply::Text { content }) => content,
            other => panic!("expected a text reply, got {other:?}"),
        }
    }

    #[test]
    fn shipped_rules_compile_and_decide() {
        let table = RuleTable::compile(&shipped(), &RuleContext::default())
            .unwrap_or_else(|e| panic!("shipped rules:\n{e}"));
        let summary = table.summary();
        assert_eq!(
            (summary.files, summary.intents, summary.default_rules),
            (4, 2, 1),
            "{summary}"
        );
        assert!(
            summary.event_rules >= 6 && summary.regexes >= 1,
            "{summary}"
        );

        // A follow from the spring poster is welcomed as such and tagged.
        let mut f = Follower::new("o_alice");
        let subscribe = inbound(InboundKind::Event(Event::Subscribe {
            scene: Some("spring-poster".into()),
            ticket: None,
        }));
        let d = table.decide(&subscribe, &mut f, 0);
        assert_eq!(d.rules, ["welcome-spring-poster"]);
        assert!(f.has_tag("channel-spring"), "{:?}", d.actions);
        assert!(reply_text(&d).contains("春"), "{d:?}");

        // Coupon questions are counted, whatever the spelling.
        for (i, ask) in ["优惠券", "有优惠券吗？", "ＣＯＵＰＯＮ"]
            .into_iter()
            .enumerate()
        {
            let d = table.decide(&text(ask), &mut f, 0);
            assert_eq!(d.rules, ["coupon"], "{ask}");
            assert_eq!(f.counters["coupon_asks"], i as i64 + 1, "{ask}");
        }
        assert!(f.has_tag("coupon-seeker"));

        let d = table.decide(&text("订单 20240315"), &mut f, 0);
        assert_eq!(d.rules, ["order-status"]);
        assert!(reply_text(&d).contains("20240315"), "{d:?}");

        let d = table.decide(&text("人工"), &mut f, 0);
        assert!(
            matches!(d.reply, Some(Reply::TransferCustomerService { .. })),
            "{d:?}"
        );

        let d = table.decide(&text("你好"), &mut f, 0);
        assert_eq!(d.rules, ["greeting"]);

        let click = inbound(InboundKind::Event(Event::Click {
            key: "MENU_STORES".into(),
        }));
        let d = table.decide(&click, &mut f, 0);
        assert!(
            matches!(&d.reply, Some(Reply::News { articles }) if !articles.is_empty()),
            "{d:?}"
        );

        let d0 = table.decide(&text("今天天气不错"), &mut f, 0);
        let d1 = table.decide(&text("今天天气不错"), &mut f, 1);
        assert_eq!(d0.rules, ["fallback"]);
        assert_eq!(d1.rules, ["fallback"]);
        assert_ne!(d0.reply, d1.reply, "two variants");
    }

    /// The shipped rules are the operators' model: they must not draw a warning.
    #[test]
    fn shipped_rules_have_no_warnings() {
        let table =
            RuleTable::compile(&shipped(), &RuleContext::default()).expect("shipped rules compile");
        let warnings: Vec<String> = table.warnings().iter().map(ToString::to_string).collect();
        assert!(warnings.is_empty(), "{warnings:#?}");
    }

    /// The example suite (shipped for operators, and the tests' fixture) passes on the
    /// shipped rules, and the two copies agree.
    #[test]
    fn example_suite_passes_on_the_shipped_rules() {
        let fixture = include_str!("../../tests/fixtures/rule_tests.toml");
        assert_eq!(
            fixture,
            include_str!("../../examples/rule_tests.toml"),
            "examples/rule_tests.toml is a copy of tests/fixtures/rule_tests.toml"
        );
        let suite = Suite::parse("rule_tests.toml", fixture).unwrap_or_else(|e| panic!("{e}"));
        let table =
            RuleTable::compile(&shipped(), &RuleContext::default()).expect("shipped rules compile");
        let report = table.run_suite(&suite);
        let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(report.passed, suite.len());
        assert!(suite.len() >= 20, "{}", suite.len());
    }

    #[test]
    fn summary_display() {
        let s = Summary {
            files: 4,
            rules: 12,
            keywords: 9,
            regexes: 1,
            intents: 2,
            event_rules: 5,
            default_rules: 1,
            followups: 0,
        };
        assert_eq!(
            s.to_string(),
            "4 files, 12 rules (9 keywords, 1 regex, 2 intents, 5 event rules, 1 default rule)"
        );
        let s = Summary { followups: 3, ..s };
        assert_eq!(
            s.to_string(),
            "4 files, 12 rules (9 keywords, 1 regex, 2 intents, 5 event rules, 1 default rule, \
             3 follow-ups)"
        );
    }

    #[test]
    fn empty_table() {
        let table = RuleTable::compile(&[], &RuleContext::default())
            .expect("no files is a valid, empty table");
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        let d = table.decide(&text("hi"), &mut Follower::new("o"), 0);
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn table_is_shareable() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<RuleTable>();
    }
}
