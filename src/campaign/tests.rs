use super::*;
use crate::coupon::{CodeSource, Validity};
use crate::follower::{CS_AFTER_INTERACTION, CS_AFTER_MESSAGE};

fn batches() -> Vec<Batch> {
    vec![Batch {
        name: "vip-back".into(),
        title: "回归礼".into(),
        value: "满 100 减 20".into(),
        validity: Validity::Days(7),
        stock: 100,
        per_follower: 1,
        codes: CodeSource::Generate { length: 10 },
    }]
}

fn parse(text: &str) -> Result<Vec<Campaign>, Vec<FileError>> {
    let kinds = |id: &str| match id {
        "demo" | "shop" => Some(AccountKind::Official),
        "corp" => Some(AccountKind::Wecom),
        _ => None,
    };
    let coupons = batches();
    parse_campaigns(
        "campaigns.toml",
        text,
        &Known {
            accounts: &kinds,
            coupons: &coupons,
        },
    )
}

/// The single error of `text`, as `line:column: message`.
fn error(text: &str) -> String {
    let errors = parse(text).expect_err("must be refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.file, "campaigns.toml");
    format!("{}:{}: {}", e.line, e.column, e.message)
}

const GOOD: &str = r#"
[[campaign]]
name = "vip-comeback"
account = "demo"
audience = "tag:vip AND last_message_before 30d"
start = 2026-12-01T10:00:00+08:00
end = 2026-12-03
rate_per_sec = 20
coupon = "vip-back"
goals = [{ metric = "coupons_redeemed", at_least = 500, by = "2026-11-11" }, { metric = "shop:orders", at_least = 50, by = 2026-12-03 }]

[campaign.message]
text = "{attr.name}，您的回归礼 {coupon.code}（{coupon.value}）{coupon.expires} 前有效"

[campaign.template]
id = "TPL-1"
url = "https://shop.example/back"
data = { first = "回归礼到账", keyword1 = "{coupon.code}" }

[[campaign]]
name = "staff-notice"
account = "corp"
audience = "subscribed"

[campaign.message]
text = "本周五盘点"

[campaign.robot]
key_env = "SIYU_ROBOT_KEY"
text = "本周五盘点，请各门店准备"
"#;

#[test]
fn a_good_file_parses_into_campaigns() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.len(), 2);
    let vip = &c[0];
    assert_eq!(vip.name, "vip-comeback");
    assert_eq!(vip.audience, "tag:vip AND last_message_before 30d");
    // 2026-12-01 10:00 China time, and a bare date at midnight China time.
    assert_eq!(vip.start_at, Some(1_796_090_400));
    assert_eq!(vip.end_at, Some(1_796_227_200));
    assert_eq!(vip.rate_per_sec, Some(20.0));
    let goals: Vec<(&str, i64, &str)> = vip
        .goals
        .iter()
        .map(|g| (g.metric.as_str(), g.at_least, g.by.as_str()))
        .collect();
    assert_eq!(
        goals,
        [
            ("coupons_redeemed", 500, "2026-11-11"),
            ("shop:orders", 50, "2026-12-03")
        ]
    );
    assert_eq!(vip.coupon.as_deref(), Some("vip-back"));
    assert!(matches!(&vip.message, Some(Content::Text(t)) if t.starts_with("{attr.name}")));
    let t = vip.template.as_ref().unwrap();
    assert_eq!((t.id.as_str(), t.data.len()), ("TPL-1", 2));
    let staff = &c[1];
    assert_eq!(staff.robot.as_ref().unwrap().key_env, "SIYU_ROBOT_KEY");
    assert!(staff.template.is_none());
}

#[test]
fn mistakes_are_refused_with_their_place() {
    let head = "[[campaign]]\nname = \"c\"\naccount = \"demo\"\n";
    let msg = "[campaign.message]\ntext = \"hi\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{head}audience = \"tag:vip AND\"\n{msg}"),
            "4:24: audience: expected a condition",
        ),
        (
            "[[campaign]]\nname = \"c\"\naccount = \"nope\"\naudience = \"subscribed\"\n[campaign.message]\ntext = \"x\"\n".into(),
            "3:11: no account `nope` in the config",
        ),
        (
            format!("{head}audience = \"subscribed\"\ncoupon = \"gone\"\n{msg}"),
            "5:10: no coupon batch `gone` in the coupons file",
        ),
        (
            format!("{head}audience = \"subscribed\"\n[campaign.message]\ntext = \"you said {{content}}\"\n"),
            "6:8: `{content}`: a campaign has no incoming message to take it from",
        ),
        (
            format!("{head}audience = \"subscribed\"\n[campaign.message]\ntext = \"code {{coupon.code}}\"\n"),
            "6:8: `{coupon.code}` needs `coupon = \"BATCH\"` in this campaign",
        ),
        (
            format!("{head}audience = \"subscribed\"\n[campaign.message]\ntext = \"{{attr.x\"\n"),
            "6:8: unclosed",
        ),
        (
            format!("{head}audience = \"subscribed\"\n"),
            "1:1: an official-account campaign needs [campaign.message]",
        ),
        (
            format!("{head}audience = \"subscribed\"\n{msg}[campaign.robot]\nkey_env = \"K\"\ntext = \"x\"\n"),
            "7:1: [campaign.robot] is a WeCom group robot",
        ),
        (
            "[[campaign]]\nname = \"c\"\naccount = \"corp\"\naudience = \"subscribed\"\n[campaign.message]\ntext = \"x\"\n[campaign.template]\nid = \"T\"\n".into(),
            "7:1: template messages are for official accounts",
        ),
        (
            format!("{head}audience = \"subscribed\"\nstart = 2026-12-02\nend = 2026-12-01\n{msg}"),
            "6:7: end must be after start",
        ),
        (
            format!("{head}audience = \"subscribed\"\nrate_per_sec = 0\n{msg}"),
            "5:16: rate_per_sec must be a number above 0",
        ),
        (
            format!("{head}audience = \"subscribed\"\nsend_at = 3\n{msg}"),
            "5:1: unknown field `send_at`",
        ),
        (
            format!("{head}audience = \"subscribed\"\ngoals = [{{ metric = \"likes\", at_least = 5, by = \"2026-11-11\" }}]\n{msg}"),
            "5:10: goal metric `likes`",
        ),
        (
            format!("{head}audience = \"subscribed\"\ngoals = [{{ metric = \"sent\", at_least = 5, by = \"11-11\" }}]\n{msg}"),
            "5:10: goal by = `11-11`",
        ),
        (
            format!("{head}audience = \"subscribed\"\n[campaign.message]\ntext = \"a\"\nimage = \"m\"\n"),
            "5:1: [campaign.message] takes one of text, image (a media_id) or news",
        ),
        (
            "[[campaign]]\nname = \"c\"\naccount = \"corp\"\naudience = \"subscribed\"\n[campaign.robot]\nkey_env = \"K\"\ntext = \"hi {openid}\"\n".into(),
            "7:8: a group announcement goes to a group, not to one follower",
        ),
        (
            format!("{head}audience = \"subscribed\"\n{msg}[[campaign]]\nname = \"c\"\naccount = \"demo\"\naudience = \"subscribed\"\n{msg}"),
            "8:8: campaign `c` is defined twice",
        ),
    ];
    for (text, want) in cases {
        let got = error(&text);
        assert!(
            got.starts_with(want),
            "for\n{text}\nwant {want}\n got {got}"
        );
    }
}

#[test]
fn a_campaign_over_several_accounts_lists_them_in_order() {
    let text = "[[campaign]]\nname = \"c\"\naccounts = [\"shop\", \"demo\"]\n\
                audience = \"subscribed AND person.follows = demo\"\n\
                [campaign.message]\ntext = \"hi\"\n";
    let c = parse(text).unwrap().remove(0);
    assert_eq!(c.account, "shop");
    assert_eq!(c.also, vec!["demo".to_string()]);
    assert_eq!(c.accounts().collect::<Vec<_>>(), ["shop", "demo"]);
    // One account stays one account, stored as before.
    let one = official(true, false);
    assert_eq!(one.accounts().collect::<Vec<_>>(), ["demo"]);
    let json = serde_json::to_value(&one).unwrap();
    assert!(json.get("also").is_none(), "{json}");
    let mut run = CampaignRun::new(c, false);
    assert_eq!(run.walking_account(), "shop");
    run.walking = 1;
    assert_eq!(run.walking_account(), "demo");
    // A run stored before `walking` existed reads as walking its first account.
    let mut old = serde_json::to_value(CampaignRun::new(official(true, false), false)).unwrap();
    old.as_object_mut().unwrap().remove("walking");
    old.as_object_mut().unwrap().remove("same_person");
    let old: CampaignRun = serde_json::from_value(old).unwrap();
    assert_eq!((old.walking, old.same_person), (0, 0));

    let msg = "audience = \"subscribed\"\n[campaign.message]\ntext = \"hi\"\n";
    for (head, want) in [
        (
            "account = \"demo\"\naccounts = [\"shop\"]\n",
            "4:12: give either account = \"ID\" or accounts",
        ),
        ("accounts = []\n", "3:12: accounts = [] names no account"),
        (
            "accounts = [\"demo\", \"corp\"]\n",
            "3:21: account `corp` is WeCom, the first is an official account",
        ),
        (
            "accounts = [\"demo\", \"demo\"]\n",
            "3:21: account `demo` is listed twice",
        ),
        (
            "accounts = [\"demo\", \"gone\"]\n",
            "3:21: no account `gone` in the config",
        ),
        ("", "1:1: missing account"),
    ] {
        let text = format!("[[campaign]]\nname = \"c\"\n{head}{msg}");
        let got = error(&text);
        assert!(
            got.starts_with(want),
            "for\n{text}\nwant {want}\n got {got}"
        );
    }
    let text =
        "[[campaign]]\nname = \"c\"\naccount = \"demo\"\naudience = \"person.follows = gone\"\n\
                [campaign.message]\ntext = \"hi\"\n";
    assert!(
        error(text).starts_with("4:12: audience: person.follows = gone: no account `gone`"),
        "{}",
        error(text)
    );
}

#[test]
fn every_mistake_is_reported_at_once() {
    let text = "[[campaign]]\nname = \"a b\"\naccount = \"nope\"\naudience = \"(\"\n";
    let errors = parse(text).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4], "{errors:?}");
}

fn official(message: bool, template: bool) -> Campaign {
    Campaign {
        name: "c".into(),
        account: "demo".into(),
        also: vec![],
        audience: "subscribed".into(),
        start_at: None,
        end_at: Some(10_000),
        rate_per_sec: None,
        coupon: None,
        message: message.then(|| Content::Text("hi {attr.name}".into())),
        template: template.then(|| TemplateContent {
            id: "T".into(),
            url: None,
            data: [("first".to_string(), "hello {openid}".to_string())].into(),
        }),
        robot: None,
        mass: None,
        goals: Vec::new(),
    }
}

#[test]
fn the_channel_is_the_one_wechat_allows() {
    let now = 5_000;
    let mut inside = Follower::new("in");
    inside.subscribed = true;
    inside.open_cs_window(CS_AFTER_MESSAGE, now - 100);
    let mut outside = Follower::new("out");
    outside.subscribed = true;
    outside.open_cs_window(CS_AFTER_INTERACTION, now - 100);
    let mut used_up = inside.clone();
    for _ in 0..5 {
        used_up.take_cs_slot(now).unwrap();
    }
    let mut never = Follower::new("never");
    never.subscribed = true;
    let mut gone = inside.clone();
    gone.subscribed = false;
    gone.unsubscribed_at = Some(now - 10);

    let both = official(true, true);
    let custom_only = official(true, false);
    let template_only = official(false, true);
    use AccountKind::Official as O;
    type Case<'a> = (
        &'a Campaign,
        Option<&'a Follower>,
        i64,
        Result<Channel, Skip>,
    );
    let cases: Vec<Case> = vec![
        (&both, Some(&inside), now, Ok(Channel::Custom)),
        (&both, Some(&outside), now, Ok(Channel::Template)),
        (&both, Some(&used_up), now, Ok(Channel::Template)),
        (&both, Some(&never), now, Ok(Channel::Template)),
        (&custom_only, Some(&inside), now, Ok(Channel::Custom)),
        (&custom_only, Some(&outside), now, Err(Skip::OutsideWindow)),
        (&custom_only, Some(&never), now, Err(Skip::OutsideWindow)),
        (&custom_only, Some(&used_up), now, Err(Skip::WindowUsedUp)),
        (&template_only, Some(&inside), now, Ok(Channel::Template)),
        (&both, Some(&gone), now, Err(Skip::Unsubscribed)),
        (&both, None, now, Err(Skip::UnknownFollower)),
        (&both, Some(&inside), 10_000, Err(Skip::Ended)),
    ];
    for (i, (c, f, at, want)) in cases.into_iter().enumerate() {
        assert_eq!(choose_channel(c, O, f, at), want, "case {i}");
    }
    // WeCom: app messages, no window; a removed contact is skipped.
    let mut app_user = Follower::new("zhangsan");
    app_user.subscribed = false;
    assert_eq!(
        choose_channel(&custom_only, AccountKind::Wecom, Some(&app_user), now),
        Ok(Channel::App)
    );
    assert_eq!(
        choose_channel(&custom_only, AccountKind::Wecom, Some(&gone), now),
        Err(Skip::Unsubscribed)
    );
    let mut customer = Follower::new("wmEXTERNAL");
    customer.subscribed = true;
    customer
        .attributes
        .insert("wecom_staff".into(), "zhangsan".into());
    assert_eq!(
        choose_channel(&custom_only, AccountKind::Wecom, Some(&customer), now),
        Err(Skip::ExternalContact)
    );
}

#[test]
fn content_is_personalised_per_follower() {
    let mut c = official(true, true);
    c.message = Some(Content::Text(
        "{attr.name}：{coupon.code} 至 {coupon.expires}".into(),
    ));
    let rendered = Rendered::new(&c).unwrap();
    let mut f = Follower::new("o1");
    f.attributes.insert("name".into(), "王女士".into());
    let coupon = crate::coupon::Coupon {
        code: "ABC234".into(),
        batch: "vip-back".into(),
        account: "demo".into(),
        openid: "o1".into(),
        issued_at: 0,
        valid_from: 0,
        // 2026-12-08 00:00 China time: the last valid day is the 7th.
        expires_at: 1_796_659_200,
        redeemed_at: None,
    };
    let view = coupon_view(&batches()[0], &coupon);
    let crate::protocol::Reply::Text { content } = rendered.message(&f, Some(&view)).unwrap()
    else {
        panic!("text expected")
    };
    assert_eq!(content, "王女士：ABC234 至 2026-12-07");
    let t = rendered.template(&f, None).unwrap();
    assert_eq!((t.touser.as_str(), t.template_id.as_str()), ("o1", "T"));
    assert_eq!(t.data["first"].value, "hello o1");

    c.message = Some(Content::News {
        title: "给 {attr.name}".into(),
        description: String::new(),
        url: "https://x".into(),
        picurl: String::new(),
    });
    let crate::protocol::Reply::News { articles } =
        Rendered::new(&c).unwrap().message(&f, None).unwrap()
    else {
        panic!("news expected")
    };
    assert_eq!(articles[0].title, "给 王女士");
    assert_eq!(articles[0].description, None);
}

/// Nothing sets `name` by itself: the fallback is what a follower without one sees.
#[test]
fn a_placeholder_fallback_fills_what_the_follower_lacks() {
    let mut c = official(true, false);
    c.message = Some(Content::Text("{attr.name|朋友}，好久不见".into()));
    let rendered = Rendered::new(&c).unwrap();
    let text = |f: &Follower| match rendered.message(f, None).unwrap() {
        crate::protocol::Reply::Text { content } => content,
        other => panic!("text expected: {other:?}"),
    };
    let mut named = Follower::new("o1");
    named.attributes.insert("name".into(), "王女士".into());
    assert_eq!(text(&Follower::new("o2")), "朋友，好久不见");
    assert_eq!(text(&named), "王女士，好久不见");

    // Placeholders a campaign cannot fill stay refused with a fallback.
    let head = "[[campaign]]\nname = \"c\"\naccount = \"demo\"\naudience = \"subscribed\"\n[campaign.message]\n";
    for (text, want) in [
        (
            "{content|-}",
            "`{content}`: a campaign has no incoming message",
        ),
        (
            "{coupon.code|无}",
            "`{coupon.code}` needs `coupon = \"BATCH\"`",
        ),
        ("{counter.orders|0}", "is never empty"),
    ] {
        let e = error(&format!("{head}text = \"{text}\"\n"));
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn template_ids_for_wechat_are_stable_and_distinct() {
    let a = client_msg_id("c", "o1");
    assert_eq!(a, client_msg_id("c", "o1"));
    assert_ne!(a, client_msg_id("c", "o2"));
    assert_ne!(a, client_msg_id("c2", "o1"));
    assert_eq!(a.len(), 40);
}

#[test]
fn a_report_adds_up_progress() {
    let run = CampaignRun {
        targeted: 6,
        state: RunState::Running,
        ..CampaignRun::new(official(true, true), false)
    };
    let mut r = Report::new(&run);
    let sent = |channel, coupon: Option<&str>| Progress::Sent {
        channel,
        at: 1,
        msgid: None,
        coupon: coupon.map(str::to_string),
        delivery: Some("success".into()),
    };
    r.add(&sent(Channel::Custom, Some("A")), true);
    r.add(&sent(Channel::Template, Some("B")), false);
    r.add(&Progress::Queued, false);
    r.add(
        &Progress::Skipped {
            reason: Skip::OutsideWindow,
            at: 1,
        },
        false,
    );
    r.add(
        &Progress::Failed {
            channel: Some(Channel::Template),
            reason: "unsubscribed (43004)".into(),
            at: 1,
        },
        false,
    );
    r.add(
        &Progress::Failed {
            channel: Some(Channel::Custom),
            reason: IN_DOUBT.into(),
            at: 1,
        },
        false,
    );
    assert_eq!((r.sent, r.queued, r.skipped, r.failed), (2, 1, 1, 2));
    assert_eq!(r.sent_by_channel["template message"], 1);
    assert_eq!((r.coupons_issued, r.coupons_redeemed), (2, 1));
    assert_eq!(r.deliveries["success"], 2);
    assert_eq!(r.failed_by_reason.len(), 2);
    let shown = r.to_string();
    assert!(shown.contains("targeted  6"), "{shown}");
    assert!(shown.contains("outside the 48-hour window"), "{shown}");
    assert!(shown.contains("2 issued, 1 redeemed"), "{shown}");
}

#[test]
fn progress_and_runs_survive_json() {
    let p = Progress::Skipped {
        reason: Skip::NoCoupon("out of stock".into()),
        at: 3,
    };
    let back: Progress = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let run = CampaignRun::new(official(true, false), true);
    let back: CampaignRun = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
    assert_eq!(back, run);
}

#[test]
fn a_mass_campaign_is_one_text_for_everyone() {
    let good = "[[campaign]]\nname = \"m\"\naccount = \"demo\"\naudience = \"subscribed\"\n[campaign.mass]\ntext = \"双十二全场 8 折\"\n";
    let c = parse(good).unwrap();
    assert_eq!(c[0].mass.as_ref().unwrap().text, "双十二全场 8 折");
    let mut f = Follower::new("o");
    f.subscribed = true;
    assert_eq!(
        choose_channel(&c[0], AccountKind::Official, Some(&f), 1),
        Ok(Channel::Mass),
        "no window needed"
    );
    f.subscribed = false;
    assert_eq!(
        choose_channel(&c[0], AccountKind::Official, Some(&f), 1),
        Err(Skip::Unsubscribed)
    );
    let head = "[[campaign]]\nname = \"m\"\naccount = \"demo\"\naudience = \"subscribed\"\n";
    assert!(error(&format!(
        "{head}[campaign.mass]\ntext = \"hi {{attr.name}}\"\n"
    ))
    .starts_with("6:8: a mass send is one text for everyone: no placeholders"));
    assert!(error(&format!(
        "{head}coupon = \"vip-back\"\n[campaign.mass]\ntext = \"hi\"\n"
    ))
    .starts_with("6:1: [campaign.mass] sends one text to everyone"));
    let wecom = "[[campaign]]\nname = \"m\"\naccount = \"corp\"\naudience = \"subscribed\"\n[campaign.robot]\nkey_env = \"K\"\ntext = \"x\"\n[campaign.mass]\ntext = \"hi\"\n";
    assert!(error(wecom).starts_with("8:1: mass sends are for official accounts"));
}

#[test]
fn the_example_file_parses() {
    let kinds = |id: &str| match id {
        "demo" | "shop" => Some(AccountKind::Official),
        "corp" => Some(AccountKind::Wecom),
        _ => None,
    };
    let mut coupons = batches();
    coupons[0].name = "new-guest".into();
    let parsed = parse_campaigns(
        "examples/campaigns.toml",
        include_str!("../../examples/campaigns.toml"),
        &Known {
            accounts: &kinds,
            coupons: &coupons,
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let names: Vec<&str> = parsed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["vip-comeback", "seckill-reminder", "double-12", "stocktake"]
    );
}
