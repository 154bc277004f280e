//! Storage behind a small trait: followers, dedupe keys with their cached answers.
//!
//! The engine never sees sled. One callback is one call to `apply_callback`, which runs the
//! engine's (pure) decision on the follower's current state and writes the new follower,
//! the dedupe key and the cached answer in one atomic step, or nothing at all. Backends must
//! serialise concurrent callbacks for the same follower (a transaction, a lock) so no update
//! is lost; the sled backend uses a sled transaction, a shared backend for scale-out would
//! use its own (e.g. Redis WATCH/MULTI).

mod memory;
mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::SledStore;

use serde::{Deserialize, Serialize};

use crate::follower::Follower;
use crate::protocol::Reply;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is locked by another process at {path} (is `siyu serve` running on it?)")]
    Locked { path: String },
    #[error("store I/O error: {0}")]
    Backend(String),
    #[error("stored value under {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// What a callback answered, kept with its dedupe key so that WeChat's retry of the same
/// callback gets the same reply and causes nothing new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub reply: Option<Reply>,
    /// The rules that fired, for logs.
    pub rules: Vec<String>,
}

/// Where one callback writes.
#[derive(Debug, Clone, Copy)]
pub struct CallbackKey<'a> {
    pub account: &'a str,
    pub openid: &'a str,
    /// `Inbound::dedupe_key`, unique per delivery within the account.
    pub dedupe_key: &'a str,
    pub now: i64,
    /// When the dedupe key may be forgotten.
    pub expires_at: i64,
}

/// The state one callback leaves behind.
#[derive(Debug, Clone)]
pub struct Commit {
    /// `None`: the follower record is left as it is (e.g. a mass-send report).
    pub follower: Option<Follower>,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// First delivery: the commit was written.
    Fresh(Answer),
    /// A retry: nothing was written; this is the first delivery's answer.
    Duplicate(Answer),
}

pub trait Store: Send + Sync {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError>;

    /// Runs `decide` on the follower's current state (None if unknown) unless the dedupe
    /// key is already present, and writes its commit atomically. `decide` may run more than
    /// once if the backend retries a conflicting transaction, so it must be pure.
    fn apply_callback(
        &self,
        key: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError>;

    /// Forgets dedupe keys that expired before `now`; returns how many.
    fn purge_expired(&self, now: i64) -> Result<usize, StoreError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// `account \0 rest`: NUL never appears in an account id or an openid, and it keeps one
/// account's keys together for range scans.
fn key(account: &str, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 1 + rest.len());
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DedupeEntry {
    expires_at: i64,
    answer: Answer,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every backend must keep, run against each.
    pub(super) fn contract(store: &dyn Store) {
        let key = CallbackKey {
            account: "demo",
            openid: "o1",
            dedupe_key: "m:1",
            now: 100,
            expires_at: 200,
        };
        let runs = std::cell::Cell::new(0);
        let mut decide = |f: Option<Follower>| {
            runs.set(runs.get() + 1);
            let mut f = f.unwrap_or_else(|| Follower::new("o1"));
            f.messages_in += 1;
            Commit {
                follower: Some(f),
                answer: Answer {
                    reply: None,
                    rules: vec!["r".into()],
                },
            }
        };
        let first = store.apply_callback(key, &mut decide).unwrap();
        assert!(matches!(first, Applied::Fresh(_)));
        let again = store.apply_callback(key, &mut decide).unwrap();
        assert_eq!(again, Applied::Duplicate(first_answer(&first)));
        assert_eq!(runs.get(), 1, "a duplicate must not run the decision");
        assert_eq!(
            store.follower("demo", "o1").unwrap().unwrap().messages_in,
            1
        );
        assert!(store.follower("other", "o1").unwrap().is_none());

        // A second message counts; an expired key is purged and then accepted again.
        let k2 = CallbackKey {
            dedupe_key: "m:2",
            ..key
        };
        store.apply_callback(k2, &mut decide).unwrap();
        assert_eq!(
            store.follower("demo", "o1").unwrap().unwrap().messages_in,
            2
        );
        assert_eq!(store.purge_expired(150).unwrap(), 0);
        assert_eq!(store.purge_expired(201).unwrap(), 2);
        let later = CallbackKey { now: 300, ..key };
        assert!(matches!(
            store.apply_callback(later, &mut decide).unwrap(),
            Applied::Fresh(_)
        ));
        // An expired key not yet purged does not count as a duplicate either.
        let late = CallbackKey {
            dedupe_key: "m:3",
            now: 100,
            expires_at: 150,
            ..key
        };
        store.apply_callback(late, &mut decide).unwrap();
        assert!(matches!(
            store
                .apply_callback(CallbackKey { now: 151, ..late }, &mut decide)
                .unwrap(),
            Applied::Fresh(_)
        ));
        store.flush().unwrap();
    }

    fn first_answer(a: &Applied) -> Answer {
        match a {
            Applied::Fresh(a) | Applied::Duplicate(a) => a.clone(),
        }
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::default());
    }

    #[test]
    fn sled_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&SledStore::open(&dir.path().join("db")).unwrap());
    }
}
