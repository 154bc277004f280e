//! A store as a list of typed rows, table by table, for `siyu store copy` (sled to
//! PostgreSQL when a brand outgrows one machine, and back). Kept apart from [`Store`]: the
//! copy is the only reader, and only the two disk backends take part.
//!
//! The copy walks the source one table at a time, page by page in key order, and writes
//! each page to the destination as upserts (writing a row twice leaves one row), then
//! records a checkpoint (the table and the cursor after the page) in the destination. A
//! copy killed at any point resumes from its checkpoint; a page written but not yet
//! checkpointed is written again, which changes nothing. At the end every table's rows are
//! counted on both sides.

use serde::{Deserialize, Serialize};

use super::{KeptEvent, StoreError, StoredToken};
use crate::audit::AuditEntry;
use crate::campaign::{CampaignRun, MassJob, Progress};
use crate::coupon::{BatchState, Coupon};
use crate::outbox::{DeadItem, OutboxItem};
use crate::sync::SyncRun;

/// The store's tables, in the order they are copied. A table added later goes last: a
/// copy interrupted by an older siyu resumes at its table's name and still copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Followers,
    Audit,
    Tokens,
    TagIds,
    Outbox,
    DeadLetters,
    CouponBatches,
    Coupons,
    CouponHolders,
    CouponRequests,
    Campaigns,
    CampaignProgress,
    CampaignMsgids,
    CampaignJobs,
    SyncRuns,
    People,
    IngestEvents,
    IngestKept,
    ChannelCodes,
    ReportCounts,
    ReportFacts,
}

impl Table {
    pub const ALL: [Table; 21] = [
        Table::Followers,
        Table::Audit,
        Table::Tokens,
        Table::TagIds,
        Table::Outbox,
        Table::DeadLetters,
        Table::CouponBatches,
        Table::Coupons,
        Table::CouponHolders,
        Table::CouponRequests,
        Table::Campaigns,
        Table::CampaignProgress,
        Table::CampaignMsgids,
        Table::CampaignJobs,
        Table::SyncRuns,
        Table::People,
        Table::IngestEvents,
        Table::IngestKept,
        Table::ChannelCodes,
        Table::ReportCounts,
        Table::ReportFacts,
    ];

    /// The name operators see (the PostgreSQL table's).
    pub fn name(self) -> &'static str {
        match self {
            Table::Followers => "followers",
            Table::Audit => "audit",
            Table::Tokens => "tokens",
            Table::TagIds => "tag_ids",
            Table::Outbox => "outbox",
            Table::DeadLetters => "dead_letters",
            Table::CouponBatches => "coupon_batches",
            Table::Coupons => "coupons",
            Table::CouponHolders => "coupon_holders",
            Table::CouponRequests => "coupon_requests",
            Table::Campaigns => "campaigns",
            Table::CampaignProgress => "campaign_progress",
            Table::CampaignMsgids => "campaign_msgids",
            Table::CampaignJobs => "campaign_jobs",
            Table::SyncRuns => "sync_runs",
            Table::People => "people",
            Table::IngestEvents => "ingest_events",
            Table::IngestKept => "ingest_kept",
            Table::ChannelCodes => "channel_codes",
            Table::ReportCounts => "report_counts",
            Table::ReportFacts => "report_facts",
        }
    }
}

/// One stored row, as both backends understand it.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// The follower's record as stored (`format.rs`, the same on both backends): the
    /// follower, their recent deliveries and history, byte for byte.
    Follower {
        account: String,
        openid: String,
        record: Vec<u8>,
    },
    /// `id`: unique within the store (sled's generated id, PostgreSQL's serial).
    Audit {
        id: u64,
        entry: AuditEntry,
    },
    Token {
        account: String,
        token: StoredToken,
    },
    TagId {
        account: String,
        tag: String,
        id: i64,
    },
    /// Its lease, if an instance held one, is not copied: the copy runs with the servers
    /// stopped.
    Outbox(OutboxItem),
    Dead(DeadItem),
    CouponBatch {
        batch: String,
        state: BatchState,
    },
    Coupon(Coupon),
    CouponHolder {
        batch: String,
        account: String,
        openid: String,
        held: u32,
    },
    CouponRequest {
        account: String,
        openid: String,
        batch: String,
        request: String,
        code: String,
    },
    Campaign(Box<CampaignRun>),
    Progress {
        campaign: String,
        openid: String,
        progress: Progress,
    },
    /// `openid` empty: the message id of a mass job.
    Msgid {
        account: String,
        msgid: i64,
        campaign: String,
        openid: String,
    },
    Job {
        campaign: String,
        job: MassJob,
    },
    /// An account's latest follower sync (`siyu followers sync`), keyed by its account.
    SyncRun(SyncRun),
    /// A shop event applied (`POST /ingest/v1/events`), to the follower `openid`.
    IngestEvent {
        account: String,
        event_id: String,
        openid: String,
    },
    /// A shop event kept for a person not known yet (`[ingest] unknown = "keep"`), with
    /// its unionid inside: sled's index by unionid is rebuilt from it.
    Kept {
        account: String,
        event: KeptEvent,
    },
    /// What siyu made for a channel with `code = "auto"`: the code in use, a queued mark,
    /// the last failure.
    ChannelCode(crate::channel_code::ChannelCode),
    /// A report counter, whole (however the store spreads it over shards).
    ReportCount {
        account: String,
        count: crate::report::Count,
    },
    /// One commit's counts (`siyu report rebuild` sums them). `id`: unique in the store.
    ReportFact {
        account: String,
        id: u64,
        counts: Vec<crate::report::Count>,
    },
    /// One identity of the people index.
    Person {
        unionid: String,
        account: String,
        openid: String,
    },
}

/// One page of a table: its rows and the cursor to ask for the next page with (`None`:
/// the table is done). Cursors mean something only to the store that made them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<String>,
}

/// What a store offers `siyu store copy`.
pub trait Portable {
    /// Up to `limit` rows of `table` after `cursor` (from the start if `None`).
    fn export_page(
        &self,
        table: Table,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Writes `rows` (all of one table) as upserts, durably. The store's id counters are
    /// moved past every id written, so ids it hands out later never collide with them.
    fn import(&self, rows: &[Row]) -> Result<(), StoreError>;

    fn count(&self, table: Table) -> Result<u64, StoreError>;

    /// A small named value of the store itself (the copy's checkpoint).
    fn meta(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Writes it durably.
    fn put_meta(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// What the store is, for messages and to tell a checkpoint's source
    /// ("sled at data/siyu.sled").
    fn describe(&self) -> String;
}

/// Where an interrupted copy stands, kept in the destination under [`CHECKPOINT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source, as [`Portable::describe`] says it.
    pub source: String,
    /// The table being copied (`None` once every table is copied).
    pub table: Option<Table>,
    /// The cursor after the last page written of `table`.
    pub cursor: Option<String>,
    /// Rows written so far (over all tables; a page written twice counts twice).
    pub rows: u64,
    /// Unix seconds the copy finished, once it has.
    pub finished_at: Option<i64>,
}

pub const CHECKPOINT: &str = "store_copy";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the destination already holds data ({table}: {rows} rows) and no copy of this source was started there; copy into an empty store \
         目标存储已有数据，且不是从这个来源开始的复制：请复制到空的存储"
    )]
    NotEmpty { table: &'static str, rows: u64 },
    #[error(
        "the destination holds a copy from another source ({other}); copy into an empty store \
         目标存储里是从另一个来源复制的数据（{other}）"
    )]
    OtherSource { other: String },
    #[error("the destination's copy checkpoint is unreadable: {0}")]
    BadCheckpoint(String),
    #[error(
        "counts differ after the copy: {0}; the source changed during the copy (was a server still running on it?) \
         复制后行数不一致：复制期间来源有改动（是否还有服务在运行？）"
    )]
    Mismatch(String),
}

/// How a copy ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Copied {
    /// Every table copied now (`resumed`: from an interrupted copy's checkpoint).
    Done { rows: u64, resumed: bool },
    /// A copy of this source had finished before: nothing was written.
    AlreadyDone { finished_at: i64 },
}

/// Each table's rows, source and destination, once the copy is done.
pub type Counts = Vec<(Table, u64, u64)>;

/// Copies `source` into `dest`, `page` rows at a time. `progress(rows so far, table)` is
/// called after each page.
pub fn copy(
    source: &dyn Portable,
    dest: &dyn Portable,
    page: usize,
    now: i64,
    progress: &mut dyn FnMut(u64, Table),
) -> Result<(Copied, Counts), CopyError> {
    let me = source.describe();
    let mut at = match dest.meta(CHECKPOINT)? {
        Some(text) => {
            let c: Checkpoint =
                serde_json::from_str(&text).map_err(|e| CopyError::BadCheckpoint(e.to_string()))?;
            if c.source != me {
                return Err(CopyError::OtherSource { other: c.source });
            }
            c
        }
        None => {
            for table in Table::ALL {
                let rows = dest.count(table)?;
                if rows > 0 {
                    return Err(CopyError::NotEmpty {
                        table: table.name(),
                        rows,
                    });
                }
            }
            Checkpoint {
                source: me,
                table: Some(Table::ALL[0]),
                cursor: None,
                rows: 0,
                finished_at: None,
            }
        }
    };
    if let Some(finished_at) = at.finished_at {
        // A second run writes nothing: the destination may be in use by now, and copying
        // the old source over it would undo what happened since.
        return Ok((Copied::AlreadyDone { finished_at }, verify(source, dest)?));
    }
    let resumed = at.rows > 0 || at.cursor.is_some() || at.table != Some(Table::ALL[0]);
    let save = |c: &Checkpoint| -> Result<(), StoreError> {
        dest.put_meta(CHECKPOINT, &serde_json::to_string(c).expect("plain data"))
    };
    save(&at)?;
    let start = Table::ALL
        .iter()
        .position(|t| Some(*t) == at.table)
        .unwrap_or(Table::ALL.len());
    for &table in &Table::ALL[start..] {
        loop {
            let got = source.export_page(table, at.cursor.as_deref(), page)?;
            if !got.rows.is_empty() {
                dest.import(&got.rows)?;
            }
            at.rows += got.rows.len() as u64;
            at.cursor = got.next;
            if at.cursor.is_none() {
                break;
            }
            save(&at)?;
            progress(at.rows, table);
        }
        let next = Table::ALL.iter().position(|t| *t == table).map(|i| i + 1);
        at.table = next.and_then(|i| Table::ALL.get(i).copied());
        save(&at)?;
        progress(at.rows, table);
    }
    let counts = verify(source, dest)?;
    at.finished_at = Some(now);
    save(&at)?;
    Ok((
        Copied::Done {
            rows: at.rows,
            resumed,
        },
        counts,
    ))
}

/// Counts every table on both sides; an error names the tables that differ.
pub fn verify(source: &dyn Portable, dest: &dyn Portable) -> Result<Counts, CopyError> {
    let mut counts = Vec::new();
    let mut differ = Vec::new();
    for table in Table::ALL {
        let (a, b) = (source.count(table)?, dest.count(table)?);
        if a != b {
            differ.push(format!("{} {a} → {b}", table.name()));
        }
        counts.push((table, a, b));
    }
    if differ.is_empty() {
        Ok(counts)
    } else {
        Err(CopyError::Mismatch(differ.join(", ")))
    }
}

/// Rows in the whole source, for a progress bar's length.
pub fn total(source: &dyn Portable) -> Result<u64, StoreError> {
    Table::ALL.iter().map(|t| source.count(*t)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::MassJob;
    use crate::store::postgres::testing::TestDatabase;
    use crate::store::{PgStore, SledStore, Store};

    /// Opens a sled store a handle of this process has just dropped: sled's background
    /// threads let go of its file lock a moment later.
    fn reopen(path: &std::path::Path) -> SledStore {
        for _ in 0..200 {
            match SledStore::open(path) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(25))
                }
                other => return other.unwrap(),
            }
        }
        panic!("{} stays locked", path.display())
    }

    /// Every row of every table, in one order whatever the backend's key order.
    fn rows(store: &dyn Portable) -> Vec<String> {
        let mut all = Vec::new();
        for table in Table::ALL {
            let mut cursor = None;
            loop {
                let page = store.export_page(table, cursor.as_deref(), 3).unwrap();
                all.extend(page.rows.iter().map(|r| format!("{r:?}")));
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
        }
        all.sort();
        all
    }

    /// A store with rows in every table: the storage contract's leftovers and the tables
    /// it leaves empty.
    fn filled(store: &dyn Store) {
        crate::store::tests::contract(store);
        for i in 0..5 {
            store
                .append_audit(&AuditEntry {
                    at: 1_000 + i,
                    who: "admin".into(),
                    action: "rules.write".into(),
                    target: format!("r{i}"),
                    detail: "中文".into(),
                })
                .unwrap();
        }
        store
            .put_token(
                "demo",
                &StoredToken {
                    access_token: crate::config::Secret::new("tok".to_string()),
                    expires_at: 9_999,
                },
            )
            .unwrap();
        store.put_tag_id("demo", "vip", 101).unwrap();
        store
            .put_campaign_job(
                "spring",
                &MassJob {
                    msg_id: 77,
                    followers: 2,
                    status: Some("send success".into()),
                    total_count: 2,
                    filter_count: 0,
                    sent_count: 2,
                    error_count: 0,
                },
            )
            .unwrap();
        store
            .enqueue("demo", vec![tag_item(), tag_item(), tag_item()], 5)
            .unwrap();
        let item = store.outbox_page(None, 1).unwrap().remove(0);
        store.outbox_bury(&item, "test", 5).unwrap();
        // A second account's sync run beside the contract's ("s"), stopped midway.
        let mut run = SyncRun::new("demo", 1_700_000_000_000, "test");
        run.page_from = Some("o_next".into());
        run.total = 12;
        store
            .sync_step("demo", &[], &mut run, &mut |_, _, _, _| None)
            .unwrap();
    }

    /// Each account's sync run, as the store's own reads give it.
    fn sync_runs(store: &dyn Store) -> Vec<Option<SyncRun>> {
        ["demo", "s", "t", "other"]
            .iter()
            .map(|a| store.sync_run(a).unwrap())
            .collect()
    }

    /// The kept events the storage contract leaves (`k`: k2 and k3, `l`: k1), as the
    /// store's own reads find them by unionid (on sled through its index).
    fn kept(store: &dyn Store) -> Vec<KeptEvent> {
        let unionids = ["ou_a".to_string(), "ou_b".to_string()];
        let mut all = store.kept_events("k", &unionids).unwrap();
        all.extend(store.kept_events("l", &unionids).unwrap());
        all
    }

    fn tag_item() -> crate::outbox::NewItem {
        crate::outbox::NewItem {
            effect: crate::outbox::Effect::Tag {
                openid: "o1".into(),
                tag: "x".into(),
                add: true,
            },
            origin: "test".into(),
            not_before_ms: 0,
        }
    }

    fn empty_tables(store: &dyn Portable) -> Vec<&'static str> {
        Table::ALL
            .iter()
            .filter(|t| store.count(**t).unwrap() == 0)
            .map(|t| t.name())
            .collect()
    }

    /// A destination that fails after `pages` pages, as a copy killed midway would stop.
    struct Failing<'a> {
        inner: &'a SledStore,
        pages: std::cell::Cell<usize>,
    }

    // Only `import` differs; the rest is the inner store's.
    impl Portable for Failing<'_> {
        fn export_page(&self, t: Table, c: Option<&str>, l: usize) -> Result<Page, StoreError> {
            self.inner.export_page(t, c, l)
        }
        fn import(&self, rows: &[Row]) -> Result<(), StoreError> {
            if self.pages.get() == 0 {
                return Err(StoreError::Backend("killed".into()));
            }
            self.pages.set(self.pages.get() - 1);
            self.inner.import(rows)
        }
        fn count(&self, t: Table) -> Result<u64, StoreError> {
            self.inner.count(t)
        }
        fn meta(&self, n: &str) -> Result<Option<String>, StoreError> {
            self.inner.meta(n)
        }
        fn put_meta(&self, n: &str, v: &str) -> Result<(), StoreError> {
            self.inner.put_meta(n, v)
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    #[test]
    fn a_copy_to_sled_and_back_keeps_every_row_and_a_second_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = SledStore::open(&dir.path().join("a")).unwrap();
        filled(&source);
        assert_eq!(
            empty_tables(&source),
            Vec::<&str>::new(),
            "every table has rows"
        );
        let dest = SledStore::open(&dir.path().join("b")).unwrap();
        let mut calls = 0;
        let (copied, counts) = copy(&source, &dest, 2, 50, &mut |_, _| calls += 1).unwrap();
        assert!(
            matches!(copied, Copied::Done { resumed: false, .. }),
            "{copied:?}"
        );
        assert!(calls > Table::ALL.len(), "progress after every page");
        assert!(counts.iter().all(|(_, a, b)| a == b && *a > 0));
        assert_eq!(rows(&source), rows(&dest));
        assert_eq!(dest.count(Table::SyncRuns).unwrap(), 3);
        assert_eq!(sync_runs(&source), sync_runs(&dest));
        assert_eq!(
            dest.count(Table::IngestKept).unwrap(),
            3,
            "events, not index keys"
        );
        assert_eq!(kept(&dest).len(), 3);
        assert_eq!(kept(&source), kept(&dest));
        assert_eq!(
            dest.sync_run("demo").unwrap().unwrap().page_from.as_deref(),
            Some("o_next")
        );
        let (again, _) = copy(&source, &dest, 2, 60, &mut |_, _| {}).unwrap();
        assert_eq!(again, Copied::AlreadyDone { finished_at: 50 });
        assert_eq!(rows(&source), rows(&dest));
        assert_eq!(sync_runs(&source), sync_runs(&dest));
        // Ids handed out later are above every id copied in.
        let max = dest.outbox_page(None, 100).unwrap().last().unwrap().id;
        let dead = dest
            .dead_letters(None, 100)
            .unwrap()
            .last()
            .unwrap()
            .item
            .id;
        let new = dest.enqueue("demo", vec![tag_item()], 1).unwrap();
        assert!(new[0] > max.max(dead), "{new:?} after {max}/{dead}");
        drop(dest);
        // Also after a restart: the floor is on disk.
        let reopened = reopen(&dir.path().join("b"));
        let later = reopened.enqueue("demo", vec![tag_item()], 1).unwrap();
        assert!(later[0] > new[0], "{later:?} after {new:?}");
    }

    #[test]
    fn an_interrupted_copy_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let source = SledStore::open(&dir.path().join("a")).unwrap();
        filled(&source);
        let inner = SledStore::open(&dir.path().join("b")).unwrap();
        for pages in [3, 1, 4] {
            let failing = Failing {
                inner: &inner,
                pages: std::cell::Cell::new(pages),
            };
            // Pages of 8: the filled store's followers (the contract's, 50-odd) take more
            // than three pages, so the runs stop inside and past them.
            let e = copy(&source, &failing, 8, 50, &mut |_, _| {}).unwrap_err();
            assert!(e.to_string().contains("killed"), "{e}");
        }
        let stopped: Checkpoint =
            serde_json::from_str(&inner.meta(CHECKPOINT).unwrap().unwrap()).unwrap();
        // Three runs got past the first tables, each from where the last one stopped.
        assert!(
            stopped.rows > 8 && stopped.finished_at.is_none(),
            "{stopped:?}"
        );
        assert!(
            !matches!(stopped.table, None | Some(Table::Followers)),
            "{stopped:?}"
        );
        let (copied, _) = copy(&source, &inner, 8, 50, &mut |_, _| {}).unwrap();
        assert!(
            matches!(copied, Copied::Done { resumed: true, .. }),
            "{copied:?}"
        );
        assert_eq!(rows(&source), rows(&inner));
    }

    #[test]
    fn a_copy_refuses_a_destination_with_data_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let source = SledStore::open(&dir.path().join("a")).unwrap();
        filled(&source);
        let dest = SledStore::open(&dir.path().join("b")).unwrap();
        dest.put_tag_id("demo", "mine", 1).unwrap();
        let e = copy(&source, &dest, 10, 50, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(
                e,
                CopyError::NotEmpty {
                    table: "tag_ids",
                    rows: 1
                }
            ),
            "{e}"
        );
        let other = SledStore::open(&dir.path().join("c")).unwrap();
        filled(&other);
        let fresh = SledStore::open(&dir.path().join("d")).unwrap();
        copy(&source, &fresh, 10, 50, &mut |_, _| {}).unwrap();
        let e = copy(&other, &fresh, 10, 50, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, CopyError::OtherSource { .. }), "{e}");
    }

    #[test]
    fn a_copy_from_sled_to_postgres_and_back_keeps_every_row() {
        let Some(db) = TestDatabase::new() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(&dir.path().join("a")).unwrap();
        filled(&sled);
        let pg = PgStore::open(&db.settings(4)).unwrap();
        let (copied, counts) = copy(&sled, &pg, 2, 50, &mut |_, _| {}).unwrap();
        assert!(matches!(copied, Copied::Done { .. }), "{copied:?}");
        assert!(
            counts.iter().all(|(_, a, b)| a == b && *a > 0),
            "{counts:?}"
        );
        assert_eq!(rows(&sled), rows(&pg));
        // The same answers through the store's own reads.
        assert_eq!(
            sled.follower("demo", "o1").unwrap(),
            pg.follower("demo", "o1").unwrap()
        );
        assert_eq!(sled.audit(10).unwrap(), pg.audit(10).unwrap());
        assert_eq!(sled.token("demo").unwrap(), pg.token("demo").unwrap());
        assert_eq!(
            sled.campaign_pending("spring").unwrap(),
            pg.campaign_pending("spring").unwrap()
        );
        assert_eq!(pg.count(Table::SyncRuns).unwrap(), 3);
        assert_eq!(sync_runs(&sled), sync_runs(&pg));
        assert_eq!(pg.people("u_new").unwrap().len(), 1, "the people index");
        assert_eq!(sled.people("u_o_b").unwrap(), pg.people("u_o_b").unwrap());
        assert_eq!(pg.count(Table::IngestKept).unwrap(), 3);
        assert_eq!(kept(&pg).len(), 3, "kept events found by unionid");
        assert_eq!(kept(&sled), kept(&pg));
        // A second run writes nothing.
        let before = rows(&pg);
        let (again, _) = copy(&sled, &pg, 2, 70, &mut |_, _| {}).unwrap();
        assert_eq!(again, Copied::AlreadyDone { finished_at: 50 });
        assert_eq!(rows(&pg), before);
        let max = sled.outbox_page(None, 100).unwrap().last().unwrap().id;
        let new = pg.enqueue("demo", vec![tag_item()], 1).unwrap();
        assert!(
            new[0] > max,
            "the outbox sequence is past the ids copied in"
        );
        pg.outbox_done(new[0]).unwrap();

        let back = SledStore::open(&dir.path().join("b")).unwrap();
        copy(&pg, &back, 3, 60, &mut |_, _| {}).unwrap();
        assert_eq!(rows(&pg), rows(&back));
        assert_eq!(rows(&sled), rows(&back));
        assert_eq!(sync_runs(&sled), sync_runs(&back));
        assert_eq!(sled.people("u_new").unwrap(), back.people("u_new").unwrap());
        assert_eq!(back.count(Table::IngestKept).unwrap(), 3);
        assert_eq!(kept(&sled), kept(&back), "sled's index by unionid rebuilt");
        let (again, _) = copy(&pg, &back, 3, 80, &mut |_, _| {}).unwrap();
        assert_eq!(again, Copied::AlreadyDone { finished_at: 60 });
        assert_eq!(rows(&sled), rows(&back));
        // Applying a kept event on the copy drops it there, index and all.
        back.ingest_event("k", "o_k", "k2", &mut |f| f.map(|f| (f, Vec::new())))
            .unwrap();
        assert_eq!(kept(&back).len(), 2);
        assert_eq!(back.count(Table::IngestKept).unwrap(), 2);
    }
}
