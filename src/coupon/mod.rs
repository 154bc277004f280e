//! Coupon batches: what operators define in `coupons.toml` (pure: parsing, validation,
//! code generation, validity). Issuing and redeeming are store operations
//! (`Store::issue_coupon`, `Store::redeem_coupon`), atomic with the follower's record.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::local_time::UtcOffset;

/// Code characters: upper-case letters and digits without the look-alikes 0/O, 1/I/L.
pub const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
pub const DEFAULT_CODE_LENGTH: usize = 10;

/// A batch as defined by operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// What rules and campaigns name: `issue_coupon = "new-guest"`.
    pub name: String,
    /// Shown to followers: `{coupon.title}`.
    pub title: String,
    /// The value as text: `{coupon.value}` ("满 30 减 10").
    pub value: String,
    pub validity: Validity,
    /// Codes in all; issuing stops when they are gone.
    pub stock: u64,
    /// How many codes of this batch one follower may hold.
    pub per_follower: u32,
    pub codes: CodeSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Validity {
    /// Valid for N days from the moment of issue.
    Days(u32),
    /// Valid between two instants (unix seconds, from inclusive, until exclusive).
    Fixed { from: i64, until: i64 },
}

impl Validity {
    /// How a person reads it: fixed bounds as local date-times at `zone` (`Display` gives
    /// unix seconds).
    pub fn describe(&self, zone: UtcOffset) -> String {
        match *self {
            Validity::Days(_) => self.to_string(),
            Validity::Fixed { from, until } => format!(
                "from {} until {} ({zone})",
                zone.date_time(from),
                zone.date_time(until)
            ),
        }
    }

    /// (valid from, expires at) for a code issued at `now`.
    pub fn window(&self, now: i64) -> (i64, i64) {
        match *self {
            Validity::Days(d) => (now, now.saturating_add(i64::from(d) * 86_400)),
            Validity::Fixed { from, until } => (from, until),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CodeSource {
    /// Unique random codes of this length from [`CODE_ALPHABET`], made at issue time.
    Generate { length: usize },
    /// Codes imported from the shop system's CSV (first column; a header row is skipped).
    Imported { codes: Vec<String> },
}

/// One issued code and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: String,
    pub batch: String,
    pub account: String,
    pub openid: String,
    pub issued_at: i64,
    pub valid_from: i64,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
}

/// Why a follower got no code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefused {
    #[error("coupon batch `{0}` is out of stock")]
    OutOfStock(String),
    #[error("the follower already holds {held} code(s) of `{batch}`, the most allowed")]
    LimitReached { batch: String, held: u32 },
    #[error("coupon batch `{0}` is not valid any more")]
    BatchExpired(String),
}

/// Why a code cannot be redeemed. `Display` (logs, the redeem API's JSON) gives the time
/// in unix seconds; [`RedeemRefused::describe`] gives it to a person, as a local date-time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RedeemRefused {
    Unknown(String),
    AlreadyRedeemed { code: String, at: i64 },
    Expired { code: String, at: i64 },
    NotYetValid { code: String, at: i64 },
}

impl RedeemRefused {
    /// The refusal with its time as a local date-time at `zone` (the command line).
    pub fn describe(&self, zone: UtcOffset) -> String {
        self.render(&|at| format!("{} ({zone})", zone.date_time(at)))
    }

    /// One wording for both renderings; `when` shows the time.
    fn render(&self, when: &dyn Fn(i64) -> String) -> String {
        match self {
            RedeemRefused::Unknown(code) => format!("unknown coupon code `{code}`"),
            RedeemRefused::AlreadyRedeemed { code, at } => {
                format!("coupon `{code}` was already redeemed at {}", when(*at))
            }
            RedeemRefused::Expired { code, at } => {
                format!("coupon `{code}` expired at {}", when(*at))
            }
            RedeemRefused::NotYetValid { code, at } => {
                format!("coupon `{code}` is not valid before {}", when(*at))
            }
        }
    }
}

impl fmt::Display for RedeemRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|at| format!("{at} (unix seconds)")))
    }
}

/// A batch's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponStats {
    pub issued: u64,
    pub redeemed: u64,
    /// Issued, not redeemed, past their end.
    pub expired: u64,
    /// Still to issue.
    pub left: u64,
}

/// What a backend knows of a batch when a follower claims a code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    pub issued: u64,
    pub redeemed: u64,
}

/// Decides a claim (pure but for the random code): the new code, or why not. `held`: the
/// follower's codes of this batch so far; `taken` says whether a code exists already (a
/// generated code is drawn again then; an imported one is a configuration error, refused
/// as out of stock and logged by the caller).
pub fn claim(
    batch: &Batch,
    state: BatchState,
    held: u32,
    account: &str,
    openid: &str,
    now: i64,
    taken: &mut dyn FnMut(&str) -> bool,
) -> Result<Coupon, ClaimRefused> {
    let (valid_from, expires_at) = batch.validity.window(now);
    if now >= expires_at {
        return Err(ClaimRefused::BatchExpired(batch.name.clone()));
    }
    if state.issued >= batch.stock {
        return Err(ClaimRefused::OutOfStock(batch.name.clone()));
    }
    if held >= batch.per_follower {
        return Err(ClaimRefused::LimitReached {
            batch: batch.name.clone(),
            held,
        });
    }
    let code = match &batch.codes {
        CodeSource::Imported { codes } => {
            let code = codes
                .get(state.issued as usize)
                .filter(|c| !taken(c))
                .ok_or_else(|| ClaimRefused::OutOfStock(batch.name.clone()))?;
            code.clone()
        }
        CodeSource::Generate { length } => {
            let mut rng = rand::rng();
            loop {
                let code = generate_code(*length, &mut rng);
                if !taken(&code) {
                    break code;
                }
            }
        }
    };
    Ok(Coupon {
        code,
        batch: batch.name.clone(),
        account: account.to_string(),
        openid: openid.to_string(),
        issued_at: now,
        valid_from,
        expires_at,
        redeemed_at: None,
    })
}

/// Decides a redemption (pure): the coupon afterwards, or why not.
pub fn redeem(mut c: Coupon, now: i64) -> Result<Coupon, RedeemRefused> {
    if let Some(at) = c.redeemed_at {
        return Err(RedeemRefused::AlreadyRedeemed { code: c.code, at });
    }
    if now >= c.expires_at {
        return Err(RedeemRefused::Expired {
            code: c.code,
            at: c.expires_at,
        });
    }
    if now < c.valid_from {
        return Err(RedeemRefused::NotYetValid {
            code: c.code,
            at: c.valid_from,
        });
    }
    c.redeemed_at = Some(now);
    Ok(c)
}

/// A mistake in `coupons.toml` (or a CSV it names), with where it is.
pub type CouponFileError = crate::located::FileError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    batch: Vec<Spanned<RawBatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    name: Spanned<String>,
    title: Option<String>,
    value: Spanned<String>,
    stock: Option<Spanned<i64>>,
    per_follower: Option<Spanned<i64>>,
    valid_days: Option<Spanned<i64>>,
    valid_from: Option<Spanned<toml::value::Datetime>>,
    valid_until: Option<Spanned<toml::value::Datetime>>,
    code_length: Option<Spanned<i64>>,
    codes_csv: Option<Spanned<String>>,
}

/// Parses `text` (the file `file`); `read_csv` reads a CSV path named by `codes_csv`
/// (relative to the file; a closure so tests need no files). Every mistake is reported.
pub fn parse_batches(
    file: &str,
    text: &str,
    read_csv: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<Batch>, Vec<CouponFileError>> {
    let at = |offset: usize, message: String| CouponFileError::at(file, text, offset, message);
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![CouponFileError::from_toml(file, text, &e)])?;
    let mut errors = Vec::new();
    let mut batches = Vec::new();
    let mut names = BTreeSet::new();
    for raw in raw.batch {
        let start = raw.span().start;
        let b = raw.into_inner();
        let name = b.name.get_ref().trim().to_string();
        let mut err = |offset: usize, m: String| errors.push(at(offset, m));
        if !is_name(&name) {
            err(
                b.name.span().start,
                format!("batch name `{name}`: use letters, digits, `-` and `_` (1 to 64)"),
            );
        } else if !names.insert(name.clone()) {
            err(
                b.name.span().start,
                format!("batch `{name}` is defined twice"),
            );
        }
        let positive =
            |v: &Option<Spanned<i64>>, what: &str, err: &mut dyn FnMut(usize, String)| {
                v.as_ref().and_then(|v| {
                    if *v.get_ref() >= 1 {
                        Some(*v.get_ref())
                    } else {
                        err(v.span().start, format!("{what} must be at least 1"));
                        None
                    }
                })
            };
        let per_follower = positive(&b.per_follower, "per_follower", &mut err).unwrap_or(1);
        let length = positive(&b.code_length, "code_length", &mut err);
        let validity = match (&b.valid_days, &b.valid_from, &b.valid_until) {
            (Some(d), None, None) => positive(&b.valid_days, "valid_days", &mut err)
                .map(|_| Validity::Days(*d.get_ref() as u32)),
            (None, from, Some(until)) => {
                let until_s = unix(until.get_ref());
                let from_s = from.as_ref().map(|f| unix(f.get_ref()));
                match (from_s.unwrap_or(Ok(i64::MIN)), until_s) {
                    (Ok(f), Ok(u)) if f < u => Some(Validity::Fixed { from: f, until: u }),
                    (Ok(_), Ok(_)) => {
                        err(
                            until.span().start,
                            "valid_until must be after valid_from".into(),
                        );
                        None
                    }
                    (Err(m), _) | (_, Err(m)) => {
                        err(until.span().start, m);
                        None
                    }
                }
            }
            _ => {
                err(
                    start,
                    format!(
                        "batch `{name}`: give either valid_days = N, or valid_until (and optionally valid_from) as dates"
                    ),
                );
                None
            }
        };
        let codes = match &b.codes_csv {
            None => Some(CodeSource::Generate {
                length: length.map_or(DEFAULT_CODE_LENGTH, |l| l as usize),
            }),
            Some(path) => match read_csv(path.get_ref()) {
                Err(e) => {
                    err(
                        path.span().start,
                        format!("cannot read {}: {e}", path.get_ref()),
                    );
                    None
                }
                Ok(csv) => match codes_from_csv(&csv) {
                    Ok(codes) if !codes.is_empty() => Some(CodeSource::Imported { codes }),
                    Ok(_) => {
                        err(
                            path.span().start,
                            format!("{} has no codes", path.get_ref()),
                        );
                        None
                    }
                    Err((line, m)) => {
                        err(
                            path.span().start,
                            format!("{} line {line}: {m}", path.get_ref()),
                        );
                        None
                    }
                },
            },
        };
        if b.codes_csv.is_some() && b.code_length.is_some() {
            err(
                b.code_length.as_ref().map_or(start, |l| l.span().start),
                "code_length applies to generated codes, not to codes_csv".into(),
            );
        }
        let stock = match (&codes, positive(&b.stock, "stock", &mut err)) {
            (Some(CodeSource::Imported { codes }), Some(s)) if s as usize > codes.len() => {
                err(
                    b.stock.as_ref().map_or(start, |s| s.span().start),
                    format!("stock {s} is more than the {} imported codes", codes.len()),
                );
                None
            }
            (Some(CodeSource::Imported { codes }), s) => {
                Some(s.map_or(codes.len() as u64, |s| s as u64))
            }
            (_, Some(s)) => Some(s as u64),
            (_, None) if b.stock.is_none() => {
                err(
                    start,
                    format!("batch `{name}` needs a stock (how many codes in all)"),
                );
                None
            }
            (_, None) => None,
        };
        if let (Some(validity), Some(codes), Some(stock)) = (validity, codes, stock) {
            batches.push(Batch {
                title: b.title.unwrap_or_else(|| name.clone()),
                name,
                value: b.value.into_inner(),
                validity,
                stock,
                per_follower: per_follower as u32,
                codes,
            });
        }
    }
    if errors.is_empty() {
        Ok(batches)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// The codes of a shop system's CSV: the first column of each line, a header row (one
/// whose first cell is not a valid code) skipped, blank lines ignored. Codes are kept as
/// written (trimmed) and must be unique.
pub fn codes_from_csv(csv: &str) -> Result<Vec<String>, (usize, String)> {
    let mut seen = BTreeSet::new();
    let mut codes = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        let cell = line
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .trim();
        if cell.is_empty() {
            continue;
        }
        let header_word = ["code", "codes", "coupon", "coupon_code", "券码", "兑换码"]
            .iter()
            .any(|h| cell.eq_ignore_ascii_case(h));
        if i == 0 && (header_word || !is_code(cell)) {
            continue; // a header row
        }
        if !is_code(cell) {
            return Err((
                i + 1,
                format!("`{cell}` is not a code (letters, digits and `-`, 4 to 64)"),
            ));
        }
        if !seen.insert(cell.to_string()) {
            return Err((i + 1, format!("code `{cell}` appears twice")));
        }
        codes.push(cell.to_string());
    }
    Ok(codes)
}

/// A new random code of `length` characters from [`CODE_ALPHABET`] (31 symbols: a
/// 10-character code is one of 8×10¹⁴, unguessable by trying).
pub fn generate_code(length: usize, rng: &mut impl rand::RngExt) -> String {
    (0..length)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

fn is_code(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A TOML date or date-time as unix seconds; a bare date is midnight China time (UTC+8),
/// where these brands' calendars are.
pub(crate) fn unix(d: &toml::value::Datetime) -> Result<i64, String> {
    let date = d.date.ok_or("a date is needed (e.g. 2026-12-31)")?;
    let days = crate::local_time::days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let (secs_in_day, offset) = match (d.time, d.offset) {
        (Some(t), off) => {
            let s = i64::from(t.hour) * 3600
                + i64::from(t.minute) * 60
                + i64::from(t.second.unwrap_or(0));
            let o = match off {
                Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes) * 60,
                Some(toml::value::Offset::Z) => 0,
                None => 8 * 3600,
            };
            (s, o)
        }
        (None, _) => (0, 8 * 3600),
    };
    Ok(days * 86_400 + secs_in_day - offset)
}

/// The China-time (UTC+8) calendar date of unix second `ts`, as `YYYY-MM-DD`: what a
/// follower reads (coupon expiry dates in replies), whatever the operator's display offset.
pub fn china_date(ts: i64) -> String {
    crate::local_time::UtcOffset::CHINA.date(ts)
}

/// How a refusal reads to a follower (`{coupon.refused}`).
pub fn refusal_text(r: &ClaimRefused) -> &'static str {
    match r {
        ClaimRefused::OutOfStock(_) => "已领完",
        ClaimRefused::LimitReached { .. } => "已领取过",
        ClaimRefused::BatchExpired(_) => "活动已结束",
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::Days(d) => write!(f, "{d} days from issue"),
            Validity::Fixed { from, until } => {
                write!(f, "from {from} until {until} (unix seconds)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_csv(_: &str) -> Result<String, String> {
        Err("no files in this test".into())
    }

    #[test]
    fn batches_parse_with_defaults() {
        let text = r#"
[[batch]]
name = "new-guest"
title = "新客礼"
value = "满 30 减 10"
stock = 1000
valid_days = 7

[[batch]]
name = "double11"
value = "9 折"
stock = 50
per_follower = 2
valid_from = 2026-11-01
valid_until = 2026-11-12
code_length = 12
"#;
        let b = parse_batches("coupons.toml", text, &no_csv).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, "new-guest");
        assert_eq!(b[0].per_follower, 1);
        assert_eq!(b[0].validity, Validity::Days(7));
        assert_eq!(b[0].codes, CodeSource::Generate { length: 10 });
        assert_eq!(b[0].validity.window(100), (100, 100 + 7 * 86_400));
        assert_eq!(b[1].title, "double11", "title defaults to the name");
        // 2026-11-01 00:00 in China = 2026-10-31 16:00 UTC.
        assert_eq!(
            b[1].validity,
            Validity::Fixed {
                from: 1_793_462_400,
                until: 1_794_412_800
            }
        );
        assert_eq!(b[1].codes, CodeSource::Generate { length: 12 });
    }

    #[test]
    fn imported_codes_come_from_the_csv() {
        let csv = |p: &str| {
            assert_eq!(p, "codes.csv");
            Ok("code,note\nTEA-0001,a\n\n\"TEA-0002\",b\nTEA-0003\n".to_string())
        };
        let text = "[[batch]]\nname = \"shop\"\nvalue = \"10元\"\nvalid_days = 30\ncodes_csv = \"codes.csv\"\n";
        let b = parse_batches("c.toml", text, &csv).unwrap();
        assert_eq!(b[0].stock, 3, "stock defaults to the imported count");
        assert_eq!(
            b[0].codes,
            CodeSource::Imported {
                codes: vec!["TEA-0001".into(), "TEA-0002".into(), "TEA-0003".into()]
            }
        );
        assert_eq!(
            codes_from_csv("A-1234\nA-1234\n"),
            Err((2, "code `A-1234` appears twice".into()))
        );
        assert!(codes_from_csv("ABCD\nno good!\n")
            .unwrap_err()
            .1
            .contains("not a code"));
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let text = r#"[[batch]]
name = "a b"
value = "x"
stock = 0
valid_days = 3

[[batch]]
name = "dup"
value = "x"
stock = 5
valid_days = 3

[[batch]]
name = "dup"
value = "x"
valid_days = 3
valid_until = 2026-01-01
"#;
        let errors = parse_batches("coupons.toml", text, &no_csv).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let want = [
            "coupons.toml:2:8: batch name `a b`",
            "coupons.toml:4:9: stock must be at least 1",
            "coupons.toml:14:8: batch `dup` is defined twice",
        ];
        for w in want {
            assert!(shown.iter().any(|s| s.starts_with(w)), "{w} in {shown:#?}");
        }
        assert!(
            shown.iter().any(|s| s.contains("give either valid_days")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.contains("needs a stock")),
            "{shown:#?}"
        );

        let typo = parse_batches("c.toml", "[[batch]]\nnme = \"x\"\n", &no_csv).unwrap_err();
        assert_eq!((typo[0].line, typo[0].column), (2, 1), "{}", typo[0]);
        assert!(typo[0].message.contains("nme"), "{}", typo[0]);
        let missing = parse_batches("c.toml", "[[batch]]\nname = \"x\"\nvalue = \"v\"\nstock = 1\nvalid_days = 1\ncodes_csv = \"gone.csv\"\n", &no_csv).unwrap_err();
        assert_eq!(missing[0].line, 6);
        assert!(
            missing[0].message.contains("cannot read gone.csv"),
            "{}",
            missing[0]
        );
    }

    #[test]
    fn codes_are_readable_and_distinct() {
        let mut rng = rand::rng();
        let codes: BTreeSet<String> = (0..10_000).map(|_| generate_code(10, &mut rng)).collect();
        assert_eq!(codes.len(), 10_000);
        for c in &codes {
            assert_eq!(c.len(), 10);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{c}");
            assert!(!c.contains(['0', 'O', '1', 'I', 'L']), "{c}");
        }
    }

    #[test]
    fn refusals_read_in_local_time_for_people_and_unix_seconds_for_machines() {
        let west: UtcOffset = "-05:00".parse().unwrap();
        // 2026-12-01 00:00:00 China time.
        let at = 1_796_054_400;
        let cases = [
            (
                "already redeemed",
                RedeemRefused::AlreadyRedeemed {
                    code: "C0DE".into(),
                    at,
                },
                "coupon `C0DE` was already redeemed at 2026-11-30 11:00:00 (-05:00)",
            ),
            (
                "expired",
                RedeemRefused::Expired {
                    code: "C0DE".into(),
                    at,
                },
                "coupon `C0DE` expired at 2026-11-30 11:00:00 (-05:00)",
            ),
            (
                "not yet valid",
                RedeemRefused::NotYetValid {
                    code: "C0DE".into(),
                    at,
                },
                "coupon `C0DE` is not valid before 2026-11-30 11:00:00 (-05:00)",
            ),
            (
                "unknown",
                RedeemRefused::Unknown("C0DE".into()),
                "unknown coupon code `C0DE`",
            ),
        ];
        for (case, refused, want) in cases {
            assert_eq!(refused.describe(west), want, "{case}");
            let machine = refused.to_string();
            assert!(
                case == "unknown" || machine.contains("1796054400 (unix seconds)"),
                "{case}: {machine}"
            );
        }
        let fixed = Validity::Fixed {
            from: at,
            until: at + 86_400,
        };
        assert_eq!(
            fixed.describe(UtcOffset::CHINA),
            "from 2026-12-01 00:00:00 until 2026-12-02 00:00:00 (+08:00)"
        );
        assert_eq!(Validity::Days(7).describe(west), "7 days from issue");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(crate::local_time::days_from_civil(1970, 1, 1), 0);
        assert_eq!(crate::local_time::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(crate::local_time::days_from_civil(2026, 11, 23), 20_780);
        // 2026-11-30 23:59:59 China time is 15:59:59 UTC.
        assert_eq!(china_date(1_796_054_399), "2026-11-30");
        assert_eq!(china_date(1_796_054_400), "2026-12-01");
        assert_eq!(china_date(0), "1970-01-01");
    }
}
