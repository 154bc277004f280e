//! An in-memory store for unit tests: the same contract as sled, one mutex for everything
//! (contention is no concern there).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{key, Applied, CallbackKey, Commit, Record, Store, StoreError, StoredToken};
use crate::audit::AuditEntry;
use crate::follower::Follower;

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<Vec<u8>, Record>>,
    audit: Mutex<Vec<AuditEntry>>,
    tokens: Mutex<HashMap<String, StoredToken>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Record>> {
        // A panic while holding the lock cannot leave a half-written record (each callback
        // is one map insert after the decision), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        Ok(self
            .lock()
            .get(&key(account, openid))
            .and_then(|r| r.follower.clone()))
    }

    fn apply_callback(
        &self,
        k: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let mut records = self.lock();
        let record = records.entry(key(k.account, k.openid)).or_default();
        Ok(record.apply(k, decide))
    }

    fn update_follower(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower),
    ) -> Result<Option<Follower>, StoreError> {
        let mut records = self.lock();
        let Some(f) = records
            .get_mut(&key(account, openid))
            .and_then(|r| r.follower.as_mut())
        else {
            return Ok(None);
        };
        change(f);
        Ok(Some(f.clone()))
    }

    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        let prefix = key(account, "");
        let sorted: BTreeMap<Vec<u8>, Follower> = self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, r)| Some((k.clone(), r.follower.clone()?)))
            .collect();
        sorted.into_values().for_each(visit);
        Ok(())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
        Ok(())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut all = self.audit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Ordered by time like the sled tree (a stable sort keeps arrival order within a second).
        all.sort_by_key(|e| e.at);
        Ok(all.into_iter().rev().take(limit).collect())
    }

    fn token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned())
    }

    fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), token.clone());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
