//! Shop events (`POST /ingest/v1/events`): one event is one transaction that locks the
//! follower's row, records the event id and rewrites the follower, so that an event is
//! applied exactly when its id is recorded. An event kept for a person not known yet
//! (`ingest_kept`) is deleted in the transaction that applies it (or finds it applied).

use tokio_postgres::types::Type;

use super::{db, from_json, rollback, to_json, PgStore, Sql};
use crate::follower::Follower;
use crate::store::{decode_record, encode_record, key, Ingested, KeptEvent, Record, StoreError};

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
const DROP_KEPT: Sql = Sql {
    text: "DELETE FROM ingest_kept WHERE account = $1 AND event_id = $2",
    types: &[T, T],
};
/// No row back: the id was applied, or is kept, already (a resend).
const KEEP: Sql = Sql {
    text: "INSERT INTO ingest_kept (account, event_id, unionid, event, kept_at) \
           SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
             (SELECT 1 FROM ingest_events WHERE account = $1 AND event_id = $2) \
           ON CONFLICT DO NOTHING RETURNING 1",
    types: &[T, T, T, Type::JSONB, Type::INT8],
};
const KEPT: Sql = Sql {
    text: "SELECT event_id, unionid, event, kept_at FROM ingest_kept \
           WHERE account = $1 AND unionid = ANY($2) ORDER BY unionid, event_id",
    types: &[T, Type::TEXT_ARRAY],
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
        change: &mut dyn FnMut(Option<Follower>) -> Option<(Follower, Vec<crate::report::Count>)>,
    ) -> Result<Ingested, StoreError> {
        self.timed("ingest_event", async {
            let c = self.conn().await?;
            let placeholder = self.ready(&c, &PLACEHOLDER).await?;
            let lock = self.ready(&c, &LOCK).await?;
            let record_id = self.ready(&c, &RECORD_ID).await?;
            let write = self.ready(&c, &WRITE).await?;
            let drop_kept = self.ready(&c, &DROP_KEPT).await?;
            let counting = self.ready_counts(&c).await?;
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
                    let (dropped, commit) = futures_util::future::join(
                        PgStore::run(&c, &drop_kept, &[&account, &event_id]),
                        c.batch_execute("COMMIT"),
                    )
                    .await;
                    dropped?;
                    commit.map_err(db)?;
                    return Ok(Ingested::Duplicate);
                }
                let stored: Vec<u8> = rows.first().map(|r| r.get(0)).unwrap_or_default();
                let mut record = if stored.is_empty() {
                    Record::default()
                } else {
                    decode_record(&key(account, openid), &stored)?
                };
                let Some((after, counts)) = change(record.follower.take()) else {
                    c.batch_execute("ROLLBACK").await.map_err(db)?;
                    return Ok(Ingested::Declined);
                };
                record.follower = Some(after.clone());
                let value = encode_record(&mut record);
                let counts = crate::report::merge(counts);
                let (wrote, dropped, counted, commit) = futures_util::future::join4(
                    PgStore::run(&c, &write, &[&account, &openid, &value]),
                    PgStore::run(&c, &drop_kept, &[&account, &event_id]),
                    PgStore::write_counts(&c, &counting, account, openid, &counts),
                    c.batch_execute("COMMIT"),
                )
                .await;
                wrote?;
                dropped?;
                counted?;
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

    pub(super) fn pg_keep_event(
        &self,
        account: &str,
        event: &KeptEvent,
    ) -> Result<bool, StoreError> {
        let value = to_json(&event.event);
        let rows = self.timed(
            "keep_event",
            self.query(
                &KEEP,
                &[&account, &event.id, &event.unionid, &value, &event.kept_at],
            ),
        )?;
        Ok(!rows.is_empty())
    }

    pub(super) fn pg_kept_events(
        &self,
        account: &str,
        unionids: &[String],
    ) -> Result<Vec<KeptEvent>, StoreError> {
        if unionids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.timed("kept_events", self.query(&KEPT, &[&account, &unionids]))?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let event = from_json::<serde_json::Value>("ingest_kept", &id, r.get(2))?;
                Ok(KeptEvent {
                    id,
                    unionid: r.get(1),
                    event,
                    kept_at: r.get(3),
                })
            })
            .collect()
    }
}
