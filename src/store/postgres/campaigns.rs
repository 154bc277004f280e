//! Campaign runs, each follower's progress, the outbox items that carry them, and the
//! message ids WeChat's job reports are matched by.

use tokio_postgres::types::Type;

use super::followers::{item_json, ENQUEUE};
use super::{db, from_json, int8, rollback, to_json, PgStore, Sql};
use crate::campaign::{CampaignRun, MassJob, Progress};
use crate::outbox::NewItem;
use crate::store::{settled, StoreError};

const T: Type = Type::TEXT;

const PUT_RUN: Sql = Sql {
    text: "INSERT INTO campaigns (name, run) VALUES ($1, $2) \
           ON CONFLICT (name) DO UPDATE SET run = excluded.run",
    types: &[T, Type::JSONB],
};

impl PgStore {
    pub(super) fn pg_campaign_run(&self, name: &str) -> Result<Option<CampaignRun>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT run FROM campaigns WHERE name = $1",
            types: &[T],
        };
        let rows = self.timed("campaign_run", self.query(&SQL, &[&name]))?;
        rows.into_iter()
            .next()
            .map(|r| from_json("campaigns", name, r.get(0)))
            .transpose()
    }

    pub(super) fn pg_campaign_runs(&self) -> Result<Vec<CampaignRun>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT name, run FROM campaigns ORDER BY name",
            types: &[],
        };
        let rows = self.timed("campaign_run", self.query(&SQL, &[]))?;
        rows.into_iter()
            .map(|r| from_json("campaigns", r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    pub(super) fn pg_put_campaign_run(&self, run: &CampaignRun) -> Result<(), StoreError> {
        self.timed(
            "campaign_run",
            self.query(&PUT_RUN, &[&run.campaign.name, &to_json(run)]),
        )
        .map(drop)
    }

    pub(super) fn pg_campaign_enqueue(
        &self,
        run: &CampaignRun,
        account: &str,
        openids: &[String],
        extra: Vec<NewItem>,
        per_follower: bool,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        // The followers without progress yet get `Queued`; the ones that had it (a chunk
        // redone after a crash) are left alone.
        const QUEUE: Sql = Sql {
            text: "INSERT INTO campaign_progress (campaign, openid, progress, pending) \
                   SELECT $1, o, $3, true FROM unnest($2::text[]) AS o \
                   ON CONFLICT (campaign, openid) DO NOTHING RETURNING openid",
            types: &[T, Type::TEXT_ARRAY, Type::JSONB],
        };
        let name = run.campaign.name.as_str();
        let extra = item_json(account, extra, now_ms);
        let queued_state = to_json(&Progress::Queued);
        let run_json = to_json(run);
        self.timed("campaign_enqueue", async {
            let c = self.conn().await?;
            let queue = self.ready(&c, &QUEUE).await?;
            let enqueue = self.ready(&c, &ENQUEUE).await?;
            let put = self.ready(&c, &PUT_RUN).await?;
            let body = async {
                c.batch_execute("BEGIN").await.map_err(db)?;
                let mut fresh: Vec<String> =
                    PgStore::run(&c, &queue, &[&name, &openids, &queued_state])
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                fresh.sort_unstable();
                let mut items = extra;
                if per_follower {
                    items.extend(item_json(
                        account,
                        fresh
                            .iter()
                            .map(|o| crate::campaign::runner::outbox_item(name, o))
                            .collect(),
                        now_ms,
                    ));
                }
                let (queued, _, commit) = futures_util::future::join3(
                    async {
                        if items.is_empty() {
                            Ok(Vec::new())
                        } else {
                            PgStore::run(&c, &enqueue, &[&account, &items]).await
                        }
                    },
                    PgStore::run(&c, &put, &[&name, &run_json]),
                    c.batch_execute("COMMIT"),
                )
                .await;
                queued?;
                commit.map_err(db)?;
                Ok::<_, StoreError>(fresh.len() as u64)
            };
            let result = body.await;
            if result.is_err() {
                rollback(&c).await;
            }
            result
        })
    }

    pub(super) fn pg_campaign_progress(
        &self,
        campaign: &str,
        openid: &str,
    ) -> Result<Option<Progress>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT progress FROM campaign_progress WHERE campaign = $1 AND openid = $2",
            types: &[T, T],
        };
        let rows = self.timed("campaign_progress", self.query(&SQL, &[&campaign, &openid]))?;
        rows.into_iter()
            .next()
            .map(|r| from_json("campaign_progress", openid, r.get(0)))
            .transpose()
    }

    pub(super) fn pg_campaign_send_state(
        &self,
        campaign: &str,
        account: &str,
        openid: &str,
    ) -> Result<crate::store::CampaignSendState, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT (SELECT run FROM campaigns WHERE name = $1), \
                   (SELECT progress FROM campaign_progress WHERE campaign = $1 AND openid = $3), \
                   (SELECT record FROM followers WHERE account = $2 AND openid = $3)",
            types: &[T, T, T],
        };
        let rows = self.timed(
            "campaign_send_state",
            self.query(&SQL, &[&campaign, &account, &openid]),
        )?;
        let Some(row) = rows.first() else {
            return Ok((None, None, None));
        };
        let run: Option<serde_json::Value> = row.get(0);
        let progress: Option<serde_json::Value> = row.get(1);
        let record: Option<Vec<u8>> = row.get(2);
        let follower = match record.filter(|r| !r.is_empty()) {
            Some(v) => {
                crate::store::decode_record(&crate::store::key(account, openid), &v)?.follower
            }
            None => None,
        };
        Ok((
            run.map(|v| from_json("campaigns", campaign, v))
                .transpose()?,
            progress
                .map(|v| from_json("campaign_progress", openid, v))
                .transpose()?,
            follower,
        ))
    }

    pub(super) fn pg_campaign_record_many(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, Progress)],
        done_item: Option<u64>,
        job: Option<&MassJob>,
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        const PROGRESS: Sql = Sql {
            text: "INSERT INTO campaign_progress (campaign, openid, progress, pending) \
                   SELECT $1, o, p, w FROM unnest($2::text[], $3::jsonb[], $4::bool[]) AS r(o, p, w) \
                   ON CONFLICT (campaign, openid) DO UPDATE \
                   SET progress = excluded.progress, pending = excluded.pending",
            types: &[T, Type::TEXT_ARRAY, Type::JSONB_ARRAY, Type::BOOL_ARRAY],
        };
        const MSGIDS: Sql = Sql {
            text: "INSERT INTO campaign_msgids (account, msgid, campaign, openid) \
                   SELECT $1, m, $2, o FROM unnest($3::int8[], $4::text[]) AS r(m, o) \
                   ON CONFLICT (account, msgid) DO UPDATE \
                   SET campaign = excluded.campaign, openid = excluded.openid",
            types: &[T, T, Type::INT8_ARRAY, Type::TEXT_ARRAY],
        };
        const DONE: Sql = Sql {
            text: "DELETE FROM outbox WHERE id = $1",
            types: &[Type::INT8],
        };
        const JOB: Sql = Sql {
            text: "INSERT INTO campaign_jobs (campaign, msg_id, job) VALUES ($1, $2, $3) \
                   ON CONFLICT (campaign, msg_id) DO UPDATE SET job = excluded.job",
            types: &[T, Type::INT8, Type::JSONB],
        };
        let openids: Vec<&str> = records.iter().map(|(o, _)| o.as_str()).collect();
        let progress: Vec<serde_json::Value> = records.iter().map(|(_, p)| to_json(p)).collect();
        let pending: Vec<bool> = records.iter().map(|(_, p)| !settled(p)).collect();
        let (mut msgids, mut msg_openids): (Vec<i64>, Vec<&str>) = records
            .iter()
            .filter_map(|(o, p)| match p {
                Progress::Sent {
                    msgid: Some(m),
                    channel,
                    ..
                } if *channel != crate::campaign::Channel::Mass => Some((*m, o.as_str())),
                _ => None,
            })
            .unzip();
        if let Some(j) = job {
            msgids.push(j.msg_id);
            msg_openids.push("");
        }
        let done = done_item.map(int8);
        let job_json = job.map(to_json);
        let job_id = job.map(|j| j.msg_id);
        let mut steps: Vec<(&Sql, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>)> = Vec::new();
        if !records.is_empty() {
            steps.push((&PROGRESS, vec![&campaign, &openids, &progress, &pending]));
        }
        if !msgids.is_empty() {
            steps.push((&MSGIDS, vec![&account, &campaign, &msgids, &msg_openids]));
        }
        if let Some(id) = &done {
            steps.push((&DONE, vec![id]));
        }
        if let (Some(id), Some(j)) = (&job_id, &job_json) {
            steps.push((&JOB, vec![&campaign, id, j]));
        }
        // The sends it settles, counted in the same transaction (shard 0: one write per
        // outbox item, not per callback).
        let counts = crate::report::merge(counts.to_vec());
        let super::reports::Columns {
            days,
            channels,
            metrics,
            ns,
        } = super::reports::Columns::of(&counts);
        let fact = to_json(&counts);
        let shard = 0_i16;
        if !counts.is_empty() {
            steps.push((
                &super::reports::COUNT,
                vec![&account, &shard, &days, &channels, &metrics, &ns],
            ));
            steps.push((&super::reports::FACT, vec![&account, &fact]));
        }
        if steps.is_empty() {
            return Ok(());
        }
        self.timed("campaign_record", self.atomically(&steps))
            .map(drop)
    }

    pub(super) fn pg_put_campaign_job(
        &self,
        campaign: &str,
        job: &MassJob,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO campaign_jobs (campaign, msg_id, job) VALUES ($1, $2, $3) \
                   ON CONFLICT (campaign, msg_id) DO UPDATE SET job = excluded.job",
            types: &[T, Type::INT8, Type::JSONB],
        };
        self.timed(
            "campaign_job",
            self.query(&SQL, &[&campaign, &job.msg_id, &to_json(job)]),
        )
        .map(drop)
    }

    pub(super) fn pg_campaign_jobs(&self, campaign: &str) -> Result<Vec<MassJob>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT job FROM campaign_jobs WHERE campaign = $1 ORDER BY msg_id",
            types: &[T],
        };
        let rows = self.timed("campaign_job", self.query(&SQL, &[&campaign]))?;
        rows.into_iter()
            .map(|r| from_json("campaign_jobs", campaign, r.get(0)))
            .collect()
    }

    pub(super) fn pg_campaign_progress_page(
        &self,
        campaign: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Progress)>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT openid, progress FROM campaign_progress WHERE campaign = $1 \
                   AND openid > $2 ORDER BY openid LIMIT $3",
            types: &[T, T, Type::INT8],
        };
        let after = after.unwrap_or("");
        let rows = self.timed(
            "campaign_progress",
            self.query(&SQL, &[&campaign, &after, &int8(limit as u64)]),
        )?;
        rows.into_iter()
            .map(|r| {
                let openid: String = r.get(0);
                let p = from_json("campaign_progress", &openid, r.get(1))?;
                Ok((openid, p))
            })
            .collect()
    }

    pub(super) fn pg_campaign_pending(&self, campaign: &str) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT count(*) FROM campaign_progress WHERE campaign = $1 AND pending",
            types: &[T],
        };
        let rows = self.timed("campaign_progress", self.query(&SQL, &[&campaign]))?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    pub(super) fn pg_campaign_by_msgid(
        &self,
        account: &str,
        msgid: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT campaign, openid FROM campaign_msgids WHERE account = $1 AND msgid = $2",
            types: &[T, Type::INT8],
        };
        let rows = self.timed("campaign_msgid", self.query(&SQL, &[&account, &msgid]))?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }
}
