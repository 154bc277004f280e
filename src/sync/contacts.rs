//! WeCom: external contacts as `batch/get_by_user` lists them, one entry per (contact,
//! staff member), merged into the contact as siyu has them. A contact several staff
//! members added arrives in several entries, on any page: each entry updates its own
//! staff link, and the contact is counted once a run (an entry that changes a contact
//! first counted unchanged moves it to updated).

use std::collections::{BTreeSet, HashMap};

use super::{merge_tags, SyncRun};
use crate::api::ContactEntry;
use crate::follower::{Follower, StaffLink, SyncMark, SyncOutcome};

/// Corp tag ids (`et…`) → names (`get_corp_tag_list`), read once per run.
pub type CorpTagNames = HashMap<String, String>;

/// The contact with this entry merged in, counted in `run`.
pub fn merge_contact(
    existing: Option<Follower>,
    entry: &ContactEntry,
    tag_names: &CorpTagNames,
    run: &mut SyncRun,
    asked_at: i64,
) -> Follower {
    let (contact, info) = (&entry.external_contact, &entry.follow_info);
    let is_new = existing.is_none();
    let before = existing.unwrap_or_else(|| Follower::new(contact.external_userid.clone()));
    let first_in_run = before.synced.as_ref().is_none_or(|m| m.run != run.id);
    let mut f = before.clone();
    let link = StaffLink {
        userid: info.userid.clone(),
        remark: info.remark.clone(),
        added_at: info.createtime,
        add_way: info.add_way,
        state: info.state.clone(),
        tags: info
            .tag_id
            .iter()
            .filter_map(|id| tag_names.get(id).cloned())
            .collect(),
        seen_run: run.id,
    };
    match f.staff.iter_mut().find(|l| l.userid == link.userid) {
        Some(l) => *l = link,
        None => f.staff.push(link),
    }
    if let Some(u) = contact.unionid.clone().filter(|u| !u.is_empty()) {
        f.unionid = Some(u);
    }
    if !contact.name.is_empty() {
        f.name = Some(contact.name.clone());
    }
    // WeCom's list is the truth, unless siyu saw the contact leave after it was asked.
    if f.unsubscribed_at.is_none_or(|t| t < asked_at) {
        f.subscribed = true;
    }
    if info.createtime > 0 {
        let t = info.createtime;
        f.first_subscribed_at = Some(f.first_subscribed_at.map_or(t, |s| s.min(t)));
        f.last_subscribed_at = Some(f.last_subscribed_at.map_or(t, |s| s.max(t)));
    }
    if f.first_scene.is_none() && !info.state.is_empty() {
        f.first_scene = Some(info.state.clone());
    }
    retag(&before, &mut f);
    let changed = comparable(&before) != comparable(&f);
    let outcome = if first_in_run {
        let outcome = match (is_new, changed) {
            (true, _) => SyncOutcome::New,
            (false, true) => SyncOutcome::Updated,
            (false, false) => SyncOutcome::Unchanged,
        };
        run.counts.add(outcome);
        outcome
    } else {
        recount(before.synced.as_ref(), changed, run)
    };
    mark(&mut f, run.id, asked_at, outcome);
    f
}

/// After the walk: staff links this run did not see (added before it started) are gone;
/// a contact left with none is no longer anyone's contact. `None`: nothing to change.
pub fn sweep_contact(follower: &Follower, run: &mut SyncRun, now: i64) -> Option<Follower> {
    let keep: Vec<StaffLink> = follower
        .staff
        .iter()
        .filter(|l| l.seen_run == run.id || l.added_at >= run.started_at)
        .cloned()
        .collect();
    let joined_during_run = follower
        .last_subscribed_at
        .is_some_and(|t| t >= run.started_at);
    let leaves = follower.subscribed && keep.is_empty() && !joined_during_run;
    if keep.len() == follower.staff.len() && !leaves {
        return None;
    }
    let mut f = follower.clone();
    f.staff = keep;
    retag(follower, &mut f);
    let outcome = if leaves {
        f.subscribed = false;
        f.unsubscribed_at = Some(now);
        run.counts.add(SyncOutcome::Unsubscribed);
        SyncOutcome::Unsubscribed
    } else {
        match follower.synced.as_ref().filter(|m| m.run == run.id) {
            Some(m) => recount(Some(m), true, run),
            None => {
                run.counts.add(SyncOutcome::Updated);
                SyncOutcome::Updated
            }
        }
    };
    mark(&mut f, run.id, now, outcome);
    Some(f)
}

/// The contact's tags after its staff links changed: the corp tags on its links are
/// WeCom's side of the three-way merge.
fn retag(before: &Follower, f: &mut Follower) {
    let theirs: BTreeSet<String> = f
        .staff
        .iter()
        .flat_map(|l| l.tags.iter().cloned())
        .collect();
    let base = before
        .synced
        .as_ref()
        .map(|m| m.tags.clone())
        .unwrap_or_default();
    f.tags = merge_tags(&base, &before.tags, &theirs);
}

fn mark(f: &mut Follower, run: i64, at: i64, outcome: SyncOutcome) {
    let tags = f
        .staff
        .iter()
        .flat_map(|l| l.tags.iter().cloned())
        .collect();
    f.synced = Some(SyncMark {
        run,
        at,
        tags,
        outcome,
    });
}

/// A contact counted earlier in this run changed again: unchanged becomes updated.
fn recount(mark: Option<&SyncMark>, changed: bool, run: &mut SyncRun) -> SyncOutcome {
    let previous = mark.map_or(SyncOutcome::Unchanged, |m| m.outcome);
    if changed && previous == SyncOutcome::Unchanged {
        run.counts.unchanged = run.counts.unchanged.saturating_sub(1);
        run.counts.updated += 1;
        return SyncOutcome::Updated;
    }
    previous
}

/// The contact without what every sync rewrites (its mark, which run saw each link).
fn comparable(f: &Follower) -> Follower {
    let mut f = f.clone();
    f.synced = None;
    f.staff.iter_mut().for_each(|l| l.seen_run = 0);
    f.staff.sort_by(|a, b| a.userid.cmp(&b.userid));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExternalContact, FollowInfo};

    fn entry(staff: &str, tags: &[&str], state: &str) -> ContactEntry {
        ContactEntry {
            external_contact: ExternalContact {
                external_userid: "wm1".into(),
                name: "张三".into(),
                kind: 1,
                unionid: Some("ou1".into()),
            },
            follow_info: FollowInfo {
                userid: staff.into(),
                remark: format!("{staff}的客户"),
                createtime: 1_600_000_000,
                tag_id: tags.iter().map(|t| t.to_string()).collect(),
                add_way: 1,
                state: state.into(),
            },
        }
    }

    fn names() -> CorpTagNames {
        [("etA", "老客"), ("etB", "高意向")]
            .into_iter()
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .collect()
    }

    /// One entry of a page merged in.
    fn seen(f: Option<Follower>, e: ContactEntry, run: &mut SyncRun, at: i64) -> Follower {
        merge_contact(f, &e, &names(), run, at)
    }

    fn set(tags: &[&str]) -> BTreeSet<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_contact_of_two_staff_members_is_one_contact_counted_once() {
        let mut run = SyncRun::new("corp", 5_000, "t");
        let f = seen(None, entry("zhangsan", &["etA"], "poster"), &mut run, 10);
        let f = seen(Some(f), entry("lisi", &["etB"], ""), &mut run, 11);
        assert_eq!((run.counts.new, run.counts.updated), (1, 0));
        assert_eq!(f.staff.len(), 2);
        assert_eq!(f.tags, set(&["老客", "高意向"]));
        assert_eq!(f.first_scene.as_deref(), Some("poster"));
        assert_eq!(
            (f.unionid.as_deref(), f.name.as_deref()),
            (Some("ou1"), Some("张三"))
        );
        assert!(f.subscribed);

        // The next run sees the same: unchanged, once.
        let mut next = SyncRun::new("corp", 9_000, "t");
        let g = seen(Some(f.clone()), entry("lisi", &["etB"], ""), &mut next, 20);
        let g = seen(
            Some(g),
            entry("zhangsan", &["etA"], "poster"),
            &mut next,
            21,
        );
        assert_eq!((next.counts.unchanged, next.counts.updated), (1, 0));
        assert_eq!(comparable(&g), comparable(&f));

        // A third run where lisi's side changed on the second entry: moved to updated.
        let mut third = SyncRun::new("corp", 12_000, "t");
        let h = seen(
            Some(g),
            entry("zhangsan", &["etA"], "poster"),
            &mut third,
            30,
        );
        assert_eq!(third.counts.unchanged, 1);
        let h = seen(Some(h), entry("lisi", &[], ""), &mut third, 31);
        assert_eq!((third.counts.unchanged, third.counts.updated), (0, 1));
        assert_eq!(h.tags, set(&["老客"]), "lisi took 高意向 off");
    }

    #[test]
    fn the_sweep_drops_unseen_links_and_contacts_left_with_none() {
        let mut run = SyncRun::new("corp", 1_700_000_000_000, "t");
        let f = seen(None, entry("zhangsan", &["etA"], ""), &mut run, 10);
        let f = seen(Some(f), entry("lisi", &["etB"], ""), &mut run, 11);
        // The next run sees only zhangsan's side.
        let mut next = SyncRun::new("corp", 1_700_000_100_000, "t");
        let g = seen(Some(f), entry("zhangsan", &["etA"], ""), &mut next, 20);
        let swept = sweep_contact(&g, &mut next, 1_700_000_150).expect("lisi's link is gone");
        assert_eq!(swept.staff.len(), 1);
        assert_eq!(swept.tags, set(&["老客"]));
        assert!(swept.subscribed);
        assert_eq!((next.counts.unchanged, next.counts.updated), (0, 1));
        assert_eq!(
            sweep_contact(&swept, &mut next, 1_700_000_150),
            None,
            "nothing more to do"
        );

        // A run that sees neither side: no longer anyone's contact.
        let mut third = SyncRun::new("corp", 1_700_000_200_000, "t");
        let gone = sweep_contact(&swept, &mut third, 1_700_000_250).unwrap();
        assert!(!gone.subscribed && gone.staff.is_empty() && gone.tags.is_empty());
        assert_eq!(third.counts.unsubscribed, 1);

        // A link a callback added while the run went on stays.
        let mut fresh = swept.clone();
        fresh.staff[0].seen_run = 0;
        fresh.staff[0].added_at = third.started_at + 5;
        assert_eq!(sweep_contact(&fresh, &mut third, 1_700_000_250), None);
    }
}
