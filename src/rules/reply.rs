//! A rule's reply, compiled: the protocol's [`Reply`] with every string a [`Template`].
//!
//! Compiled from the raw `reply = …` value (checking that a table names exactly one kind
//! and that news has 1 to 8 articles) and rendered per message. Text replies may list
//! variants; the caller's seed picks one, so a test can pin the choice.

use toml::Spanned;

use super::error::FileErrors;
use super::format::{
    items, RawArticle, RawMusic, RawReply, RawReplyTable, RawTransfer, RawVideo, Strings,
};
use super::render::{Context, Template};
use crate::follower::Follower;
use crate::protocol::{Article, Reply};

/// WeChat's passive news reply carries at most 8 articles.
const MAX_ARTICLES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReplyTemplate {
    /// One variant is picked per message: `seed % len`.
    Text(Vec<Template>),
    Image(Template),
    Voice(Template),
    Video {
        media_id: Template,
        title: Option<Template>,
        description: Option<Template>,
    },
    Music {
        thumb_media_id: Template,
        title: Option<Template>,
        description: Option<Template>,
        music_url: Option<Template>,
        hq_music_url: Option<Template>,
    },
    News(Vec<ArticleTemplate>),
    Transfer(Option<Template>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArticleTemplate {
    title: Template,
    description: Option<Template>,
    pic_url: Option<Template>,
    url: Option<Template>,
}

impl ReplyTemplate {
    /// Compiles `raw`, recording every problem; `None` if there was any.
    /// `groups`: see [`Template::compile`].
    pub fn compile(
        raw: &Spanned<RawReply>,
        groups: Option<usize>,
        errors: &mut FileErrors<'_>,
    ) -> Option<ReplyTemplate> {
        let mut cx = Cx { groups, errors };
        match raw.get_ref() {
            RawReply::Text(strings) => cx
                .text(&Spanned::new(raw.span(), strings.clone()))
                .map(ReplyTemplate::Text),
            RawReply::Table(table) => cx.table(raw.span().start, table),
        }
    }

    /// Compiles the table form of a message written at byte `at`: a follow-up's, once
    /// `followup.rs` has checked what a follow-up may not be.
    pub fn compile_table(
        at: usize,
        table: &RawReplyTable,
        groups: Option<usize>,
        errors: &mut FileErrors<'_>,
    ) -> Option<ReplyTemplate> {
        Cx { groups, errors }.table(at, table)
    }

    pub fn render(&self, ctx: &Context<'_>, follower: &Follower, seed: u64) -> Reply {
        let r = |t: &Template| t.render(ctx, follower);
        let opt = |t: &Option<Template>| t.as_ref().map(r);
        match self {
            ReplyTemplate::Text(variants) => {
                // `compile` refuses an empty list, and `seed % len` is below `len`.
                let pick = (seed % variants.len() as u64) as usize;
                Reply::Text {
                    content: r(&variants[pick]),
                }
            }
            ReplyTemplate::Image(media_id) => Reply::Image {
                media_id: r(media_id),
            },
            ReplyTemplate::Voice(media_id) => Reply::Voice {
                media_id: r(media_id),
            },
            ReplyTemplate::Video {
                media_id,
                title,
                description,
            } => Reply::Video {
                media_id: r(media_id),
                title: opt(title),
                description: opt(description),
            },
            ReplyTemplate::Music {
                thumb_media_id,
                title,
                description,
                music_url,
                hq_music_url,
            } => Reply::Music {
                title: opt(title),
                description: opt(description),
                music_url: opt(music_url),
                hq_music_url: opt(hq_music_url),
                thumb_media_id: r(thumb_media_id),
            },
            ReplyTemplate::News(articles) => Reply::News {
                articles: articles
                    .iter()
                    .map(|a| Article {
                        title: r(&a.title),
                        description: opt(&a.description),
                        pic_url: opt(&a.pic_url),
                        url: opt(&a.url),
                    })
                    .collect(),
            },
            ReplyTemplate::Transfer(kf_account) => Reply::TransferCustomerService {
                kf_account: opt(kf_account),
            },
        }
    }

    /// Every template of the reply, for checks that look at all of them.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            ReplyTemplate::Text(variants) => variants.iter().collect(),
            ReplyTemplate::Image(t) | ReplyTemplate::Voice(t) => vec![t],
            ReplyTemplate::Video {
                media_id,
                title,
                description,
            } => [Some(media_id), title.as_ref(), description.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            ReplyTemplate::Music {
                thumb_media_id,
                title,
                description,
                music_url,
                hq_music_url,
            } => [
                Some(thumb_media_id),
                title.as_ref(),
                description.as_ref(),
                music_url.as_ref(),
                hq_music_url.as_ref(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ReplyTemplate::News(articles) => articles
                .iter()
                .flat_map(|a| {
                    [
                        Some(&a.title),
                        a.description.as_ref(),
                        a.pic_url.as_ref(),
                        a.url.as_ref(),
                    ]
                })
                .flatten()
                .collect(),
            ReplyTemplate::Transfer(kf) => kf.iter().collect(),
        }
    }
}

/// Compiling one reply: every string is a template checked against the rule's regexes.
struct Cx<'e, 'a> {
    groups: Option<usize>,
    errors: &'e mut FileErrors<'a>,
}

impl Cx<'_, '_> {
    fn table(&mut self, at: usize, table: &RawReplyTable) -> Option<ReplyTemplate> {
        let present = table.kinds();
        if present.len() != 1 {
            let found = if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            };
            self.errors.push(
                at,
                format!(
                    "a reply table needs exactly one of text, image, voice, video, music, news, \
                     transfer (found {found})"
                ),
            );
            return None;
        }
        if let Some(strings) = &table.text {
            return self.text(strings).map(ReplyTemplate::Text);
        }
        if let Some(media_id) = &table.image {
            return self.one(media_id).map(ReplyTemplate::Image);
        }
        if let Some(media_id) = &table.voice {
            return self.one(media_id).map(ReplyTemplate::Voice);
        }
        if let Some(video) = &table.video {
            let RawVideo {
                media_id,
                title,
                description,
            } = video.get_ref();
            let (media_id, title, description) = (
                self.one(media_id),
                self.optional(title),
                self.optional(description),
            );
            return Some(ReplyTemplate::Video {
                media_id: media_id?,
                title: title?,
                description: description?,
            });
        }
        if let Some(music) = &table.music {
            let RawMusic {
                thumb_media_id,
                title,
                description,
                music_url,
                hq_music_url,
            } = music.get_ref();
            let compiled = (
                self.one(thumb_media_id),
                self.optional(title),
                self.optional(description),
                self.optional(music_url),
                self.optional(hq_music_url),
            );
            return Some(ReplyTemplate::Music {
                thumb_media_id: compiled.0?,
                title: compiled.1?,
                description: compiled.2?,
                music_url: compiled.3?,
                hq_music_url: compiled.4?,
            });
        }
        if let Some(news) = &table.news {
            return self.news(news).map(ReplyTemplate::News);
        }
        match table.transfer.as_ref().map(|t| (t.span(), t.get_ref())) {
            Some((_, RawTransfer::Flag(true))) => Some(ReplyTemplate::Transfer(None)),
            Some((span, RawTransfer::Flag(false))) => {
                self.errors.push(
                    span.start,
                    "`transfer = false` does nothing: remove the reply, or write `transfer = true`",
                );
                None
            }
            Some((span, RawTransfer::To(kf))) => self
                .one(&Spanned::new(span, kf.clone()))
                .map(|kf| ReplyTemplate::Transfer(Some(kf))),
            // `present` has exactly one entry, and every other kind returned above.
            None => None,
        }
    }

    /// Text variants: at least one, all compiled (every bad one is reported).
    fn text(&mut self, strings: &Spanned<Strings>) -> Option<Vec<Template>> {
        let variants = items(strings);
        if variants.is_empty() {
            self.errors.push(
                strings.span().start,
                "empty reply list: give at least one text",
            );
            return None;
        }
        let compiled: Vec<Option<Template>> = variants.iter().map(|v| self.one(v)).collect();
        compiled.into_iter().collect()
    }

    fn news(&mut self, news: &Spanned<Vec<Spanned<RawArticle>>>) -> Option<Vec<ArticleTemplate>> {
        let articles = news.get_ref();
        if articles.is_empty() || articles.len() > MAX_ARTICLES {
            self.errors.push(
                news.span().start,
                format!(
                    "news has {} articles; WeChat allows 1 to {MAX_ARTICLES}",
                    articles.len()
                ),
            );
            return None;
        }
        let compiled: Vec<Option<ArticleTemplate>> = articles
            .iter()
            .map(|a| {
                let RawArticle {
                    title,
                    description,
                    pic_url,
                    url,
                } = a.get_ref();
                let parts = (
                    self.one(title),
                    self.optional(description),
                    self.optional(pic_url),
                    self.optional(url),
                );
                Some(ArticleTemplate {
                    title: parts.0?,
                    description: parts.1?,
                    pic_url: parts.2?,
                    url: parts.3?,
                })
            })
            .collect();
        compiled.into_iter().collect()
    }

    /// `Some(None)` for an absent field, `None` for a present one that failed.
    fn optional(&mut self, source: &Option<Spanned<String>>) -> Option<Option<Template>> {
        match source {
            None => Some(None),
            Some(s) => self.one(s).map(Some),
        }
    }

    fn one(&mut self, source: &Spanned<String>) -> Option<Template> {
        Template::compile(source, self.groups, self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::error::RuleError;
    use crate::rules::format::RawRule;

    /// Compiles the `reply` of a one-rule document.
    fn compile(reply: &str) -> Result<ReplyTemplate, Vec<RuleError>> {
        let text = format!("name = \"r\"\n{reply}\n");
        let rule: RawRule = toml::from_str(&text).unwrap_or_else(|e| panic!("{reply}: {e}"));
        let mut list = Vec::new();
        let mut errors = FileErrors::new("r.toml", &text, &mut list);
        let compiled =
            ReplyTemplate::compile(rule.reply.as_ref().expect("reply"), Some(0), &mut errors);
        compiled.ok_or(list)
    }

    fn render(reply: &str, seed: u64) -> Reply {
        let t = compile(reply).unwrap_or_else(|e| panic!("{reply}: {e:?}"));
        t.render(&Context::default(), &Follower::new("o1"), seed)
    }

    #[test]
    fn every_kind_renders_placeholders() {
        let s = |v: &str| Some(v.to_string());
        let cases = [
            (
                "text shorthand",
                "reply = \"hi {openid}\"",
                Reply::Text {
                    content: "hi o1".into(),
                },
            ),
            (
                "text table",
                "reply.text = \"{{x}}\"",
                Reply::Text {
                    content: "{x}".into(),
                },
            ),
            (
                "image",
                "reply.image = \"M_{openid}\"",
                Reply::Image {
                    media_id: "M_o1".into(),
                },
            ),
            (
                "voice",
                "reply.voice = \"V\"",
                Reply::Voice {
                    media_id: "V".into(),
                },
            ),
            (
                "video",
                "reply.video = { media_id = \"M\", title = \"给{openid}\" }",
                Reply::Video {
                    media_id: "M".into(),
                    title: s("给o1"),
                    description: None,
                },
            ),
            (
                "music",
                "reply.music = { thumb_media_id = \"T\", music_url = \"https://x/{openid}.mp3\" }",
                Reply::Music {
                    title: None,
                    description: None,
                    music_url: s("https://x/o1.mp3"),
                    hq_music_url: None,
                    thumb_media_id: "T".into(),
                },
            ),
            (
                "news",
                "reply.news = [{ title = \"门店\", url = \"https://x/?u={openid}\" }]",
                Reply::News {
                    articles: vec![Article {
                        title: "门店".into(),
                        description: None,
                        pic_url: None,
                        url: s("https://x/?u=o1"),
                    }],
                },
            ),
            (
                "transfer",
                "reply.transfer = true",
                Reply::TransferCustomerService { kf_account: None },
            ),
            (
                "transfer to an account",
                "reply.transfer = \"kf2001@gh_x\"",
                Reply::TransferCustomerService {
                    kf_account: s("kf2001@gh_x"),
                },
            ),
        ];
        for (name, reply, expected) in cases {
            assert_eq!(render(reply, 0), expected, "{name}");
        }
    }

    #[test]
    fn seed_picks_the_variant() {
        let reply = "reply = [\"a\", \"b\", \"c\"]";
        let picked: Vec<Reply> = [0, 1, 2, 3, u64::MAX]
            .into_iter()
            .map(|seed| render(reply, seed))
            .collect();
        let text = |c: &str| Reply::Text { content: c.into() };
        // u64::MAX % 3 == 0.
        assert_eq!(
            picked,
            [text("a"), text("b"), text("c"), text("a"), text("a")]
        );
    }

    #[test]
    fn errors() {
        let nine: Vec<String> = (0..9).map(|i| format!("{{ title = \"t{i}\" }}")).collect();
        let nine = format!("reply.news = [{}]", nine.join(", "));
        let cases = [
            ("two kinds", "reply = { text = \"a\", image = \"m\" }", 2, 9, "exactly one of text, image, voice, video, music, news, transfer (found text, image)"),
            ("no kind", "reply = {}", 2, 9, "(found none)"),
            ("empty variants", "reply = []", 2, 9, "empty reply list"),
            ("nine articles", nine.as_str(), 2, 14, "news has 9 articles; WeChat allows 1 to 8"),
            ("no articles", "reply.news = []", 2, 14, "news has 0 articles"),
            ("transfer false", "reply.transfer = false", 2, 18, "does nothing"),
            ("placeholder in a variant", "reply = [\"ok\", \"hi {nme}\"]", 2, 20, "unknown placeholder `{nme}`"),
            ("placeholder in an article", "reply.news = [{ title = \"t\", url = \"{x}\" }]", 2, 37, "unknown placeholder `{x}`"),
        ];
        for (name, reply, line, column, message) in cases {
            let errors = compile(reply).expect_err(name);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            let e = &errors[0];
            assert_eq!((e.line, e.column), (line, column), "{name}: {e}");
            assert!(e.message.contains(message), "{name}: {e}");
        }
    }
}
