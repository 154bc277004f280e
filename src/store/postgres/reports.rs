//! Report counters on PostgreSQL: upserted in the transaction of the commit that counts
//! them (migration 0007). A counter is spread over [`SHARDS`] rows by the follower's
//! openid: a row's lock is held until its transaction commits, and one row per counter
//! would line every callback of the day up behind one lock. Rows are upserted in key
//! order, so two transactions never take the same rows in opposite orders.

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::{db, PgStore, Ready, Sql};
use crate::report::{Count, Tally};
use crate::store::StoreError;

pub(super) const SHARDS: i16 = 16;

const T: Type = Type::TEXT;

pub(super) const COUNT: Sql = Sql {
    text: "INSERT INTO report_counts (account, day, channel, metric, shard, n) \
           SELECT $1, u.day, u.channel, u.metric, $2, u.n \
           FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS u(day, channel, metric, n) \
           ORDER BY u.day, u.channel, u.metric \
           ON CONFLICT (account, day, channel, metric, shard) \
           DO UPDATE SET n = report_counts.n + excluded.n",
    types: &[T, Type::INT2, Type::INT8_ARRAY, Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::INT8_ARRAY],
};
pub(super) const FACT: Sql = Sql {
    text: "INSERT INTO report_facts (account, counts) VALUES ($1, $2)",
    types: &[T, Type::JSONB],
};
const READ: Sql = Sql {
    text: "SELECT day, channel, metric, sum(n)::bigint FROM report_counts \
           WHERE account = $1 AND day BETWEEN $2 AND $3 GROUP BY day, channel, metric",
    types: &[T, Type::INT8, Type::INT8],
};
const FACTS: Sql = Sql {
    text:
        "SELECT id, counts FROM report_facts WHERE account = $1 AND id > $2 ORDER BY id LIMIT 1000",
    types: &[T, Type::INT8],
};

/// Counts as the `COUNT` statement's arrays ($3 to $6).
pub(super) struct Columns<'a> {
    pub days: Vec<i64>,
    pub channels: Vec<&'a str>,
    pub metrics: Vec<&'a str>,
    pub ns: Vec<i64>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(counts: &'a [Count]) -> Columns<'a> {
        Columns {
            days: counts.iter().map(|c| c.day).collect(),
            channels: counts.iter().map(|c| c.channel.as_str()).collect(),
            metrics: counts.iter().map(|c| c.metric.as_str()).collect(),
            ns: counts.iter().map(|c| c.n).collect(),
        }
    }
}

/// The shard of a follower's counters (FNV-1a of the openid: stable across instances).
pub(super) fn shard_of(openid: &str) -> i16 {
    let hash = openid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % SHARDS as u64) as i16
}

impl PgStore {
    /// The two statements that add counts and keep them as a fact, prepared before the
    /// pipeline that runs them: a statement still being prepared when COMMIT is sent
    /// would run after it.
    pub(super) async fn ready_counts<'s>(
        &'s self,
        c: &Object,
    ) -> Result<(Ready<'s>, Ready<'s>), StoreError> {
        Ok((self.ready(c, &COUNT).await?, self.ready(c, &FACT).await?))
    }

    /// Adds `counts` (merged) and keeps them as a fact, inside the caller's transaction on
    /// `c`; both statements are sent on the first poll, so this pipelines with the
    /// caller's others.
    pub(super) async fn write_counts(
        c: &Object,
        ready: &(Ready<'_>, Ready<'_>),
        account: &str,
        openid: &str,
        counts: &[Count],
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        // One per cell: an upsert may not touch one row twice in a statement.
        let counts = crate::report::merge(counts.to_vec());
        let Columns {
            days,
            channels,
            metrics,
            ns,
        } = Columns::of(&counts);
        let shard = shard_of(openid);
        let json = super::to_json(&counts);
        let (counted, kept) = futures_util::future::join(
            PgStore::run(
                c,
                &ready.0,
                &[&account, &shard, &days, &channels, &metrics, &ns],
            ),
            PgStore::run(c, &ready.1, &[&account, &json]),
        )
        .await;
        counted?;
        kept.map(drop)
    }

    pub(super) fn pg_report_counts(
        &self,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Count>, StoreError> {
        let rows = self.timed("report_counts", self.query(&READ, &[&account, &from, &to]))?;
        let mut tally = Tally::default();
        for r in rows {
            tally.add(&Count {
                day: r.get(0),
                channel: r.get(1),
                metric: r.get(2),
                n: r.get(3),
            });
        }
        Ok(tally.counts())
    }

    pub(super) fn pg_report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<Count>),
    ) -> Result<(), StoreError> {
        let mut after = 0_i64;
        loop {
            let rows = self.timed("report_facts", self.query(&FACTS, &[&account, &after]))?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.get(0);
            for r in rows {
                let id: i64 = r.get(0);
                visit(super::from_json("report_facts", &id.to_string(), r.get(1))?);
            }
        }
    }

    pub(super) fn pg_replace_report_counts(
        &self,
        account: &str,
        counts: &[Count],
    ) -> Result<(), StoreError> {
        let counts = crate::report::merge(counts.to_vec());
        self.timed("replace_report_counts", async {
            let c = self.conn().await?;
            c.batch_execute("BEGIN").await.map_err(db)?;
            let body = async {
                c.execute("DELETE FROM report_counts WHERE account = $1", &[&account])
                    .await
                    .map_err(db)?;
                let count = self.ready(&c, &COUNT).await?;
                for chunk in counts.chunks(1000) {
                    let Columns {
                        days,
                        channels,
                        metrics,
                        ns,
                    } = Columns::of(chunk);
                    PgStore::run(
                        &c,
                        &count,
                        &[&account, &0_i16, &days, &channels, &metrics, &ns],
                    )
                    .await?;
                }
                c.batch_execute("COMMIT").await.map_err(db)
            };
            let result = body.await;
            if result.is_err() {
                super::rollback(&c).await;
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_are_spread_and_stable() {
        let shards: std::collections::BTreeSet<i16> = (0..200)
            .map(|i| super::shard_of(&format!("o{i}")))
            .collect();
        assert_eq!(shards.len(), super::SHARDS as usize);
        assert_eq!(super::shard_of("oABC"), super::shard_of("oABC"));
    }
}
