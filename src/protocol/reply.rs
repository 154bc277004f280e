//! Passive replies (protocol.md §7): the one message a callback may answer with.
//!
//! Pure: `Reply` is what the rule engine decides; [`reply_xml`] writes it for the wire.
//! Written by hand into one pre-sized `String` rather than with an XML library: the shape
//! is fixed, every value goes in CDATA, and this runs on every answered callback.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// A passive reply. "No reply" is not a variant: the server answers `success` then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (`{"text": {...}}`): readable as JSON, and decodable by the compact
// binary format the store uses, which cannot read internally tagged enums.
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Text {
        content: String,
    },
    Image {
        media_id: String,
    },
    Voice {
        media_id: String,
    },
    Video {
        media_id: String,
        title: Option<String>,
        description: Option<String>,
    },
    Music {
        title: Option<String>,
        description: Option<String>,
        music_url: Option<String>,
        hq_music_url: Option<String>,
        thumb_media_id: String,
    },
    /// Up to 8 articles in the format; WeChat shows only the first for passive replies.
    News {
        articles: Vec<Article>,
    },
    /// Hand the conversation to WeChat's human customer-service system.
    TransferCustomerService {
        kf_account: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    pub title: String,
    pub description: Option<String>,
    pub pic_url: Option<String>,
    pub url: Option<String>,
}

/// WeChat's format allows at most 8 articles in a passive news reply.
const MAX_ARTICLES: usize = 8;

/// Writes `reply` as passive-reply XML. `to` is the follower's openid (or WeCom UserID),
/// `from` the account's gh id (or corp id): the inbound message's `from` and `to` swapped.
/// Optional elements that are `None` are omitted.
pub fn reply_xml(reply: &Reply, to: &str, from: &str, create_time: i64) -> String {
    let mut out = String::with_capacity(256 + to.len() + from.len() + payload_len(reply));
    out.push_str("<xml>");
    cdata_element(&mut out, "ToUserName", to);
    cdata_element(&mut out, "FromUserName", from);
    // Writing into a String cannot fail.
    let _ = write!(out, "<CreateTime>{create_time}</CreateTime>");
    match reply {
        Reply::Text { content } => {
            cdata_element(&mut out, "MsgType", "text");
            cdata_element(&mut out, "Content", content);
        }
        Reply::Image { media_id } => {
            cdata_element(&mut out, "MsgType", "image");
            out.push_str("<Image>");
            cdata_element(&mut out, "MediaId", media_id);
            out.push_str("</Image>");
        }
        Reply::Voice { media_id } => {
            cdata_element(&mut out, "MsgType", "voice");
            out.push_str("<Voice>");
            cdata_element(&mut out, "MediaId", media_id);
            out.push_str("</Voice>");
        }
        Reply::Video {
            media_id,
            title,
            description,
        } => {
            cdata_element(&mut out, "MsgType", "video");
            out.push_str("<Video>");
            cdata_element(&mut out, "MediaId", media_id);
            opt_element(&mut out, "Title", title);
            opt_element(&mut out, "Description", description);
            out.push_str("</Video>");
        }
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => {
            cdata_element(&mut out, "MsgType", "music");
            out.push_str("<Music>");
            opt_element(&mut out, "Title", title);
            opt_element(&mut out, "Description", description);
            opt_element(&mut out, "MusicUrl", music_url);
            opt_element(&mut out, "HQMusicUrl", hq_music_url);
            cdata_element(&mut out, "ThumbMediaId", thumb_media_id);
            out.push_str("</Music>");
        }
        Reply::News { articles } => {
            let articles = &articles[..articles.len().min(MAX_ARTICLES)];
            cdata_element(&mut out, "MsgType", "news");
            let _ = write!(
                out,
                "<ArticleCount>{}</ArticleCount><Articles>",
                articles.len()
            );
            for article in articles {
                out.push_str("<item>");
                cdata_element(&mut out, "Title", &article.title);
                opt_element(&mut out, "Description", &article.description);
                opt_element(&mut out, "PicUrl", &article.pic_url);
                opt_element(&mut out, "Url", &article.url);
                out.push_str("</item>");
            }
            out.push_str("</Articles>");
        }
        Reply::TransferCustomerService { kf_account } => {
            cdata_element(&mut out, "MsgType", "transfer_customer_service");
            if let Some(kf) = kf_account {
                out.push_str("<TransInfo>");
                cdata_element(&mut out, "KfAccount", kf);
                out.push_str("</TransInfo>");
            }
        }
    }
    out.push_str("</xml>");
    out
}

/// `<name><![CDATA[text]]></name>`; shared with `envelope.rs`.
pub(super) fn cdata_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push_str("><![CDATA[");
    push_cdata_text(out, text);
    out.push_str("]]></");
    out.push_str(name);
    out.push('>');
}

/// `<name>text</name>` with `<`, `>` and `&` escaped, for values WeChat sends unquoted.
pub(super) fn text_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    for ch in text.chars().filter(|&c| is_xml_char(c)) {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(ch),
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn opt_element(out: &mut String, name: &str, text: &Option<String>) {
    if let Some(text) = text {
        cdata_element(out, name, text);
    }
}

/// CDATA cannot contain its terminator, so `]]>` is split across two sections; characters
/// XML 1.0 forbids even in CDATA (most C0 controls) are dropped, since WeChat refuses
/// ill-formed XML and the follower would see "service unavailable" instead of the reply.
///
/// Copies runs of ordinary bytes whole: only the bytes [`needs_look`] flags are examined
/// one by one (a base64 `Encrypt` of 600 bytes has none).
fn push_cdata_text(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // `text[run..]` is not written yet; `i` is where the search for the next flag resumes.
    let mut run = 0;
    let mut i = 0;
    while let Some(j) = next_look(bytes, i) {
        // Every flagged byte is ASCII or a lead byte, so `j` is a char boundary.
        let dropped = match bytes[j] {
            b']' if bytes[j..].starts_with(b"]]>") => {
                out.push_str(&text[run..j]);
                out.push_str("]]]]><![CDATA[>");
                run = j + 3;
                i = run;
                continue;
            }
            // U+FFFE and U+FFFF.
            0xEF if matches!(bytes.get(j + 1..j + 3), Some([0xBF, 0xBE | 0xBF])) => 3,
            b']' | 0xEF | b'\t' | b'\n' | b'\r' => 0,
            // The other C0 controls.
            _ => 1,
        };
        if dropped > 0 {
            out.push_str(&text[run..j]);
            run = j + dropped;
            i = run;
        } else {
            i = j + 1;
        }
    }
    out.push_str(&text[run..]);
}

/// The bytes CDATA text needs a closer look at: C0 controls (XML keeps only tab, LF and
/// CR), `]` (a `]]>` may start there) and 0xEF (the lead byte of U+FFFE and U+FFFF, which
/// XML forbids). Every other character [`is_xml_char`] allows is copied as is.
#[inline]
fn needs_look(b: u8) -> bool {
    b < 0x20 || b == b']' || b == 0xEF
}

/// The first index at or after `from` of a byte that [`needs_look`], testing 16 bytes at a
/// time without branching on each (the compiler turns the fold into vector compares).
fn next_look(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 16) {
        if chunk.iter().fold(false, |any, &b| any | needs_look(b)) {
            break;
        }
        i += 16;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_look(b))
        .map(|p| i + p)
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn payload_len(reply: &Reply) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 40);
    match reply {
        Reply::Text { content } => content.len(),
        Reply::Image { media_id } | Reply::Voice { media_id } => media_id.len() + 40,
        Reply::Video {
            media_id,
            title,
            description,
        } => media_id.len() + opt(title) + opt(description) + 40,
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => {
            opt(title)
                + opt(description)
                + opt(music_url)
                + opt(hq_music_url)
                + thumb_media_id.len()
                + 60
        }
        Reply::News { articles } => articles
            .iter()
            .take(MAX_ARTICLES)
            .map(|a| a.title.len() + opt(&a.description) + opt(&a.pic_url) + opt(&a.url) + 60)
            .sum(),
        Reply::TransferCustomerService { kf_account } => opt(kf_account) + 40,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::Fields;
    use super::*;

    const TO: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
    const FROM: &str = "gh_0123456789ab";

    fn s(v: &str) -> String {
        v.to_owned()
    }

    /// Writes `reply`, parses it back and checks the common fields and every `(path, text)`
    /// in `expected`, and that nothing else was written.
    fn check(name: &str, reply: &Reply, expected: &[(&str, &str)]) {
        let xml = reply_xml(reply, TO, FROM, 1_700_000_000);
        let f = Fields::parse(&xml).unwrap_or_else(|e| panic!("{name}: {e}\n{xml}"));
        let mut all = vec![
            ("ToUserName", TO),
            ("FromUserName", FROM),
            ("CreateTime", "1700000000"),
        ];
        all.extend_from_slice(expected);
        for (path, text) in &all {
            assert_eq!(
                f.all(path).collect::<Vec<_>>(),
                [*text],
                "{name}: <{path}>\n{xml}"
            );
        }
        let written = f.len();
        assert_eq!(written, all.len(), "{name}: unexpected elements\n{xml}");
    }

    #[test]
    fn every_variant() {
        let tricky = "a]]>b ]]]]> 😀\n<tag>&amp; \"q\" '";
        type Case = (&'static str, Reply, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                "text",
                Reply::Text {
                    content: s("你好，欢迎关注"),
                },
                vec![("MsgType", "text"), ("Content", "你好，欢迎关注")],
            ),
            (
                "text with CDATA terminator, emoji, newlines and markup",
                Reply::Text { content: s(tricky) },
                vec![("MsgType", "text"), ("Content", tricky)],
            ),
            (
                "text ending in brackets",
                Reply::Text { content: s("]]") },
                vec![("MsgType", "text"), ("Content", "]]")],
            ),
            (
                "empty text",
                Reply::Text { content: s("") },
                vec![("MsgType", "text"), ("Content", "")],
            ),
            (
                "image",
                Reply::Image {
                    media_id: s("MEDIA_1"),
                },
                vec![("MsgType", "image"), ("Image/MediaId", "MEDIA_1")],
            ),
            (
                "voice",
                Reply::Voice {
                    media_id: s("MEDIA_2"),
                },
                vec![("MsgType", "voice"), ("Voice/MediaId", "MEDIA_2")],
            ),
            (
                "video",
                Reply::Video {
                    media_id: s("M"),
                    title: Some(s("标题")),
                    description: Some(s(tricky)),
                },
                vec![
                    ("MsgType", "video"),
                    ("Video/MediaId", "M"),
                    ("Video/Title", "标题"),
                    ("Video/Description", tricky),
                ],
            ),
            (
                "video without optionals",
                Reply::Video {
                    media_id: s("M"),
                    title: None,
                    description: None,
                },
                vec![("MsgType", "video"), ("Video/MediaId", "M")],
            ),
            (
                "music",
                Reply::Music {
                    title: Some(s("歌")),
                    description: Some(s("d")),
                    music_url: Some(s("https://x/a.mp3?a=1&b=2")),
                    hq_music_url: Some(s("https://x/hq.mp3")),
                    thumb_media_id: s("THUMB"),
                },
                vec![
                    ("MsgType", "music"),
                    ("Music/Title", "歌"),
                    ("Music/Description", "d"),
                    ("Music/MusicUrl", "https://x/a.mp3?a=1&b=2"),
                    ("Music/HQMusicUrl", "https://x/hq.mp3"),
                    ("Music/ThumbMediaId", "THUMB"),
                ],
            ),
            (
                "music without optionals",
                Reply::Music {
                    title: None,
                    description: None,
                    music_url: None,
                    hq_music_url: None,
                    thumb_media_id: s("THUMB"),
                },
                vec![("MsgType", "music"), ("Music/ThumbMediaId", "THUMB")],
            ),
            (
                "news",
                Reply::News {
                    articles: vec![Article {
                        title: s("春季活动"),
                        description: Some(s("desc")),
                        pic_url: Some(s("https://x/p.jpg")),
                        url: Some(s("https://x/?a=1&b=2")),
                    }],
                },
                vec![
                    ("MsgType", "news"),
                    ("ArticleCount", "1"),
                    ("Articles/item/Title", "春季活动"),
                    ("Articles/item/Description", "desc"),
                    ("Articles/item/PicUrl", "https://x/p.jpg"),
                    ("Articles/item/Url", "https://x/?a=1&b=2"),
                ],
            ),
            (
                "news with only a title",
                Reply::News {
                    articles: vec![Article {
                        title: s("t"),
                        description: None,
                        pic_url: None,
                        url: None,
                    }],
                },
                vec![
                    ("MsgType", "news"),
                    ("ArticleCount", "1"),
                    ("Articles/item/Title", "t"),
                ],
            ),
            (
                "transfer_customer_service",
                Reply::TransferCustomerService { kf_account: None },
                vec![("MsgType", "transfer_customer_service")],
            ),
            (
                "transfer_customer_service to an account",
                Reply::TransferCustomerService {
                    kf_account: Some(s("test1@test")),
                },
                vec![
                    ("MsgType", "transfer_customer_service"),
                    ("TransInfo/KfAccount", "test1@test"),
                ],
            ),
        ];
        for (name, reply, expected) in cases {
            check(name, &reply, &expected);
        }
    }

    #[test]
    fn news_is_capped_at_eight_articles() {
        let articles: Vec<Article> = (0..10)
            .map(|i| Article {
                title: format!("t{i}"),
                description: None,
                pic_url: None,
                url: Some(format!("https://x/{i}")),
            })
            .collect();
        let xml = reply_xml(&Reply::News { articles }, TO, FROM, 1);
        let f = Fields::parse(&xml).expect("well-formed");
        assert_eq!(f.get("ArticleCount"), Some("8"));
        let titles: Vec<&str> = f.all("Articles/item/Title").collect();
        assert_eq!(titles, ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]);
        assert_eq!(f.all("Articles/item/Url").count(), 8);
    }

    #[test]
    fn exact_text_layout() {
        let xml = reply_xml(
            &Reply::Text {
                content: s("a]]>b"),
            },
            "o1",
            "gh_1",
            -5,
        );
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[o1]]></ToUserName><FromUserName><![CDATA[gh_1]]></FromUserName>\
             <CreateTime>-5</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>"
        );
    }

    /// The straightforward char-by-char writer `push_cdata_text` replaced, as the reference.
    fn cdata_reference(text: &str) -> String {
        let keep = |t: &str| t.chars().filter(|&c| is_xml_char(c)).collect::<String>();
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("]]>") {
            out.push_str(&keep(&rest[..i]));
            out.push_str("]]]]><![CDATA[>");
            rest = &rest[i + 3..];
        }
        out.push_str(&keep(rest));
        out
    }

    #[test]
    fn cdata_text_matches_the_char_by_char_reference() {
        const PIECES: [&str; 16] = [
            "a",
            "]",
            ">",
            "]]>",
            "\u{0}",
            "\u{1f}",
            "\t",
            "\n",
            "\r",
            "\u{FFFE}",
            "\u{FFFF}",
            "\u{FFFD}",
            "\u{EFFF}",
            "优",
            "😀",
            "abcdefghijklmnopq",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in 0..2000 {
            let len = (next() % 40) as usize + n % 3;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let mut got = String::new();
            push_cdata_text(&mut got, &text);
            assert_eq!(got, cdata_reference(&text), "{text:?}");
        }
        for text in ["", "]]", "]]]>", "]]]]>>", "x]]\u{1}>", "\u{FFFF}]]>\u{0}"] {
            let mut got = String::new();
            push_cdata_text(&mut got, text);
            assert_eq!(got, cdata_reference(text), "{text:?}");
        }
    }

    #[test]
    fn characters_xml_forbids_are_dropped() {
        let xml = reply_xml(
            &Reply::Text {
                content: s("a\u{0}b\u{1b}c\u{FFFE}\td"),
            },
            TO,
            FROM,
            1,
        );
        let f = Fields::parse(&xml).expect("well-formed");
        assert_eq!(f.get("Content"), Some("abc\td"));
    }

    #[test]
    fn ids_are_quoted_too() {
        let xml = reply_xml(&Reply::Image { media_id: s("m") }, "o]]><x>", "gh<&", 1);
        let f = Fields::parse(&xml).expect("well-formed");
        assert_eq!(f.get("ToUserName"), Some("o]]><x>"));
        assert_eq!(f.get("FromUserName"), Some("gh<&"));
    }
}
