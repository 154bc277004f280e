//! The sled backend: an embedded, crash-safe store in one folder.
//!
//! One tree, `followers`: account\0openid → versioned record (follower + recent
//! deliveries). Two small side trees: `audit` (time-ordered entries) and `tokens` (account →
//! JSON access token; a handful of keys, rewritten every two hours). A callback is a get and one plain insert of that key, so it is atomic
//! without a transaction. Concurrent callbacks of one follower are serialised by a striped
//! lock: a std `Mutex` (held for a few µs, never across an await), 256 stripes so that
//! different followers almost never wait on each other.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sled::{Db, Tree};

use super::{
    decode_record, encode_record, key, Applied, CallbackKey, Commit, Store, StoreError, StoredToken,
};
use crate::audit::AuditEntry;
use crate::follower::Follower;

const STRIPES: usize = 256;

#[derive(Clone)]
pub struct SledStore {
    db: Db,
    followers: Tree,
    /// big-endian time ‖ sled-generated id → JSON entry: ordered by time, never colliding.
    audit: Tree,
    tokens: Tree,
    stripes: Arc<[Mutex<()>]>,
    hasher: RandomState,
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
            // sled takes an exclusive file lock; a second process is refused.
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::Locked {
                    path: path.display().to_string(),
                }
            }
            other => StoreError::Backend(other.to_string()),
        })?;
        Ok(SledStore {
            followers: db.open_tree("followers").map_err(backend)?,
            audit: db.open_tree("audit").map_err(backend)?,
            tokens: db.open_tree("tokens").map_err(backend)?,
            db,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        })
    }

    /// Serialises writers of one record.
    fn lock_stripe(&self, k: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(k) as usize) % STRIPES;
        // Nothing panics while this is held except a bug in a decision; the stored record
        // is untouched then, so a poisoned stripe is still safe to use.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Store for SledStore {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        let k = key(account, openid);
        match self.followers.get(&k).map_err(backend)? {
            Some(v) => Ok(decode_record(&k, &v)?.follower),
            None => Ok(None),
        }
    }

    fn apply_callback(
        &self,
        ck: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let k = key(ck.account, ck.openid);
        let _guard = self.lock_stripe(&k);
        let mut record = match self.followers.get(&k).map_err(backend)? {
            Some(v) => decode_record(&k, &v)?,
            None => Default::default(),
        };
        let applied = record.apply(ck, decide);
        if let Applied::Fresh(_) = applied {
            self.followers
                .insert(k, encode_record(&record))
                .map_err(backend)?;
        }
        Ok(applied)
    }

    fn update_follower(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower),
    ) -> Result<Option<Follower>, StoreError> {
        let k = key(account, openid);
        let _guard = self.lock_stripe(&k);
        let Some(v) = self.followers.get(&k).map_err(backend)? else {
            return Ok(None);
        };
        let mut record = decode_record(&k, &v)?;
        let Some(f) = record.follower.as_mut() else {
            return Ok(None);
        };
        change(f);
        let after = f.clone();
        self.followers
            .insert(k, encode_record(&record))
            .map_err(backend)?;
        Ok(Some(after))
    }

    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        for item in self.followers.scan_prefix(key(account, "")) {
            let (k, v) = item.map_err(backend)?;
            if let Some(f) = decode_record(&k, &v)?.follower {
                visit(f);
            }
        }
        Ok(())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(backend)?;
        let mut k = (entry.at.max(0) as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&id.to_be_bytes());
        let v = serde_json::to_vec(entry).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.audit.insert(k, v).map_err(backend)?;
        Ok(())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: format!("audit/{}", hex::encode(&k)),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    fn token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let Some(v) = self.tokens.get(account).map_err(backend)? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: format!("tokens/{account}"),
                // Position only: serde_json's message may quote the value, i.e. the token.
                reason: format!("{:?} error at column {}", e.classify(), e.column()),
            })
    }

    fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), StoreError> {
        let v = serde_json::to_vec(token).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.tokens.insert(account, v).map_err(backend)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}
