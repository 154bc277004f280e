//! A person across the brand's accounts: the identities that share a unionid (the people
//! index, written by `siyu followers sync`), loaded for the `person.*` segment conditions.

use crate::follower::Follower;
use crate::segment::{Person, Segment};
use crate::store::{Store, StoreError};

/// The person's other identities: every (account, follower) with `f`'s unionid except
/// `f` itself. Empty for a follower without a unionid (siyu cannot tell who they are).
pub fn others(
    store: &dyn Store,
    account: &str,
    f: &Follower,
) -> Result<Vec<(String, Follower)>, StoreError> {
    let Some(unionid) = f.unionid.as_deref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (acct, id) in store.people(unionid)? {
        if acct == account && id == f.openid {
            continue;
        }
        if let Some(other) = store.follower(&acct, &id)? {
            out.push((acct, other));
        }
    }
    Ok(out)
}

/// Whether `f` (of `account`) is in `segment` at `now`, reading the person's other
/// identities only when the segment asks about the person.
pub fn in_segment(
    store: &dyn Store,
    account: &str,
    segment: &Segment,
    f: &Follower,
    now: i64,
) -> Result<bool, StoreError> {
    if !segment.about_person() {
        return Ok(segment.matches(f, now));
    }
    let others = others(store, account, f)?;
    Ok(segment.matches_person(
        f,
        &Person {
            account,
            others: &others,
        },
        now,
    ))
}

/// Refuses a segment whose `person.follows` names an account the config does not have
/// (it would silently match nobody).
pub fn check_accounts(segment: &Segment, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match segment.accounts_named().into_iter().find(|a| !known(a)) {
        Some(a) => Err(format!(
            "person.follows = {a}: no account `{a}` in the config (配置中没有该公众号/企业微信账号)"
        )),
        None => Ok(()),
    }
}
