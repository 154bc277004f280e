//! Raw rule files → the validated, indexed [`RuleTable`] that runs.
//!
//! The second of the two stages (the first is `format.rs`). Everything that can be wrong
//! with a rule set is found here or there, and all of it is reported at once: the table is
//! built only from a rule set with no error at all, so a bad edit never half-applies.
//! Keywords are normalised, regexes and templates compiled, intent references resolved and
//! every trigger put in the indexes of `matcher.rs`, once per load.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::error::{FileErrors, Pos, RuleError, RuleErrors};
use super::format::{parse_file, MatchKind, RawFile};
use super::matcher::{EventIndex, TextIndexBuilder};
use super::rule::{compile_rule, keyword, Rule, Trigger};
use super::{RuleContext, RuleSource, RuleTable, Summary};

/// Compiles `sources` (in name order, whatever order they come in) into a table; names
/// defined outside the rule files (coupon batches) are checked against `context`.
pub(crate) fn compile(
    sources: &[RuleSource],
    context: &RuleContext,
) -> Result<RuleTable, RuleErrors> {
    let mut sources: Vec<&RuleSource> = sources.iter().collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let mut all_errors = Vec::new();
    let files: Vec<RawFile> = sources
        .iter()
        .map(|s| parse_file(&s.text, &mut file_errors(s, &mut all_errors)))
        .collect();
    let mut indexes = Indexes::default();
    indexes.summary.files = sources.len();

    // Intents first, from every file: a rule may use an intent defined in a later file.
    let (intents, intent_defs) = define_intents(&sources, &files, &mut indexes, &mut all_errors);
    let mut intent_names: Vec<&str> = intents.keys().copied().collect();
    intent_names.sort_unstable();
    let known_intents = if intent_names.is_empty() {
        "no intents are defined".to_string()
    } else {
        format!("defined intents: {}", intent_names.join(", "))
    };

    let mut rules: Vec<Rule> = Vec::new();
    // Rule name → where it was first defined, for the duplicate error.
    let mut names: HashMap<&str, String> = HashMap::new();
    for (file_id, (source, file)) in sources.iter().zip(&files).enumerate() {
        let mut errors = file_errors(source, &mut all_errors);
        for raw in &file.rules {
            let name = raw.name.get_ref();
            let at = raw.name.span().start;
            match names.get(name.as_str()) {
                Some(first) => errors.push(
                    at,
                    format!("duplicate rule name `{name}` (first defined at {first})"),
                ),
                None => {
                    names.insert(name, errors.location(at));
                }
            }
            if let Some(rule) =
                compile_rule(raw, file_id, &mut errors, &intents, &known_intents, context)
            {
                indexes.add(rules.len(), &rule);
                rules.push(rule);
            }
        }
    }

    let mut autotags = Vec::new();
    for (source, file) in sources.iter().zip(&files) {
        let mut errors = file_errors(source, &mut all_errors);
        for raw in &file.autotags {
            let tag = raw.tag.get_ref().trim();
            if tag.is_empty() {
                errors.push(raw.tag.span().start, "empty tag name");
                continue;
            }
            match crate::segment::Segment::parse_alone(raw.when.get_ref()) {
                Ok(when) => autotags.push(super::AutoTag {
                    tag: tag.to_string(),
                    when,
                    remove: raw.remove,
                }),
                Err(e) => errors.push(
                    expression_offset(&raw.when, e.column),
                    format!("when: {}", e.message),
                ),
            }
        }
    }

    let Indexes {
        text,
        events,
        mut defaults,
        mut summary,
    } = indexes;
    summary.rules = rules.len();
    let text = text.build();
    if let Err(message) = &text {
        // Only an automaton or regex set too large to build gets here.
        let file = sources.first().map_or_else(String::new, |s| s.name.clone());
        let message = message.clone();
        all_errors.push(RuleError {
            file,
            line: 1,
            column: 1,
            message,
        });
    }
    match text {
        Ok(text) if all_errors.is_empty() => {
            // Defaults are tried after every other rule, by priority then declaration.
            defaults.sort_by_key(|&(priority, id)| (Reverse(priority), id));
            let defaults = defaults.into_iter().map(|(_, id)| id).collect();
            Ok(RuleTable {
                rules,
                text,
                events,
                defaults,
                summary,
                files: sources.iter().map(|s| s.name.clone()).collect(),
                intents: intent_defs,
                autotags,
            })
        }
        _ => {
            let order: HashMap<&str, usize> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect();
            all_errors.sort_by_key(|e| (order.get(e.file.as_str()).copied(), e.line, e.column));
            Err(RuleErrors(all_errors))
        }
    }
}

/// The indexes being filled, and the counts for the summary.
#[derive(Default)]
struct Indexes {
    text: TextIndexBuilder,
    events: EventIndex,
    /// (priority, rule id), sorted once all are in.
    defaults: Vec<(i64, usize)>,
    summary: Summary,
}

impl Indexes {
    /// Puts rule number `id`'s trigger in the indexes.
    fn add(&mut self, id: usize, rule: &Rule) {
        match &rule.trigger {
            Trigger::Text {
                keywords,
                match_kind,
                regexes,
                intents,
            } => {
                self.summary.keywords += keywords.len();
                self.summary.regexes += regexes.len();
                for keyword in keywords {
                    self.text.keyword(id, keyword.value.clone(), *match_kind);
                }
                for regex in regexes {
                    self.text.regex(id, regex.value.clone());
                }
                for intent in intents {
                    self.text.intent_ref(id, intent.value);
                }
            }
            Trigger::Event { kind, values } => {
                self.summary.event_rules += 1;
                let values: Option<Vec<String>> = values
                    .as_ref()
                    .map(|values| values.iter().map(|v| v.value.clone()).collect());
                self.events.add(id, *kind, values.as_deref());
            }
            Trigger::Default => {
                self.summary.default_rules += 1;
                self.defaults.push((rule.priority, id));
            }
        }
        self.summary.followups += rule.followups.len();
    }
}

/// An intent as defined, kept in the table for warnings (the index holds its phrases).
#[derive(Debug)]
pub(crate) struct Intent {
    pub name: String,
    /// The file it is defined in: an index into the table's file names.
    pub file: usize,
    /// Where its name is written.
    pub at: Pos,
    /// Normalised.
    pub phrases: Vec<String>,
    pub match_kind: MatchKind,
}

/// Reads every file's `[intents]` into the text index; returns name → intent id, and the
/// intents by id.
fn define_intents<'s>(
    sources: &[&RuleSource],
    files: &'s [RawFile],
    indexes: &mut Indexes,
    all_errors: &mut Vec<RuleError>,
) -> (HashMap<&'s str, usize>, Vec<Intent>) {
    // Name → (id, where it was first defined).
    let mut intents: HashMap<&str, (usize, String)> = HashMap::new();
    let mut defs = Vec::new();
    for (file_id, (source, file)) in sources.iter().zip(files).enumerate() {
        let mut errors = file_errors(source, all_errors);
        for (name, intent) in &file.intents {
            let at = name.span().start;
            if let Some((_, first)) = intents.get(name.get_ref().as_str()) {
                let name = name.get_ref();
                errors.push(
                    at,
                    format!("duplicate intent `{name}` (first defined at {first})"),
                );
                continue;
            }
            let id = intents.len();
            intents.insert(name.get_ref(), (id, errors.location(at)));
            let phrases = intent.phrases();
            if phrases.get_ref().is_empty() {
                let message = format!("intent `{}` has no phrases", name.get_ref());
                errors.push(phrases.span().start, message);
            }
            let normalised = phrases.get_ref().iter();
            let normalised: Vec<String> = normalised
                .filter_map(|p| keyword(p, "phrase", &mut errors))
                .collect();
            defs.push(Intent {
                name: name.get_ref().clone(),
                file: file_id,
                at: errors.position(at),
                phrases: normalised.clone(),
                match_kind: intent.match_kind(),
            });
            indexes.text.intent(id, normalised, intent.match_kind());
        }
    }
    indexes.summary.intents = intents.len();
    let names = intents
        .into_iter()
        .map(|(name, (id, _))| (name, id))
        .collect();
    (names, defs)
}

/// Where column `column` of a segment expression written as a TOML string is in the file.
/// Inside a plain "…" string the expression's characters follow the quote one to one; with
/// escapes the count may drift, so it never points past the string.
pub(super) fn expression_offset(w: &toml::Spanned<String>, column: usize) -> usize {
    let inside: usize = w
        .get_ref()
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (w.span().start + 1 + inside).min(w.span().end.saturating_sub(1))
}

fn file_errors<'a>(source: &'a RuleSource, errors: &'a mut Vec<RuleError>) -> FileErrors<'a> {
    FileErrors::new(&source.name, &source.text, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches the cases' config defines.
    fn context() -> RuleContext {
        RuleContext::with_coupon_batches(["new-guest", "vip-gift"])
    }

    fn compile_files(files: &[(&str, &str)]) -> Result<RuleTable, RuleErrors> {
        compile_in(files, &context())
    }

    fn compile_in(files: &[(&str, &str)], context: &RuleContext) -> Result<RuleTable, RuleErrors> {
        let sources: Vec<RuleSource> = files
            .iter()
            .map(|(name, text)| RuleSource {
                name: name.to_string(),
                text: text.to_string(),
            })
            .collect();
        compile(&sources, context)
    }

    /// A case: its name, the files, and every error expected as (`file:line:column`, a
    /// fragment of the message).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);

    /// Every case must fail with exactly the listed errors: `file:line:column` and a
    /// fragment of the message.
    #[test]
    fn errors() {
        const A: &str = "replies/a.toml";
        const B: &str = "replies/b.toml";
        let nine_articles = format!(
            "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply.news = [\n{}]\n",
            "{ title = \"t\" },\n".repeat(9)
        );
        let six_followups = format!(
            "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nfollowups = [\n{}]\n",
            "  { text = \"t\" },\n".repeat(6)
        );
        let cases: Vec<Case> = vec![
            (
                "bad TOML syntax",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = [\"x\" \"y\"]\n")],
                vec![("replies/a.toml:3:17", "missing comma")],
            ),
            (
                "unknown field",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = [\"x\"]\nreplay = \"hi\"\n")],
                vec![("replies/a.toml:4:1", "unknown field `replay`, expected one of")],
            ),
            (
                "wrong type",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = [\"x\"]\ncontinue = \"yes\"\n")],
                vec![("replies/a.toml:4:12", "invalid type: string \"yes\", expected a boolean")],
            ),
            (
                "invalid regex",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = [\"ok\", \"^订单(\\\\d+\"]\n")],
                vec![("replies/a.toml:3:16", "invalid regex `^订单(\\d+`: unclosed group")],
            ),
            (
                "undefined intent",
                vec![
                    (A, "[intents]\ngreeting = [\"hi\"]\nprice = [\"多少钱\"]\n"),
                    (B, "\n[[rule]]\nname = \"a\"\nintent = [\"greeting\", \"greting\"]\n"),
                ],
                vec![("replies/b.toml:4:23", "unknown intent `greting` (defined intents: greeting, price)")],
            ),
            (
                "intent with no intents defined",
                vec![(A, "[[rule]]\nname = \"a\"\nintent = \"greeting\"\n")],
                vec![("replies/a.toml:3:10", "unknown intent `greeting` (no intents are defined)")],
            ),
            (
                "duplicate rule name across files, reported at the second",
                vec![
                    (B, "[[rule]]\nname = \"dup\"\nkeywords = \"x\"\n"),
                    (A, "[[rule]]\nname = \"other\"\nkeywords = \"y\"\n\n[[rule]]\nname = \"dup\"\nkeywords = \"z\"\n"),
                ],
                vec![("replies/b.toml:2:8", "duplicate rule name `dup` (first defined at replies/a.toml:6)")],
            ),
            (
                "duplicate intent across files",
                vec![(A, "[intents]\ngreeting = [\"hi\"]\n"), (B, "[intents]\nother = [\"x\"]\ngreeting = [\"你好\"]\n")],
                vec![("replies/b.toml:3:1", "duplicate intent `greeting` (first defined at replies/a.toml:2)")],
            ),
            (
                "empty keyword list",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = []\n")],
                vec![("replies/a.toml:3:12", "empty keyword list")],
            ),
            (
                "keyword empty after normalisation",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = [\"ok\", \"！？\"]\n")],
                vec![("replies/a.toml:3:19", "keyword \"！？\" is empty after normalisation")],
            ),
            (
                "intent phrase empty after normalisation",
                vec![(A, "[intents]\ng = [\"  \"]\n")],
                vec![("replies/a.toml:2:6", "phrase \"  \" is empty after normalisation")],
            ),
            (
                "mixed trigger kinds",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = [\"x\"]\nevent = \"subscribe\"\n")],
                vec![("replies/a.toml:4:9", "rule `a` mixes trigger kinds (`keywords`, `event`)")],
            ),
            (
                "event and default",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"click\"\ndefault = true\n")],
                vec![("replies/a.toml:4:11", "mixes trigger kinds (`event`, `default`)")],
            ),
            (
                "no trigger",
                vec![(A, "[[rule]]\nname = \"a\"\ndefault = false\nreply = \"x\"\n")],
                vec![("replies/a.toml:2:8", "rule `a` has no trigger")],
            ),
            (
                "scene on the wrong event",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"click\"\nscene = \"spring\"\n")],
                vec![("replies/a.toml:4:9", "`scene` applies to subscribe, scan, add_external_contact events, not `click`")],
            ),
            (
                "key on the wrong event",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subscribe\"\nkey = [\"K\"]\n")],
                vec![("replies/a.toml:4:7", "`key` applies to click, view, scancode events, not `subscribe`")],
            ),
            (
                "scene without an event",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nscene = \"s\"\n")],
                vec![("replies/a.toml:4:9", "`scene` needs an `event` trigger")],
            ),
            (
                "a when that is not a segment expression",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nwhen = \"counter.orders >= lots\"\n")],
                vec![("replies/a.toml:4:27", "when: `lots` is not a whole number")],
            ),
            (
                "an autotag without a condition, and one with a broken one",
                vec![(A, "[[autotag]]\ntag = \"x\"\n\n[[autotag]]\ntag = \"y\"\nwhen = \"tag:\"\n")],
                vec![
                    ("replies/a.toml:1:1", "missing field `when`"),
                    ("replies/a.toml:6:9", "when: tag: needs a tag name"),
                ],
            ),
            (
                "empty scene value",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"scan\"\nscene = [\"\"]\n")],
                vec![("replies/a.toml:4:10", "empty scene: use \"*\"")],
            ),
            (
                "match without keywords",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = \"x\"\nmatch = \"contains\"\n")],
                vec![("replies/a.toml:4:9", "`match` applies to `keywords`")],
            ),
            (
                "unknown event",
                vec![(A, "[[rule]]\nname = \"a\"\nevent = \"subcribe\"\n")],
                vec![(
                    "replies/a.toml:3:9",
                    "unknown event `subcribe` (valid events: subscribe, unsubscribe, scan, click, view, location, \
                     scancode, enter_agent, add_external_contact, del_external_contact, template_finish, mass_finish)",
                )],
            ),
            (
                "reply table with several kinds",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\n[rule.reply]\ntext = \"t\"\nimage = \"m\"\n")],
                vec![("replies/a.toml:4:1", "exactly one of text, image, voice, video, music, news, transfer (found text, image)")],
            ),
            (
                "reply table with no kind",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply = {}\n")],
                vec![("replies/a.toml:4:9", "(found none)")],
            ),
            (
                "more than 8 news articles",
                vec![(A, &nine_articles)],
                vec![("replies/a.toml:4:14", "news has 9 articles; WeChat allows 1 to 8")],
            ),
            (
                "empty rule name",
                vec![(A, "[[rule]]\nname = \" \"\nkeywords = \"x\"\n")],
                vec![("replies/a.toml:2:8", "rule name is empty")],
            ),
            (
                "unknown placeholder, pointed at",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply = \"你好 {nmae}！\"\n")],
                vec![("replies/a.toml:4:13", "unknown placeholder `{nmae}` (known: {openid}")],
            ),
            (
                "unclosed brace in a set value",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nset = { city = \"{content\" }\n")],
                vec![("replies/a.toml:4:17", "unclosed `{`")],
            ),
            (
                "placeholder in a multi-line string",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply = \"\"\"\nline one\nline {two}\n\"\"\"\n")],
                vec![("replies/a.toml:6:6", "unknown placeholder `{two}`")],
            ),
            (
                "capture group without a regex",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nreply = \"#{match.1}\"\n")],
                vec![("replies/a.toml:4:11", "`{match.1}` needs a `regex` trigger")],
            ),
            (
                "capture group beyond the regex's",
                vec![(A, "[[rule]]\nname = \"a\"\nregex = \"^(a)$\"\nreply = \"{match.1}{match.2}\"\n")],
                vec![("replies/a.toml:4:19", "at most 1 capture group")],
            ),
            (
                "empty tag",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nadd_tags = [\"\"]\n")],
                vec![("replies/a.toml:4:13", "empty tag name")],
            ),
            (
                "coupon batch the config does not define, at its value",
                vec![(A, "[[rule]]\nname = \"claim\"\nkeywords = \"领券\"\nissue_coupon = \"new-gest\"\n")],
                vec![("replies/a.toml:4:16", "unknown coupon batch `new-gest` (defined batches: new-guest, vip-gift)")],
            ),
            (
                "empty coupon batch",
                vec![(A, "[[rule]]\nname = \"claim\"\nkeywords = \"领券\"\nissue_coupon = \" \"\n")],
                vec![("replies/a.toml:4:16", "issue_coupon names no batch")],
            ),
            (
                "six follow-ups, at the sixth",
                vec![(A, &six_followups)],
                vec![("replies/a.toml:10:3", "6 follow-ups; at most 5 (WeChat allows 5 customer-service messages")],
            ),
            (
                "unknown follow-up key",
                vec![(A, "[[rule]]\nname = \"a\"\nkeywords = \"x\"\nfollowups = [{ after = 2, txt = \"hi\" }]\n")],
                vec![("replies/a.toml:4:27", "unknown field `txt`, expected one of `after`, `text`")],
            ),
            (
                "follow-up mistakes, all of them, with the reply's",
                vec![(
                    A,
                    "[[rule]]\nname = \"a\"\nregex = \"^(a)$\"\nreply = \"{match.2}\"\nfollowups = [\n  { transfer = true },\n  { after = 90000, news = [{ title = \"a\" }, { title = \"b\" }] },\n  { text = \"{match.1} {match.2}\" },\n]\n",
                )],
                vec![
                    ("replies/a.toml:4:10", "at most 1 capture group"),
                    ("replies/a.toml:6:16", "`transfer` cannot be a follow-up"),
                    ("replies/a.toml:7:13", "`after = 90000`: give 0 to 86400 seconds"),
                    ("replies/a.toml:7:27", "a follow-up's news has 2 articles; it takes exactly 1"),
                    ("replies/a.toml:8:23", "`{match.2}`: this rule's regexes have at most 1 capture group"),
                ],
            ),
        ];
        for (name, files, expected) in cases {
            let errors = match compile_files(&files) {
                Ok(_) => panic!("{name}: compiled"),
                Err(RuleErrors(errors)) => errors,
            };
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(errors.len(), expected.len(), "{name}: {shown:#?}");
            for (error, (at, fragment)) in errors.iter().zip(&expected) {
                let location = format!("{}:{}:{}", error.file, error.line, error.column);
                assert_eq!(&location, at, "{name}: {error}");
                assert!(
                    error.message.contains(fragment),
                    "{name}: {error}\nwanted: {fragment}"
                );
                assert!(!error.message.contains('\n'), "{name}: one line: {error}");
            }
        }
    }

    /// One run reports every mistake of every file, in file order then line order.
    #[test]
    fn all_errors_at_once() {
        let a = "[[rule]]\nname = \"a\"\nkeywords = []\n\n[[rule]]\nname = \"b\"\nevent = \"nope\"\nreply = \"{x}\"\n\n[[rule]]\nname = \"fine\"\nkeywords = \"ok\"\n";
        let b = "[[rule]]\nname = \"a\"\nregex = \"(\"\nintent = \"missing\"\n\n[[rule]]\nname = \"c\"\nunknown = 1\n";
        let c = "this is not toml\n";
        let errors = compile_files(&[
            ("replies/c.toml", c),
            ("replies/b.toml", b),
            ("replies/a.toml", a),
        ])
        .expect_err("broken");
        let shown: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}:{}", e.file, e.line))
            .collect();
        assert_eq!(
            shown,
            [
                "replies/a.toml:3",
                "replies/a.toml:7",
                "replies/a.toml:8",
                "replies/b.toml:2",
                "replies/b.toml:3",
                "replies/b.toml:4",
                "replies/b.toml:8",
                "replies/c.toml:1",
            ],
            "{errors}"
        );
        assert_eq!(errors.to_string().lines().count(), 8);
    }

    /// `issue_coupon` is checked against the context it is compiled in, and only there:
    /// the same file compiles where the batch is defined and is refused where none is.
    #[test]
    fn coupon_batches_come_from_the_context() {
        let file = [(
            "replies/a.toml",
            "[[rule]]\nname = \"claim\"\nkeywords = \"领券\"\nissue_coupon = \"vip-gift\"\n",
        )];
        assert!(compile_files(&file).is_ok());
        let errors = compile_in(&file, &RuleContext::default()).expect_err("no batches defined");
        assert_eq!(
            errors.to_string(),
            "replies/a.toml:4:16: unknown coupon batch `vip-gift` (no coupon batches are defined)"
        );
    }

    #[test]
    fn summary_counts() {
        let text = r#"
[intents]
greeting = ["hi"]
price = { phrases = ["price"], match = "contains" }

[[rule]]
name = "k"
keywords = ["a", "b", "c"]
regex = ["x", "y"]

[[rule]]
name = "i"
intent = "greeting"

[[rule]]
name = "e"
event = "subscribe"

[[rule]]
name = "d"
default = true
followups = [{ text = "a" }, { after = 9, image = "m" }]
"#;
        let table = compile_files(&[("r1.toml", text), ("r2.toml", "")]).expect("valid");
        assert_eq!(
            table.summary(),
            Summary {
                files: 2,
                rules: 4,
                keywords: 3,
                regexes: 2,
                intents: 2,
                event_rules: 1,
                default_rules: 1,
                followups: 2,
            }
        );
        assert_eq!(table.len(), 4);
    }
}
