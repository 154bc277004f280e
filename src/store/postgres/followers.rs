//! Followers and their callbacks; audit, tokens and tag ids (small tables beside them).

use tokio_postgres::types::Type;

use super::{db, from_json, int8, rollback, to_json, PgStore, Sql};
use crate::audit::AuditEntry;
use crate::follower::Follower;
use crate::outbox::OutboxItem;
use crate::store::{
    apply_stored, decode_record, encode_record, key, Applied, CallbackKey, Commit, StoreError,
    StoredToken,
};

const T: Type = Type::TEXT;

/// Makes sure the row exists (an empty record stands for "no record yet"), so that the
/// lock below always has a row to take, even for a new follower two deliveries race for.
const PLACEHOLDER: Sql = Sql {
    text: "INSERT INTO followers (account, openid, record) VALUES ($1, $2, '') \
           ON CONFLICT DO NOTHING",
    types: &[T, T],
};
const LOCK: Sql = Sql {
    text: "SELECT record FROM followers WHERE account = $1 AND openid = $2 FOR UPDATE",
    types: &[T, T],
};
const READ: Sql = Sql {
    text: "SELECT record FROM followers WHERE account = $1 AND openid = $2",
    types: &[T, T],
};
const WRITE: Sql = Sql {
    text: "UPDATE followers SET record = $3 WHERE account = $1 AND openid = $2",
    types: &[T, T, Type::BYTEA],
};
pub(super) const ENQUEUE: Sql = Sql {
    text: "INSERT INTO outbox (account, item) SELECT $1, unnest($2::jsonb[]) RETURNING id",
    types: &[T, Type::JSONB_ARRAY],
};
const PAGE: Sql = Sql {
    text: "SELECT openid, record FROM followers WHERE account = $1 AND openid > $2 \
           AND record <> '' ORDER BY openid LIMIT $3",
    types: &[T, T, Type::INT8],
};

/// Followers read per round trip when walking an account.
const WALK_PAGE: usize = 2000;

/// Every follower of an account, streamed by one query (see `pg_for_each_follower`).
const ALL: Sql = Sql {
    text: "SELECT openid, record FROM followers WHERE account = $1 AND record <> '' \
           ORDER BY openid",
    types: &[T],
};

/// Rows handed over at a time when walking a whole account (8 batches read ahead).
const STREAM_BATCH: usize = 2000;

fn record_of(rows: &[tokio_postgres::Row]) -> Option<Vec<u8>> {
    rows.first()
        .map(|r| r.get::<_, Vec<u8>>(0))
        .filter(|v| !v.is_empty())
}

/// Outbox items as stored: the JSON of the item, its id given by the table.
pub(super) fn item_json(
    account: &str,
    items: Vec<crate::outbox::NewItem>,
    now_ms: i64,
) -> Vec<serde_json::Value> {
    items
        .into_iter()
        .map(|i| to_json(&OutboxItem::new(0, account, i, now_ms)))
        .collect()
}

impl PgStore {
    pub(super) fn pg_follower(
        &self,
        account: &str,
        openid: &str,
    ) -> Result<Option<Follower>, StoreError> {
        let rows = self.timed("follower", self.query(&READ, &[&account, &openid]))?;
        match record_of(&rows) {
            Some(v) => Ok(decode_record(&key(account, openid), &v)?.follower),
            None => Ok(None),
        }
    }

    pub(super) fn pg_apply_callback(
        &self,
        ck: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let started = std::time::Instant::now();
        let k = key(ck.account, ck.openid);
        // Step 1, one round trip: BEGIN, the row made sure of, locked and read.
        let (c, stored) = self.block(async {
            let c = self.conn().await?;
            let (placeholder, lock) = (
                self.ready(&c, &PLACEHOLDER).await?,
                self.ready(&c, &LOCK).await?,
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ck.account, &ck.openid];
            let (begin, made, locked) = futures_util::future::join3(
                c.batch_execute("BEGIN"),
                PgStore::run(&c, &placeholder, &params),
                PgStore::run(&c, &lock, &params),
            )
            .await;
            match (begin.map_err(db), made, locked) {
                (Ok(()), Ok(_), Ok(rows)) => Ok((c, record_of(&rows))),
                (b, m, l) => {
                    rollback(&c).await;
                    Err(b
                        .and(m.map(drop))
                        .and(l.map(drop))
                        .expect_err("a step failed"))
                }
            }
        })?;
        // The decision, with the row locked; a coupon claim it makes joins this transaction.
        self.lend_callback_conn(c);
        let decided = apply_stored(&k, stored.as_deref(), ck, decide);
        let c = self
            .take_callback_conn()
            .expect("the callback's connection is handed back");
        let (applied, written) = match decided {
            Ok(d) => d,
            Err(e) => {
                self.block(rollback(&c));
                return Err(e);
            }
        };
        // Step 2, one round trip and the commit: the record, the outbox items, COMMIT.
        let result = self.block(async {
            let Some(value) = written.value else {
                c.batch_execute("ROLLBACK").await.map_err(db)?;
                return Ok(());
            };
            let items = item_json(ck.account, written.effects, ck.now.saturating_mul(1000));
            let write = self.ready(&c, &WRITE).await?;
            let enqueue = self.ready(&c, &ENQUEUE).await?;
            let counting = self.ready_counts(&c).await?;
            let (wrote, queued, counted, commit) = futures_util::future::join4(
                PgStore::run(&c, &write, &[&ck.account, &ck.openid, &value]),
                async {
                    if items.is_empty() {
                        Ok(Vec::new())
                    } else {
                        PgStore::run(&c, &enqueue, &[&ck.account, &items]).await
                    }
                },
                PgStore::write_counts(&c, &counting, ck.account, ck.openid, &written.counts),
                c.batch_execute("COMMIT"),
            )
            .await;
            match (wrote, queued, counted, commit.map_err(db)) {
                (Ok(_), Ok(_), Ok(()), Ok(())) => Ok(()),
                (w, q, n, cm) => {
                    rollback(&c).await;
                    Err(w
                        .map(drop)
                        .and(q.map(drop))
                        .and(n)
                        .and(cm)
                        .expect_err("a step failed"))
                }
            }
        });
        self.timings
            .with_label_values(&["apply_callback"])
            .observe(started.elapsed().as_secs_f64());
        result.map(|()| applied)
    }

    pub(super) fn pg_update_follower(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower) -> Vec<crate::outbox::NewItem>,
    ) -> Result<Option<Follower>, StoreError> {
        let c = match self.take_callback_conn() {
            Some(c) => {
                // Not expected inside a decision; keep the connection where it belongs.
                self.lend_callback_conn(c);
                return Err(StoreError::Backend(
                    "a follower edit inside a callback's decision".into(),
                ));
            }
            None => self.block(self.conn())?,
        };
        let k = key(account, openid);
        let stored = self.block(async {
            let lock = self.ready(&c, &LOCK).await?;
            c.batch_execute("BEGIN").await.map_err(db)?;
            match PgStore::run(&c, &lock, &[&account, &openid]).await {
                Ok(rows) => Ok(record_of(&rows)),
                Err(e) => {
                    rollback(&c).await;
                    Err(e)
                }
            }
        })?;
        let Some(stored) = stored else {
            self.block(rollback(&c));
            return Ok(None);
        };
        let mut record = match decode_record(&k, &stored) {
            Ok(r) => r,
            Err(e) => {
                self.block(rollback(&c));
                return Err(e);
            }
        };
        let Some(f) = record.follower.as_mut() else {
            self.block(rollback(&c));
            return Ok(None);
        };
        let items = item_json(account, change(f), crate::outbox::now_ms());
        let after = f.clone();
        let value = encode_record(&mut record);
        self.timed("update_follower", async {
            let write = self.ready(&c, &WRITE).await?;
            let enqueue = self.ready(&c, &ENQUEUE).await?;
            let (wrote, queued, commit) = futures_util::future::join3(
                PgStore::run(&c, &write, &[&account, &openid, &value]),
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
            match (wrote, queued, commit.map_err(db)) {
                (Ok(_), Ok(_), Ok(())) => Ok(()),
                (w, q, cm) => {
                    rollback(&c).await;
                    Err(w
                        .map(drop)
                        .and(q.map(drop))
                        .and(cm)
                        .expect_err("a step failed"))
                }
            }
        })?;
        Ok(Some(after))
    }

    pub(super) fn pg_followers_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        self.walk(account, after.unwrap_or(""), limit, &mut |f| out.push(f))?;
        Ok(out)
    }

    pub(super) fn pg_for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        // One query, streamed, read by a task on the store's runtime into a few batches
        // ahead, while this thread decodes and visits: PostgreSQL, the socket and the
        // decoding run side by side (keyset pages waited a round trip per page and the
        // server idled while we decoded: 3.3 s for a million followers, now under 2).
        // `visit` runs in plain code on this thread (it may block, as the export does).
        let started = std::time::Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<_>, StoreError>>(8);
        let (pool, prepared, account_owned) =
            (self.pool.clone(), self.prepared, account.to_string());
        let reader = async move {
            let read = async {
                let c = pool.get().await.map_err(super::pool_error)?;
                let account = account_owned.as_str();
                let stream = if prepared {
                    let stmt = c
                        .prepare_typed_cached(ALL.text, ALL.types)
                        .await
                        .map_err(db)?;
                    c.query_raw(&stmt, [account]).await
                } else {
                    c.query_typed_raw(ALL.text, [(account, T)]).await
                }
                .map_err(db)?;
                let mut stream = Box::pin(stream);
                let mut batch = Vec::with_capacity(STREAM_BATCH);
                while let Some(row) = stream.next().await {
                    batch.push(row.map_err(db)?);
                    if batch.len() == STREAM_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(STREAM_BATCH));
                        if tx.send(Ok(full)).await.is_err() {
                            return Ok(()); // the walk stopped (its decode failed)
                        }
                    }
                }
                let _ = tx.send(Ok(batch)).await;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = read.await {
                let _ = tx.send(Err(e)).await;
            }
        };
        self.runtime
            .as_ref()
            .expect("runtime lives as long as the store")
            .spawn(reader);
        while let Some(batch) = self.block(rx.recv()) {
            for row in batch? {
                let openid: &str = row.get(0);
                let value: &[u8] = row.get(1);
                if let Some(f) = decode_record(&key(account, openid), value)?.follower {
                    visit(f);
                }
            }
        }
        self.timings
            .with_label_values(&["followers_walk"])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Visits up to `limit` followers of an account with an openid above `after`, in
    /// openid order, [`WALK_PAGE`] rows a round trip.
    fn walk(
        &self,
        account: &str,
        after: &str,
        limit: usize,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        let (mut cursor, mut left) = (after.to_string(), limit);
        while left > 0 {
            let want = left.min(WALK_PAGE);
            let rows = self.timed(
                "followers_page",
                self.query(&PAGE, &[&account, &cursor, &int8(want as u64)]),
            )?;
            let n = rows.len();
            for row in rows {
                let openid: String = row.get(0);
                let value: Vec<u8> = row.get(1);
                if let Some(f) = decode_record(&key(account, &openid), &value)?.follower {
                    visit(f);
                    left -= 1;
                }
                cursor = openid;
            }
            if n < want {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn pg_append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO audit (at, entry) VALUES ($1, $2)",
            types: &[Type::INT8, Type::JSONB],
        };
        self.timed("audit", self.query(&SQL, &[&entry.at, &to_json(entry)]))
            .map(drop)
    }

    pub(super) fn pg_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT id, entry FROM audit ORDER BY at DESC, id DESC LIMIT $1",
            types: &[Type::INT8],
        };
        let rows = self.timed("audit", self.query(&SQL, &[&int8(limit as u64)]))?;
        rows.into_iter()
            .map(|r| from_json("audit", &r.get::<_, i64>(0).to_string(), r.get(1)))
            .collect()
    }

    pub(super) fn pg_token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT token FROM tokens WHERE account = $1",
            types: &[T],
        };
        let rows = self.timed("token", self.query(&SQL, &[&account]))?;
        rows.into_iter()
            .next()
            .map(|r| from_json("tokens", account, r.get(0)))
            .transpose()
    }

    /// An older token (one that expires sooner) never replaces a newer one: two instances
    /// that both refreshed keep the token WeChat issued last.
    pub(super) fn pg_put_token(
        &self,
        account: &str,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO tokens (account, token, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (account) DO UPDATE SET token = excluded.token, \
                   expires_at = excluded.expires_at WHERE tokens.expires_at <= excluded.expires_at",
            types: &[T, Type::JSONB, Type::INT8],
        };
        let value = serde_json::json!({
            "access_token": token.access_token.expose(),
            "expires_at": token.expires_at,
        });
        self.timed(
            "token",
            self.query(&SQL, &[&account, &value, &token.expires_at]),
        )
        .map(drop)
    }

    pub(super) fn pg_tag_id(&self, account: &str, tag: &str) -> Result<Option<i64>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT id FROM tag_ids WHERE account = $1 AND tag = $2",
            types: &[T, T],
        };
        let rows = self.timed("tag_id", self.query(&SQL, &[&account, &tag]))?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    pub(super) fn pg_put_tag_id(
        &self,
        account: &str,
        tag: &str,
        id: i64,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO tag_ids (account, tag, id) VALUES ($1, $2, $3) \
                   ON CONFLICT (account, tag) DO UPDATE SET id = excluded.id",
            types: &[T, T, Type::INT8],
        };
        self.timed("tag_id", self.query(&SQL, &[&account, &tag, &id]))
            .map(drop)
    }

    /// Takes or renews the lease `name` for `owner` until `now_ms + ttl_ms`; false while
    /// another owner holds it.
    pub(super) fn pg_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO leases (name, owner, until_ms) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
                   WHERE leases.owner = excluded.owner OR leases.until_ms < $4 RETURNING owner",
            types: &[T, T, Type::INT8, Type::INT8],
        };
        let until = now_ms.saturating_add(ttl_ms);
        let rows = self.timed("lease", self.query(&SQL, &[&name, &owner, &until, &now_ms]))?;
        Ok(!rows.is_empty())
    }

    pub(super) fn pg_release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "DELETE FROM leases WHERE name = $1 AND owner = $2",
            types: &[T, T],
        };
        self.timed("lease", self.query(&SQL, &[&name, &owner]))
            .map(drop)
    }
}
