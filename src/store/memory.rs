//! An in-memory store for unit tests: the same contract as sled, one mutex for everything
//! (contention is no concern there).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{key, Applied, CallbackKey, Commit, Record, Store, StoreError};
use crate::follower::Follower;

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<Vec<u8>, Record>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Record>> {
        // A panic while holding the lock cannot leave a half-written record (each callback
        // is one map insert after the decision), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds a follower (tests).
    pub fn put_follower(&self, account: &str, follower: Follower) {
        let k = key(account, &follower.openid);
        self.lock().entry(k).or_default().follower = Some(follower);
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

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
