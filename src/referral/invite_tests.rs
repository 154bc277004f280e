//! The invite state machine: retries, self and mutual invites, the hold, bursts, the daily
//! cap, tiers, progress and the report.

use super::config::*;
use super::invite::*;
use super::programme::*;
use super::report::report;
use super::text::{Text, INVITATION_FIELDS, PROGRESS_FIELDS, REWARD_FIELDS};
use crate::local_time::UtcOffset;
use crate::rules::CouponView;

/// 2026-12-01 00:00 China time.
const DEC_1: i64 = 1_796_054_400;
const HOUR: i64 = 3600;
const HOLD: i64 = 24 * HOUR;

fn programme() -> Programme {
    Programme {
        name: "spring".into(),
        account: "demo".into(),
        title: "春季".into(),
        start: DEC_1,
        end: DEC_1 + 31 * 86_400,
        zone: UtcOffset::CHINA,
        tiers: vec![
            Tier {
                invites: 3,
                coupon: "small".into(),
            },
            Tier {
                invites: 10,
                coupon: "big".into(),
            },
        ],
        counts: Counts::New,
        hold_secs: HOLD,
        daily_cap: 5,
        burst: Burst {
            invites: 4,
            minutes: 10,
        },
        keywords: vec!["邀请好友".into()],
        template_id: None,
        qr_expire_secs: 30 * 86_400,
        poster: None,
        texts: Texts {
            invitation: Text::parse(DEFAULT_INVITATION, INVITATION_FIELDS).unwrap(),
            progress: Text::parse(
                "{valid}/{pending}, next {next_tier|-}, missing {missing|0}",
                PROGRESS_FIELDS,
            )
            .unwrap(),
            reward: Text::parse("第 {tier} 档：{coupon.code}", REWARD_FIELDS).unwrap(),
        },
    }
}

/// The record a scan creates, or a panic naming the case.
fn created(d: Decision, case: &str) -> InviteRecord {
    match d {
        Decision::Create {
            record,
            update: None,
        } => record,
        other => panic!("{case}: {other:?}"),
    }
}

fn scan(
    p: &Programme,
    inviter: &str,
    invitee: &str,
    arrival: Arrival,
    existing: &[InviteRecord],
    now: i64,
) -> Decision {
    on_scan_subscribe(p, inviter, invitee, arrival, existing, now)
}

#[test]
fn a_new_follower_through_a_code_is_pending_then_valid() {
    let p = programme();
    let t = DEC_1 + 10 * HOUR;
    let r = created(scan(&p, "A", "B", Arrival::New, &[], t), "first");
    assert_eq!(r.state, InviteState::Pending);
    assert_eq!((r.created_at, r.matures_at), (t, t + HOLD));
    assert_eq!(
        (r.programme.as_str(), r.inviter.as_str(), r.invitee.as_str()),
        ("spring", "A", "B")
    );
    assert_eq!(
        mature(&p, &r, true, &[], t + HOLD - 1),
        None,
        "within the hold"
    );
    let v = mature(&p, &r, true, &[], t + HOLD).unwrap();
    assert_eq!(v.state, InviteState::Valid);
    assert_eq!(v.updated_at, t + HOLD);
    assert_eq!(
        mature(&p, &v, true, &[], t + 2 * HOLD),
        None,
        "valid stays valid"
    );
    assert_eq!(
        on_unsubscribe(&v, t + 3 * HOLD),
        None,
        "an unfollow after the hold changes nothing"
    );
}

#[test]
fn retries_and_rescans_create_one_record() {
    let p = programme();
    let t = DEC_1 + HOUR;
    let first = created(scan(&p, "A", "B", Arrival::New, &[], t), "first");
    let existing = [first.clone()];
    for (case, inviter, arrival, at) in [
        ("WeChat retries the callback", "A", Arrival::New, t),
        (
            "the invitee rescans the same code",
            "A",
            Arrival::AlreadyFollowing,
            t + 60,
        ),
        (
            "the invitee unfollows and comes back through it",
            "A",
            Arrival::Returning,
            t + HOUR,
        ),
        (
            "through another inviter's code",
            "C",
            Arrival::Returning,
            t + HOUR,
        ),
        ("after the programme", "C", Arrival::Returning, p.end + 1),
    ] {
        assert_eq!(
            scan(&p, inviter, "B", arrival, &existing, at),
            Decision::Ignore(Ignored::AlreadyRecorded),
            "{case}"
        );
    }
    // A record of another programme does not count as this one's.
    let other = InviteRecord {
        programme: "autumn".into(),
        ..first
    };
    assert!(matches!(
        scan(&p, "A", "B", Arrival::New, &[other], t),
        Decision::Create { .. }
    ));
}

#[test]
fn arrivals_that_are_not_invites() {
    let p = programme();
    let t = DEC_1 + HOUR;
    for (case, inviter, arrival, at, want) in [
        (
            "a follower scans",
            "A",
            Arrival::AlreadyFollowing,
            t,
            Decision::Ignore(Ignored::AlreadyFollowing),
        ),
        (
            "before the start",
            "A",
            Arrival::New,
            DEC_1 - 1,
            Decision::Ignore(Ignored::NotRunning),
        ),
        (
            "at the end",
            "A",
            Arrival::New,
            p.end,
            Decision::Ignore(Ignored::NotRunning),
        ),
    ] {
        assert_eq!(scan(&p, inviter, "B", arrival, &[], at), want, "{case}");
    }
    for (case, inviter, arrival, counts, want) in [
        (
            "self-invite",
            "B",
            Arrival::Returning,
            Counts::NewAndReturning,
            Refusal::SelfInvite,
        ),
        (
            "self-invite as new",
            "B",
            Arrival::New,
            Counts::New,
            Refusal::SelfInvite,
        ),
        (
            "returning when only new count",
            "A",
            Arrival::Returning,
            Counts::New,
            Refusal::NotNew,
        ),
    ] {
        let p = Programme {
            counts,
            ..programme()
        };
        let r = created(scan(&p, inviter, "B", arrival, &[], t), case);
        assert_eq!(r.state, InviteState::Refused(want), "{case}");
        assert!(!r.is_valid() && !r.is_open(), "{case}: never counts");
        assert_eq!(
            mature(&p, &r, true, &[], t + 2 * HOLD),
            None,
            "{case}: never matures"
        );
    }
    let p = Programme {
        counts: Counts::NewAndReturning,
        ..programme()
    };
    let r = created(
        scan(&p, "A", "B", Arrival::Returning, &[], t),
        "returning counts",
    );
    assert_eq!(r.state, InviteState::Pending);
}

#[test]
fn mutual_invites_never_count() {
    let p = Programme {
        counts: Counts::NewAndReturning,
        ..programme()
    };
    let t = DEC_1 + HOUR;
    let a_invites_b = created(scan(&p, "A", "B", Arrival::New, &[], t), "A→B");
    for (case, earlier_state, earlier_changes) in [
        ("pending", InviteState::Pending, true),
        ("held", InviteState::Held, true),
        ("already valid", InviteState::Valid, true),
        ("revoked", InviteState::Revoked, false),
        ("capped", InviteState::Capped, false),
    ] {
        let earlier = InviteRecord {
            state: earlier_state,
            ..a_invites_b.clone()
        };
        // A unfollowed, and comes back through B's code.
        let d = scan(
            &p,
            "B",
            "A",
            Arrival::Returning,
            std::slice::from_ref(&earlier),
            t + 2 * HOUR,
        );
        let Decision::Create { record, update } = d else {
            panic!("{case}: {d:?}")
        };
        assert_eq!(
            record.state,
            InviteState::Refused(Refusal::Mutual),
            "{case}"
        );
        assert_eq!(
            (record.inviter.as_str(), record.invitee.as_str()),
            ("B", "A")
        );
        if earlier_changes {
            let update = update.unwrap_or_else(|| panic!("{case}: the earlier half"));
            assert_eq!(
                update.state,
                InviteState::Refused(Refusal::Mutual),
                "{case}"
            );
            assert_eq!(update.updated_at, t + 2 * HOUR);
            assert_eq!(
                (update.inviter.as_str(), update.invitee.as_str()),
                ("A", "B")
            );
        } else {
            assert_eq!(
                update, None,
                "{case}: a record that does not count is left alone"
            );
        }
    }
    // Not mutual: C invites A after A invited B.
    let d = scan(
        &p,
        "C",
        "A",
        Arrival::Returning,
        &[a_invites_b],
        t + 2 * HOUR,
    );
    assert_eq!(created(d, "C→A").state, InviteState::Pending);
}

#[test]
fn an_unfollow_inside_the_hold_revokes() {
    let p = programme();
    let t = DEC_1 + HOUR;
    let r = created(scan(&p, "A", "B", Arrival::New, &[], t), "A→B");
    // (case, unfollowed at, revoked by on_unsubscribe)
    for (case, at, revoked) in [
        ("a minute after", t + 60, true),
        ("the last second of the hold", t + HOLD - 1, true),
        ("the hold is over", t + HOLD, false),
    ] {
        let after = on_unsubscribe(&r, at);
        assert_eq!(
            after.as_ref().map(|r| r.state),
            revoked.then_some(InviteState::Revoked),
            "{case}"
        );
    }
    let held = InviteRecord {
        state: InviteState::Held,
        ..r.clone()
    };
    assert_eq!(
        on_unsubscribe(&held, t + 60).unwrap().state,
        InviteState::Revoked,
        "held too"
    );
    // The backstop: mature sees the invitee gone (an unsubscribe event missed).
    assert_eq!(
        mature(&p, &r, false, &[], t + HOLD).unwrap().state,
        InviteState::Revoked
    );
    assert_eq!(
        mature(&p, &r, false, &[], t + 60).unwrap().state,
        InviteState::Revoked,
        "at once"
    );
    // followed_through from a follower's record:
    for (case, subscribed, last_unsub, want) in [
        ("following, never left", true, None, true),
        (
            "left before the invite (returning)",
            true,
            Some(t - 86_400),
            true,
        ),
        ("left inside the hold, came back", true, Some(t + 60), false),
        ("left inside the hold", false, Some(t + 60), false),
        ("left after the hold", false, Some(t + HOLD), true),
        ("not following, no unfollow known", false, None, false),
    ] {
        assert_eq!(followed_through(&r, subscribed, last_unsub), want, "{case}");
    }
}

#[test]
fn a_burst_holds_the_inviters_new_invites_for_review() {
    let p = programme(); // more than 4 within 10 minutes
    let t = DEC_1 + HOUR;
    let mut records: Vec<InviteRecord> = Vec::new();
    for i in 0..4 {
        let r = created(
            scan(
                &p,
                "A",
                &format!("i{i}"),
                Arrival::New,
                &records,
                t + i * 60,
            ),
            "within",
        );
        assert_eq!(r.state, InviteState::Pending, "invite {i} of 4");
        records.push(r);
    }
    let fifth = created(
        scan(&p, "A", "i4", Arrival::New, &records, t + 4 * 60),
        "fifth",
    );
    assert_eq!(
        fifth.state,
        InviteState::Held,
        "the fifth within 10 minutes"
    );
    records.push(fifth.clone());
    // Much later, outside any window: still held while one awaits review.
    let later = created(
        scan(&p, "A", "i5", Arrival::New, &records, t + 5 * HOUR),
        "later",
    );
    assert_eq!(later.state, InviteState::Held, "under review");
    // Another inviter is not concerned.
    assert_eq!(
        created(scan(&p, "C", "j0", Arrival::New, &records, t + 4 * 60), "C").state,
        InviteState::Pending
    );
    assert_eq!(
        mature(&p, &fifth, true, &records, t + 2 * HOLD),
        None,
        "held does not mature"
    );

    // The operator reviews: release one, reject the other; then A is free again.
    let released = release(&fifth, t + 6 * HOUR).unwrap();
    assert_eq!(released.state, InviteState::Pending);
    assert_eq!(
        mature(&p, &released, true, &[], t + 2 * HOLD)
            .unwrap()
            .state,
        InviteState::Valid
    );
    let rejected = reject(&later, t + 6 * HOUR).unwrap();
    assert_eq!(rejected.state, InviteState::Rejected);
    assert_eq!(
        release(&rejected, t).unwrap_err().state,
        InviteState::Rejected,
        "only held ones"
    );
    assert!(reject(&released, t).is_err());
    records.retain(|r| r.state != InviteState::Held);
    records.extend([released, rejected]);
    let after = created(
        scan(&p, "A", "i6", Arrival::New, &records, t + 7 * HOUR),
        "after review",
    );
    assert_eq!(after.state, InviteState::Pending);

    // Exactly at the window's edge: an invite M minutes old is outside it.
    let mut edge = Vec::new();
    for i in 0..4 {
        edge.push(created(
            scan(&p, "E", &format!("e{i}"), Arrival::New, &edge, t + i),
            "edge",
        ));
    }
    let at_edge = created(
        scan(&p, "E", "e4", Arrival::New, &edge, t + 10 * 60),
        "edge",
    );
    assert_eq!(
        at_edge.state,
        InviteState::Pending,
        "the first is 10 minutes old: out"
    );
    // Refused and revoked invites do not make a burst.
    let noise: Vec<InviteRecord> = (0..10)
        .map(|i| InviteRecord {
            state: InviteState::Revoked,
            ..created(scan(&p, "N", &format!("n{i}"), Arrival::New, &[], t), "n")
        })
        .collect();
    assert_eq!(
        created(scan(&p, "N", "n10", Arrival::New, &noise, t + 1), "noise").state,
        InviteState::Pending
    );
}

#[test]
fn the_daily_cap_counts_valid_invites_by_their_local_creation_day() {
    let p = programme(); // cap 5 a day
                         // Day one at 23:00 China time (15:00 UTC): six invites, spread so no burst.
    let day_one = DEC_1 + 23 * HOUR;
    let mut records: Vec<InviteRecord> = Vec::new();
    for i in 0..7 {
        let at = day_one + i * 5 * 60; // the last two fall after midnight, on day two
        records.push(created(
            scan(&p, "A", &format!("i{i}"), Arrival::New, &[], at),
            "day",
        ));
    }
    // Mature them in order, all at once, long after (a late run).
    let run = DEC_1 + 5 * 86_400;
    let mut states = Vec::new();
    for i in 0..records.len() {
        let matured = mature(&p, &records[i], true, &records, run).unwrap();
        states.push(matured.state);
        records[i] = matured;
    }
    use InviteState::{Capped, Valid};
    // i0..i4 at 23:00–23:20 of day one, i5 at 23:25, i6 at 23:30…: let us see which day.
    let day = |ts: i64| UtcOffset::CHINA.date(ts);
    assert_eq!(day(day_one + 5 * 5 * 60), "2026-12-01");
    assert_eq!(day(day_one + 12 * 5 * 60), "2026-12-02");
    assert_eq!(
        states,
        [Valid, Valid, Valid, Valid, Valid, Capped, Capped],
        "five a day on day one"
    );

    // After midnight local time it is a new day: the cap starts again.
    let mut next: Vec<InviteRecord> = records.clone();
    let after_midnight = DEC_1 + 86_400 + 60;
    let r = created(
        scan(&p, "A", "n0", Arrival::New, &[], after_midnight),
        "next day",
    );
    assert_eq!(mature(&p, &r, true, &next, run).unwrap().state, Valid);
    next.push(r);
    // A revoked invite takes no place under the cap.
    let mut day3: Vec<InviteRecord> = (0..5)
        .map(|i| InviteRecord {
            state: if i == 0 { InviteState::Revoked } else { Valid },
            ..created(
                scan(
                    &p,
                    "A",
                    &format!("d{i}"),
                    Arrival::New,
                    &[],
                    DEC_1 + 2 * 86_400 + i * 600,
                ),
                "d3",
            )
        })
        .collect();
    let fifth = created(
        scan(&p, "A", "d5", Arrival::New, &[], DEC_1 + 2 * 86_400 + 3600),
        "d3",
    );
    assert_eq!(
        mature(&p, &fifth, true, &day3, run).unwrap().state,
        Valid,
        "4 valid + this one = 5"
    );
    day3.push(InviteRecord {
        state: Valid,
        ..fifth
    });
    let sixth = created(
        scan(&p, "A", "d6", Arrival::New, &[], DEC_1 + 2 * 86_400 + 7200),
        "d3",
    );
    assert_eq!(mature(&p, &sixth, true, &day3, run).unwrap().state, Capped);
    // Other inviters' and other programmes' valid invites do not fill A's cap.
    let others: Vec<InviteRecord> = day3
        .iter()
        .map(|r| InviteRecord {
            inviter: "Z".into(),
            ..r.clone()
        })
        .chain(day3.iter().map(|r| InviteRecord {
            programme: "autumn".into(),
            ..r.clone()
        }))
        .collect();
    assert_eq!(mature(&p, &sixth, true, &others, run).unwrap().state, Valid);
    // Maturing the same record twice (a retried job) does not count it against itself.
    let valid_sixth = InviteRecord {
        state: Valid,
        ..sixth.clone()
    };
    let pending_again = InviteRecord {
        state: InviteState::Pending,
        ..sixth
    };
    let with_itself: Vec<InviteRecord> = day3[1..5].iter().cloned().chain([valid_sixth]).collect();
    assert_eq!(
        mature(&p, &pending_again, true, &with_itself, run)
            .unwrap()
            .state,
        Valid
    );
}

#[test]
fn a_zone_west_of_utc_counts_its_own_days() {
    let p = Programme {
        zone: UtcOffset::from_minutes(-5 * 60).unwrap(),
        daily_cap: 1,
        ..programme()
    };
    // 03:00 and 06:00 UTC on Dec 2 are 22:00 Dec 1 and 01:00 Dec 2 at -05:00.
    let a = created(
        scan(&p, "A", "x", Arrival::New, &[], DEC_1 + 8 * HOUR + 3 * HOUR),
        "a",
    );
    let b = created(
        scan(&p, "A", "y", Arrival::New, &[], DEC_1 + 8 * HOUR + 6 * HOUR),
        "b",
    );
    let a = mature(&p, &a, true, &[], DEC_1 + 5 * 86_400).unwrap();
    assert_eq!(a.state, InviteState::Valid);
    assert_eq!(
        mature(&p, &b, true, &[a], DEC_1 + 5 * 86_400)
            .unwrap()
            .state,
        InviteState::Valid,
        "another local day"
    );
}

#[test]
fn each_tier_is_reached_once_with_a_stable_key() {
    let p = programme(); // 3 → small, 10 → big
    let tiers = |before, after| -> Vec<u32> {
        newly_reached(&p, "oA", before, after)
            .iter()
            .map(|r| r.tier)
            .collect()
    };
    for (case, before, after, want) in [
        ("nothing yet", 0, 2, vec![]),
        ("the first tier", 2, 3, vec![3]),
        ("no change", 3, 3, vec![]),
        ("past the first", 3, 4, vec![]),
        ("both at once", 2, 11, vec![3, 10]),
        ("exactly the second", 9, 10, vec![10]),
        ("beyond all tiers", 10, 50, vec![]),
        ("a count that fell", 3, 2, vec![]),
        ("from zero to all", 0, 10, vec![3, 10]),
    ] {
        assert_eq!(tiers(before, after), want, "{case}: {before} → {after}");
    }
    let r = &newly_reached(&p, "oA", 2, 3)[0];
    assert_eq!(r.coupon, "small");
    assert_eq!(r.request, "referral:spring:oA:3");
    assert_eq!(r.request, reward_key("spring", "oA", 3));
    // Fell and rose again: the same key, so the coupon claim gives the same code.
    assert_eq!(newly_reached(&p, "oA", 2, 3), newly_reached(&p, "oA", 2, 3));
    assert_ne!(reward_key("spring", "oA", 3), reward_key("spring", "oB", 3));
    assert_ne!(
        reward_key("spring", "oA", 3),
        reward_key("spring", "oA", 10)
    );

    // Walking one inviter's invites to valid one by one reaches each tier exactly once.
    let mut rewards = Vec::new();
    let mut valid = 0;
    for _ in 0..12 {
        let before = valid;
        valid += 1;
        rewards.extend(newly_reached(&p, "oA", before, valid));
    }
    let keys: Vec<&str> = rewards.iter().map(|r| r.request.as_str()).collect();
    assert_eq!(keys, ["referral:spring:oA:3", "referral:spring:oA:10"]);
}

#[test]
fn progress_and_reward_texts_render_from_the_records() {
    let p = programme();
    let t = DEC_1 + HOUR;
    let mut records = Vec::new();
    for (invitee, state) in [
        ("b", InviteState::Valid),
        ("c", InviteState::Valid),
        ("d", InviteState::Pending),
        ("e", InviteState::Held),
        ("f", InviteState::Revoked),
        ("g", InviteState::Capped),
        ("h", InviteState::Refused(Refusal::NotNew)),
    ] {
        let r = created(scan(&p, "A", invitee, Arrival::New, &[], t), invitee);
        records.push(InviteRecord { state, ..r });
    }
    records.push(InviteRecord {
        inviter: "Z".into(),
        invitee: "z".into(),
        state: InviteState::Valid,
        ..records[0].clone()
    });
    let tally = tally("spring", "A", &records);
    assert_eq!(
        tally,
        Tally {
            valid: 2,
            pending: 2
        }
    );
    assert_eq!(
        p.texts.progress.render(&progress(&p, tally)),
        "2/2, next 3, missing 1"
    );
    let all = Tally {
        valid: 12,
        pending: 0,
    };
    assert_eq!(
        p.texts.progress.render(&progress(&p, all)),
        "12/0, next -, missing 0"
    );
    let reward = &newly_reached(&p, "A", 2, 3)[0];
    let coupon = CouponView {
        code: "7KQ2M9XHPA".into(),
        ..CouponView::default()
    };
    assert_eq!(
        p.texts
            .reward
            .render(&reward_notice(&p, reward, 3, Some(&coupon))),
        "第 3 档：7KQ2M9XHPA"
    );
}

#[test]
fn the_report_aggregates_records() {
    let p = programme();
    let t = DEC_1 + HOUR;
    let rec = |inviter: &str, invitee: &str, arrival, state| InviteRecord {
        programme: "spring".into(),
        inviter: inviter.into(),
        invitee: invitee.into(),
        arrival,
        state,
        created_at: t,
        matures_at: t + HOLD,
        updated_at: t,
    };
    use Arrival::{New, Returning};
    use InviteState::*;
    let mut records = vec![
        rec("A", "a1", New, Valid),
        rec("A", "a2", New, Valid),
        rec("A", "a3", New, Valid),
        rec("A", "a4", New, Pending),
        rec("B", "b1", New, Valid),
        rec("B", "b2", Returning, Revoked),
        rec("C", "c1", New, Held),
        rec("C", "C", Returning, Refused(Refusal::SelfInvite)),
        rec("D", "d1", New, Capped),
        rec("D", "d2", Returning, Refused(Refusal::Mutual)),
        rec("D", "d3", Returning, Refused(Refusal::NotNew)),
        rec("E", "e1", New, Rejected),
        rec("F", "f1", New, Valid),
    ];
    records.extend((1..=10).map(|i| rec("G", &format!("g{i}"), New, Valid)));
    records.push(InviteRecord {
        programme: "autumn".into(),
        ..rec("A", "x", New, Valid)
    });
    let gone = ["a2", "g1"];
    let r = report(&p, &records, &|openid| !gone.contains(&openid), 3);
    assert_eq!(r.programme, "spring");
    assert_eq!(r.participants, 7, "A to G");
    let by = &r.invites;
    assert_eq!(
        (
            by.pending,
            by.held,
            by.valid,
            by.revoked,
            by.rejected,
            by.capped
        ),
        (1, 1, 15, 1, 1, 1)
    );
    assert_eq!(
        (by.refused_self, by.refused_mutual, by.refused_not_new),
        (1, 1, 1)
    );
    let reach: Vec<(u32, &str, usize)> = r
        .tiers
        .iter()
        .map(|t| (t.invites, t.coupon.as_str(), t.inviters))
        .collect();
    assert_eq!(reach, [(3, "small", 2), (10, "big", 1)]);
    let top: Vec<(&str, u32, u32)> = r
        .top
        .iter()
        .map(|t| (t.inviter.as_str(), t.valid, t.pending))
        .collect();
    assert_eq!(
        top,
        [("G", 10, 0), ("A", 3, 1), ("B", 1, 0)],
        "most first, ties by openid"
    );
    // New arrivals in any state but refused: a1–a4, b1, c1, d1, e1, f1, g1–g10.
    assert_eq!(r.new_followers, 19);
    assert_eq!(r.still_following, 17);
    assert!(serde_json::to_value(&r).is_ok());
}
