//! Group commit: callers that need their writes on disk share fsyncs. A flush started after
//! a caller's writes covers them, so callers that ask while one runs wait for the next one
//! and all return from it: `n` concurrent callers cost about two fsyncs, not `n`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::StoreError;

type FlushFn = dyn Fn() -> Result<(), StoreError> + Send + Sync;

pub struct GroupFlush {
    flush: Arc<FlushFn>,
    /// Requests so far (a ticket is taken after the caller's writes).
    asked: AtomicU64,
    /// The highest ticket a finished flush covers.
    done: AtomicU64,
    /// One flush at a time.
    turn: tokio::sync::Mutex<()>,
}

impl GroupFlush {
    pub fn new(flush: Arc<FlushFn>) -> GroupFlush {
        GroupFlush {
            flush,
            asked: AtomicU64::new(0),
            done: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Over a store's own `flush`.
    pub fn over(store: Arc<dyn super::Store>) -> GroupFlush {
        GroupFlush::new(Arc::new(move || store.flush()))
    }

    /// Returns once every write the caller made before calling is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to here was taken after its writes: this flush covers them.
        let covers = self.asked.load(Ordering::SeqCst);
        let flush = self.flush.clone();
        // fsync takes milliseconds: off the async threads.
        tokio::task::spawn_blocking(move || flush())
            .await
            .map_err(|e| StoreError::Backend(format!("flush task: {e}")))??;
        self.done.store(covers, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_flushes_and_each_is_covered() {
        // "Writes" are numbers pushed to a log; a flush makes the log so far durable.
        let log = Arc::new(Mutex::new(Vec::<u64>::new()));
        let durable = Arc::new(Mutex::new(0usize));
        let flushes = Arc::new(AtomicU64::new(0));
        let group = {
            let (log, durable, flushes) = (log.clone(), durable.clone(), flushes.clone());
            Arc::new(GroupFlush::new(Arc::new(move || {
                let len = log.lock().unwrap().len();
                std::thread::sleep(std::time::Duration::from_millis(5));
                *durable.lock().unwrap() = len;
                flushes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })))
        };
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let (group, log, durable) = (group.clone(), log.clone(), durable.clone());
                tokio::spawn(async move {
                    let position = {
                        let mut l = log.lock().unwrap();
                        l.push(i);
                        l.len()
                    };
                    group.flush().await.unwrap();
                    assert!(
                        *durable.lock().unwrap() >= position,
                        "write {i} returned before a flush covered it"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "64 callers, {n} flushes");
    }
}
