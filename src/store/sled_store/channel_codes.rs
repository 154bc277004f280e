//! Channel codes on sled: one tree, `account \0 channel` → JSON `ChannelCode`; queuing
//! writes the entry and the outbox item in one transaction over both trees.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{backend, from_json, id_key, json, SledStore};
use crate::channel_code::{ChannelCode, IssuedCode};
use crate::outbox::NewItem;
use crate::store::channel_codes::{failed, issued, queued, ChannelCodes};
use crate::store::{key, StoreError};

const TREE: &str = "channel_codes";

impl ChannelCodes for SledStore {
    fn channel_code(
        &self,
        account: &str,
        channel: &str,
    ) -> Result<Option<ChannelCode>, StoreError> {
        let k = key(account, channel);
        match self.channel_codes.get(&k).map_err(backend)? {
            Some(v) => Ok(Some(from_json(TREE, &k, &v)?)),
            None => Ok(None),
        }
    }

    fn all_channel_codes(&self) -> Result<Vec<ChannelCode>, StoreError> {
        self.channel_codes
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                from_json(TREE, &k, &v)
            })
            .collect()
    }

    fn queue_channel_code(
        &self,
        account: &str,
        channel: &str,
        item: NewItem,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let k = key(account, channel);
        // The id is taken before the transaction (sled's id generator is not
        // transactional); an id left unused when nothing is queued is only a gap.
        let (id, value) = self.new_items(account, vec![item], now_ms)?.remove(0);
        let done = (&self.outbox, &self.channel_codes)
            .transaction(|(outbox, codes)| {
                let old: Option<ChannelCode> = match codes.get(&k)? {
                    Some(v) => {
                        Some(from_json(TREE, &k, &v).map_err(ConflictableTransactionError::Abort)?)
                    }
                    None => None,
                };
                if old.as_ref().is_some_and(|e| e.queued_at.is_some()) {
                    return Ok(false);
                }
                outbox.insert(&id_key(id), value.as_slice())?;
                codes.insert(k.as_slice(), json(&queued(old, account, channel, now_ms)))?;
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        Ok(done.then_some(id))
    }

    fn put_channel_code(
        &self,
        account: &str,
        channel: &str,
        code: &IssuedCode,
    ) -> Result<(), StoreError> {
        self.channel_codes
            .insert(key(account, channel), json(&issued(account, channel, code)))
            .map_err(backend)?;
        Ok(())
    }

    fn channel_code_failed(
        &self,
        account: &str,
        channel: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let k = key(account, channel);
        self.channel_codes
            .fetch_and_update(&k, |old| {
                let old = old.and_then(|v| serde_json::from_slice(v).ok());
                Some(json(&failed(old, account, channel, reason)))
            })
            .map_err(backend)?;
        Ok(())
    }
}
