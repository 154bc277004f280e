//! A fresh schema per test on the test database, so that tests run in parallel and leave
//! nothing behind (tests of this crate and of `tests/`).
//!
//! The database comes from `SIYU_TEST_DATABASE_URL`. Without it a test that needs
//! PostgreSQL is skipped with a note, except under CI (`CI=true`), where it fails: CI
//! starts PostgreSQL and sets the variable, so a missing database is a broken CI.

use std::sync::atomic::{AtomicU32, Ordering};

/// A schema of its own, dropped (with everything in it) when this is dropped.
pub struct TestDatabase {
    /// A URL whose connections use the schema (`options=-csearch_path=…`).
    pub url: String,
    base: String,
    schema: String,
}

/// A session of its own on `url`, on a thread of its own with a runtime of its own (tests
/// call these helpers from inside their async runtime, where another runtime may not
/// block). `f` owns the client; the session ends when `f` is done.
fn session<T, F>(
    url: &str,
    f: impl FnOnce(tokio_postgres::Client) -> F + Send + 'static,
) -> std::thread::JoinHandle<Result<T, String>>
where
    F: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            let driver = tokio::spawn(conn);
            let out = f(client).await;
            let _ = driver.await;
            out
        })
    })
}

/// Runs `sql` on the base database.
fn admin(base: &str, sql: &str) -> Result<(), String> {
    let sql = sql.to_string();
    session(base, move |client| async move {
        client.batch_execute(&sql).await.map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the database helper thread panicked".to_string())?
}

impl TestDatabase {
    /// A new schema, or `None` (skip) when no test database is configured outside CI.
    /// Panics when one is configured (or CI runs) and it cannot be reached.
    pub fn new() -> Option<TestDatabase> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let base = match std::env::var("SIYU_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if ci => panic!("CI=true but SIYU_TEST_DATABASE_URL is not set: .ci/run sets it"),
            _ => {
                eprintln!(
                    "skipped: set SIYU_TEST_DATABASE_URL (e.g. postgres://root@127.0.0.1:5432/test) to run the PostgreSQL tests"
                );
                return None;
            }
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "siyu_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        if let Err(e) = admin(&base, &format!("CREATE SCHEMA {schema}")) {
            panic!("the test database at SIYU_TEST_DATABASE_URL cannot be used: {e}");
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(TestDatabase { url, base, schema })
    }

    /// `[storage]` settings for this schema.
    pub fn settings(&self, pool_size: usize) -> crate::config::PostgresSettings {
        crate::config::PostgresSettings {
            url: crate::config::Secret::new(self.url.clone()),
            pool_size,
            connect_timeout_secs: 5,
            prepared_statements: true,
        }
    }
}

/// A table locked by another session until this is dropped (see [`TestDatabase::lock`]).
pub struct HeldLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TestDatabase {
    /// The first column of every row `sql` returns, as text (NULL as ""), read in this
    /// schema: for tests that look at the tables the instances share.
    pub fn column(&self, sql: &str) -> Vec<String> {
        let sql = sql.to_string();
        session(&self.url, move |client| async move {
            let rows = client.simple_query(&sql).await.map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or_default().to_string())
                    }
                    _ => None,
                })
                .collect())
        })
        .join()
        .expect("the query thread")
        .expect("the query")
    }

    /// Locks `table` (ACCESS EXCLUSIVE, in an open transaction of its own session) until
    /// the guard is dropped: every statement on it waits, as on a database that hangs.
    pub fn lock(&self, table: &str) -> HeldLock {
        let sql = format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let thread = session(&self.url, move |client| async move {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| e.to_string())?;
            let _ = locked.send(());
            let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
            let _ = client.batch_execute("ROLLBACK").await;
            Ok(())
        });
        if is_locked.recv().is_err() {
            panic!("the lock was not taken: {:?}", thread.join());
        }
        HeldLock {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = admin(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        );
    }
}
