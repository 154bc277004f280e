//! Schema migrations: SQL files in `migrations/postgres/`, embedded in the binary, applied
//! in order and recorded in `siyu_migrations`. Instances starting together take turns (an
//! advisory lock), so each migration runs once. A database migrated by a newer siyu is
//! refused rather than written with an older idea of its tables.

use super::{db, PgStore};
use crate::store::StoreError;

/// (version, name, SQL), in order. A migration, once released, never changes: add one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "meta_and_rules",
        include_str!("../../../migrations/postgres/0002_meta_and_rules.sql"),
    ),
    (
        3,
        "sync_runs",
        include_str!("../../../migrations/postgres/0003_sync_runs.sql"),
    ),
    (
        4,
        "people",
        include_str!("../../../migrations/postgres/0004_people.sql"),
    ),
    (
        5,
        "ingest_events",
        include_str!("../../../migrations/postgres/0005_ingest_events.sql"),
    ),
    (
        6,
        "ingest_kept",
        include_str!("../../../migrations/postgres/0006_ingest_kept.sql"),
    ),
    (
        7,
        "report_counts",
        include_str!("../../../migrations/postgres/0007_report_counts.sql"),
    ),
    (
        8,
        "channel_codes",
        include_str!("../../../migrations/postgres/0008_channel_codes.sql"),
    ),
    (
        9,
        "referral",
        include_str!("../../../migrations/postgres/0009_referral.sql"),
    ),
];

/// Any number: the advisory lock that serialises migrations of one database.
const MIGRATION_LOCK: i64 = 0x5349_5955; // "SIYU"

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// The schema version before.
    pub from: i32,
    /// The migrations applied now, (version, name).
    pub applied: Vec<(i32, String)>,
}

pub(super) async fn apply(store: &PgStore) -> Result<MigrateReport, StoreError> {
    let c = store.conn().await?;
    // Its own session lock, held until the migrations are done or failed.
    c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .map_err(db)?;
    let result = apply_locked(&c).await;
    let _ = c
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await;
    result
}

async fn apply_locked(c: &deadpool_postgres::Object) -> Result<MigrateReport, StoreError> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS siyu_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let from: i32 = c
        .query_one("SELECT coalesce(max(version), 0) FROM siyu_migrations", &[])
        .await
        .map_err(db)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if from > known {
        return Err(StoreError::Backend(format!(
            "the database schema is at version {from}, newer than this siyu knows (version {known}): \
             a newer siyu migrated it. Run that version (or newer) of siyu on this database \
             数据库结构版本 {from} 比本程序认识的 {known} 新：请使用更新版本的 siyu"
        )));
    }
    // Every version not recorded yet, not only those above the newest: migrations written
    // on two branches at once (7 and 8) land in either order, and a database that got 8
    // first still gets 7 from the siyu that knows it.
    let recorded: Vec<i32> = c
        .query("SELECT version FROM siyu_migrations", &[])
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !recorded.contains(&m.0)) {
        let step = format!(
            "BEGIN;\n{sql}\n;INSERT INTO siyu_migrations (version, name) VALUES ({version}, '{name}');\nCOMMIT;"
        );
        if let Err(e) = c.batch_execute(&step).await {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(StoreError::Backend(format!(
                "migration {version} ({name}) failed and was rolled back: {}",
                db(e)
            )));
        }
        applied.push((*version, name.to_string()));
    }
    Ok(MigrateReport { from, applied })
}

/// `siyu migrate`: brings the schema up to date and says what it did.
pub fn migrate(store: &PgStore) -> Result<MigrateReport, StoreError> {
    store.block(apply(store))
}
