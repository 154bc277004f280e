//! The referrals file: a good file, the defaults, and every mistake at its place.

use super::config::*;
use super::programme::*;
use super::text::Values;
use crate::config::AccountKind;
use crate::local_time::UtcOffset;
use crate::located::FileError;

const GOOD: &str = r#"
[[referral]]
name = "spring"
account = "demo"
title = "春季邀请"
start = 2026-12-01
end = 2026-12-31
keyword = ["邀请好友", "我的海报"]
counts = "new_and_returning"
hold_hours = 48
daily_cap = 5
burst = { invites = 4, minutes = 30 }
template_id = "TM00015_abc-1"
qr_days = 7

[[referral.tier]]
invites = 10
coupon = "big"

[[referral.tier]]
invites = 3
coupon = "small"

[referral.poster]
background = "poster.png"
x = 100
y = 700
size = 300

[referral.texts]
invitation = "{title}：你的二维码，{end} 前有效"
progress = "已有 {valid} 位，待确认 {pending} 位，下一档 {next_tier|无}"
reward = "{coupon.title}：{coupon.code}"
"#;

fn parse(text: &str) -> Result<Vec<Programme>, Vec<FileError>> {
    let accounts = |id: &str| match id {
        "demo" => Some(AccountKind::Official),
        "corp" => Some(AccountKind::Wecom),
        _ => None,
    };
    let batches = |b: &str| matches!(b, "small" | "big");
    let background = |p: &str| match p {
        "poster.png" => Ok((750, 1334)),
        other => Err(format!("cannot read {other}: No such file")),
    };
    let known = Known {
        accounts: &accounts,
        batches: &batches,
        background: &background,
        zone: UtcOffset::CHINA,
    };
    parse_programmes("referrals.toml", text, &known)
}

/// 2026-12-01 00:00 China time.
const DEC_1: i64 = 1_796_054_400;

#[test]
fn a_good_file_parses() {
    let all = parse(GOOD).unwrap();
    assert_eq!(all.len(), 1);
    let p = &all[0];
    assert_eq!(p.name, "spring");
    assert_eq!(p.title, "春季邀请");
    assert_eq!(
        p.start, DEC_1,
        "a bare start date: that day's midnight, local time"
    );
    assert_eq!(
        p.end,
        DEC_1 + 31 * 86_400,
        "a bare end date runs through that day"
    );
    assert_eq!(p.end_text(), "2026-12-31 23:59");
    assert!(p.is_running(DEC_1) && !p.is_running(DEC_1 - 1) && !p.is_running(p.end));
    assert_eq!(
        p.tiers,
        [
            Tier {
                invites: 3,
                coupon: "small".into()
            },
            Tier {
                invites: 10,
                coupon: "big".into()
            },
        ],
        "sorted by invites"
    );
    assert_eq!(p.counts, Counts::NewAndReturning);
    assert_eq!(p.hold_secs, 48 * 3600);
    assert_eq!(p.daily_cap, 5);
    assert_eq!(
        p.burst,
        Burst {
            invites: 4,
            minutes: 30
        }
    );
    assert_eq!(p.template_id.as_deref(), Some("TM00015_abc-1"));
    assert_eq!(p.qr_expire_secs, 7 * 86_400);
    assert_eq!(
        p.poster,
        Some(Poster {
            background: "poster.png".into(),
            x: 100,
            y: 700,
            size: 300
        })
    );
    assert!(
        p.asks_for_poster("邀请好友")
            && p.asks_for_poster(" 我的海报！")
            && !p.asks_for_poster("邀请")
    );
    assert_eq!(p.next_tier(0).unwrap().invites, 3);
    assert_eq!(p.next_tier(3).unwrap().invites, 10);
    assert!(p.next_tier(10).is_none());
    let v = Values {
        title: &p.title,
        end: p.end_text(),
        ..Values::default()
    };
    assert_eq!(
        p.texts.invitation.render(&v),
        "春季邀请：你的二维码，2026-12-31 23:59 前有效"
    );
    assert!(parse("").unwrap().is_empty());
}

#[test]
fn defaults_are_neutral_and_parse() {
    let text = "[[referral]]\nname = \"p\"\naccount = \"demo\"\nstart = 2026-12-01T10:00:00\n\
                end = 2026-12-02T10:00:00+00:00\nkeyword = \"邀请好友\"\n\
                [[referral.tier]]\ninvites = 3\ncoupon = \"small\"\n";
    let p = &parse(text).unwrap()[0];
    assert_eq!(p.title, "p");
    assert_eq!(p.start, DEC_1 + 10 * 3600, "a local date-time at the zone");
    assert_eq!(p.end, DEC_1 + 86_400 + 18 * 3600, "an explicit offset wins");
    assert_eq!(p.counts, Counts::New);
    assert_eq!(p.hold_secs, i64::from(DEFAULT_HOLD_HOURS) * 3600);
    assert_eq!(p.daily_cap, DEFAULT_DAILY_CAP);
    assert_eq!(p.burst, DEFAULT_BURST);
    assert_eq!(p.qr_expire_secs, 30 * 86_400);
    assert!(p.poster.is_none() && p.template_id.is_none());
    // WeChat forbids inducing people to share or follow for a reward: no default says
    // "share", "invite", "follow", "reward" or "free".
    for text in [DEFAULT_INVITATION, DEFAULT_PROGRESS, DEFAULT_REWARD] {
        for word in [
            "分享",
            "转发",
            "邀请",
            "关注即",
            "领取",
            "免费",
            "奖励",
            "朋友圈",
        ] {
            assert!(!text.contains(word), "{text:?} contains {word}");
        }
    }
    let v = Values {
        valid: 2,
        pending: 1,
        title: "p",
        ..Values::default()
    };
    assert_eq!(
        p.texts.progress.render(&v),
        "已有 2 位好友通过你的二维码关注，1 位待确认。"
    );
    assert_eq!(p.texts.invitation.render(&v), "这是你的专属二维码。");
    assert_eq!(p.texts.reward.render(&v), "你获得了一张优惠券：稍后发放");
}

#[test]
fn every_mistake_is_reported_at_its_place() {
    let head = "[[referral]]\nname = \"p\"\naccount = \"demo\"\nstart = 2026-12-01\nend = 2026-12-31\nkeyword = \"k\"\n";
    let tier = "[[referral.tier]]\ninvites = 3\ncoupon = \"small\"\n";
    let long = "p".repeat(44);
    // (case, file text, the error as line:column: message prefix)
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad toml", format!("{head}{tier}x = \n"), "10:5: "),
        ("unknown key", format!("{head}colour = \"red\"\n{tier}"), "7:1: unknown field `colour`"),
        (
            "name too long for the scene",
            head.replace("name = \"p\"", &format!("name = \"{long}\"")) + tier,
            "2:8: programme name `pppp",
        ),
        ("name with a colon", head.replace("\"p\"", "\"a:b\"") + tier, "2:8: programme name `a:b`: 1 to 43"),
        ("unknown account", head.replace("\"demo\"", "\"nope\"") + tier, "3:11: no account `nope` in the config"),
        ("wecom account", head.replace("\"demo\"", "\"corp\"") + tier, "3:11: account `corp` is WeCom"),
        ("end before start", head.replace("2026-12-31", "2026-11-30") + tier, "5:7: end must be after start"),
        ("a time without a date", head.replace("end = 2026-12-31", "end = 10:00:00") + tier, "5:7: a date is needed"),
        ("keyword not a string", head.replace("\"k\"", "3") + tier, "6:11: keyword: a string or a list"),
        ("empty keyword", head.replace("\"k\"", "[\"！\"]") + tier, "6:11: an empty keyword"),
        ("no tier", head.to_string(), "1:1: programme `p` has no [[referral.tier]]"),
        ("unknown batch", format!("{head}{}", tier.replace("small", "huge")), "9:10: no coupon batch `huge` in the coupons file"),
        ("zero invites", format!("{head}{}", tier.replace("= 3", "= 0")), "8:11: invites must be 1 to 100000, not 0"),
        ("two tiers at 3", format!("{head}{tier}{tier}"), "11:11: two tiers at 3 invites"),
        ("bad counts", format!("{head}counts = \"all\"\n{tier}"), "7:10: counts `all`: one of new"),
        ("negative hold", format!("{head}hold_hours = -1\n{tier}"), "7:14: hold_hours must be 0 to 720"),
        ("zero cap", format!("{head}daily_cap = 0\n{tier}"), "7:13: daily_cap must be 1 to 100000"),
        ("zero burst minutes", format!("{head}burst = {{ invites = 3, minutes = 0 }}\n{tier}"), "7:34: burst minutes must be 1 to 1440"),
        ("burst without minutes", format!("{head}burst = {{ invites = 3 }}\n{tier}"), "7:9: missing field `minutes`"),
        ("bad template id", format!("{head}template_id = \"a b\"\n{tier}"), "7:15: template_id `a b`"),
        ("qr codes live 30 days at most", format!("{head}qr_days = 31\n{tier}"), "7:11: qr_days must be 1 to 30"),
        (
            "a background that cannot be read",
            format!("{head}{tier}[referral.poster]\nbackground = \"nope.png\"\nx = 0\ny = 0\nsize = 200\n"),
            "11:14: cannot read nope.png",
        ),
        (
            "a code that does not fit",
            format!("{head}{tier}[referral.poster]\nbackground = \"poster.png\"\nx = 500\ny = 0\nsize = 300\n"),
            "14:8: the QR code (300 px at x = 500, y = 0) does not fit inside the 750 × 1334 px background",
        ),
        (
            "a code too small to scan",
            format!("{head}{tier}[referral.poster]\nbackground = \"poster.png\"\nx = 0\ny = 0\nsize = 50\n"),
            "14:8: size must be 98 to 8000",
        ),
        (
            "an unknown placeholder, at its column",
            format!("{head}{tier}[referral.texts]\nprogress = \"已邀请 {{valid}} 位 {{coupon.code}}\"\n"),
            "11:27: unknown placeholder `{coupon.code}` here",
        ),
        (
            "counts have no place in the invitation",
            format!("{head}{tier}[referral.texts]\ninvitation = \"{{valid}}\"\n"),
            "11:15: unknown placeholder `{valid}` here; this text takes {title}, {end}",
        ),
        (
            "a lone brace in the reward",
            format!("{head}{tier}[referral.texts]\nreward = \"a }} b\"\n"),
            "11:13: unmatched `}`",
        ),
        ("twice the same name", format!("{head}{tier}{}", format!("{head}{tier}").replace("keyword = \"k\"", "keyword = \"other\"")), "11:8: programme `p` is defined twice"),
        (
            "one keyword for two programmes at once",
            format!("{head}{tier}{}", format!("{head}{tier}").replace("\"p\"", "\"q\"")),
            "15:11: keyword `k` is also programme `p`'s",
        ),
    ];
    for (case, text, want) in &cases {
        let errors = parse(text).expect_err(case);
        assert_eq!(errors.len(), 1, "{case}: {errors:?}");
        let e = &errors[0];
        let got = format!("{}:{}: {}", e.line, e.column, e.message);
        assert!(
            got.starts_with(want),
            "{case}:\n{text}\nwant {want}\n got {got}"
        );
        assert!(
            e.to_string().starts_with("referrals.toml:"),
            "{case}: names the file"
        );
    }
}

#[test]
fn all_mistakes_at_once_in_file_order() {
    let text = "[[referral]]\nname = \"a b\"\naccount = \"nope\"\nstart = 2026-12-01\nend = 2026-12-31\n\
                keyword = \"k\"\ncounts = \"all\"\n[[referral.tier]]\ninvites = 3\ncoupon = \"huge\"\n\
                [referral.texts]\ninvitation = \"{valid}\"\nprogress = \"{x}\"\n";
    let errors = parse(text).unwrap_err();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        at,
        [(2, 8), (3, 11), (7, 10), (10, 10), (12, 15), (13, 13)],
        "{errors:?}"
    );
}

#[test]
fn programmes_at_other_times_may_share_a_keyword() {
    let one = "[[referral]]\nname = \"NAME\"\naccount = \"demo\"\nstart = START\nend = END\nkeyword = \"k\"\n\
               [[referral.tier]]\ninvites = 3\ncoupon = \"small\"\n";
    let text = one
        .replace("NAME", "dec")
        .replace("START", "2026-12-01")
        .replace("END", "2026-12-31")
        + &one
            .replace("NAME", "jan")
            .replace("START", "2027-01-01")
            .replace("END", "2027-01-31");
    assert_eq!(parse(&text).unwrap().len(), 2, "back to back: no overlap");
}

#[test]
fn load_reads_the_file_and_the_background_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut png_bytes = Vec::new();
    {
        let mut e = png::Encoder::new(&mut png_bytes, 750, 1334);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header()
            .unwrap()
            .write_image_data(&vec![200; 750 * 1334 * 3])
            .unwrap();
    }
    std::fs::write(dir.path().join("poster.png"), &png_bytes).unwrap();
    let path = dir.path().join("referrals.toml");
    std::fs::write(&path, GOOD).unwrap();
    let accounts = |id: &str| (id == "demo").then_some(AccountKind::Official);
    let batches = |b: &str| matches!(b, "small" | "big");
    let all = load(&path, &accounts, &batches, UtcOffset::CHINA).unwrap();
    assert_eq!(
        all[0].poster.as_ref().unwrap().background,
        dir.path().join("poster.png")
    );

    std::fs::write(dir.path().join("poster.png"), b"not a png").unwrap();
    let e = load(&path, &accounts, &batches, UtcOffset::CHINA).unwrap_err();
    let shown = e.to_string();
    assert!(shown.starts_with("referrals refused:\n"), "{shown}");
    assert!(
        shown.contains("referrals.toml:25:14: poster.png: the background is not a PNG"),
        "{shown}"
    );

    let e = load(
        &dir.path().join("missing.toml"),
        &accounts,
        &batches,
        UtcOffset::CHINA,
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::Read { .. }), "{e}");
}

#[test]
fn the_shipped_example_parses_against_the_shipped_coupons() {
    let coupons = crate::coupon::parse_batches(
        "examples/coupons.toml",
        include_str!("../../examples/coupons.toml"),
        &|_| Err("no CSV here".into()),
    )
    .unwrap();
    let accounts = |id: &str| (id == "demo").then_some(AccountKind::Official);
    let batches = |b: &str| coupons.iter().any(|c| c.name == b);
    let no_poster = |p: &str| Err(format!("{p}: not shipped"));
    let known = Known {
        accounts: &accounts,
        batches: &batches,
        background: &no_poster,
        zone: UtcOffset::CHINA,
    };
    let text = include_str!("../../examples/referrals.toml");
    let all = parse_programmes("examples/referrals.toml", text, &known)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(all[0].name, "winter-tea");
    let scene = super::scene::scene(&all[0].name, &super::ParticipantId::of("demo", "o1")).unwrap();
    let (p, id) = find(&all, "demo", &format!("qrscene_{scene}")).unwrap();
    assert_eq!(
        (p.name.as_str(), id),
        ("winter-tea", super::ParticipantId::of("demo", "o1"))
    );
    assert!(find(&all, "shop2", &scene).is_none(), "another account's");
    assert!(find(&all, "demo", "spring-poster").is_none(), "a channel");
}
