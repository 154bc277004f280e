//! Follow-ups: the further messages a fired rule asks for after its passive reply.
//!
//! A passive reply is one message, given inside WeChat's 5-second callback. A rule may ask
//! for more, sent later through the customer-service API:
//! `followups = [{ after = 2, text = "…" }, { image = "MEDIA_ID" }]`. Each entry is written
//! like the table form of a reply, plus `after` (seconds after the reply), minus what the
//! customer-service API cannot send: no `transfer`, and news with exactly one article.
//! This module compiles them and renders them into [`FollowUp`]s, the data the engine
//! hands to its outbox; sending, and checking WeChat's customer-service window, happen
//! there. Pure like the rest of the rule engine.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{FileErrors, Pos};
use super::format::RawFollowUp;
use super::render::{Context, Template};
use super::reply::ReplyTemplate;
use crate::follower::Follower;
use crate::protocol::Reply;

/// At most this many follow-ups per rule: after a follower's message WeChat allows 5
/// customer-service messages within 48 hours, so a sixth could never be sent.
pub(crate) const MAX_FOLLOWUPS: usize = 5;

/// The latest a follow-up may come, in seconds after the reply: a day. A follow-up
/// continues a conversation; anything later is a campaign, and WeChat's window (48 hours
/// after a message, 1 minute after a subscribe) would likely be shut by then anyway.
pub(crate) const MAX_AFTER_SECS: u32 = 86_400;

/// One follow-up message, rendered: what to send and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Seconds after the passive reply (0 to 86400).
    pub after_secs: u32,
    /// The message: `Text`, `Image`, `Voice`, `Video`, `Music` or `News` with exactly one
    /// article; never `TransferCustomerService`.
    pub message: Reply,
}

/// A compiled follow-up: its message's strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FollowUpTemplate {
    pub after_secs: u32,
    pub message: ReplyTemplate,
    /// Where the entry is written (its `{`), for warnings.
    pub at: Pos,
}

impl FollowUpTemplate {
    /// Compiles a rule's `followups` list, recording every problem; `None` if there was
    /// any. `groups`: see [`Template::compile`].
    pub fn compile_all(
        list: &Spanned<Vec<Spanned<RawFollowUp>>>,
        groups: Option<usize>,
        errors: &mut FileErrors<'_>,
    ) -> Option<Vec<FollowUpTemplate>> {
        let entries = list.get_ref();
        let too_many = entries.len() > MAX_FOLLOWUPS;
        if let Some(first_extra) = entries.get(MAX_FOLLOWUPS) {
            // At the first entry too many: the ones before it can all be sent.
            errors.push(
                first_extra.span().start,
                format!(
                    "{} follow-ups; at most {MAX_FOLLOWUPS} (WeChat allows 5 customer-service \
                     messages within 48 hours of a follower's message)",
                    entries.len()
                ),
            );
        }
        // Every entry is compiled even past the limit, so that all mistakes are listed.
        let compiled: Vec<Option<FollowUpTemplate>> = entries
            .iter()
            .map(|entry| FollowUpTemplate::compile(entry, groups, errors))
            .collect();
        let compiled: Option<Vec<FollowUpTemplate>> = compiled.into_iter().collect();
        compiled.filter(|_| !too_many)
    }

    fn compile(
        entry: &Spanned<RawFollowUp>,
        groups: Option<usize>,
        errors: &mut FileErrors<'_>,
    ) -> Option<FollowUpTemplate> {
        let at = entry.span().start;
        let raw = entry.get_ref();
        let after_secs = match &raw.after {
            None => Some(0),
            Some(after) => match u32::try_from(*after.get_ref()) {
                Ok(secs) if secs <= MAX_AFTER_SECS => Some(secs),
                _ => {
                    errors.push(
                        after.span().start,
                        format!(
                            "`after = {}`: give 0 to {MAX_AFTER_SECS} seconds (a follow-up comes \
                             at most a day after the reply)",
                            after.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let message = raw.message();
        let kinds = message.kinds();
        let message = if let Some(transfer) = &raw.transfer {
            errors.push(
                transfer.span().start,
                "`transfer` cannot be a follow-up: handing over to human service is a passive \
                 reply (`reply.transfer`)",
            );
            None
        } else if kinds.len() != 1 {
            let found = if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            };
            errors.push(
                at,
                format!(
                    "a follow-up needs exactly one of text, image, voice, video, music, news \
                     (found {found})"
                ),
            );
            None
        } else if let Some(news) = message.news.as_ref().filter(|n| n.get_ref().len() != 1) {
            errors.push(
                news.span().start,
                format!(
                    "a follow-up's news has {} articles; it takes exactly 1 (WeChat's \
                     customer-service news is one link card)",
                    news.get_ref().len()
                ),
            );
            None
        } else {
            ReplyTemplate::compile_table(at, &message, groups, errors)
        };
        Some(FollowUpTemplate {
            after_secs: after_secs?,
            message: message?,
            at: errors.position(at),
        })
    }

    /// Renders the message as a reply is rendered (`seed` picks a text variant the same way).
    pub fn render(&self, ctx: &Context<'_>, follower: &Follower, seed: u64) -> FollowUp {
        FollowUp {
            after_secs: self.after_secs,
            message: self.message.render(ctx, follower, seed),
        }
    }

    pub fn templates(&self) -> Vec<&Template> {
        self.message.templates()
    }
}

/// The kind of a follow-up's message, as suites and listings name it.
pub fn kind_name(message: &Reply) -> &'static str {
    match message {
        Reply::Text { .. } => "text",
        Reply::Image { .. } => "image",
        Reply::Voice { .. } => "voice",
        Reply::Video { .. } => "video",
        Reply::Music { .. } => "music",
        Reply::News { .. } => "news",
        Reply::TransferCustomerService { .. } => "transfer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Article;
    use crate::rules::error::RuleError;
    use crate::rules::format::RawRule;

    /// Compiles the `followups` of a one-rule document whose regex has one group.
    fn compile(followups: &str) -> Result<Vec<FollowUpTemplate>, Vec<RuleError>> {
        let text = format!("name = \"r\"\n{followups}\n");
        let rule: RawRule = toml::from_str(&text).unwrap_or_else(|e| panic!("{followups}: {e}"));
        let mut list = Vec::new();
        let mut errors = FileErrors::new("r.toml", &text, &mut list);
        let raw = rule.followups.as_ref().expect("followups");
        let compiled = FollowUpTemplate::compile_all(raw, Some(1), &mut errors);
        match compiled {
            Some(compiled) if list.is_empty() => Ok(compiled),
            _ => Err(list),
        }
    }

    fn render(followups: &str, seed: u64) -> Vec<FollowUp> {
        let compiled = compile(followups).unwrap_or_else(|e| panic!("{followups}: {e:?}"));
        let captures = ["order 42".to_string(), "42".to_string()];
        let ctx = Context {
            content: "Order 42",
            captures: &captures,
            ..Context::default()
        };
        let f = Follower::new("o1");
        compiled.iter().map(|t| t.render(&ctx, &f, seed)).collect()
    }

    #[test]
    fn every_kind_renders() {
        let s = |v: &str| Some(v.to_string());
        let at = |after_secs, message| FollowUp {
            after_secs,
            message,
        };
        let cases = [
            (
                "text, after defaults to 0",
                "followups = [{ text = \"hi {openid} #{match.1}\" }]",
                at(
                    0,
                    Reply::Text {
                        content: "hi o1 #42".into(),
                    },
                ),
            ),
            (
                "image",
                "followups = [{ after = 5, image = \"M_{openid}\" }]",
                at(
                    5,
                    Reply::Image {
                        media_id: "M_o1".into(),
                    },
                ),
            ),
            (
                "voice",
                "followups = [{ after = 86400, voice = \"V\" }]",
                at(
                    86_400,
                    Reply::Voice {
                        media_id: "V".into(),
                    },
                ),
            ),
            (
                "video",
                "followups = [{ video = { media_id = \"M\", description = \"{content}\" } }]",
                at(
                    0,
                    Reply::Video {
                        media_id: "M".into(),
                        title: None,
                        description: s("Order 42"),
                    },
                ),
            ),
            (
                "music",
                "followups = [{ after = 1, music = { thumb_media_id = \"T\", title = \"歌\" } }]",
                at(
                    1,
                    Reply::Music {
                        title: s("歌"),
                        description: None,
                        music_url: None,
                        hq_music_url: None,
                        thumb_media_id: "T".into(),
                    },
                ),
            ),
            (
                "news with one article, as a table array",
                "[[followups]]\nafter = 3\n[[followups.news]]\ntitle = \"春季茶单\"\ndescription = \"…\"\nurl = \"https://x/?u={openid}\"\npic_url = \"https://x/p.jpg\"",
                at(
                    3,
                    Reply::News {
                        articles: vec![Article {
                            title: "春季茶单".into(),
                            description: s("…"),
                            pic_url: s("https://x/p.jpg"),
                            url: s("https://x/?u=o1"),
                        }],
                    },
                ),
            ),
        ];
        for (name, followups, expected) in cases {
            assert_eq!(render(followups, 0), [expected], "{name}");
        }
    }

    #[test]
    fn order_and_variants() {
        let followups =
            "followups = [{ after = 2, text = [\"a\", \"b\"] }, { text = \"c\" }, { image = \"m\" }]";
        let shown = |seed| -> Vec<String> {
            render(followups, seed)
                .iter()
                .map(|f| match &f.message {
                    Reply::Text { content } => format!("{}:{content}", f.after_secs),
                    other => format!("{}:{}", f.after_secs, kind_name(other)),
                })
                .collect()
        };
        assert_eq!(shown(0), ["2:a", "0:c", "0:image"]);
        assert_eq!(shown(1), ["2:b", "0:c", "0:image"]);
    }

    #[test]
    fn five_is_the_limit() {
        let entries = |n: usize| {
            let entries: Vec<String> = (0..n).map(|i| format!("{{ text = \"{i}\" }}")).collect();
            format!("followups = [\n{}\n]", entries.join(",\n"))
        };
        assert_eq!(compile(&entries(5)).expect("5 is fine").len(), 5);
        assert!(compile("followups = []").expect("none").is_empty());
        let errors = compile(&entries(7)).expect_err("7");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "r.toml:8:1: 7 follow-ups; at most 5 (WeChat allows 5 customer-service messages \
              within 48 hours of a follower's message)"
            ]
        );
    }

    #[test]
    fn errors() {
        let cases = [
            (
                "after too late",
                "followups = [{ after = 86401, text = \"x\" }]",
                2,
                24,
                "`after = 86401`: give 0 to 86400 seconds",
            ),
            (
                "negative after",
                "followups = [{ after = -1, text = \"x\" }]",
                2,
                24,
                "`after = -1`",
            ),
            (
                "transfer",
                "followups = [{ transfer = true }]",
                2,
                27,
                "`transfer` cannot be a follow-up",
            ),
            (
                "transfer to an account",
                "followups = [{ after = 1, transfer = \"kf@gh\" }]",
                2,
                38,
                "`transfer` cannot be a follow-up",
            ),
            (
                "two kinds",
                "followups = [{ text = \"a\", image = \"m\" }]",
                2,
                14,
                "exactly one of text, image, voice, video, music, news (found text, image)",
            ),
            (
                "no kind",
                "followups = [{ after = 3 }]",
                2,
                14,
                "(found none)",
            ),
            (
                "two articles",
                "followups = [{ news = [{ title = \"a\" }, { title = \"b\" }] }]",
                2,
                23,
                "news has 2 articles; it takes exactly 1",
            ),
            (
                "no article",
                "followups = [{ news = [] }]",
                2,
                23,
                "news has 0 articles",
            ),
            (
                "empty variants",
                "followups = [{ text = [] }]",
                2,
                23,
                "empty reply list",
            ),
            (
                "unknown placeholder",
                "followups = [{ text = \"hi {nme}\" }]",
                2,
                27,
                "unknown placeholder `{nme}`",
            ),
            (
                "capture beyond the regex's",
                "followups = [{ image = \"{match.2}\" }]",
                2,
                25,
                "at most 1 capture group",
            ),
        ];
        for (name, followups, line, column, message) in cases {
            let errors = compile(followups).expect_err(name);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            let e = &errors[0];
            assert_eq!((e.line, e.column), (line, column), "{name}: {e}");
            assert!(e.message.contains(message), "{name}: {e}");
        }
    }

    #[test]
    fn every_mistake_is_reported() {
        let errors = compile("followups = [{ after = -5, news = [] }, { text = \"{x}\" }]")
            .expect_err("bad");
        let shown: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
        assert_eq!(errors.len(), 3, "{shown:#?}");
    }

    #[test]
    fn round_trips_through_json_and_postcard() {
        let f = FollowUp {
            after_secs: 2,
            message: Reply::Text {
                content: "第二条".into(),
            },
        };
        let json = serde_json::to_string(&f).expect("serialise");
        assert_eq!(
            json,
            r#"{"after_secs":2,"message":{"text":{"content":"第二条"}}}"#
        );
        assert_eq!(serde_json::from_str::<FollowUp>(&json).expect("parse"), f);
        // The store's binary format, which the outbox may keep them in.
        let bytes = postcard::to_allocvec(&f).expect("serialise");
        assert_eq!(postcard::from_bytes::<FollowUp>(&bytes).expect("parse"), f);
    }
}
