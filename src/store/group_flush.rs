//! Group commit: callers that need their writes on disk share fsyncs. A flush started after
//! a caller's writes covers them, so callers that ask while one runs wait for the next one
//! and all return from it: `n` concurrent callers cost about two fsyncs, not `n`.
//!
//! One caller at a time is the *leader* and runs the flush; the others wait on a `watch`
//! channel that publishes the highest ticket a finished flush covers, so a finished flush
//! wakes every waiter at once. (The first version queued callers on a `tokio::sync::Mutex`:
//! each woke the next in turn, a chain of cross-thread wake-ups per flush that left a third
//! of the machine idle under load.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::StoreError;

type FlushFn = dyn Fn() -> Result<(), StoreError> + Send + Sync;

pub struct GroupFlush {
    flush: Arc<FlushFn>,
    /// Requests so far (a ticket is taken after the caller's writes).
    asked: AtomicU64,
    /// The highest ticket a finished flush covers; every change wakes all waiters.
    done: tokio::sync::watch::Sender<u64>,
    /// Whether a leader is flushing now.
    leading: AtomicBool,
}

impl GroupFlush {
    pub fn new(flush: Arc<FlushFn>) -> GroupFlush {
        GroupFlush {
            flush,
            asked: AtomicU64::new(0),
            done: tokio::sync::watch::Sender::new(0),
            leading: AtomicBool::new(false),
        }
    }

    /// Over a store's own `flush`.
    pub fn over(store: Arc<dyn super::Store>) -> GroupFlush {
        GroupFlush::new(Arc::new(move || store.flush()))
    }

    /// Returns once every write the caller made before calling is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        loop {
            if *done.borrow_and_update() >= ticket {
                return Ok(());
            }
            if !self.leading.swap(true, Ordering::SeqCst) {
                let lead = Leader(self);
                // Every ticket up to here was taken after its writes: this flush covers them.
                let covers = self.asked.load(Ordering::SeqCst);
                let flush = self.flush.clone();
                // fsync takes a fraction of a millisecond to milliseconds: off the async threads.
                let result = tokio::task::spawn_blocking(move || flush())
                    .await
                    .map_err(|e| StoreError::Backend(format!("flush task: {e}")))
                    .and_then(|r| r);
                lead.finish(result.as_ref().ok().map(|()| covers));
                result?;
                continue;
            }
            // A leader is flushing: its result (or a failure, or its cancellation) wakes us.
            if done.changed().await.is_err() {
                return Err(StoreError::Backend("group flush closed".into()));
            }
        }
    }
}

/// The leader's turn. Dropped without `finish` (the leader's future was cancelled), it
/// still hands over, so waiters elect a new leader instead of waiting forever.
struct Leader<'a>(&'a GroupFlush);

impl Leader<'_> {
    fn finish(self, covered: Option<u64>) {
        let group = self.0;
        std::mem::forget(self);
        Self::hand_over(group, covered);
    }

    fn hand_over(group: &GroupFlush, covered: Option<u64>) {
        // Cleared before publishing: a waiter that still saw a leader waits for this change;
        // one that sees none leads the next flush itself.
        group.leading.store(false, Ordering::SeqCst);
        group.done.send_modify(|done| {
            if let Some(c) = covered {
                *done = (*done).max(c);
            }
        });
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        Self::hand_over(self.0, None);
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
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_fails_its_leader_and_the_others_try_again() {
        let calls = Arc::new(AtomicU64::new(0));
        let group = {
            let calls = calls.clone();
            Arc::new(GroupFlush::new(Arc::new(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(StoreError::Backend("disk full".into())),
                    _ => Ok(()),
                }
            })))
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move { group.flush().await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        // Only the first leader saw the failure; nobody was told "durable" by it.
        assert_eq!(ok, 7, "{} flushes", calls.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_hands_over() {
        let gate = Arc::new(std::sync::Barrier::new(2));
        let flushes = Arc::new(AtomicU64::new(0));
        let group = {
            let (gate, flushes) = (gate.clone(), flushes.clone());
            Arc::new(GroupFlush::new(Arc::new(move || {
                // The first flush waits until the test has cancelled its leader.
                if flushes.fetch_add(1, Ordering::SeqCst) == 0 {
                    gate.wait();
                }
                Ok(())
            })))
        };
        let leader = {
            let group = group.clone();
            tokio::spawn(async move { group.flush().await })
        };
        while flushes.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let follower = {
            let group = group.clone();
            tokio::spawn(async move { group.flush().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        leader.abort();
        let _ = leader.await;
        gate.wait();
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), follower).await;
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "the waiter behind a cancelled leader finishes"
        );
    }
}
