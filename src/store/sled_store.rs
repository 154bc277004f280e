//! The sled backend: an embedded, crash-safe store in one folder.
//!
//! One tree, `followers`: account\0openid → versioned record (follower + recent
//! deliveries). A callback is a get and one plain insert of that key, so it is atomic
//! without a transaction. Concurrent callbacks of one follower are serialised by a striped
//! lock: a std `Mutex` (held for a few µs, never across an await), 256 stripes so that
//! different followers almost never wait on each other.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sled::{Db, Tree};

use super::{decode_record, encode_record, key, Applied, CallbackKey, Commit, Store, StoreError};
use crate::follower::Follower;

const STRIPES: usize = 256;

#[derive(Clone)]
pub struct SledStore {
    db: Db,
    followers: Tree,
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
            db,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
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
        let stripe = (self.hasher.hash_one(&k) as usize) % STRIPES;
        // Nothing panics while this is held except a bug in `decide`; the stored record is
        // untouched then, so a poisoned stripe is still safe to use.
        let _guard = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
