//! An in-memory store for unit tests and `siyu simulate` dry runs of the engine: the same
//! contract as sled, one mutex for everything (contention is no concern there).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{key, Applied, CallbackKey, Commit, DedupeEntry, Store, StoreError};
use crate::follower::Follower;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    followers: HashMap<Vec<u8>, Follower>,
    dedupe: BTreeMap<Vec<u8>, DedupeEntry>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written callback (each one is
        // a couple of map inserts after the decision), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds a follower (tests, dry runs).
    pub fn put_follower(&self, account: &str, follower: Follower) {
        let k = key(account, &follower.openid);
        self.lock().followers.insert(k, follower);
    }
}

impl Store for MemoryStore {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        Ok(self.lock().followers.get(&key(account, openid)).cloned())
    }

    fn apply_callback(
        &self,
        k: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let mut inner = self.lock();
        let dk = key(k.account, k.dedupe_key);
        if let Some(e) = inner.dedupe.get(&dk) {
            if e.expires_at > k.now {
                return Ok(Applied::Duplicate(e.answer.clone()));
            }
        }
        let fk = key(k.account, k.openid);
        let commit = decide(inner.followers.get(&fk).cloned());
        if let Some(f) = commit.follower {
            inner.followers.insert(fk, f);
        }
        inner.dedupe.insert(
            dk,
            DedupeEntry {
                expires_at: k.expires_at,
                answer: commit.answer.clone(),
            },
        );
        Ok(Applied::Fresh(commit.answer))
    }

    fn purge_expired(&self, now: i64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.dedupe.len();
        inner.dedupe.retain(|_, e| e.expires_at > now);
        Ok(before - inner.dedupe.len())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
