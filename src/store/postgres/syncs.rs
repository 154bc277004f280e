//! Follower syncs: each account's latest run, and a step's followers written with it.

use tokio_postgres::types::Type;

use super::followers::{item_json, ENQUEUE};
use super::{db, from_json, rollback, to_json, PgStore, Sql};
use crate::store::{decode_record, encode_record, key, Record, StoreError};
use crate::sync::SyncRun;

const T: Type = Type::TEXT;

const GET_RUN: Sql = Sql {
    text: "SELECT run FROM sync_runs WHERE account = $1",
    types: &[T],
};
const PUT_RUN: Sql = Sql {
    text: "INSERT INTO sync_runs (account, run) VALUES ($1, $2) \
           ON CONFLICT (account) DO UPDATE SET run = EXCLUDED.run",
    types: &[T, Type::JSONB],
};
/// Every follower of the step, locked and read in one statement through the primary key
/// (whatever the table's statistics say: a bulk import outruns them, and a plain
/// `openid = ANY(…)` then scanned the whole table for every step). A follower not stored
/// yet gets the empty record that stands for "none", as `PLACEHOLDER` does for one
/// callback. The openids come sorted: two steps over overlapping followers lock them in
/// the same order.
const LOCK_MANY: Sql = Sql {
    text: "INSERT INTO followers (account, openid, record) \
           SELECT $1, o, '' FROM unnest($2::text[]) AS o \
           ON CONFLICT (account, openid) DO UPDATE SET record = followers.record \
           RETURNING openid, record",
    types: &[T, Type::TEXT_ARRAY],
};
const WRITE_MANY: Sql = Sql {
    text: "INSERT INTO followers (account, openid, record) \
           SELECT $1, o, r FROM unnest($2::text[], $3::bytea[]) AS v(o, r) \
           ON CONFLICT (account, openid) DO UPDATE SET record = EXCLUDED.record",
    types: &[T, Type::TEXT_ARRAY, Type::BYTEA_ARRAY],
};

/// The people index: links added (and a changed unionid's old link dropped).
const LINK: Sql = Sql {
    text: "INSERT INTO people (unionid, account, openid) \
           SELECT u, $1, o FROM unnest($2::text[], $3::text[]) AS v(u, o) ON CONFLICT DO NOTHING",
    types: &[T, Type::TEXT_ARRAY, Type::TEXT_ARRAY],
};
const UNLINK: Sql = Sql {
    text: "DELETE FROM people AS p USING unnest($2::text[], $3::text[]) AS v(u, o) \
           WHERE p.account = $1 AND p.unionid = v.u AND p.openid = v.o",
    types: &[T, Type::TEXT_ARRAY, Type::TEXT_ARRAY],
};
const PEOPLE: Sql = Sql {
    text: "SELECT account, openid FROM people WHERE unionid = $1 ORDER BY account, openid",
    types: &[T],
};

impl PgStore {
    pub(super) fn pg_people(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.timed("people", self.query(&PEOPLE, &[&unionid]))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) fn pg_sync_run(&self, account: &str) -> Result<Option<SyncRun>, StoreError> {
        let rows = self.timed("sync_run", self.query(&GET_RUN, &[&account]))?;
        rows.into_iter()
            .next()
            .map(|r| from_json("sync_runs", account, r.get(0)))
            .transpose()
    }

    pub(super) fn pg_sync_step(
        &self,
        account: &str,
        openids: &[String],
        run: &mut SyncRun,
        merge: &mut crate::store::SyncMerge<'_>,
    ) -> Result<(), StoreError> {
        self.timed("sync_step", async {
            let c = self.conn().await?;
            let lock = self.ready(&c, &LOCK_MANY).await?;
            let write = self.ready(&c, &WRITE_MANY).await?;
            let put = self.ready(&c, &PUT_RUN).await?;
            let link = self.ready(&c, &LINK).await?;
            let unlink = self.ready(&c, &UNLINK).await?;
            let enqueue = self.ready(&c, &ENQUEUE).await?;
            let body = async {
                c.batch_execute("BEGIN").await.map_err(db)?;
                let mut sorted = openids.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                let rows = PgStore::run(&c, &lock, &[&account, &sorted]).await?;
                let mut changed_openids = Vec::new();
                let mut values: Vec<Vec<u8>> = Vec::new();
                let (mut linked, mut linked_ids) = (Vec::<String>::new(), Vec::<String>::new());
                let (mut unlinked, mut unlinked_ids) = (Vec::<String>::new(), Vec::<String>::new());
                let mut items = Vec::new();
                for row in rows {
                    let openid: String = row.get(0);
                    let stored: Vec<u8> = row.get(1);
                    let mut record = if stored.is_empty() {
                        Record::default()
                    } else {
                        decode_record(&key(account, &openid), &stored)?
                    };
                    if let Some(f) = merge(run, &openid, record.follower.clone(), &mut items) {
                        if let Some((old, new)) =
                            crate::store::person_link(record.follower.as_ref(), &f)
                        {
                            if let Some(old) = old {
                                unlinked.push(old);
                                unlinked_ids.push(openid.clone());
                            }
                            linked.push(new);
                            linked_ids.push(openid.clone());
                        }
                        record.follower = Some(f);
                        values.push(encode_record(&mut record));
                        changed_openids.push(openid);
                    }
                }
                if !unlinked.is_empty() {
                    PgStore::run(&c, &unlink, &[&account, &unlinked, &unlinked_ids]).await?;
                }
                if !linked.is_empty() {
                    PgStore::run(&c, &link, &[&account, &linked, &linked_ids]).await?;
                }
                let run_json = to_json(&*run);
                let items = item_json(account, items, crate::outbox::now_ms());
                let (wrote, put, queued, commit) = futures_util::future::join4(
                    PgStore::run(&c, &write, &[&account, &changed_openids, &values]),
                    PgStore::run(&c, &put, &[&account, &run_json]),
                    async {
                        if items.is_empty() {
                            Ok(Vec::new())
                        } else {
                            PgStore::run(&c, &enqueue, &[&account, &items]).await
                        }
                    },
                    c.batch_execute("COMMIT"),
                )
                .await;
                wrote?;
                put?;
                queued?;
                commit.map_err(db)?;
                Ok::<_, StoreError>(())
            };
            let result = body.await;
            if result.is_err() {
                rollback(&c).await;
            }
            result
        })
    }
}
