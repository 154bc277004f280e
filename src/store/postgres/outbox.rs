//! The outbox and its dead letters, with the leases that keep two instances from
//! delivering the same item at once.

use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::followers::{item_json, ENQUEUE};
use super::{from_json, int8, to_json, PgStore, Sql};
use crate::outbox::{DeadItem, NewItem, OutboxItem};
use crate::store::StoreError;

const I8: Type = Type::INT8;

fn item_of(row: &Row) -> Result<OutboxItem, StoreError> {
    let id: i64 = row.get(0);
    let mut item: OutboxItem = from_json("outbox", &id.to_string(), row.get(1))?;
    item.id = id as u64;
    Ok(item)
}

fn dead_of(row: &Row) -> Result<DeadItem, StoreError> {
    let id: i64 = row.get(0);
    let mut dead: DeadItem = from_json("dead_letters", &id.to_string(), row.get(1))?;
    dead.item.id = id as u64;
    Ok(dead)
}

impl PgStore {
    pub(super) fn pg_enqueue(
        &self,
        account: &str,
        items: Vec<NewItem>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let items = item_json(account, items, now_ms);
        let rows = self.timed("enqueue", self.query(&ENQUEUE, &[&account, &items]))?;
        let mut ids: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub(super) fn pg_outbox_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT id, item FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
            types: &[I8, I8],
        };
        let after = after.map_or(0, int8);
        let rows = self.timed(
            "outbox_page",
            self.query(&SQL, &[&after, &int8(limit as u64)]),
        )?;
        rows.iter().map(item_of).collect()
    }

    /// Leases the items with these ids to `owner` until `until_ms`, skipping any that
    /// another instance holds (locked right now, or leased and not yet expired) and any no
    /// longer queued. Returns the ids leased.
    pub(super) fn pg_outbox_lease(
        &self,
        ids: &[u64],
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        const SQL: Sql = Sql {
            text: "UPDATE outbox SET lease_owner = $2, lease_until_ms = $3 WHERE id IN (\
                     SELECT id FROM outbox WHERE id = ANY($1) \
                     AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until_ms < $4) \
                     FOR UPDATE SKIP LOCKED) RETURNING id",
            types: &[Type::INT8_ARRAY, Type::TEXT, I8, I8],
        };
        let ids: Vec<i64> = ids.iter().map(|&i| int8(i)).collect();
        let rows = self.timed(
            "outbox_lease",
            self.query(&SQL, &[&ids, &owner, &until_ms, &now_ms]),
        )?;
        let mut leased: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        leased.sort_unstable();
        Ok(leased)
    }

    pub(super) fn pg_outbox_done(&self, id: u64) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "DELETE FROM outbox WHERE id = $1",
            types: &[I8],
        };
        self.timed("outbox_done", self.query(&SQL, &[&int8(id)]))
            .map(drop)
    }

    pub(super) fn pg_outbox_retry_later(&self, item: &OutboxItem) -> Result<(), StoreError> {
        // The lease goes with the attempt: when the item falls due, any instance may take it.
        const SQL: Sql = Sql {
            text: "UPDATE outbox SET item = $2, lease_owner = NULL, lease_until_ms = NULL \
                   WHERE id = $1",
            types: &[I8, Type::JSONB],
        };
        self.timed(
            "outbox_retry",
            self.query(&SQL, &[&int8(item.id), &to_json(item)]),
        )
        .map(drop)
    }

    pub(super) fn pg_outbox_bury(
        &self,
        item: &OutboxItem,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        const DELETE: Sql = Sql {
            text: "DELETE FROM outbox WHERE id = $1",
            types: &[I8],
        };
        const BURY: Sql = Sql {
            text: "INSERT INTO dead_letters (id, dead) VALUES ($1, $2) \
                   ON CONFLICT (id) DO UPDATE SET dead = excluded.dead",
            types: &[I8, Type::JSONB],
        };
        let dead = to_json(&DeadItem {
            item: item.clone(),
            reason: reason.to_string(),
            died_ms: now_ms,
        });
        let id = int8(item.id);
        self.timed(
            "outbox_bury",
            self.atomically(&[(&DELETE, vec![&id]), (&BURY, vec![&id, &dead])]),
        )
        .map(drop)
    }

    pub(super) fn pg_dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadItem>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT id, dead FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
            types: &[I8, I8],
        };
        let after = after.map_or(0, int8);
        let rows = self.timed(
            "dead_letters",
            self.query(&SQL, &[&after, &int8(limit as u64)]),
        )?;
        rows.iter().map(dead_of).collect()
    }

    pub(super) fn pg_requeue_dead(
        &self,
        id: u64,
        now_ms: i64,
    ) -> Result<Option<OutboxItem>, StoreError> {
        const TAKE: Sql = Sql {
            text: "DELETE FROM dead_letters WHERE id = $1 RETURNING id, dead",
            types: &[I8],
        };
        const PUT: Sql = Sql {
            text: "INSERT INTO outbox (id, account, item) VALUES ($1, $2, $3)",
            types: &[I8, Type::TEXT, Type::JSONB],
        };
        // Read first (to build the item), then move it in one transaction.
        let Some(dead) = self
            .pg_dead_letters(Some(id.saturating_sub(1)), 1)?
            .into_iter()
            .find(|d| d.item.id == id)
        else {
            return Ok(None);
        };
        let item = dead.requeued(now_ms);
        let (pid, json) = (int8(id), to_json(&item));
        let rows = self.timed(
            "outbox_requeue",
            self.atomically(&[
                (&TAKE, vec![&pid]),
                (&PUT, vec![&pid, &item.account, &json]),
            ]),
        )?;
        Ok((!rows[0].is_empty()).then_some(item))
    }
}
