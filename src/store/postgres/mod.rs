//! The PostgreSQL backend: the whole storage contract in one shared database, so that
//! several `siyu serve` instances (and every CLI command beside them) use one store.
//!
//! The [`Store`] trait is synchronous (sled is an in-process library). This backend
//! drives tokio-postgres on a small runtime of its own and waits for each step with a
//! plain blocking wait, so it can be called from any thread; the webhook calls the store
//! on actix's blocking pool, so no worker thread waits on the network.
//!
//! A callback is one transaction: the follower's row (which holds their recent dedupe keys
//! with the cached answers, as in sled) is locked, decided on, rewritten together with the
//! outbox items and coupon claims the callback causes, and committed (synchronous commit)
//! before the answer goes out. The row lock serialises deliveries of one follower across
//! instances: a retry on another instance waits for the first delivery's commit and then
//! finds its dedupe key.
//!
//! Statements are prepared once per connection and cached, unless `prepared_statements =
//! false` (PgBouncer in transaction mode cannot keep named statements): then every
//! statement goes as one unnamed parse-bind-execute with its parameter types given.
//! Independent statements of one step are pipelined (sent before the first answer comes
//! back), so a callback costs two round trips and a commit.

mod campaigns;
mod channel_codes;
mod coupons;
mod followers;
mod ingest;
mod migrate;
mod outbox;
mod portable;
mod referrals;
mod reports;
mod rules;
mod syncs;
#[doc(hidden)]
pub mod testing;

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::StoreError;
use crate::config::PostgresSettings;

pub use migrate::{migrate, MigrateReport, MIGRATIONS};

/// One SQL statement with the types of its parameters.
pub(super) struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

/// A statement ready to run on one connection: prepared, or text sent unnamed each time.
enum Ready<'s> {
    Prepared(Statement),
    Unnamed(&'s Sql),
}

/// How the pool is doing, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStatus {
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
    pub max_size: usize,
}

pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    prepared: bool,
    /// Each operation's time (cheap to clone: shared inside).
    timings: prometheus::HistogramVec,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Query latency per store operation, for `/metrics`.
fn operation_histogram() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "store_operation_seconds",
            "Time of each PostgreSQL store operation (round trips and commit included)",
        )
        .buckets(vec![
            0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
        ]),
        &["operation"],
    )
    .expect("valid histogram")
}

thread_local! {
    /// The connection of the callback transaction running on this thread, while its
    /// decision runs: a coupon claim made by the decision joins that transaction (one
    /// commit for follower, outbox and claim; and no second connection wanted while the
    /// first is held, which could exhaust the pool).
    static IN_CALLBACK: RefCell<Option<(usize, Object)>> = const { RefCell::new(None) };
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(match e.as_db_error() {
        Some(d) => format!("PostgreSQL: {} ({})", d.message(), d.code().code()),
        None => format!("PostgreSQL: {e}"),
    })
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!(
        "cannot get a PostgreSQL connection (is the database up and reachable?): {e}"
    ))
}

fn json_corrupt(table: &str, key: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: format!("{table}/{key}"),
        reason: format!("line {} column {}", e.line(), e.column()),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("plain data encodes")
}

fn from_json<T: serde::de::DeserializeOwned>(
    table: &str,
    key: &str,
    value: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| json_corrupt(table, key, e))
}

/// u64 ids and counts as PostgreSQL's bigint.
fn int8(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects (checking the database answers within the connect timeout) and brings the
    /// schema up to date: a database whose schema is newer than this binary is refused.
    pub fn open(settings: &PostgresSettings) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(settings)?;
        store.block(migrate::apply(&store))?;
        Ok(store)
    }

    /// Connects without touching the schema (`siyu migrate --status`).
    pub fn connect(settings: &PostgresSettings) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config =
            settings.url.expose().parse().map_err(|e| {
                StoreError::Backend(format!(
                    "[storage] the PostgreSQL URL is not valid: {e} (expected e.g. postgres://user@host:5432/dbname)"
                ))
            })?;
        let timeout = Duration::from_secs(settings.connect_timeout_secs);
        config.connect_timeout(timeout);
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("siyu-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the database runtime: {e}")))?;
        let pool = {
            let _in_runtime = runtime.enter();
            Pool::builder(manager)
                .max_size(settings.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(timeout))
                .create_timeout(Some(timeout))
                .build()
                .map_err(|e| StoreError::Backend(format!("cannot build the pool: {e}")))?
        };
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            prepared: settings.prepared_statements,
            timings: operation_histogram(),
        };
        // Fail at start, with the reason, rather than at the first callback.
        store.block(async { store.conn().await.map(drop) })?;
        Ok(store)
    }

    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            waiting: s.waiting,
            max_size: s.max_size,
        }
    }

    pub fn timings(&self) -> prometheus::HistogramVec {
        self.timings.clone()
    }

    /// Waits for `f` on this thread, with the store's runtime as the context of anything
    /// it spawns (connections) or sleeps on (timeouts). Never called from inside another
    /// `block`: each step of an operation is its own wait, with plain code between.
    ///
    /// Unconstrained: called from an async task (the token cache, the outbox worker), the
    /// task's cooperative budget would otherwise apply to this wait, and once it is spent
    /// every pool or timer poll says "not yet" and wakes itself: a busy loop forever.
    pub(in crate::store) fn block<F: Future>(&self, f: F) -> F::Output {
        let _in_runtime = self
            .runtime
            .as_ref()
            .expect("runtime lives as long as the store")
            .enter();
        futures_executor::block_on(tokio::task::unconstrained(f))
    }

    /// [`block`] and the operation's latency.
    fn timed<F: Future>(&self, operation: &str, f: F) -> F::Output {
        let started = Instant::now();
        let out = self.block(f);
        self.timings
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    pub(in crate::store) async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(&self.pool) as usize
    }

    /// Takes the connection of a callback transaction running on this thread, if any.
    fn take_callback_conn(&self) -> Option<Object> {
        IN_CALLBACK.with(|c| {
            let mut c = c.borrow_mut();
            match c.take() {
                Some((key, obj)) if key == self.key() => Some(obj),
                other => {
                    *c = other;
                    None
                }
            }
        })
    }

    fn lend_callback_conn(&self, obj: Object) {
        IN_CALLBACK.with(|c| *c.borrow_mut() = Some((self.key(), obj)));
    }

    async fn ready<'s>(&self, c: &Object, sql: &'s Sql) -> Result<Ready<'s>, StoreError> {
        if self.prepared {
            c.prepare_typed_cached(sql.text, sql.types)
                .await
                .map(Ready::Prepared)
                .map_err(db)
        } else {
            Ok(Ready::Unnamed(sql))
        }
    }

    /// Runs a statement made ready on `c`. The request is sent on the first poll, so
    /// futures joined together are pipelined in the order they are polled.
    async fn run(
        c: &Object,
        ready: &Ready<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        match ready {
            Ready::Prepared(stmt) => c.query(stmt, params).await.map_err(db),
            Ready::Unnamed(sql) => {
                let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                    .iter()
                    .zip(sql.types.iter())
                    .map(|(p, t)| (*p, t.clone()))
                    .collect();
                c.query_typed(sql.text, &typed).await.map_err(db)
            }
        }
    }

    /// One statement on a connection of its own (autocommit).
    async fn query(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.conn().await?;
        let ready = self.ready(&c, sql).await?;
        PgStore::run(&c, &ready, params).await
    }

    /// Several statements in one transaction, pipelined: BEGIN, each statement, COMMIT,
    /// sent together; one round trip and the commit. Returns each statement's rows.
    async fn atomically(
        &self,
        steps: &[(&Sql, Vec<&(dyn ToSql + Sync)>)],
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let c = self.conn().await?;
        let mut ready = Vec::with_capacity(steps.len());
        for (sql, _) in steps {
            ready.push(self.ready(&c, sql).await?);
        }
        let begin = c.batch_execute("BEGIN");
        let statements = futures_util::future::try_join_all(
            steps
                .iter()
                .zip(&ready)
                .map(|((_, params), r)| PgStore::run(&c, r, params)),
        );
        let commit = c.batch_execute("COMMIT");
        let result = futures_util::future::join3(begin, statements, commit).await;
        match result {
            (Ok(()), Ok(rows), Ok(())) => Ok(rows),
            (begin, rows, commit) => {
                rollback(&c).await;
                Err(begin
                    .map_err(db)
                    .and(rows.map(drop))
                    .and(commit.map_err(db))
                    .expect_err("one step failed"))
            }
        }
    }
}

/// Leaves a failed transaction (a connection in an aborted transaction must not go back to
/// the pool as it is; if even this fails, the connection is broken and the pool drops it).
async fn rollback(c: &Object) {
    let _ = c.batch_execute("ROLLBACK").await;
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A runtime may not be dropped (which blocks) inside another runtime's task, where
        // the last handle on the store may go.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl super::Store for PgStore {
    fn referral_participant(
        &self,
        programme: &str,
        id: &crate::referral::ParticipantId,
    ) -> Result<Option<super::Participant>, StoreError> {
        self.pg_referral_participant(programme, id)
    }

    fn update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &crate::referral::ParticipantId,
        change: &mut dyn FnMut(Option<super::Participant>) -> super::ParticipantChange,
    ) -> Result<Option<super::Participant>, StoreError> {
        self.pg_update_referral_participant(account, programme, id, change)
    }

    fn referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&super::InviteView) -> super::InviteChange,
    ) -> Result<super::InviteChange, StoreError> {
        self.pg_referral_write(account, programme, people, change)
    }

    fn referral_invites(
        &self,
        programme: &str,
    ) -> Result<Vec<crate::referral::InviteRecord>, StoreError> {
        self.pg_referral_invites(programme)
    }

    fn referral_rewards(&self, programme: &str) -> Result<Vec<super::RewardRecord>, StoreError> {
        self.pg_referral_rewards(programme)
    }

    fn follower(
        &self,
        account: &str,
        openid: &str,
    ) -> Result<Option<crate::follower::Follower>, StoreError> {
        self.pg_follower(account, openid)
    }

    fn apply_callback(
        &self,
        key: super::CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<crate::follower::Follower>) -> super::Commit,
    ) -> Result<super::Applied, StoreError> {
        self.pg_apply_callback(key, decide)
    }

    fn update_follower_and_queue(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut crate::follower::Follower) -> Vec<crate::outbox::NewItem>,
    ) -> Result<Option<crate::follower::Follower>, StoreError> {
        self.pg_update_follower(account, openid, change)
    }

    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(crate::follower::Follower),
    ) -> Result<(), StoreError> {
        self.pg_for_each_follower(account, visit)
    }

    fn followers_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::follower::Follower>, StoreError> {
        self.pg_followers_after(account, after, limit)
    }

    fn append_audit(&self, entry: &crate::audit::AuditEntry) -> Result<(), StoreError> {
        self.pg_append_audit(entry)
    }

    fn audit(&self, limit: usize) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        self.pg_audit(limit)
    }

    fn token(&self, account: &str) -> Result<Option<super::StoredToken>, StoreError> {
        self.pg_token(account)
    }

    fn put_token(&self, account: &str, token: &super::StoredToken) -> Result<(), StoreError> {
        self.pg_put_token(account, token)
    }

    /// Every write is committed (synchronous commit) before it returns.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn enqueue(
        &self,
        account: &str,
        items: Vec<crate::outbox::NewItem>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        self.pg_enqueue(account, items, now_ms)
    }

    fn outbox_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<crate::outbox::OutboxItem>, StoreError> {
        self.pg_outbox_page(after, limit)
    }

    fn outbox_lease(
        &self,
        ids: &[u64],
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        self.pg_outbox_lease(ids, owner, now_ms, until_ms)
    }

    fn outbox_done(&self, id: u64) -> Result<(), StoreError> {
        self.pg_outbox_done(id)
    }

    fn outbox_retry_later(&self, item: &crate::outbox::OutboxItem) -> Result<(), StoreError> {
        self.pg_outbox_retry_later(item)
    }

    fn outbox_bury(
        &self,
        item: &crate::outbox::OutboxItem,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.pg_outbox_bury(item, reason, now_ms)
    }

    fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<crate::outbox::DeadItem>, StoreError> {
        self.pg_dead_letters(after, limit)
    }

    fn requeue_dead(
        &self,
        id: u64,
        now_ms: i64,
    ) -> Result<Option<crate::outbox::OutboxItem>, StoreError> {
        self.pg_requeue_dead(id, now_ms)
    }

    fn tag_id(&self, account: &str, tag: &str) -> Result<Option<i64>, StoreError> {
        self.pg_tag_id(account, tag)
    }

    fn put_tag_id(&self, account: &str, tag: &str, id: i64) -> Result<(), StoreError> {
        self.pg_put_tag_id(account, tag, id)
    }

    fn claim_coupon(
        &self,
        batch: &crate::coupon::Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<crate::coupon::Coupon, crate::coupon::ClaimRefused>, StoreError> {
        self.pg_claim_coupon(batch, account, openid, now, request)
    }

    fn redeem_coupon(
        &self,
        code: &str,
        now: i64,
        zone: crate::local_time::UtcOffset,
    ) -> Result<Result<crate::coupon::Coupon, crate::coupon::RedeemRefused>, StoreError> {
        self.pg_redeem_coupon(code, now, zone)
    }

    fn coupon(&self, code: &str) -> Result<Option<crate::coupon::Coupon>, StoreError> {
        self.pg_coupon(code)
    }

    fn coupon_stats(
        &self,
        batch: &crate::coupon::Batch,
        now: i64,
    ) -> Result<crate::coupon::CouponStats, StoreError> {
        self.pg_coupon_stats(batch, now)
    }

    fn people(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.pg_people(unionid)
    }

    fn sync_run(&self, account: &str) -> Result<Option<crate::sync::SyncRun>, StoreError> {
        self.pg_sync_run(account)
    }

    fn sync_step(
        &self,
        account: &str,
        openids: &[String],
        run: &mut crate::sync::SyncRun,
        merge: &mut crate::store::SyncMerge<'_>,
    ) -> Result<(), StoreError> {
        self.pg_sync_step(account, openids, run, merge)
    }

    fn ingest_event(
        &self,
        account: &str,
        openid: &str,
        event_id: &str,
        change: &mut dyn FnMut(
            Option<crate::follower::Follower>,
        )
            -> Option<(crate::follower::Follower, Vec<crate::report::Count>)>,
    ) -> Result<super::Ingested, StoreError> {
        self.pg_ingest_event(account, openid, event_id, change)
    }

    fn ingested(&self, account: &str, event_id: &str) -> Result<Option<String>, StoreError> {
        self.pg_ingested(account, event_id)
    }

    fn report_counts(
        &self,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::report::Count>, StoreError> {
        self.pg_report_counts(account, from, to)
    }

    fn report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<crate::report::Count>),
    ) -> Result<(), StoreError> {
        self.pg_report_facts(account, visit)
    }

    fn replace_report_counts(
        &self,
        account: &str,
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        self.pg_replace_report_counts(account, counts)
    }

    fn keep_event(&self, account: &str, event: &super::KeptEvent) -> Result<bool, StoreError> {
        self.pg_keep_event(account, event)
    }

    fn kept_events(
        &self,
        account: &str,
        unionids: &[String],
    ) -> Result<Vec<super::KeptEvent>, StoreError> {
        self.pg_kept_events(account, unionids)
    }

    fn campaign_run(&self, name: &str) -> Result<Option<crate::campaign::CampaignRun>, StoreError> {
        self.pg_campaign_run(name)
    }

    fn campaign_runs(&self) -> Result<Vec<crate::campaign::CampaignRun>, StoreError> {
        self.pg_campaign_runs()
    }

    fn put_campaign_run(&self, run: &crate::campaign::CampaignRun) -> Result<(), StoreError> {
        self.pg_put_campaign_run(run)
    }

    fn campaign_enqueue(
        &self,
        run: &crate::campaign::CampaignRun,
        account: &str,
        openids: &[String],
        extra: Vec<crate::outbox::NewItem>,
        per_follower: bool,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.pg_campaign_enqueue(run, account, openids, extra, per_follower, now_ms)
    }

    fn campaign_send_state(
        &self,
        campaign: &str,
        account: &str,
        openid: &str,
    ) -> Result<crate::store::CampaignSendState, StoreError> {
        self.pg_campaign_send_state(campaign, account, openid)
    }

    fn campaign_progress(
        &self,
        campaign: &str,
        openid: &str,
    ) -> Result<Option<crate::campaign::Progress>, StoreError> {
        self.pg_campaign_progress(campaign, openid)
    }

    fn campaign_record_counted(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, crate::campaign::Progress)],
        done_item: Option<u64>,
        job: Option<&crate::campaign::MassJob>,
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        self.pg_campaign_record_many(account, campaign, records, done_item, job, counts)
    }

    fn put_campaign_job(
        &self,
        campaign: &str,
        job: &crate::campaign::MassJob,
    ) -> Result<(), StoreError> {
        self.pg_put_campaign_job(campaign, job)
    }

    fn campaign_jobs(&self, campaign: &str) -> Result<Vec<crate::campaign::MassJob>, StoreError> {
        self.pg_campaign_jobs(campaign)
    }

    fn campaign_progress_page(
        &self,
        campaign: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, crate::campaign::Progress)>, StoreError> {
        self.pg_campaign_progress_page(campaign, after, limit)
    }

    fn campaign_pending(&self, campaign: &str) -> Result<u64, StoreError> {
        self.pg_campaign_pending(campaign)
    }

    fn campaign_by_msgid(
        &self,
        account: &str,
        msgid: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.pg_campaign_by_msgid(account, msgid)
    }

    fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        self.pg_lease(name, owner, now_ms, ttl_ms)
    }

    fn release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.pg_release(name, owner)
    }

    fn waits_on_network(&self) -> bool {
        true
    }

    fn as_postgres(&self) -> Option<&PgStore> {
        Some(self)
    }

    fn shared_rules(&self) -> Option<&dyn crate::store::shared_rules::SharedRules> {
        Some(self)
    }
}
