//! Channel codes on PostgreSQL (`channel_codes`, migration 0008). Queuing is one statement:
//! the row's queued mark is set only where it was not (the row lock makes racing callers
//! wait and then find it set), and the outbox item is inserted for the row that statement
//! returned, so a mark and its item are written together or not at all.

use tokio_postgres::types::Type;

use super::followers::item_json;
use super::{from_json, to_json, PgStore, Sql};
use crate::channel_code::{ChannelCode, IssuedCode};
use crate::outbox::NewItem;
use crate::store::channel_codes::ChannelCodes;
use crate::store::StoreError;

const T: Type = Type::TEXT;
const I8: Type = Type::INT8;

const GET: Sql = Sql {
    text: "SELECT account, channel, queued_at, code, last_error FROM channel_codes \
           WHERE account = $1 AND channel = $2",
    types: &[T, T],
};
const ALL: Sql = Sql {
    text: "SELECT account, channel, queued_at, code, last_error FROM channel_codes \
           ORDER BY account, channel",
    types: &[],
};
const QUEUE: Sql = Sql {
    text: "WITH claimed AS ( \
             INSERT INTO channel_codes (account, channel, queued_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account, channel) DO UPDATE \
               SET queued_at = excluded.queued_at, last_error = NULL \
               WHERE channel_codes.queued_at IS NULL \
             RETURNING account) \
           INSERT INTO outbox (account, item) SELECT account, $4 FROM claimed RETURNING id",
    types: &[T, T, I8, Type::JSONB],
};
const PUT: Sql = Sql {
    text: "INSERT INTO channel_codes (account, channel, code) VALUES ($1, $2, $3) \
           ON CONFLICT (account, channel) DO UPDATE \
             SET code = excluded.code, queued_at = NULL, last_error = NULL",
    types: &[T, T, Type::JSONB],
};
const FAILED: Sql = Sql {
    text: "INSERT INTO channel_codes (account, channel, last_error) VALUES ($1, $2, $3) \
           ON CONFLICT (account, channel) DO UPDATE \
             SET queued_at = NULL, last_error = excluded.last_error",
    types: &[T, T, T],
};

pub(super) fn entry(r: &tokio_postgres::Row) -> Result<ChannelCode, StoreError> {
    let (account, channel): (String, String) = (r.get(0), r.get(1));
    let code: Option<serde_json::Value> = r.get(3);
    Ok(ChannelCode {
        issued: code
            .map(|v| from_json("channel_codes", &format!("{account}/{channel}"), v))
            .transpose()?,
        account,
        channel,
        queued_at: r.get(2),
        last_error: r.get(4),
    })
}

impl ChannelCodes for PgStore {
    fn channel_code(
        &self,
        account: &str,
        channel: &str,
    ) -> Result<Option<ChannelCode>, StoreError> {
        let rows = self.timed("channel_code", self.query(&GET, &[&account, &channel]))?;
        rows.first().map(entry).transpose()
    }

    fn all_channel_codes(&self) -> Result<Vec<ChannelCode>, StoreError> {
        let rows = self.timed("all_channel_codes", self.query(&ALL, &[]))?;
        rows.iter().map(entry).collect()
    }

    fn queue_channel_code(
        &self,
        account: &str,
        channel: &str,
        item: NewItem,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let item = item_json(account, vec![item], now_ms).remove(0);
        let at = now_ms.div_euclid(1000);
        let rows = self.timed(
            "queue_channel_code",
            self.query(&QUEUE, &[&account, &channel, &at, &item]),
        )?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64))
    }

    fn put_channel_code(
        &self,
        account: &str,
        channel: &str,
        code: &IssuedCode,
    ) -> Result<(), StoreError> {
        let code = to_json(code);
        self.timed(
            "put_channel_code",
            self.query(&PUT, &[&account, &channel, &code]),
        )
        .map(drop)
    }

    fn channel_code_failed(
        &self,
        account: &str,
        channel: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.timed(
            "channel_code_failed",
            self.query(&FAILED, &[&account, &channel, &reason]),
        )
        .map(drop)
    }
}
