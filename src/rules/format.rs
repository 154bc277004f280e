//! The rule-file format: what an operator writes in `replies/*.toml`, read as-is.
//!
//! These raw structs mirror the file one-to-one and keep the span of every value that can
//! be wrong, so that `compile.rs` can report `file:line:column`. Each `[[rule]]` and each
//! intent is deserialised on its own, so a mistake in one does not hide mistakes in the
//! others.
//!
//! # The format
//!
//! A rule folder holds any number of `*.toml` files, read in file-name order. Each file may
//! define `[intents]` and any number of `[[rule]]` tables; nothing else is allowed at the
//! top level.
//!
//! ```toml
//! [intents]                    # named phrase sets, global across files, reusable by any rule
//! greeting = ["你好", "hello", "在吗"]                             # phrases matched exactly
//! price = { phrases = ["多少钱", "价格"], match = "contains" }   # or with a match kind
//!
//! [[rule]]
//! name = "coupon"              # required, unique across all files
//! priority = 10                # optional, default 0; higher is tried first
//! keywords = ["优惠券", "coupon"]
//! match = "contains"           # exact (default) | prefix | contains — for `keywords` only
//! # regex = "^订单\\s*(\\d+)$"   # and/or regexes; captures are {match.1}, {match.2}…
//! # intent = "greeting"        # and/or intent names
//! # event = "subscribe"        # instead of text triggers: an event (see below)
//! # scene = "spring-poster"    # …narrowed to one QR scene (or a list, or "*")
//! # default = true             # or: the answer when no other rule took a message
//! if_tag = ["vip"]             # the follower has ALL these tags…
//! unless_tag = ["blocked"]     # …and NONE of these
//! when = "counter.orders >= 1 AND subscribed_within 30d"   # …and this segment expression holds
//! reply = "领券：{attr.coupon_link}"
//! followups = [                # more messages after the reply (see Follow-ups below)
//!   { after = 2, text = "第二条：今天的新品是桂花乌龙" },
//! ]
//! remove_tags = ["cold"]       # actions, applied in this order:
//! add_tags = ["coupon-seeker"] #   remove_tags, add_tags, set, incr
//! set = { last_topic = "coupon", said = "{content}" }
//! incr = { coupon_asks = 1 }   # negative numbers count down
//! continue = false             # true: act, then keep looking for further rules
//! ```
//!
//! **Triggers.** A rule has exactly one kind of trigger:
//! - *text*: any combination of `keywords`, `regex` and `intent` (each a string or a list);
//!   the rule fires when any of them matches the message text (a text message's content, or
//!   a voice message's speech recognition);
//! - *event*: `event = "…"`, one of `subscribe`, `unsubscribe`, `scan`, `click`, `view`,
//!   `location`, `scancode`, `enter_agent`, `add_external_contact`, `del_external_contact`,
//!   `template_finish`, `mass_finish`. `scene = …` narrows `subscribe`, `scan` and
//!   `add_external_contact` to a QR scene or channel-code state; `key = …` narrows `click`,
//!   `scancode` (menu key) and `view` (menu URL). Both take a string or a list; `"*"` means
//!   any non-empty value; leaving them out means any value, including none. WeChat shows
//!   no reply to `unsubscribe`, `del_external_contact` and the `*_finish` reports: use
//!   those rules for their actions;
//! - *default*: `default = true` fires for a message (never an event) that no other rule
//!   took, including images, locations and voice without recognition.
//!
//! **Matching.** The message text and every keyword and phrase are normalised first:
//! full-width letters, digits and punctuation become ASCII, everything is lower-cased,
//! whitespace and punctuation are trimmed from both ends and inner whitespace runs become
//! one space ("ＶＩＰ！" matches `vip`; "Hello, World!!" is "hello, world"). `exact` wants
//! the whole text, `prefix` its start, `contains` any part (plain string comparison, no
//! word boundaries). Regexes run against the normalised text, case-insensitively, so their
//! captures are normalised too. Tags are identifiers: compared as written.
//!
//! **Order.** Candidates are tried by priority (higher first), then specificity, then
//! declaration order (file name, then position in the file). Specificity, from most to
//! least specific: for text, the kind of the trigger that matched — exact keyword, prefix
//! keyword, contains keyword, regex, intent (if several matched, the most specific counts);
//! for events, a listed `scene`/`key` value, then `"*"`, then no filter. Default rules come
//! after all others, ordered among themselves by priority then declaration. A rule whose
//! conditions fail is skipped. The first rule that fires ends the search unless it has
//! `continue = true`, in which case its actions are applied and the search goes on (later
//! rules' conditions see those actions, and a default rule still fires if only `continue`
//! rules did). The reply is the first fired rule's reply; a rule with no reply just acts
//! (and, without `continue`, silences the rules after it, the default included).
//!
//! **Replies.** `reply = "text"`, or a list of texts to pick one at random, or a table with
//! exactly one key: `text` (string or list), `image = "MEDIA_ID"`, `voice = "MEDIA_ID"`,
//! `video = { media_id, title?, description? }`,
//! `music = { thumb_media_id, title?, description?, music_url?, hq_music_url? }`,
//! `news = [{ title, description?, pic_url?, url? }, …]` (1 to 8 articles), or
//! `transfer = true` / `transfer = "kf2001@gh_xxx"` to hand over to human service.
//!
//! **Follow-ups.** A rule can also ask for up to 5 more messages, sent after the reply
//! through WeChat's customer-service API:
//!
//! ```toml
//! followups = [
//!   { after = 2, text = "第二条：今天的新品是桂花乌龙 {openid}" },  # 2 seconds after the reply
//!   { after = 5, image = "MEDIA_ID" },
//!   { news = [{ title = "春季茶单", description = "…", url = "https://…", pic_url = "https://…" }] },
//! ]
//! ```
//!
//! Each entry has `after` (seconds after the reply: 0, the default, to 86400) and exactly
//! one of `text` (a string, or a list of variants), `image`, `voice`, `video`, `music`,
//! `news`, written as in a reply table; `transfer` is a passive reply only, and news takes
//! exactly 1 article (a customer-service news message is one link card). Every fired rule
//! sends its follow-ups, in firing order: a `continue` rule's too, even when a later rule
//! gives the reply. They are rendered with the reply (same placeholders, after every fired
//! rule's actions, `{match.N}` from the rule's own regex) and a list of texts picks the same
//! variant as the reply's. WeChat accepts them only inside a window the follower opened: 5
//! messages within 48 hours of a message, 3 within a minute of a subscribe, QR scan or menu
//! click, none after `unsubscribe`, `view`, `location`, the `*_finish` reports or WeCom
//! events; `siyu check` warns about rules that cannot fit. Sending them is the outbox's job.
//!
//! **Placeholders** in every reply and follow-up string and `set` value: `{openid}`, `{content}` (the
//! text as sent, not normalised), `{scene}` (this event's scene, else the follower's
//! latest), `{first_scene}`, `{tags}` (sorted, joined with ", "), `{attr.NAME}` ("" if
//! unset), `{counter.NAME}` (0 if unset), `{messages_in}`, `{match.N}` (capture N of the
//! rule's regex that matched, "" if none did; the rule must have a regex with that many
//! groups), `{event_key}` (menu key, URL, scene…). `{{` and `}}` are literal braces; a lone
//! brace is an error. A rule's `set` values are rendered after its tag changes and before
//! its `set` and `incr` apply. Replies and follow-ups are rendered last, after every fired
//! rule's actions, so `incr = { checkin = 1 }` with "第{counter.checkin}次" shows the new
//! count.
//!
//! **Errors.** Any mistake — bad TOML, an unknown key, a wrong type, a bad regex, an
//! undefined intent, a duplicate name, a misplaced `scene`, an unknown placeholder… —
//! refuses the whole folder, and every mistake is listed as `file:line:column: message`
//! (columns count characters). For TOML syntax errors only the first of each file is
//! shown, since the ones after it are usually its echoes.
//!
//! **Warnings.** `siyu check` also prints what compiles but looks wrong, as
//! `file:line:column: warning: message`, without refusing the folder: a keyword (or a
//! whole rule) that never fires because an earlier rule always takes its messages, the
//! same keyword in two rules of the same priority, an unused intent, a placeholder that
//! may render empty, a regex that matches the empty string (see `warnings.rs`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::FileErrors;

/// One file, as far as it could be read.
#[derive(Debug, Default)]
pub(crate) struct RawFile {
    /// In name order (TOML tables are unordered); the name keeps its span.
    pub intents: Vec<(Spanned<String>, RawIntent)>,
    pub rules: Vec<RawRule>,
    pub autotags: Vec<RawAutoTag>,
}

/// `[[autotag]]`: a tag the follower carries while a segment expression holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAutoTag {
    pub tag: Spanned<String>,
    pub when: Spanned<String>,
    /// Take the tag off again when the expression stops holding (default: it stays).
    #[serde(default)]
    pub remove: bool,
}

/// Reads `text`, recording in `errors` every intent and rule that cannot be read; the
/// ones that can are returned so that compiling them can find further mistakes.
pub(crate) fn parse_file(text: &str, errors: &mut FileErrors<'_>) -> RawFile {
    let mut file = RawFile::default();
    // The parser reports errors in its own order, and its recovery cascades (one missing
    // comma yields five errors), so only the earliest one in the file is shown.
    let (root, syntax) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax.iter().min_by_key(|e| toml_offset(e, 0)) {
        errors.push(toml_offset(e, 0), e.message().trim());
        return file;
    }
    for (key, value) in root.into_inner() {
        let span = value.span();
        match (key.get_ref().as_ref(), value.into_inner()) {
            ("intents", DeValue::Table(intents)) => {
                for (name, value) in intents {
                    let at = value.span().start;
                    match RawIntent::deserialize(ValueDeserializer::from(value)) {
                        Ok(intent) => {
                            let name = Spanned::new(name.span(), name.into_inner().into_owned());
                            file.intents.push((name, intent));
                        }
                        Err(e) => errors.push(toml_offset(&e, at), e.message().trim()),
                    }
                }
            }
            ("intents", _) => errors.push(span.start, "`intents` must be a table: write `[intents]`"),
            ("rule", DeValue::Array(rules)) => {
                for value in rules {
                    let at = value.span().start;
                    match RawRule::deserialize(ValueDeserializer::from(value)) {
                        Ok(rule) => file.rules.push(rule),
                        Err(e) => errors.push(toml_offset(&e, at), e.message().trim()),
                    }
                }
            }
            ("rule", _) => errors.push(
                span.start,
                "`rule` must be an array of tables: write `[[rule]]` (double brackets)",
            ),
            ("autotag", DeValue::Array(tags)) => {
                for value in tags {
                    let at = value.span().start;
                    match RawAutoTag::deserialize(ValueDeserializer::from(value)) {
                        Ok(t) => file.autotags.push(t),
                        Err(e) => errors.push(toml_offset(&e, at), e.message().trim()),
                    }
                }
            }
            ("autotag", _) => errors.push(
                span.start,
                "`autotag` must be an array of tables: write `[[autotag]]` (double brackets)",
            ),
            (other, _) => errors.push(
                key.span().start,
                format!("unknown top-level key `{other}` (a rule file holds `[intents]`, `[[rule]]` and `[[autotag]]`)"),
            ),
        }
    }
    file
}

/// Where a TOML error is, or `fallback` when the parser gives no span.
pub(crate) fn toml_offset(e: &toml::de::Error, fallback: usize) -> usize {
    e.span().map_or(fallback, |s| s.start)
}

/// One `[[rule]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Spanned<String>,
    #[serde(default)]
    pub priority: i64,
    pub keywords: Option<Spanned<Strings>>,
    #[serde(rename = "match")]
    pub match_kind: Option<Spanned<MatchKind>>,
    pub regex: Option<Spanned<Strings>>,
    pub intent: Option<Spanned<Strings>>,
    pub event: Option<Spanned<String>>,
    pub scene: Option<Spanned<Strings>>,
    pub key: Option<Spanned<Strings>>,
    pub default: Option<Spanned<bool>>,
    pub if_tag: Option<Spanned<Strings>>,
    pub unless_tag: Option<Spanned<Strings>>,
    /// A segment expression over the follower (README "Segments").
    pub when: Option<Spanned<String>>,
    pub reply: Option<Spanned<RawReply>>,
    pub add_tags: Option<Spanned<Strings>>,
    pub remove_tags: Option<Spanned<Strings>>,
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    pub incr: Option<BTreeMap<String, Spanned<i64>>>,
    #[serde(rename = "continue", default)]
    pub continues: bool,
    pub followups: Option<Spanned<Vec<Spanned<RawFollowUp>>>>,
    /// `issue_coupon = "batch"`: give the follower a code of that batch.
    pub issue_coupon: Option<Spanned<String>>,
    /// The reply instead of `reply` when the coupon could not be issued.
    pub coupon_refused: Option<Spanned<String>>,
}

/// How a keyword or phrase is compared with the normalised message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MatchKind {
    #[default]
    Exact,
    Prefix,
    Contains,
}

/// A string or a list of strings, as operators write either for one value.
#[derive(Debug, Clone)]
pub(crate) enum Strings {
    /// Its span is the enclosing `Spanned`'s.
    One(String),
    Many(Vec<Spanned<String>>),
}

/// Every string of `strings`, each with its own span.
pub(crate) fn items(strings: &Spanned<Strings>) -> Vec<Spanned<String>> {
    match strings.get_ref() {
        Strings::One(s) => vec![Spanned::new(strings.span(), s.clone())],
        Strings::Many(items) => items.clone(),
    }
}

/// One entry of `[intents]`: a list of phrases, or a table with a match kind.
#[derive(Debug)]
pub(crate) enum RawIntent {
    List(Spanned<Vec<Spanned<String>>>),
    Table(RawIntentTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntentTable {
    pub phrases: Spanned<Vec<Spanned<String>>>,
    #[serde(rename = "match", default)]
    pub match_kind: MatchKind,
}

impl RawIntent {
    pub fn phrases(&self) -> &Spanned<Vec<Spanned<String>>> {
        match self {
            RawIntent::List(phrases) => phrases,
            RawIntent::Table(table) => &table.phrases,
        }
    }

    pub fn match_kind(&self) -> MatchKind {
        match self {
            RawIntent::List(_) => MatchKind::Exact,
            RawIntent::Table(table) => table.match_kind,
        }
    }
}

/// `reply = …`: text shorthand (a string or a list of variants), or a table.
#[derive(Debug)]
pub(crate) enum RawReply {
    Text(Strings),
    Table(Box<RawReplyTable>),
}

/// The table form of a reply; exactly one field must be present (checked when compiling,
/// so that the error can name what was found).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplyTable {
    pub text: Option<Spanned<Strings>>,
    pub image: Option<Spanned<String>>,
    pub voice: Option<Spanned<String>>,
    pub video: Option<Spanned<RawVideo>>,
    pub music: Option<Spanned<RawMusic>>,
    pub news: Option<Spanned<Vec<Spanned<RawArticle>>>>,
    pub transfer: Option<Spanned<RawTransfer>>,
}

impl RawReplyTable {
    /// The kinds present, in the documented order; a valid table has exactly one.
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("text", self.text.is_some()),
            ("image", self.image.is_some()),
            ("voice", self.voice.is_some()),
            ("video", self.video.is_some()),
            ("music", self.music.is_some()),
            ("news", self.news.is_some()),
            ("transfer", self.transfer.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
    }
}

/// One entry of `followups = [...]`: when, and a message written like a reply table.
/// `transfer` is read only to be refused with a message that says why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFollowUp {
    /// Seconds after the reply; checked when compiling, so that the error can say the range.
    pub after: Option<Spanned<i64>>,
    pub text: Option<Spanned<Strings>>,
    pub image: Option<Spanned<String>>,
    pub voice: Option<Spanned<String>>,
    pub video: Option<Spanned<RawVideo>>,
    pub music: Option<Spanned<RawMusic>>,
    pub news: Option<Spanned<Vec<Spanned<RawArticle>>>>,
    pub transfer: Option<Spanned<RawTransfer>>,
}

impl RawFollowUp {
    /// The message, as the reply table it is written like.
    pub fn message(&self) -> RawReplyTable {
        RawReplyTable {
            text: self.text.clone(),
            image: self.image.clone(),
            voice: self.voice.clone(),
            video: self.video.clone(),
            music: self.music.clone(),
            news: self.news.clone(),
            transfer: self.transfer.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVideo {
    pub media_id: Spanned<String>,
    pub title: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMusic {
    pub thumb_media_id: Spanned<String>,
    pub title: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub music_url: Option<Spanned<String>>,
    pub hq_music_url: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArticle {
    pub title: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub pic_url: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
}

/// `transfer = true`, `transfer = false` (refused: it does nothing), or a kf account.
#[derive(Debug, Clone)]
pub(crate) enum RawTransfer {
    Flag(bool),
    To(String),
}

// Hand-written `Deserialize`s for the "this or that" values. `#[serde(untagged)]` would
// buffer the value, which loses toml's spans and replaces every inner error (an unknown
// field, a wrong type) with "data did not match any variant".

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strings, E> {
                Ok(Strings::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Strings, A::Error> {
                Ok(Strings::Many(strings(seq)?))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawIntent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The list form is deserialised as `Spanned` so that an empty list can be reported
        // at its position; a table goes through the visitor.
        let value = Spanned::<ListOrTable>::deserialize(d)?;
        let span = value.span();
        Ok(match value.into_inner() {
            ListOrTable::List(items) => RawIntent::List(Spanned::new(span, items)),
            ListOrTable::Table(table) => RawIntent::Table(table),
        })
    }
}

/// Helper for [`RawIntent`]: the two forms before the list gets its span.
enum ListOrTable {
    List(Vec<Spanned<String>>),
    Table(RawIntentTable),
}

impl<'de> Deserialize<'de> for ListOrTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListOrTable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of phrases, or a table `{ phrases = [...], match = \"...\" }`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ListOrTable, A::Error> {
                Ok(ListOrTable::List(strings(seq)?))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ListOrTable, A::Error> {
                let table =
                    RawIntentTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ListOrTable::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawReply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawReply;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, a list of strings, or a table with one of \
                     text, image, voice, video, music, news, transfer",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawReply, E> {
                Ok(RawReply::Text(Strings::One(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawReply, A::Error> {
                Ok(RawReply::Text(Strings::Many(strings(seq)?)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawReply, A::Error> {
                let table = RawReplyTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawReply::Table(Box::new(table)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawTransfer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawTransfer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, or a customer-service account such as \"kf2001@gh_xxx\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawTransfer, E> {
                Ok(RawTransfer::Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTransfer, E> {
                Ok(RawTransfer::To(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn strings<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Spanned<String>>, A::Error> {
    let mut items = Vec::new();
    while let Some(item) = seq.next_element::<Spanned<String>>()? {
        items.push(item);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::error::RuleError;

    fn parse(text: &str) -> (RawFile, Vec<RuleError>) {
        let mut errors = Vec::new();
        let file = parse_file(text, &mut FileErrors::new("r.toml", text, &mut errors));
        (file, errors)
    }

    #[test]
    fn reads_every_form() {
        let text = r#"
[intents]
greeting = ["你好", "hi"]
price = { phrases = ["多少钱"], match = "contains" }

[[rule]]
name = "a"
keywords = "优惠券"
reply = ["x", "y"]
set = { city = "{content}" }
incr = { n = 2 }

[[rule]]
name = "b"
event = "click"
key = ["K1", "K2"]
reply.news = [{ title = "t", url = "https://x" }]
continue = true
followups = [{ after = 2, text = ["a", "b"] }, { image = "M" }]

[[rule]]
name = "c"
default = true
reply.transfer = "kf@gh"
"#;
        let (file, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        let intents: Vec<(&str, MatchKind, usize)> = file
            .intents
            .iter()
            .map(|(n, i)| {
                (
                    n.get_ref().as_str(),
                    i.match_kind(),
                    i.phrases().get_ref().len(),
                )
            })
            .collect();
        assert_eq!(
            intents,
            [
                ("greeting", MatchKind::Exact, 2),
                ("price", MatchKind::Contains, 1)
            ]
        );
        let [a, b, c] = &file.rules[..] else {
            panic!("3 rules: {:?}", file.rules)
        };
        assert_eq!(items(a.keywords.as_ref().unwrap())[0].get_ref(), "优惠券");
        assert!(
            matches!(a.reply.as_ref().unwrap().get_ref(), RawReply::Text(Strings::Many(v)) if v.len() == 2)
        );
        assert_eq!(a.incr.as_ref().unwrap()["n"].get_ref(), &2);
        assert_eq!(items(b.key.as_ref().unwrap()).len(), 2);
        assert!(b.continues && !a.continues);
        let followups = b.followups.as_ref().unwrap().get_ref();
        let kinds: Vec<(Option<i64>, Vec<&str>)> = followups
            .iter()
            .map(|f| {
                let f = f.get_ref();
                (f.after.as_ref().map(|a| *a.get_ref()), f.message().kinds())
            })
            .collect();
        assert_eq!(kinds, [(Some(2), vec!["text"]), (None, vec!["image"])]);
        assert!(a.followups.is_none());
        let RawReply::Table(t) = c.reply.as_ref().unwrap().get_ref() else {
            panic!("table")
        };
        assert!(
            matches!(t.transfer.as_ref().unwrap().get_ref(), RawTransfer::To(k) if k == "kf@gh")
        );
        // Spans point into the file: the keyword string sits on line 8.
        let at = a.keywords.as_ref().unwrap().span().start;
        assert_eq!(crate::rules::error::line_column(text, at), (8, 12));
    }

    /// Each broken rule is reported and the good ones are still read.
    #[test]
    fn errors_are_per_rule() {
        let cases = [
            ("bad TOML", "[[rule]]\nname = \"a\nx", 2, "", 0),
            ("unknown field", "[[rule]]\nname = \"a\"\nkeyword = [\"x\"]\n", 3, "unknown field `keyword`", 0),
            ("wrong type", "[[rule]]\nname = \"a\"\npriority = \"high\"\n", 3, "invalid type", 0),
            ("missing name", "[[rule]]\nkeywords = [\"x\"]\n", 1, "missing field `name`", 0),
            ("bad match kind", "[[rule]]\nname = \"a\"\nmatch = \"fuzzy\"\n", 3, "unknown variant `fuzzy`", 0),
            (
                "unknown reply kind",
                "[[rule]]\nname = \"a\"\nreply.imag = \"m\"\n",
                3,
                "unknown field `imag`",
                0,
            ),
            (
                "bad article field, next rule still read",
                "[[rule]]\nname = \"a\"\nreply.news = [{ titel = \"t\" }]\n[[rule]]\nname = \"b\"\n",
                3,
                "unknown field `titel`",
                1,
            ),
            (
                "unknown follow-up key, next rule still read",
                "[[rule]]\nname = \"a\"\nfollowups = [{ text = \"x\" }, { delay = 3, text = \"y\" }]\n[[rule]]\nname = \"b\"\n",
                3,
                "unknown field `delay`, expected one of `after`, `text`",
                1,
            ),
            (
                "follow-up after of wrong type",
                "[[rule]]\nname = \"a\"\nfollowups = [{ after = \"2s\", text = \"x\" }]\n",
                3,
                "invalid type: string \"2s\", expected i64",
                0,
            ),
            (
                "followups as a table",
                "[[rule]]\nname = \"a\"\nfollowups = { text = \"x\" }\n",
                3,
                "invalid type: map, expected a sequence",
                0,
            ),
            ("single brackets", "[rule]\nname = \"a\"\n", 1, "write `[[rule]]`", 0),
            ("unknown top-level key", "[[rules]]\nname = \"a\"\n", 1, "unknown top-level key `rules`", 0),
            ("intent of wrong type", "[intents]\ngreeting = 3\n", 2, "a list of phrases", 0),
            ("intent table typo", "[intents]\ng = { phrase = [\"x\"] }\n", 2, "unknown field `phrase`", 0),
        ];
        for (name, text, line, message, rules_read) in cases {
            let (file, errors) = parse(text);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert_eq!(errors[0].line, line, "{name}: {}", errors[0]);
            assert!(errors[0].message.contains(message), "{name}: {}", errors[0]);
            assert!(
                !errors[0].message.contains('\n'),
                "{name}: one line: {}",
                errors[0]
            );
            assert_eq!(file.rules.len(), rules_read, "{name}");
        }
    }
}
