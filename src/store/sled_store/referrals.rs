//! Referral programmes on sled: one tree, `referrals`, with four kinds of key, so that a
//! write is one transaction with the outbox tree:
//!
//! - `p\0programme\0id` → JSON `Participant`;
//! - `i\0programme\0invitee` → JSON `InviteRecord` (the create-if-absent key);
//! - `n\0programme\0inviter\0invitee` → empty: an inviter's records without a scan;
//! - `w\0programme\0inviter\0tier` (big-endian u32) → JSON `RewardRecord`.
//!
//! Writes are serialised by one in-process lock (sled is one process): the read of the
//! records a decision needs and the write of its outcome cannot interleave with another.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{backend, from_json, id_key, json, tx_backend, SledStore};
use crate::referral::{InviteRecord, ParticipantId};
use crate::store::{
    InviteChange, InviteView, Participant, ParticipantChange, RewardRecord, StoreError,
};

/// `kind\0programme\0`: every key of one kind in a programme.
pub(super) fn prefix(kind: u8, programme: &str) -> Vec<u8> {
    let mut k = vec![kind, 0];
    k.extend_from_slice(programme.as_bytes());
    k.push(0);
    k
}

fn key(kind: u8, programme: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix(kind, programme);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

impl SledStore {
    fn referral_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // Nothing is half-written while it is held (the write is one transaction).
        self.referral_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn sled_scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        self.referrals
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                from_json("referrals", &k, &v)
            })
            .collect()
    }

    pub(super) fn sled_referral_participant(
        &self,
        programme: &str,
        id: &ParticipantId,
    ) -> Result<Option<Participant>, StoreError> {
        let k = key(b'p', programme, &[id.as_str().as_bytes()]);
        match self.referrals.get(&k).map_err(backend)? {
            Some(v) => Ok(Some(from_json("referrals", &k, &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn sled_update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &ParticipantId,
        change: &mut dyn FnMut(Option<Participant>) -> ParticipantChange,
    ) -> Result<Option<Participant>, StoreError> {
        let _guard = self.referral_guard();
        let before = self.sled_referral_participant(programme, id)?;
        let (after, items) = change(before.clone());
        let Some(after) = after else {
            if !items.is_empty() {
                self.enqueue_now(account, items)?;
            }
            return Ok(before);
        };
        let k = key(b'p', programme, &[id.as_str().as_bytes()]);
        let value = json(&after);
        let items = self.new_items(account, items, crate::outbox::now_ms())?;
        (&self.referrals, &self.outbox)
            .transaction(|(referrals, outbox)| {
                referrals.insert(k.as_slice(), value.as_slice())?;
                for (id, item) in &items {
                    outbox.insert(&id_key(*id), item.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)?;
        Ok(Some(after))
    }

    pub(super) fn sled_referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&InviteView) -> InviteChange,
    ) -> Result<InviteChange, StoreError> {
        let _guard = self.referral_guard();
        let mut view = InviteView::default();
        let mut seen = std::collections::BTreeSet::new();
        for person in people {
            let mine = self
                .referrals
                .get(key(b'i', programme, &[person.as_bytes()]));
            if let Some(v) = mine.map_err(backend)? {
                let r: InviteRecord = from_json("referrals", person.as_bytes(), &v)?;
                if seen.insert(r.invitee.clone()) {
                    view.records.push(r);
                }
            }
            let by_inviter = key(b'n', programme, &[person.as_bytes(), b""]);
            for item in self.referrals.scan_prefix(&by_inviter) {
                let (k, _) = item.map_err(backend)?;
                let invitee = &k[by_inviter.len()..];
                let Some(v) = self
                    .referrals
                    .get(key(b'i', programme, &[invitee]))
                    .map_err(backend)?
                else {
                    continue;
                };
                let r: InviteRecord = from_json("referrals", &k, &v)?;
                if seen.insert(r.invitee.clone()) {
                    view.records.push(r);
                }
            }
            let rewards = key(b'w', programme, &[person.as_bytes(), b""]);
            view.rewards
                .extend(self.sled_scan::<RewardRecord>(&rewards)?);
        }
        let mut done = change(&view);
        done.rewards.retain(|w| {
            !view
                .rewards
                .iter()
                .any(|r| r.inviter == w.inviter && r.tier == w.tier)
        });
        if done.is_empty() {
            return Ok(done);
        }
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for r in &done.records {
            puts.push((key(b'i', programme, &[r.invitee.as_bytes()]), json(r)));
            puts.push((
                key(
                    b'n',
                    programme,
                    &[r.inviter.as_bytes(), r.invitee.as_bytes()],
                ),
                Vec::new(),
            ));
        }
        for w in &done.rewards {
            let tier = w.tier.to_be_bytes();
            puts.push((
                key(b'w', programme, &[w.inviter.as_bytes(), &tier]),
                json(w),
            ));
        }
        let items = self.new_items(account, done.items.clone(), crate::outbox::now_ms())?;
        (&self.referrals, &self.outbox)
            .transaction(|(referrals, outbox)| {
                for (k, v) in &puts {
                    referrals.insert(k.as_slice(), v.as_slice())?;
                }
                for (id, item) in &items {
                    outbox.insert(&id_key(*id), item.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)?;
        Ok(done)
    }

    fn enqueue_now(
        &self,
        account: &str,
        items: Vec<crate::outbox::NewItem>,
    ) -> Result<(), StoreError> {
        crate::store::Store::enqueue(self, account, items, crate::outbox::now_ms()).map(|_| ())
    }
}
