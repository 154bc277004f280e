use super::*;

fn names() -> TagNames {
    [(100, "老客"), (101, "vip"), (102, "new")]
        .into_iter()
        .map(|(id, n)| (id, n.to_string()))
        .collect()
}

fn info(openid: &str, tags: &[i64]) -> UserInfo {
    UserInfo {
        subscribe: 1,
        openid: openid.into(),
        unionid: Some("ou1".into()),
        subscribe_time: Some(1_600_000_000),
        remark: "老客户".into(),
        tagid_list: tags.to_vec(),
        subscribe_scene: Some("ADD_SCENE_QR_CODE".into()),
        qr_scene_str: Some("poster-2026".into()),
        language: Some("zh_CN".into()),
        ..UserInfo::default()
    }
}

fn set(tags: &[&str]) -> BTreeSet<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

fn run(id: i64) -> SyncRun {
    SyncRun::new("demo", id * 1000, "test")
}

#[test]
fn a_new_follower_takes_everything_wechat_says() {
    let (f, outcome) = merge(
        None,
        &info("o1", &[100, 999]),
        &names(),
        &run(5),
        1_700_000_000,
    );
    assert_eq!(outcome, SyncOutcome::New);
    assert!(f.subscribed);
    assert_eq!(f.first_subscribed_at, Some(1_600_000_000));
    assert_eq!(f.last_subscribed_at, Some(1_600_000_000));
    assert_eq!(f.unionid.as_deref(), Some("ou1"));
    assert_eq!(f.remark.as_deref(), Some("老客户"));
    assert_eq!(f.subscribe_scene.as_deref(), Some("ADD_SCENE_QR_CODE"));
    assert_eq!(f.first_scene.as_deref(), Some("poster-2026"));
    // 999 is not a tag WeChat listed: ignored, not invented.
    assert_eq!(f.tags, set(&["老客"]));
    let mark = f.synced.as_ref().unwrap();
    assert_eq!((mark.run, mark.outcome), (5000, SyncOutcome::New));
    assert_eq!(mark.tags, set(&["老客"]));
}

#[test]
fn a_second_sync_of_the_same_answer_changes_nothing() {
    let i = info("o1", &[100]);
    let (f, _) = merge(None, &i, &names(), &run(5), 1_700_000_000);
    let (g, outcome) = merge(Some(f.clone()), &i, &names(), &run(6), 1_700_000_100);
    assert_eq!(outcome, SyncOutcome::Unchanged);
    assert_eq!(
        Follower {
            synced: None,
            ..g.clone()
        },
        Follower { synced: None, ..f }
    );
    assert_eq!(g.synced.unwrap().run, 6000);
}

#[test]
fn siyu_keeps_its_own_channel_and_history() {
    let mut known = Follower::new("o1");
    known.first_scene = Some("store-sh-01".into());
    known.messages_in = 7;
    known.counters.insert("orders".into(), 2);
    known.subscribed = true;
    known.last_subscribed_at = Some(1_650_000_000);
    let (f, outcome) = merge(
        Some(known),
        &info("o1", &[]),
        &names(),
        &run(5),
        1_700_000_000,
    );
    assert_eq!(outcome, SyncOutcome::Updated);
    assert_eq!(f.first_scene.as_deref(), Some("store-sh-01"));
    assert_eq!((f.messages_in, f.counters["orders"]), (7, 2));
    // WeChat's subscribe_time is older than what siyu saw: the later one stays the last.
    assert_eq!(f.last_subscribed_at, Some(1_650_000_000));
    assert_eq!(f.first_subscribed_at, Some(1_600_000_000));
}

#[test]
fn tags_merge_three_ways() {
    // Last sync: WeChat had 老客 and vip.
    let base = set(&["老客", "vip"]);
    // Since: siyu removed vip and added coupon-hunter; WeChat removed 老客 and added new.
    let ours = set(&["老客", "coupon-hunter"]);
    let theirs = set(&["vip", "new"]);
    // vip: changed in siyu (removed) → stays removed. coupon-hunter: siyu's → kept.
    // 老客: unchanged in siyu → as WeChat (removed). new: WeChat's → imported.
    assert_eq!(
        merge_tags(&base, &ours, &theirs),
        set(&["coupon-hunter", "new"])
    );
    // Never synced: siyu's tags stay, WeChat's are added.
    assert_eq!(
        merge_tags(&set(&[]), &set(&["a"]), &set(&["b"])),
        set(&["a", "b"])
    );

    let mut known = Follower::new("o1");
    known.tags = ours.clone();
    known.synced = Some(SyncMark {
        run: 1,
        at: 1,
        tags: base,
        outcome: SyncOutcome::New,
    });
    let (f, outcome) = merge(Some(known), &info("o1", &[101, 102]), &names(), &run(5), 10);
    assert_eq!(outcome, SyncOutcome::Updated);
    assert_eq!(f.tags, set(&["coupon-hunter", "new"]));
    assert_eq!(f.synced.unwrap().tags, theirs, "the next merge's base");
}

#[test]
fn subscription_is_wechats_unless_siyu_saw_a_newer_act() {
    let mut gone = Follower::new("o1");
    gone.subscribed = false;
    gone.unsubscribed_at = Some(1_690_000_000);
    let (f, _) = merge(
        Some(gone.clone()),
        &info("o1", &[]),
        &names(),
        &run(5),
        1_700_000_000,
    );
    assert!(
        f.subscribed,
        "WeChat's list is newer than the unsubscribe siyu saw"
    );

    // The unsubscribe callback came after WeChat was asked: it stands.
    gone.unsubscribed_at = Some(1_700_000_005);
    let (f, _) = merge(
        Some(gone),
        &info("o1", &[]),
        &names(),
        &run(5),
        1_700_000_000,
    );
    assert!(!f.subscribed);

    // WeChat says unsubscribed: marked so, keeping what was known of them.
    let (known, _) = merge(None, &info("o1", &[100]), &names(), &run(4), 1_600_000_100);
    let gone = UserInfo {
        subscribe: 0,
        openid: "o1".into(),
        ..UserInfo::default()
    };
    let (f, outcome) = merge(Some(known), &gone, &names(), &run(5), 1_700_000_000);
    assert_eq!(outcome, SyncOutcome::Updated);
    assert!(!f.subscribed);
    assert_eq!(f.unsubscribed_at, Some(1_700_000_000));
    assert_eq!(f.tags, set(&["老客"]));
    assert_eq!(f.remark.as_deref(), Some("老客户"));
}

#[test]
fn the_sweep_marks_only_followers_the_run_did_not_see() {
    let r = run(1_700_000_000);
    let mut stale = Follower::new("o1");
    stale.subscribed = true;
    stale.last_subscribed_at = Some(1_600_000_000);
    let swept = sweep(&stale, &r, 1_700_000_500).expect("not on the list: unsubscribed");
    assert!(!swept.subscribed);
    assert_eq!(swept.unsubscribed_at, Some(1_700_000_500));
    assert_eq!(swept.synced.unwrap().outcome, SyncOutcome::Unsubscribed);

    let (seen, _) = merge(None, &info("o2", &[]), &names(), &r, 1_700_000_100);
    assert_eq!(sweep(&seen, &r, 1_700_000_500), None, "on the list");

    let mut joined = stale.clone();
    joined.last_subscribed_at = Some(r.started_at + 10);
    assert_eq!(
        sweep(&joined, &r, 1_700_000_500),
        None,
        "subscribed during the run"
    );

    let mut gone = stale;
    gone.subscribed = false;
    assert_eq!(
        sweep(&gone, &r, 1_700_000_500),
        None,
        "already unsubscribed"
    );
}

#[test]
fn failures_are_counted_past_the_reasons_kept() {
    let mut r = run(1);
    for i in 0..FAILURES_KEPT + 5 {
        r.fail(&format!("o{i}"), 100, "40003 invalid openid".into());
    }
    assert_eq!(r.counts.failed, 100 * (FAILURES_KEPT as u64 + 5));
    assert_eq!(r.failures.len(), FAILURES_KEPT);
    assert!(r.summary().contains("失败"));
}
