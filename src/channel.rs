//! Channels (渠道): named sources followers arrive through, read from `channels.toml`
//! (PURE). A channel is an official account's parametric QR code (temporary or
//! permanent), a WeCom "contact me" code (its `state`), or a plain scene string printed
//! elsewhere; its name is the scene WeChat sends back (`EventKey` / `State`), so rules'
//! `scene = …`, segments' `scene = …` and follower records already speak of it.
//!
//! ```toml
//! [[channel]]
//! name = "spring-poster"        # the scene: 1 to 64 of A-Z a-z 0-9 - _ . :
//! account = "demo"
//! kind = "qr_temporary"         # qr_temporary, qr_permanent, contact_way (WeCom), scene
//! title = "春季海报"             # what reports call it (default: the name)
//! tags = ["poster"]             # put on when a follower arrives through it
//! code = "auto"                 # siyu creates the code (and re-issues it before it expires)
//! expire_days = 30              # qr_temporary: the code's life, 1 to 30 days
//! # staff = ["zhangsan"]        # contact_way: the staff members the code adds
//! ```
//!
//! A channel with `code = "auto"` becomes a [`CodeOrder`] too: what to ask WeChat for,
//! carried by the outbox item that asks (`crate::channel_code`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::AccountKind;
use crate::located::FileError;

/// The longest scene WeChat takes (`scene_str`, protocol.md: 1 to 64 characters).
pub const MAX_SCENE: usize = 64;
/// The longest `state` of a WeCom "contact me" code (protocol.md §11: ≤ 30 characters).
pub const MAX_STATE: usize = 30;
/// A temporary QR code lives at most 30 days (2,592,000 s, protocol.md §10).
pub const MAX_EXPIRE_DAYS: u32 = 30;
/// A multi-person "contact me" code takes at most 100 staff members (WeCom's limit).
pub const MAX_STAFF: usize = 100;

/// A code siyu makes for a channel (`code = "auto"`): what the outbox asks WeChat for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeOrder {
    pub account: String,
    /// The channel's name: the QR code's `scene_str`, the contact code's `state`.
    pub channel: String,
    pub request: CodeRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CodeRequest {
    /// `qrcode/create`: `QR_STR_SCENE` for `expire_seconds`, or `QR_LIMIT_STR_SCENE`.
    Qr {
        permanent: bool,
        expire_seconds: u32,
    },
    /// `externalcontact/add_contact_way`, a QR code (`scene` 2) adding one of `staff`.
    ContactWay { staff: Vec<String> },
}

impl CodeRequest {
    /// Temporary codes run out and are re-issued; the others last.
    pub fn expires(&self) -> bool {
        matches!(
            self,
            CodeRequest::Qr {
                permanent: false,
                ..
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub account: String,
    pub kind: ChannelKind,
    pub title: String,
    /// Put on the follower when they arrive through the channel (subscribe or scan with
    /// its scene, a WeCom contact added with its state), in the callback's own commit.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// An official account's temporary parametric QR code (at most 30 days).
    QrTemporary,
    /// A permanent one (at most 100,000 per account).
    QrPermanent,
    /// A WeCom "contact me" code (`externalcontact/add_contact_way`, its `state`).
    ContactWay,
    /// A scene string made elsewhere (a printed code, a link).
    Scene,
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelKind::QrTemporary => "qr_temporary",
            ChannelKind::QrPermanent => "qr_permanent",
            ChannelKind::ContactWay => "contact_way",
            ChannelKind::Scene => "scene",
        })
    }
}

impl ChannelKind {
    fn fits(self, account: AccountKind) -> bool {
        match self {
            ChannelKind::QrTemporary | ChannelKind::QrPermanent => account == AccountKind::Official,
            ChannelKind::ContactWay => account == AccountKind::Wecom,
            ChannelKind::Scene => true,
        }
    }
}

/// The channel a follower arrived through, if `scene` names one of the account's.
pub fn find<'a>(channels: &'a [Channel], account: &str, scene: &str) -> Option<&'a Channel> {
    channels
        .iter()
        .find(|c| c.account == account && c.name == scene)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    channel: Vec<Spanned<RawChannel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: Spanned<String>,
    account: Spanned<String>,
    kind: Spanned<String>,
    title: Option<String>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    /// `auto` or `manual` (the default).
    code: Option<Spanned<String>>,
    expire_days: Option<Spanned<i64>>,
    staff: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Whether `s` is a scene WeChat and WeCom both take back unchanged.
pub fn is_scene(s: &str) -> bool {
    (1..=MAX_SCENE).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Parses `text` (the file `file`) against the config's accounts; every mistake is
/// reported at once with its place.
pub fn parse_channels(
    file: &str,
    text: &str,
    accounts: &dyn Fn(&str) -> Option<AccountKind>,
) -> Result<Vec<Channel>, Vec<FileError>> {
    parse_channel_file(file, text, accounts).map(|(channels, _)| channels)
}

/// [`parse_channels`], with the codes siyu is to make (`code = "auto"`), in file order.
pub fn parse_channel_file(
    file: &str,
    text: &str,
    accounts: &dyn Fn(&str) -> Option<AccountKind>,
) -> Result<(Vec<Channel>, Vec<CodeOrder>), Vec<FileError>> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![FileError::from_toml(file, text, &e)])?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut orders = Vec::new();
    let mut seen = BTreeSet::new();
    for raw in raw.channel {
        let c = raw.into_inner();
        let before = errors.len();
        let mut err = |at: usize, m: String| errors.push(FileError::at(file, text, at, m));
        let name = c.name.get_ref().trim().to_string();
        let account = c.account.get_ref().clone();
        if !is_scene(&name) {
            err(
                c.name.span().start,
                format!("channel name `{name}`: the scene WeChat sends back, 1 to {MAX_SCENE} of letters, digits, `-`, `_`, `.` and `:` (渠道名即场景值)"),
            );
        } else if !seen.insert((account.clone(), name.clone())) {
            err(
                c.name.span().start,
                format!("channel `{name}` of account `{account}` is defined twice"),
            );
        }
        let kind = match c.kind.get_ref().as_str() {
            "qr_temporary" => Some(ChannelKind::QrTemporary),
            "qr_permanent" => Some(ChannelKind::QrPermanent),
            "contact_way" => Some(ChannelKind::ContactWay),
            "scene" => Some(ChannelKind::Scene),
            other => {
                err(
                    c.kind.span().start,
                    format!("kind `{other}`: one of qr_temporary, qr_permanent, contact_way (WeCom), scene"),
                );
                None
            }
        };
        match accounts(&account) {
            None => err(
                c.account.span().start,
                format!("no account `{account}` in the config"),
            ),
            Some(k) => {
                if let Some(kind) = kind.filter(|kind| !kind.fits(k)) {
                    err(
                        c.kind.span().start,
                        match kind {
                            ChannelKind::ContactWay => format!("kind contact_way is a WeCom \"contact me\" code; account `{account}` is an official account (use qr_temporary or qr_permanent)"),
                            _ => format!("QR codes with a scene are for official accounts; account `{account}` is WeCom (use contact_way)"),
                        },
                    );
                }
            }
        }
        let mut tags = Vec::new();
        for t in &c.tags {
            let tag = t.get_ref().trim();
            if tag.is_empty() {
                err(t.span().start, "empty tag name".into());
            } else {
                tags.push(tag.to_string());
            }
        }
        let request = code_request(&c, &name, kind, &mut err);
        if errors.len() == before {
            if let Some(request) = request {
                orders.push(CodeOrder {
                    account: account.clone(),
                    channel: name.clone(),
                    request,
                });
            }
            out.push(Channel {
                title: c
                    .title
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| name.clone()),
                name,
                account,
                kind: kind.unwrap_or(ChannelKind::Scene),
                tags,
            });
        }
    }
    if errors.is_empty() {
        Ok((out, orders))
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// The code siyu is to make for the channel, if `code = "auto"`; mistakes go to `err`.
fn code_request(
    c: &RawChannel,
    name: &str,
    kind: Option<ChannelKind>,
    err: &mut dyn FnMut(usize, String),
) -> Option<CodeRequest> {
    let auto = match c
        .code
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span().start))
    {
        None | Some(("manual", _)) => false,
        Some(("auto", _)) => true,
        Some((other, at)) => {
            err(at, format!("code `{other}`: `auto` (siyu creates the code and re-issues it before it expires) or `manual` (the default) (渠道码：auto 自动创建，manual 手动)"));
            false
        }
    };
    let kind = kind?;
    let mut expire_seconds = MAX_EXPIRE_DAYS * 86_400;
    if let Some(days) = &c.expire_days {
        if kind != ChannelKind::QrTemporary {
            err(
                days.span().start,
                format!("expire_days is for kind qr_temporary; a {kind} code does not expire"),
            );
        } else if !(1..=i64::from(MAX_EXPIRE_DAYS)).contains(days.get_ref()) {
            err(days.span().start, format!("expire_days {}: a temporary QR code lives 1 to {MAX_EXPIRE_DAYS} days (临时二维码最长 30 天)", days.get_ref()));
        } else {
            expire_seconds = *days.get_ref() as u32 * 86_400;
        }
    }
    let mut staff = Vec::new();
    if let Some(list) = &c.staff {
        if kind != ChannelKind::ContactWay {
            err(
                list.span().start,
                format!("staff is for kind contact_way; a {kind} channel adds no staff member"),
            );
        } else if list.get_ref().len() > MAX_STAFF {
            err(
                list.span().start,
                format!(
                    "{} staff members: a contact code takes at most {MAX_STAFF}",
                    list.get_ref().len()
                ),
            );
        }
        for s in list.get_ref() {
            let userid = s.get_ref().trim();
            if userid.is_empty() {
                err(s.span().start, "empty staff userid".into());
            } else {
                staff.push(userid.to_string());
            }
        }
    }
    if !auto {
        return None;
    }
    let at = c.code.as_ref().map_or(0, |m| m.span().start);
    match kind {
        ChannelKind::Scene => {
            err(at, "code = \"auto\" needs a kind siyu can make a code of (qr_temporary, qr_permanent, contact_way); a scene channel's code is made elsewhere".into());
            None
        }
        ChannelKind::QrTemporary | ChannelKind::QrPermanent => Some(CodeRequest::Qr {
            permanent: kind == ChannelKind::QrPermanent,
            expire_seconds,
        }),
        ChannelKind::ContactWay => {
            if name.chars().count() > MAX_STATE {
                err(c.name.span().start, format!("channel name `{name}`: a contact code's state is at most {MAX_STATE} characters (联系我的 state 最长 30 个字符)"));
            }
            if c.staff.is_none() || staff.is_empty() {
                err(at, "code = \"auto\" for contact_way needs staff = [\"userid\", …]: the staff members the code adds (需要 staff：接待成员)".into());
            }
            Some(CodeRequest::ContactWay { staff })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Channel>, Vec<FileError>> {
        let kinds = |id: &str| match id {
            "demo" => Some(AccountKind::Official),
            "corp" => Some(AccountKind::Wecom),
            _ => None,
        };
        parse_channels("channels.toml", text, &kinds)
    }

    #[test]
    fn a_good_file_parses() {
        let text =
            "[[channel]]\nname = \"spring-poster\"\naccount = \"demo\"\nkind = \"qr_temporary\"\n\
                    title = \"春季海报\"\ntags = [\"poster\", \"春季\"]\n\n\
                    [[channel]]\nname = \"store-7\"\naccount = \"corp\"\nkind = \"contact_way\"\n\n\
                    [[channel]]\nname = \"store-7\"\naccount = \"demo\"\nkind = \"scene\"\n";
        let all = parse(text).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].title, "春季海报");
        assert_eq!(all[0].tags, ["poster", "春季"]);
        assert_eq!(all[1].title, "store-7", "the name when there is no title");
        assert_eq!(all[1].kind, ChannelKind::ContactWay);
        assert_eq!(
            find(&all, "demo", "store-7").unwrap().kind,
            ChannelKind::Scene
        );
        assert_eq!(
            find(&all, "corp", "store-7").unwrap().kind,
            ChannelKind::ContactWay
        );
        assert!(find(&all, "demo", "nope").is_none());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn auto_codes_become_orders() {
        let kinds = |id: &str| match id {
            "demo" => Some(AccountKind::Official),
            "corp" => Some(AccountKind::Wecom),
            _ => None,
        };
        let text = "[[channel]]\nname = \"t\"\naccount = \"demo\"\nkind = \"qr_temporary\"\ncode = \"auto\"\nexpire_days = 7\n\n\
                    [[channel]]\nname = \"t30\"\naccount = \"demo\"\nkind = \"qr_temporary\"\ncode = \"auto\"\n\n\
                    [[channel]]\nname = \"p\"\naccount = \"demo\"\nkind = \"qr_permanent\"\ncode = \"auto\"\n\n\
                    [[channel]]\nname = \"m\"\naccount = \"demo\"\nkind = \"qr_permanent\"\ncode = \"manual\"\n\n\
                    [[channel]]\nname = \"c\"\naccount = \"corp\"\nkind = \"contact_way\"\ncode = \"auto\"\nstaff = [\"zhangsan\", \"lisi\"]\n";
        let (channels, orders) = parse_channel_file("channels.toml", text, &kinds).unwrap();
        assert_eq!(channels.len(), 5);
        let got: Vec<(&str, &CodeRequest)> = orders
            .iter()
            .map(|o| (o.channel.as_str(), &o.request))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "t",
                    &CodeRequest::Qr {
                        permanent: false,
                        expire_seconds: 7 * 86_400
                    }
                ),
                (
                    "t30",
                    &CodeRequest::Qr {
                        permanent: false,
                        expire_seconds: 2_592_000
                    }
                ),
                (
                    "p",
                    &CodeRequest::Qr {
                        permanent: true,
                        expire_seconds: 2_592_000
                    }
                ),
                (
                    "c",
                    &CodeRequest::ContactWay {
                        staff: vec!["zhangsan".into(), "lisi".into()]
                    }
                ),
            ]
        );
        assert!(
            orders[0].request.expires()
                && !orders[2].request.expires()
                && !orders[3].request.expires()
        );
    }

    #[test]
    fn every_mistake_is_reported_at_its_place() {
        let head = "[[channel]]\n";
        for (body, want) in [
            (
                "name = \"a b\"\naccount = \"demo\"\nkind = \"scene\"\n",
                "2:8: channel name `a b`",
            ),
            (
                &format!("name = \"{}\"\naccount = \"demo\"\nkind = \"scene\"\n", "x".repeat(65)) as &str,
                "2:8: channel name",
            ),
            (
                "name = \"a\"\naccount = \"nope\"\nkind = \"scene\"\n",
                "3:11: no account `nope` in the config",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"poster\"\n",
                "4:8: kind `poster`: one of",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"contact_way\"\n",
                "4:8: kind contact_way is a WeCom",
            ),
            (
                "name = \"a\"\naccount = \"corp\"\nkind = \"qr_permanent\"\n",
                "4:8: QR codes with a scene are for official accounts",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"scene\"\ntags = [\" \"]\n",
                "5:9: empty tag name",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"scene\"\nwelcome = \"hi\"\n",
                "5:1: unknown field `welcome`",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"scene\"\n[[channel]]\nname = \"a\"\naccount = \"demo\"\nkind = \"scene\"\n",
                "6:8: channel `a` of account `demo` is defined twice",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"qr_temporary\"\ncode = \"yes\"\n",
                "5:8: code `yes`: `auto`",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"scene\"\ncode = \"auto\"\n",
                "5:8: code = \"auto\" needs a kind",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"qr_temporary\"\ncode = \"auto\"\nexpire_days = 31\n",
                "6:15: expire_days 31: a temporary QR code lives 1 to 30 days",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"qr_permanent\"\nexpire_days = 3\n",
                "5:15: expire_days is for kind qr_temporary",
            ),
            (
                "name = \"a\"\naccount = \"corp\"\nkind = \"contact_way\"\ncode = \"auto\"\n",
                "5:8: code = \"auto\" for contact_way needs staff",
            ),
            (
                "name = \"a\"\naccount = \"corp\"\nkind = \"contact_way\"\nstaff = [\"\"]\n",
                "5:10: empty staff userid",
            ),
            (
                "name = \"a\"\naccount = \"demo\"\nkind = \"qr_temporary\"\nstaff = [\"x\"]\n",
                "5:9: staff is for kind contact_way",
            ),
            (
                &format!("name = \"{}\"\naccount = \"corp\"\nkind = \"contact_way\"\ncode = \"auto\"\nstaff = [\"x\"]\n", "s".repeat(31)) as &str,
                "2:8: channel name `sssssssssssssssssssssssssssssss`: a contact code's state is at most 30",
            ),
        ] {
            let text = format!("{head}{body}");
            let errors = parse(&text).expect_err(&text);
            assert_eq!(errors.len(), 1, "{errors:?}");
            let e = &errors[0];
            let got = format!("{}:{}: {}", e.line, e.column, e.message);
            assert!(got.starts_with(want), "for\n{text}\nwant {want}\n got {got}");
        }
    }
}
