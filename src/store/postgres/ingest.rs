//! Shop events (`POST /ingest/v1/events`): one event is one transaction that locks the
//! follower's row, records the event id and rewrites the follower, so that an event is
//! applied exactly when its id is recorded.

use tokio_postgres::types::Type;

use super::{db, rollback, PgStore, Sql};
use crate::follower::Follower;
use crate::store::{decode_record, encode_record, key, Ingested, Record, StoreError};

const T: Type = Type::TEXT;

/// As for a callback: the row made sure of, so the lock has a row to take.
const PLACEHOLDER: Sql = Sql {
    text: "INSERT INTO followers (account, openid, record) VALUES ($1, $2, '') \
           ON CONFLICT DO NOTHING",
    types: &[T, T],
};
const LOCK: Sql = Sql {
    text: "SELECT record FROM followers WHERE account = $1 AND openid = $2 FOR UPDATE",
    types: &[T, T],
};
/// No row back: the id was recorded before (or by a transaction that committed while this
/// one waited on the key), so the event is a duplicate.
const RECORD_ID: Sql = Sql {
    text: "INSERT INTO ingest_events (account, event_id, openid) VALUES ($1, $2, $3) \
           ON CONFLICT DO NOTHING RETURNING 1",
    types: &[T, T, T],
};
const WRITE: Sql = Sql {
    text: "UPDATE followers SET record = $3 WHERE account = $1 AND openid = $2",
    types: &[T, T, Type::BYTEA],
};
const GET_ID: Sql = Sql {
    text: "SELECT openid FROM ingest_events WHERE account = $1 AND event_id = $2",
    types: &[T, T],
};

impl PgStore {
    pub(super) fn pg_ingest_event(
        &self,
        account: &str,
        openid: &str,
        event_id: &str,
        change: &mut dyn FnMut(Option<Follower>) -> Option<Follower>,
    ) -> Result<Ingested, StoreError> {
        self.timed("ingest_event", async {
            let c = self.conn().await?;
            let placeholder = self.ready(&c, &PLACEHOLDER).await?;
            let lock = self.ready(&c, &LOCK).await?;
            let record_id = self.ready(&c, &RECORD_ID).await?;
            let write = self.ready(&c, &WRITE).await?;
            let body = async {
                // One round trip: BEGIN, the row locked and read, the id recorded.
                let (begin, made, locked, recorded) = futures_util::future::join4(
                    c.batch_execute("BEGIN"),
                    PgStore::run(&c, &placeholder, &[&account, &openid]),
                    PgStore::run(&c, &lock, &[&account, &openid]),
                    PgStore::run(&c, &record_id, &[&account, &event_id, &openid]),
                )
                .await;
                begin.map_err(db)?;
                made?;
                let rows = locked?;
                if recorded?.is_empty() {
                    c.batch_execute("ROLLBACK").await.map_err(db)?;
                    return Ok(Ingested::Duplicate);
                }
                let stored: Vec<u8> = rows.first().map(|r| r.get(0)).unwrap_or_default();
                let mut record = if stored.is_empty() {
                    Record::default()
                } else {
                    decode_record(&key(account, openid), &stored)?
                };
                let Some(after) = change(record.follower.take()) else {
                    c.batch_execute("ROLLBACK").await.map_err(db)?;
                    return Ok(Ingested::Declined);
                };
                record.follower = Some(after.clone());
                let value = encode_record(&mut record);
                let (wrote, commit) = futures_util::future::join(
                    PgStore::run(&c, &write, &[&account, &openid, &value]),
                    c.batch_execute("COMMIT"),
                )
                .await;
                wrote?;
                commit.map_err(db)?;
                Ok::<_, StoreError>(Ingested::Applied(Box::new(after)))
            };
            let result = body.await;
            if result.is_err() {
                rollback(&c).await;
            }
            result
        })
    }

    pub(super) fn pg_ingested(
        &self,
        account: &str,
        event_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let rows = self.timed("ingested", self.query(&GET_ID, &[&account, &event_id]))?;
        Ok(rows.first().map(|r| r.get(0)))
    }
}
