//! The sled backend: an embedded, crash-safe store in one folder.
//!
//! Trees: `followers` (account\0openid → JSON follower), `dedupe` (account\0key → JSON
//! entry with the cached answer), `dedupe_expiry` (big-endian expiry ‖ account\0key → ()),
//! the last an index so purging reads only what expired instead of every key. One
//! callback's writes go through one sled transaction over the three trees, which also makes
//! two concurrent callbacks of one follower serialise (sled retries the loser).

use std::cell::RefCell;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, Tree};

use super::{key, Applied, CallbackKey, Commit, DedupeEntry, Store, StoreError};
use crate::follower::Follower;

#[derive(Clone)]
pub struct SledStore {
    db: Db,
    followers: Tree,
    dedupe: Tree,
    dedupe_expiry: Tree,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
            // sled takes an exclusive file lock; a second process gets WouldBlock.
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Locked {
                    path: path.display().to_string(),
                }
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                path: path.display().to_string(),
            },
            other => StoreError::Backend(other.to_string()),
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        Ok(SledStore {
            followers: tree("followers")?,
            dedupe: tree("dedupe")?,
            dedupe_expiry: tree("dedupe_expiry")?,
            db,
        })
    }

    /// Bytes on disk, for health and metrics.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        source,
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain structs (strings, numbers, maps with string keys) to JSON
    // cannot fail.
    serde_json::to_vec(v).expect("plain data serialises to JSON")
}

fn expiry_key(expires_at: i64, dedupe_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + dedupe_key.len());
    k.extend_from_slice(&(expires_at.max(0) as u64).to_be_bytes());
    k.extend_from_slice(dedupe_key);
    k
}

impl Store for SledStore {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        let k = key(account, openid);
        match self.followers.get(&k).map_err(backend)? {
            Some(v) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn apply_callback(
        &self,
        ck: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let fk = key(ck.account, ck.openid);
        let dk = key(ck.account, ck.dedupe_key);
        // sled wants an `Fn` closure because it may rerun it on conflict.
        let decide = RefCell::new(decide);
        let result = (&self.followers, &self.dedupe, &self.dedupe_expiry).transaction(
            |(followers, dedupe, expiry)| {
                let abort = ConflictableTransactionError::Abort;
                if let Some(v) = dedupe.get(&dk)? {
                    let entry: DedupeEntry = decode(&dk, &v).map_err(abort)?;
                    if entry.expires_at > ck.now {
                        return Ok(Applied::Duplicate(entry.answer));
                    }
                    expiry.remove(expiry_key(entry.expires_at, &dk))?;
                }
                let current = match followers.get(&fk)? {
                    Some(v) => Some(decode::<Follower>(&fk, &v).map_err(abort)?),
                    None => None,
                };
                let commit = (decide.borrow_mut())(current);
                if let Some(f) = &commit.follower {
                    followers.insert(fk.as_slice(), encode(f))?;
                }
                let entry = DedupeEntry {
                    expires_at: ck.expires_at,
                    answer: commit.answer,
                };
                dedupe.insert(dk.as_slice(), encode(&entry))?;
                expiry.insert(expiry_key(ck.expires_at, &dk), &[][..])?;
                Ok(Applied::Fresh(entry.answer))
            },
        );
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => backend(e),
        })
    }

    fn purge_expired(&self, now: i64) -> Result<usize, StoreError> {
        let end = (now.max(0) as u64 + 1).to_be_bytes();
        let mut purged = 0;
        for item in self.dedupe_expiry.range(..end.as_slice()) {
            let (ek, _) = item.map_err(backend)?;
            let dk = &ek[8..];
            // Remove the entry only if it still carries this expiry: a fresh delivery may
            // have re-armed the key since.
            let expires_at = u64::from_be_bytes(ek[..8].try_into().expect("8-byte prefix")) as i64;
            let current = self.dedupe.get(dk).map_err(backend)?;
            if let Some(v) = current {
                let entry: DedupeEntry = decode(dk, &v)?;
                if entry.expires_at == expires_at {
                    self.dedupe.remove(dk).map_err(backend)?;
                    purged += 1;
                }
            }
            self.dedupe_expiry.remove(&ek).map_err(backend)?;
        }
        Ok(purged)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
