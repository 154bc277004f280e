//! The referrals file (`referrals.toml`, named by `[referral] file`): raw serde structs
//! with their places, compiled into validated [`Programme`]s (`programme.rs`). PURE but for [`load`], which
//! reads the file and the poster backgrounds it names.
//!
//! Every mistake is reported at once as `file:line:column: message`, as the rules, coupons
//! and channels are (`located::FileError`). A TOML syntax error stops at the first one of
//! the file, since the ones after it are usually its echoes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::programme::{Burst, Counts, Poster, Programme, Texts, Tier};
use super::scene::{is_programme_name, MAX_PROGRAMME_NAME};
use super::text::{Text, TextError, INVITATION_FIELDS, PROGRESS_FIELDS, REWARD_FIELDS};
use crate::config::AccountKind;
use crate::local_time::UtcOffset;
use crate::located::FileError;

/// WeChat keeps a temporary QR code at most 30 days (`expire_seconds` ≤ 2,592,000).
pub const MAX_QR_DAYS: u32 = 30;
/// More tiers than this is a price list, not a programme; and each is a coupon claim.
pub const MAX_TIERS: usize = 10;
/// The smallest QR square on a poster: a version-6 code (41 modules) and its 4-module quiet
/// zone at 2 px a module. Smaller prints do not scan reliably from a phone screen.
pub const MIN_QR_PX: u32 = 98;
/// Backgrounds larger than this are refused rather than decoded into memory (an A3 at
/// 300 dpi is 3508 × 4961).
pub const MAX_BACKGROUND_PX: u32 = 8000;

/// The defaults: neutral, asking nobody to share or follow for a reward (WeChat's rules
/// forbid 诱导分享 / 诱导关注; see docs/referral.md).
pub const DEFAULT_INVITATION: &str = "这是你的专属二维码。";
pub const DEFAULT_PROGRESS: &str = "已有 {valid} 位好友通过你的二维码关注，{pending} 位待确认。";
pub const DEFAULT_REWARD: &str = "你获得了{coupon.title|一张优惠券}：{coupon.code|稍后发放}";
pub const DEFAULT_HOLD_HOURS: u32 = 24;
pub const DEFAULT_DAILY_CAP: u32 = 20;
pub const DEFAULT_BURST: Burst = Burst {
    invites: 10,
    minutes: 10,
};

/// Reads a poster background's width and height, given its path as written.
pub type Dimensions<'a> = dyn Fn(&str) -> Result<(u32, u32), String> + 'a;

/// What the file is checked against.
pub struct Known<'a> {
    /// The kind of each account of the config (`None`: no such account).
    pub accounts: &'a dyn Fn(&str) -> Option<AccountKind>,
    /// Whether the coupons file has a batch of this name.
    pub batches: &'a dyn Fn(&str) -> bool,
    /// The width and height of a poster background (a path as written in the file), or
    /// why it cannot be used.
    pub background: &'a Dimensions<'a>,
    /// The offset dates are read in: the config's `[display] utc_offset`.
    pub zone: UtcOffset,
}

/// Why the referrals file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("referrals refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    File(Vec<FileError>),
}

/// Reads and checks the referrals file at `path` (poster backgrounds relative to it).
pub fn load(
    path: &Path,
    accounts: &dyn Fn(&str) -> Option<AccountKind>,
    batches: &dyn Fn(&str) -> bool,
    zone: UtcOffset,
) -> Result<Vec<Programme>, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let background = |p: &str| {
        let bytes = std::fs::read(dir.join(p)).map_err(|e| format!("cannot read {p}: {e}"))?;
        super::poster::dimensions(&bytes).map_err(|e| format!("{p}: {e}"))
    };
    let known = Known {
        accounts,
        batches,
        background: &background,
        zone,
    };
    let mut programmes = parse_programmes(&shown, &text, &known).map_err(LoadError::File)?;
    for p in &mut programmes {
        if let Some(poster) = &mut p.poster {
            poster.background = dir.join(&poster.background);
        }
    }
    Ok(programmes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    referral: Vec<Spanned<RawProgramme>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgramme {
    name: Spanned<String>,
    account: Spanned<String>,
    title: Option<String>,
    start: Spanned<toml::value::Datetime>,
    end: Spanned<toml::value::Datetime>,
    keyword: Spanned<toml::Value>,
    #[serde(default)]
    tier: Vec<Spanned<RawTier>>,
    counts: Option<Spanned<String>>,
    /// Hours, a fraction allowed (`0.01` is 36 s: tests, and short trials).
    hold_hours: Option<Spanned<f64>>,
    daily_cap: Option<Spanned<i64>>,
    burst: Option<Spanned<RawBurst>>,
    template_id: Option<Spanned<String>>,
    qr_days: Option<Spanned<i64>>,
    poster: Option<RawPoster>,
    #[serde(default)]
    texts: RawTexts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    invites: Spanned<i64>,
    coupon: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurst {
    invites: Spanned<i64>,
    minutes: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoster {
    background: Spanned<String>,
    x: Spanned<i64>,
    y: Spanned<i64>,
    size: Spanned<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTexts {
    invitation: Option<Spanned<String>>,
    progress: Option<Spanned<String>>,
    reward: Option<Spanned<String>>,
}

/// Parses `text` (the file `file`) against what the config knows; every mistake at once.
pub fn parse_programmes(
    file: &str,
    text: &str,
    known: &Known<'_>,
) -> Result<Vec<Programme>, Vec<FileError>> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![FileError::from_toml(file, text, &e)])?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for raw in raw.referral {
        let at = raw.span().start;
        let p = raw.into_inner();
        let before = errors.len();
        let mut err = |offset: usize, m: String| errors.push(FileError::at(file, text, offset, m));
        let keyword_at = p.keyword.span().start;
        if let Some(p) = compile(p, at, text, known, &mut names, &mut err) {
            if errors.len() == before {
                out.push((p, keyword_at));
            }
        }
    }
    check_keywords(&out, &mut |offset, m| {
        errors.push(FileError::at(file, text, offset, m))
    });
    let out: Vec<Programme> = out.into_iter().map(|(p, _)| p).collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        Err(errors)
    }
}

/// One `[[referral]]`; `None` when a part could not be built (its errors are recorded).
fn compile(
    p: RawProgramme,
    at: usize,
    text: &str,
    known: &Known<'_>,
    names: &mut BTreeSet<String>,
    err: &mut dyn FnMut(usize, String),
) -> Option<Programme> {
    let name = p.name.get_ref().trim().to_string();
    if !is_programme_name(&name) {
        err(
            p.name.span().start,
            format!("programme name `{name}`: 1 to {MAX_PROGRAMME_NAME} of letters, digits, `-` and `_` (it goes into every participant's QR scene, which WeChat limits to 64 characters)"),
        );
    } else if !names.insert(name.clone()) {
        err(
            p.name.span().start,
            format!("programme `{name}` is defined twice"),
        );
    }
    let account = p.account.get_ref().clone();
    match (known.accounts)(&account) {
        None => err(p.account.span().start, format!("no account `{account}` in the config")),
        Some(AccountKind::Wecom) => err(
            p.account.span().start,
            format!("account `{account}` is WeCom: referral posters are temporary QR codes, which only official accounts have"),
        ),
        Some(AccountKind::Official) => {}
    }

    let start = instant(&p.start, known.zone, false, err);
    let end = instant(&p.end, known.zone, true, err);
    if let (Some(s), Some(e)) = (start, end) {
        if e <= s {
            err(p.end.span().start, "end must be after start".into());
        }
    }

    let keywords = keywords(&p.keyword, err);

    let mut tiers: Vec<Tier> = Vec::new();
    let mut seen = BTreeMap::new();
    if p.tier.is_empty() {
        err(at, format!("programme `{name}` has no [[referral.tier]]: give at least one (invites = N, coupon = \"batch\")"));
    } else if p.tier.len() > MAX_TIERS {
        err(
            p.tier[MAX_TIERS].span().start,
            format!("at most {MAX_TIERS} tiers"),
        );
    }
    for t in &p.tier {
        let t = t.get_ref();
        let invites = count(&t.invites, "invites", 1, 100_000, err);
        let coupon = t.coupon.get_ref().clone();
        if !(known.batches)(&coupon) {
            err(
                t.coupon.span().start,
                format!("no coupon batch `{coupon}` in the coupons file"),
            );
        }
        if let Some(n) = invites {
            if seen.insert(n, ()).is_some() {
                err(t.invites.span().start, format!("two tiers at {n} invites"));
            }
            tiers.push(Tier { invites: n, coupon });
        }
    }
    tiers.sort_by_key(|t| t.invites);

    let counts = match p.counts.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("new") => Some(Counts::New),
        Some("new_and_returning") => Some(Counts::NewAndReturning),
        Some(other) => {
            err(
                p.counts.as_ref().map_or(at, |c| c.span().start),
                format!("counts `{other}`: one of new (only people who never followed), new_and_returning (also people who had unfollowed)"),
            );
            None
        }
    };
    let hold_secs = match &p.hold_hours {
        None => Some(i64::from(DEFAULT_HOLD_HOURS) * 3600),
        Some(h) if (0.0..=720.0).contains(h.get_ref()) => {
            Some((h.get_ref() * 3600.0).round() as i64)
        }
        Some(h) => {
            err(
                h.span().start,
                format!("hold_hours must be 0 to 720, not {}", h.get_ref()),
            );
            None
        }
    };
    let daily_cap = optional(
        &p.daily_cap,
        "daily_cap",
        1,
        100_000,
        DEFAULT_DAILY_CAP,
        err,
    );
    let burst = match &p.burst {
        None => Some(DEFAULT_BURST),
        Some(b) => {
            let b = b.get_ref();
            let invites = count(&b.invites, "burst invites", 1, 100_000, err);
            let minutes = count(&b.minutes, "burst minutes", 1, 24 * 60, err);
            Some(Burst {
                invites: invites?,
                minutes: minutes?,
            })
        }
    };
    let template_id = p.template_id.as_ref().and_then(|t| {
        let id = t.get_ref().trim();
        let ok = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            err(t.span().start, format!("template_id `{id}`: the template's id from the official account's console (letters, digits, `-`, `_`)"));
        }
        ok.then(|| id.to_string())
    });
    let qr_days = optional(
        &p.qr_days,
        "qr_days",
        1,
        i64::from(MAX_QR_DAYS),
        MAX_QR_DAYS,
        err,
    );
    let poster = p.poster.as_ref().and_then(|raw| poster(raw, known, err));

    // All three are checked before any `?`, so each text's mistake is reported.
    let invitation = text_of(
        &p.texts.invitation,
        DEFAULT_INVITATION,
        INVITATION_FIELDS,
        text,
        err,
    );
    let progress = text_of(
        &p.texts.progress,
        DEFAULT_PROGRESS,
        PROGRESS_FIELDS,
        text,
        err,
    );
    let reward = text_of(&p.texts.reward, DEFAULT_REWARD, REWARD_FIELDS, text, err);
    let texts = Texts {
        invitation: invitation?,
        progress: progress?,
        reward: reward?,
    };

    Some(Programme {
        title: p
            .title
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        account,
        start: start?,
        end: end?,
        zone: known.zone,
        tiers,
        counts: counts?,
        hold_secs: hold_secs?,
        daily_cap: daily_cap?,
        burst: burst?,
        keywords: keywords?,
        template_id,
        qr_expire_secs: qr_days? * 86_400,
        poster: match p.poster {
            Some(_) => Some(poster?),
            None => None,
        },
        texts,
    })
}

/// Two programmes of one account running at the same time may not share a keyword: the
/// poster asked for would be ambiguous. Reported at the later one's `keyword`.
fn check_keywords(all: &[(Programme, usize)], err: &mut dyn FnMut(usize, String)) {
    for (i, (a, _)) in all.iter().enumerate() {
        for (b, at) in &all[i + 1..] {
            let overlap = a.account == b.account && a.start < b.end && b.start < a.end;
            if let Some(k) = a
                .keywords
                .iter()
                .find(|k| overlap && b.keywords.contains(k))
            {
                err(
                    *at,
                    format!(
                        "keyword `{k}` is also programme `{}`'s, of the same account at the same time: which poster is asked for?",
                        a.name
                    ),
                );
            }
        }
    }
}

fn keywords(v: &Spanned<toml::Value>, err: &mut dyn FnMut(usize, String)) -> Option<Vec<String>> {
    let listed: Option<Vec<&str>> = match v.get_ref() {
        toml::Value::String(s) => Some(vec![s.as_str()]),
        toml::Value::Array(items) => items.iter().map(|i| i.as_str()).collect(),
        _ => None,
    };
    let Some(listed) = listed.filter(|l| !l.is_empty()) else {
        err(
            v.span().start,
            "keyword: a string or a list of strings (e.g. \"邀请好友\")".into(),
        );
        return None;
    };
    let normalised: Vec<String> = listed.iter().map(|k| crate::rules::normalise(k)).collect();
    if normalised.iter().any(String::is_empty) {
        err(v.span().start, "an empty keyword".into());
        return None;
    }
    Some(normalised)
}

fn poster(
    raw: &RawPoster,
    known: &Known<'_>,
    err: &mut dyn FnMut(usize, String),
) -> Option<Poster> {
    let x = count(&raw.x, "x", 0, i64::from(MAX_BACKGROUND_PX), err);
    let y = count(&raw.y, "y", 0, i64::from(MAX_BACKGROUND_PX), err);
    let size = count(
        &raw.size,
        "size",
        i64::from(MIN_QR_PX),
        i64::from(MAX_BACKGROUND_PX),
        err,
    );
    let path = raw.background.get_ref();
    let dims = match (known.background)(path) {
        Ok(d) => Some(d),
        Err(e) => {
            err(raw.background.span().start, e);
            None
        }
    };
    let (x, y, size, (w, h)) = (x?, y?, size?, dims?);
    if w > MAX_BACKGROUND_PX || h > MAX_BACKGROUND_PX {
        err(
            raw.background.span().start,
            format!("{path} is {w} × {h} px; at most {MAX_BACKGROUND_PX} a side"),
        );
        return None;
    }
    if u64::from(x) + u64::from(size) > u64::from(w)
        || u64::from(y) + u64::from(size) > u64::from(h)
    {
        err(
            raw.size.span().start,
            format!("the QR code ({size} px at x = {x}, y = {y}) does not fit inside the {w} × {h} px background"),
        );
        return None;
    }
    Some(Poster {
        background: PathBuf::from(path),
        x,
        y,
        size,
    })
}

fn text_of(
    written: &Option<Spanned<String>>,
    default: &str,
    fields: &[super::text::Field],
    file_text: &str,
    err: &mut dyn FnMut(usize, String),
) -> Option<Text> {
    let Some(s) = written else {
        // The defaults are tested to parse (`defaults_are_neutral_and_parse`).
        return Text::parse(default, fields).ok();
    };
    match Text::parse(s.get_ref(), fields) {
        Ok(t) => Some(t),
        Err(TextError { fragment, message }) => {
            err(at_fragment(file_text, s.span(), &fragment), message);
            None
        }
    }
}

/// The offset of `fragment` inside the string at `span`, or the string's start (escapes
/// can make the value differ from the source).
fn at_fragment(text: &str, span: Range<usize>, fragment: &str) -> usize {
    let within = text.get(span.clone()).and_then(|raw| raw.find(fragment));
    span.start + within.unwrap_or(0)
}

fn count(
    v: &Spanned<i64>,
    what: &str,
    min: i64,
    max: i64,
    err: &mut dyn FnMut(usize, String),
) -> Option<u32> {
    let n = *v.get_ref();
    if (min..=max).contains(&n) {
        u32::try_from(n).ok()
    } else {
        err(
            v.span().start,
            format!("{what} must be {min} to {max}, not {n}"),
        );
        None
    }
}

fn optional(
    v: &Option<Spanned<i64>>,
    what: &str,
    min: i64,
    max: i64,
    default: u32,
    err: &mut dyn FnMut(usize, String),
) -> Option<u32> {
    match v {
        None => Some(default),
        Some(v) => count(v, what, min, max, err),
    }
}

/// A TOML date or date-time as unix seconds. A date-time without offset is local time at
/// `zone`; with one, that offset. A bare date is the day's start, or for `end`
/// (`inclusive_day`) the next day's start: `end = 2026-12-31` runs through the 31st.
fn instant(
    v: &Spanned<toml::value::Datetime>,
    zone: UtcOffset,
    inclusive_day: bool,
    err: &mut dyn FnMut(usize, String),
) -> Option<i64> {
    let d = v.get_ref();
    let Some(date) = d.date else {
        err(
            v.span().start,
            "a date is needed (e.g. 2026-12-01 or 2026-12-01T10:00:00)".into(),
        );
        return None;
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let (secs, offset) = match d.time {
        Some(t) => (
            i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second.unwrap_or(0)),
            match d.offset {
                Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes) * 60,
                Some(toml::value::Offset::Z) => 0,
                None => zone.seconds(),
            },
        ),
        None => (if inclusive_day { 86_400 } else { 0 }, zone.seconds()),
    };
    Some(days * 86_400 + secs - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
