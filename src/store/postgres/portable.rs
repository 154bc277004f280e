//! `siyu store copy` on PostgreSQL: each table read in primary-key order, a page at a
//! time; a cursor is the last row's key, as JSON. A page is written in one transaction.

use tokio_postgres::types::{ToSql, Type};

use super::{db, from_json, int8, to_json, PgStore, Sql};
use crate::store::portable::{Page, Portable, Row, Table};
use crate::store::{settled, StoreError};

/// One part of a row's key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Key {
    Int(i64),
    Text(String),
}

type Param = Box<dyn ToSql + Sync + Send>;

/// A table's page query (its key columns compared with the cursor's, `$1…$n`, and the
/// limit last), its count, and its key's types.
struct Spec {
    select: &'static str,
    count: &'static str,
    keys: &'static [Type],
}

const T: Type = Type::TEXT;
const I: Type = Type::INT8;

fn spec(table: Table) -> Spec {
    let (select, count, keys): (&str, &str, &[Type]) = match table {
        Table::Followers => (
            "SELECT account, openid, record FROM followers WHERE (account, openid) > ($1, $2) \
             AND record <> '' ORDER BY account, openid LIMIT $3",
            "SELECT count(*) FROM followers WHERE record <> ''",
            &[T, T],
        ),
        Table::Audit => (
            "SELECT id, entry FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
            "SELECT count(*) FROM audit",
            &[I],
        ),
        Table::Tokens => (
            "SELECT account, token FROM tokens WHERE account > $1 ORDER BY account LIMIT $2",
            "SELECT count(*) FROM tokens",
            &[T],
        ),
        Table::TagIds => (
            "SELECT account, tag, id FROM tag_ids WHERE (account, tag) > ($1, $2) \
             ORDER BY account, tag LIMIT $3",
            "SELECT count(*) FROM tag_ids",
            &[T, T],
        ),
        Table::Outbox => (
            "SELECT id, item FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
            "SELECT count(*) FROM outbox",
            &[I],
        ),
        Table::DeadLetters => (
            "SELECT id, dead FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
            "SELECT count(*) FROM dead_letters",
            &[I],
        ),
        Table::CouponBatches => (
            "SELECT batch, issued, redeemed FROM coupon_batches WHERE batch > $1 \
             ORDER BY batch LIMIT $2",
            "SELECT count(*) FROM coupon_batches",
            &[T],
        ),
        Table::Coupons => (
            "SELECT code, coupon FROM coupons WHERE code > $1 ORDER BY code LIMIT $2",
            "SELECT count(*) FROM coupons",
            &[T],
        ),
        Table::CouponHolders => (
            "SELECT batch, account, openid, held FROM coupon_holders \
             WHERE (batch, account, openid) > ($1, $2, $3) ORDER BY batch, account, openid LIMIT $4",
            "SELECT count(*) FROM coupon_holders",
            &[T, T, T],
        ),
        Table::CouponRequests => (
            "SELECT account, openid, batch, request, code FROM coupon_requests \
             WHERE (account, openid, batch, request) > ($1, $2, $3, $4) \
             ORDER BY account, openid, batch, request LIMIT $5",
            "SELECT count(*) FROM coupon_requests",
            &[T, T, T, T],
        ),
        Table::Campaigns => (
            "SELECT name, run FROM campaigns WHERE name > $1 ORDER BY name LIMIT $2",
            "SELECT count(*) FROM campaigns",
            &[T],
        ),
        Table::CampaignProgress => (
            "SELECT campaign, openid, progress FROM campaign_progress \
             WHERE (campaign, openid) > ($1, $2) ORDER BY campaign, openid LIMIT $3",
            "SELECT count(*) FROM campaign_progress",
            &[T, T],
        ),
        Table::CampaignMsgids => (
            "SELECT account, msgid, campaign, openid FROM campaign_msgids \
             WHERE (account, msgid) > ($1, $2) ORDER BY account, msgid LIMIT $3",
            "SELECT count(*) FROM campaign_msgids",
            &[T, I],
        ),
        Table::CampaignJobs => (
            "SELECT campaign, msg_id, job FROM campaign_jobs \
             WHERE (campaign, msg_id) > ($1, $2) ORDER BY campaign, msg_id LIMIT $3",
            "SELECT count(*) FROM campaign_jobs",
            &[T, I],
        ),
        Table::SyncRuns => (
            "SELECT account, run FROM sync_runs WHERE account > $1 ORDER BY account LIMIT $2",
            "SELECT count(*) FROM sync_runs",
            &[T],
        ),
        Table::IngestEvents => (
            "SELECT account, event_id, openid FROM ingest_events \
             WHERE (account, event_id) > ($1, $2) ORDER BY account, event_id LIMIT $3",
            "SELECT count(*) FROM ingest_events",
            &[T, T],
        ),
        Table::IngestKept => (
            "SELECT account, event_id, unionid, event, kept_at FROM ingest_kept \
             WHERE (account, event_id) > ($1, $2) ORDER BY account, event_id LIMIT $3",
            "SELECT count(*) FROM ingest_kept",
            &[T, T],
        ),
        Table::ChannelCodes => (
            "SELECT account, channel, queued_at, code, last_error FROM channel_codes \
             WHERE (account, channel) > ($1, $2) ORDER BY account, channel LIMIT $3",
            "SELECT count(*) FROM channel_codes",
            &[T, T],
        ),
        Table::ReportCounts => (
            "SELECT account, day, channel, metric, sum(n)::bigint FROM report_counts \
             WHERE (account, day, channel, metric) > ($1, $2, $3, $4) \
             GROUP BY account, day, channel, metric \
             ORDER BY account, day, channel, metric LIMIT $5",
            "SELECT count(*) FROM (SELECT 1 FROM report_counts \
             GROUP BY account, day, channel, metric) AS cells",
            &[T, I, T, T],
        ),
        Table::ReportFacts => (
            "SELECT id, account, counts FROM report_facts WHERE id > $1 ORDER BY id LIMIT $2",
            "SELECT count(*) FROM report_facts",
            &[I],
        ),
        Table::People => (
            "SELECT unionid, account, openid FROM people \
             WHERE (unionid, account, openid) > ($1, $2, $3) \
             ORDER BY unionid, account, openid LIMIT $4",
            "SELECT count(*) FROM people",
            &[T, T, T],
        ),
    };
    Spec {
        select,
        count,
        keys,
    }
}

/// A row read, and its key (the cursor after it).
fn decode(table: Table, r: &tokio_postgres::Row) -> Result<(Row, Vec<Key>), StoreError> {
    let name = table.name();
    let text = |i: usize| r.get::<_, String>(i);
    Ok(match table {
        Table::Followers => (
            Row::Follower {
                account: text(0),
                openid: text(1),
                record: r.get(2),
            },
            vec![Key::Text(text(0)), Key::Text(text(1))],
        ),
        Table::Audit => {
            let id: i64 = r.get(0);
            (
                Row::Audit {
                    id: id as u64,
                    entry: from_json(name, &id.to_string(), r.get(1))?,
                },
                vec![Key::Int(id)],
            )
        }
        Table::Tokens => (
            Row::Token {
                account: text(0),
                token: from_json(name, &text(0), r.get(1))?,
            },
            vec![Key::Text(text(0))],
        ),
        Table::TagIds => (
            Row::TagId {
                account: text(0),
                tag: text(1),
                id: r.get(2),
            },
            vec![Key::Text(text(0)), Key::Text(text(1))],
        ),
        Table::Outbox => {
            let id: i64 = r.get(0);
            let mut item: crate::outbox::OutboxItem = from_json(name, &id.to_string(), r.get(1))?;
            item.id = id as u64;
            (Row::Outbox(item), vec![Key::Int(id)])
        }
        Table::DeadLetters => {
            let id: i64 = r.get(0);
            let mut dead: crate::outbox::DeadItem = from_json(name, &id.to_string(), r.get(1))?;
            dead.item.id = id as u64;
            (Row::Dead(dead), vec![Key::Int(id)])
        }
        Table::CouponBatches => (
            Row::CouponBatch {
                batch: text(0),
                state: crate::coupon::BatchState {
                    issued: r.get::<_, i64>(1).max(0) as u64,
                    redeemed: r.get::<_, i64>(2).max(0) as u64,
                },
            },
            vec![Key::Text(text(0))],
        ),
        Table::Coupons => (
            Row::Coupon(from_json(name, &text(0), r.get(1))?),
            vec![Key::Text(text(0))],
        ),
        Table::CouponHolders => (
            Row::CouponHolder {
                batch: text(0),
                account: text(1),
                openid: text(2),
                held: r.get::<_, i32>(3).max(0) as u32,
            },
            vec![Key::Text(text(0)), Key::Text(text(1)), Key::Text(text(2))],
        ),
        Table::CouponRequests => (
            Row::CouponRequest {
                account: text(0),
                openid: text(1),
                batch: text(2),
                request: text(3),
                code: text(4),
            },
            (0..4).map(|i| Key::Text(text(i))).collect(),
        ),
        Table::Campaigns => (
            Row::Campaign(Box::new(from_json(name, &text(0), r.get(1))?)),
            vec![Key::Text(text(0))],
        ),
        Table::CampaignProgress => (
            Row::Progress {
                campaign: text(0),
                openid: text(1),
                progress: from_json(name, &text(1), r.get(2))?,
            },
            vec![Key::Text(text(0)), Key::Text(text(1))],
        ),
        Table::CampaignMsgids => (
            Row::Msgid {
                account: text(0),
                msgid: r.get(1),
                campaign: text(2),
                openid: text(3),
            },
            vec![Key::Text(text(0)), Key::Int(r.get(1))],
        ),
        Table::CampaignJobs => (
            Row::Job {
                campaign: text(0),
                job: from_json(name, &text(0), r.get(2))?,
            },
            vec![Key::Text(text(0)), Key::Int(r.get(1))],
        ),
        Table::SyncRuns => (
            Row::SyncRun(from_json(name, &text(0), r.get(1))?),
            vec![Key::Text(text(0))],
        ),
        Table::IngestEvents => (
            Row::IngestEvent {
                account: text(0),
                event_id: text(1),
                openid: text(2),
            },
            vec![Key::Text(text(0)), Key::Text(text(1))],
        ),
        Table::IngestKept => (
            Row::Kept {
                account: text(0),
                event: crate::store::KeptEvent {
                    id: text(1),
                    unionid: text(2),
                    event: from_json(name, &text(1), r.get(3))?,
                    kept_at: r.get(4),
                },
            },
            vec![Key::Text(text(0)), Key::Text(text(1))],
        ),
        Table::ChannelCodes => {
            let code = super::channel_codes::entry(r)?;
            let k = vec![Key::Text(text(0)), Key::Text(text(1))];
            (Row::ChannelCode(code), k)
        }
        Table::ReportCounts => {
            let day: i64 = r.get(1);
            (
                Row::ReportCount {
                    account: text(0),
                    count: crate::report::Count {
                        day,
                        channel: text(2),
                        metric: text(3),
                        n: r.get(4),
                    },
                },
                vec![
                    Key::Text(text(0)),
                    Key::Int(day),
                    Key::Text(text(2)),
                    Key::Text(text(3)),
                ],
            )
        }
        Table::ReportFacts => {
            let id: i64 = r.get(0);
            (
                Row::ReportFact {
                    id: id as u64,
                    account: text(1),
                    counts: from_json(name, &id.to_string(), r.get(2))?,
                },
                vec![Key::Int(id)],
            )
        }
        Table::People => (
            Row::Person {
                unionid: text(0),
                account: text(1),
                openid: text(2),
            },
            vec![Key::Text(text(0)), Key::Text(text(1)), Key::Text(text(2))],
        ),
    })
}

/// The upsert writing one row, and its parameters.
fn upsert(row: &Row) -> (&'static Sql, Vec<Param>) {
    macro_rules! sql {
        ($text:expr, [$($t:expr),*]) => {{
            static S: Sql = Sql { text: $text, types: &[$($t),*] };
            &S
        }};
    }
    let s = |v: &str| -> Param { Box::new(v.to_string()) };
    match row {
        Row::Follower {
            account,
            openid,
            record,
        } => (
            sql!(
                "INSERT INTO followers (account, openid, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, openid) DO UPDATE SET record = excluded.record",
                [T, T, Type::BYTEA]
            ),
            vec![s(account), s(openid), Box::new(record.clone())],
        ),
        Row::Audit { id, entry } => (
            sql!(
                "INSERT INTO audit (id, at, entry) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, entry = excluded.entry",
                [I, I, Type::JSONB]
            ),
            vec![
                Box::new(int8(*id)),
                Box::new(entry.at),
                Box::new(to_json(entry)),
            ],
        ),
        Row::Token { account, token } => (
            sql!(
                "INSERT INTO tokens (account, token, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account) DO UPDATE SET token = excluded.token, \
                 expires_at = excluded.expires_at",
                [T, Type::JSONB, I]
            ),
            vec![
                s(account),
                Box::new(to_json(token)),
                Box::new(token.expires_at),
            ],
        ),
        Row::TagId { account, tag, id } => (
            sql!(
                "INSERT INTO tag_ids (account, tag, id) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, tag) DO UPDATE SET id = excluded.id",
                [T, T, I]
            ),
            vec![s(account), s(tag), Box::new(*id)],
        ),
        Row::Outbox(item) => (
            sql!(
                "INSERT INTO outbox (id, account, item) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET account = excluded.account, item = excluded.item, \
                 lease_owner = NULL, lease_until_ms = NULL",
                [I, T, Type::JSONB]
            ),
            vec![
                Box::new(int8(item.id)),
                s(&item.account),
                Box::new(to_json(item)),
            ],
        ),
        Row::Dead(dead) => (
            sql!(
                "INSERT INTO dead_letters (id, dead) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET dead = excluded.dead",
                [I, Type::JSONB]
            ),
            vec![Box::new(int8(dead.item.id)), Box::new(to_json(dead))],
        ),
        Row::CouponBatch { batch, state } => (
            sql!(
                "INSERT INTO coupon_batches (batch, issued, redeemed) VALUES ($1, $2, $3) \
                 ON CONFLICT (batch) DO UPDATE SET issued = excluded.issued, \
                 redeemed = excluded.redeemed",
                [T, I, I]
            ),
            vec![
                s(batch),
                Box::new(int8(state.issued)),
                Box::new(int8(state.redeemed)),
            ],
        ),
        Row::Coupon(c) => (
            sql!(
                "INSERT INTO coupons (code, batch, coupon, expires_at, redeemed_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO UPDATE SET \
                 batch = excluded.batch, coupon = excluded.coupon, \
                 expires_at = excluded.expires_at, redeemed_at = excluded.redeemed_at",
                [T, T, Type::JSONB, I, I]
            ),
            vec![
                s(&c.code),
                s(&c.batch),
                Box::new(to_json(c)),
                Box::new(c.expires_at),
                Box::new(c.redeemed_at),
            ],
        ),
        Row::CouponHolder {
            batch,
            account,
            openid,
            held,
        } => (
            sql!(
                "INSERT INTO coupon_holders (batch, account, openid, held) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (batch, account, openid) DO UPDATE SET held = excluded.held",
                [T, T, T, Type::INT4]
            ),
            vec![
                s(batch),
                s(account),
                s(openid),
                Box::new(i32::try_from(*held).unwrap_or(i32::MAX)),
            ],
        ),
        Row::CouponRequest {
            account,
            openid,
            batch,
            request,
            code,
        } => (
            sql!(
                "INSERT INTO coupon_requests (account, openid, batch, request, code) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, openid, batch, request) \
                 DO UPDATE SET code = excluded.code",
                [T, T, T, T, T]
            ),
            vec![s(account), s(openid), s(batch), s(request), s(code)],
        ),
        Row::Campaign(run) => (
            sql!(
                "INSERT INTO campaigns (name, run) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET run = excluded.run",
                [T, Type::JSONB]
            ),
            vec![s(&run.campaign.name), Box::new(to_json(run))],
        ),
        Row::Progress {
            campaign,
            openid,
            progress,
        } => (
            sql!(
                "INSERT INTO campaign_progress (campaign, openid, progress, pending) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (campaign, openid) DO UPDATE SET \
                 progress = excluded.progress, pending = excluded.pending",
                [T, T, Type::JSONB, Type::BOOL]
            ),
            vec![
                s(campaign),
                s(openid),
                Box::new(to_json(progress)),
                Box::new(!settled(progress)),
            ],
        ),
        Row::Msgid {
            account,
            msgid,
            campaign,
            openid,
        } => (
            sql!(
                "INSERT INTO campaign_msgids (account, msgid, campaign, openid) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account, msgid) DO UPDATE SET \
                 campaign = excluded.campaign, openid = excluded.openid",
                [T, I, T, T]
            ),
            vec![s(account), Box::new(*msgid), s(campaign), s(openid)],
        ),
        Row::Job { campaign, job } => (
            sql!(
                "INSERT INTO campaign_jobs (campaign, msg_id, job) VALUES ($1, $2, $3) \
                 ON CONFLICT (campaign, msg_id) DO UPDATE SET job = excluded.job",
                [T, I, Type::JSONB]
            ),
            vec![s(campaign), Box::new(job.msg_id), Box::new(to_json(job))],
        ),
        Row::SyncRun(run) => (
            sql!(
                "INSERT INTO sync_runs (account, run) VALUES ($1, $2) \
                 ON CONFLICT (account) DO UPDATE SET run = excluded.run",
                [T, Type::JSONB]
            ),
            vec![s(&run.account), Box::new(to_json(run))],
        ),
        Row::IngestEvent {
            account,
            event_id,
            openid,
        } => (
            sql!(
                "INSERT INTO ingest_events (account, event_id, openid) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                [T, T, T]
            ),
            vec![s(account), s(event_id), s(openid)],
        ),
        Row::Kept { account, event } => (
            sql!(
                "INSERT INTO ingest_kept (account, event_id, unionid, event, kept_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, event_id) DO UPDATE SET \
                 unionid = excluded.unionid, event = excluded.event, kept_at = excluded.kept_at",
                [T, T, T, Type::JSONB, I]
            ),
            vec![
                s(account),
                s(&event.id),
                s(&event.unionid),
                Box::new(to_json(&event.event)),
                Box::new(event.kept_at),
            ],
        ),
        Row::ChannelCode(code) => (
            sql!(
                "INSERT INTO channel_codes (account, channel, queued_at, code, last_error) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, channel) DO UPDATE SET \
                 queued_at = excluded.queued_at, code = excluded.code, \
                 last_error = excluded.last_error",
                [T, T, I, Type::JSONB, T]
            ),
            vec![
                s(&code.account),
                s(&code.channel),
                Box::new(code.queued_at),
                Box::new(code.issued.as_ref().map(to_json)),
                Box::new(code.last_error.clone()),
            ],
        ),
        // The whole counter in shard 0, the others emptied: writing it twice leaves it.
        Row::ReportCount { account, count } => (
            sql!(
                "WITH others AS (DELETE FROM report_counts WHERE account = $1 AND day = $2 \
                   AND channel = $3 AND metric = $4 AND shard <> 0) \
                 INSERT INTO report_counts (account, day, channel, metric, shard, n) \
                 VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (account, day, channel, metric, shard) \
                 DO UPDATE SET n = excluded.n",
                [T, I, T, T, I]
            ),
            vec![
                s(account),
                Box::new(count.day),
                s(&count.channel),
                s(&count.metric),
                Box::new(count.n),
            ],
        ),
        // With its id; the serial moved past it, so later facts never take it.
        Row::ReportFact {
            account,
            id,
            counts,
        } => (
            sql!(
                "WITH fact AS (INSERT INTO report_facts (id, account, counts) VALUES ($1, $2, $3) \
                   ON CONFLICT (id) DO NOTHING) \
                 SELECT setval(pg_get_serial_sequence('report_facts', 'id'), \
                   GREATEST($1, (SELECT last_value FROM report_facts_id_seq)))",
                [I, T, Type::JSONB]
            ),
            vec![Box::new(int8(*id)), s(account), Box::new(to_json(counts))],
        ),
        Row::Person {
            unionid,
            account,
            openid,
        } => (
            sql!(
                "INSERT INTO people (unionid, account, openid) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                [T, T, T]
            ),
            vec![s(unionid), s(account), s(openid)],
        ),
    }
}

/// Moves the id sequences past every id copied in (never back).
const RAISE_SEQUENCES: &str = "\
    SELECT setval('audit_id_seq', greatest((SELECT max(id) FROM audit), \
        (SELECT last_value FROM audit_id_seq))); \
    SELECT setval('outbox_id_seq', greatest((SELECT max(id) FROM outbox), \
        (SELECT max(id) FROM dead_letters), (SELECT last_value FROM outbox_id_seq)));";

impl Portable for PgStore {
    fn export_page(
        &self,
        table: Table,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let spec = spec(table);
        let after: Vec<Key> = match cursor {
            Some(c) => serde_json::from_str(c)
                .map_err(|_| StoreError::Backend(format!("bad copy cursor {c:?}")))?,
            // Below every key: ids start at 1, and '' sorts first.
            None => spec
                .keys
                .iter()
                .map(|t| {
                    if *t == I {
                        Key::Int(i64::MIN)
                    } else {
                        Key::Text(String::new())
                    }
                })
                .collect(),
        };
        let mut params: Vec<Param> = after
            .into_iter()
            .map(|k| -> Param {
                match k {
                    Key::Int(i) => Box::new(i),
                    Key::Text(s) => Box::new(s),
                }
            })
            .collect();
        params.push(Box::new(int8(limit as u64)));
        let mut types = spec.keys.to_vec();
        types.push(I);
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .zip(types)
            .map(|(p, t)| (p.as_ref() as &(dyn ToSql + Sync), t))
            .collect();
        let rows = self.timed("copy_export", async {
            let c = self.conn().await?;
            c.query_typed(spec.select, &typed).await.map_err(db)
        })?;
        let mut page = Page::default();
        let mut last = None;
        for r in &rows {
            let (row, k) = decode(table, r)?;
            page.rows.push(row);
            last = Some(k);
        }
        if rows.len() == limit {
            page.next = last.map(|k| serde_json::to_string(&k).expect("plain data"));
        }
        Ok(page)
    }

    fn import(&self, rows: &[Row]) -> Result<(), StoreError> {
        let upserts: Vec<(&Sql, Vec<Param>)> = rows.iter().map(upsert).collect();
        let steps: Vec<(&Sql, Vec<&(dyn ToSql + Sync)>)> = upserts
            .iter()
            .map(|(sql, params)| {
                (
                    *sql,
                    params
                        .iter()
                        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                        .collect(),
                )
            })
            .collect();
        self.timed("copy_import", self.atomically(&steps))?;
        let ids = rows
            .iter()
            .any(|r| matches!(r, Row::Audit { .. } | Row::Outbox(_) | Row::Dead(_)));
        if ids {
            self.block(async {
                let c = self.conn().await?;
                c.batch_execute(RAISE_SEQUENCES).await.map_err(db)
            })?;
        }
        Ok(())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let sql = spec(table).count;
        let n: i64 = self.block(async {
            let c = self.conn().await?;
            c.query_one(sql, &[]).await.map(|r| r.get(0)).map_err(db)
        })?;
        Ok(n.max(0) as u64)
    }

    fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT value FROM store_meta WHERE name = $1",
            types: &[T],
        };
        let rows = self.block(self.query(&SQL, &[&name]))?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn put_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            text: "INSERT INTO store_meta (name, value) VALUES ($1, $2) \
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            types: &[T, T],
        };
        self.block(self.query(&SQL, &[&name, &value])).map(drop)
    }

    fn describe(&self) -> String {
        let c = self.block(self.conn());
        let db_name = c.ok().and_then(|c| {
            self.block(async {
                c.query_one("SELECT current_database() || ' on ' || coalesce(inet_server_addr()::text, 'local socket') || ' schema ' || current_schema()", &[])
                    .await
                    .ok()
                    .map(|r| r.get::<_, String>(0))
            })
        });
        format!("PostgreSQL database {}", db_name.unwrap_or_default())
    }
}
