//! A follower file applied to the store, line by line: `siyu followers import FILE.csv`
//! on its own and, beside a running sled server, `POST /admin/v1/followers/{account}/import`
//! (`server/admin_import.rs`) go through this one function, so both count, refuse and
//! write alike.
//!
//! The file is a header, then `openid,tags,attributes,counters` lines (their cells parsed by
//! [`crate::ingest::ImportLine`]). A refused header refuses the file (nothing is read
//! further); a bad line is reported with its line number and skipped; every good line is
//! one atomic write of its follower, with the outbox items its change causes (the account's
//! automatic tags mirrored to WeChat). A dry run counts what would change and writes
//! nothing.

use std::collections::HashMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::follower::Follower;
use crate::ingest::{ImportLine, ImportOutcome};
use crate::outbox::NewItem;
use crate::store::{Answer, CallbackKey, Commit, Store, StoreError};

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Lines reported and skipped.
    pub bad: u64,
}

impl std::fmt::Display for Summary {
    /// The command's summary line (without the dry run's note).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Summary {
            new,
            updated,
            unchanged,
            bad,
        } = self;
        write!(
            f,
            "new {new}, updated {updated}, unchanged {unchanged}, bad lines {bad}"
        )
    }
}

/// A line of the file that was refused, and why. `line` is the file's line number (the
/// header is line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    pub line: u64,
    pub message: String,
}

/// Why an import stopped before the end of its file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The store failed at this line; the lines before it are written.
    #[error("line {line}: {source}")]
    Store { line: u64, source: StoreError },
}

/// Each good line's change to its follower: the line's values, then the account's automatic
/// tags; returns the outbox items to queue with it.
pub type LineChange<'a> = dyn Fn(&ImportLine, &mut Follower) -> Vec<NewItem> + 'a;

/// A follower file whose header has been read and accepted.
pub struct ImportFile<R: Read> {
    reader: csv::Reader<R>,
    columns: [Option<usize>; 4],
    width: usize,
}

impl<R: Read> ImportFile<R> {
    /// Reads the header; `Err` (line 1) when it is refused, and then the file is refused.
    pub fn open(data: R) -> Result<ImportFile<R>, BadLine> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(data);
        let header = |message: String| BadLine { line: 1, message };
        let h = reader.headers().map_err(|e| header(e.to_string()))?;
        let names: Vec<&str> = h.iter().collect();
        let columns = ImportLine::columns(&names).map_err(header)?;
        let width = h.len();
        Ok(ImportFile {
            reader,
            columns,
            width,
        })
    }

    /// Applies every line to the account's followers (or, with `dry_run`, counts what it
    /// would do), in file order; each bad line goes to `bad` as it is met. A second line
    /// for the same openid sees what the first did, in a dry run too.
    pub fn apply(
        mut self,
        store: &dyn Store,
        account: &str,
        dry_run: bool,
        change: &LineChange<'_>,
        bad: &mut dyn FnMut(BadLine),
    ) -> Result<Summary, ImportError> {
        let mut summary = Summary::default();
        let mut refuse = |line: u64, message: String, summary: &mut Summary| {
            summary.bad += 1;
            bad(BadLine { line, message });
        };
        // A dry run's view of the followers earlier lines touched.
        let mut seen: HashMap<String, Follower> = HashMap::new();
        for record in self.reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    refuse(line, e.to_string(), &mut summary);
                    continue;
                }
            };
            let line = record.position().map_or(0, csv::Position::line);
            if record.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            if record.len() > self.width {
                let m = format!("{} cells, the header has {}", record.len(), self.width);
                refuse(line, m, &mut summary);
                continue;
            }
            let cells: Vec<&str> = record.iter().collect();
            let parsed = match ImportLine::parse(&cells, &self.columns) {
                Ok(l) => l,
                Err(m) => {
                    refuse(line, m, &mut summary);
                    continue;
                }
            };
            let done = if dry_run {
                dry(store, account, &parsed, &mut seen, change)
            } else {
                write(store, account, &parsed, change)
            };
            match done.map_err(|source| ImportError::Store { line, source })? {
                ImportOutcome::New => summary.new += 1,
                ImportOutcome::Updated => summary.updated += 1,
                ImportOutcome::Unchanged => summary.unchanged += 1,
            }
        }
        Ok(summary)
    }
}

fn dry(
    store: &dyn Store,
    account: &str,
    line: &ImportLine,
    seen: &mut HashMap<String, Follower>,
    change: &LineChange<'_>,
) -> Result<ImportOutcome, StoreError> {
    let stored = match seen.get(&line.openid) {
        Some(f) => Some(f.clone()),
        None => store.follower(account, &line.openid)?,
    };
    let outcome = line.outcome(stored.as_ref());
    let mut after = stored.unwrap_or_else(|| Follower::new(&line.openid));
    // The items are what the real run would queue; a dry run queues nothing.
    let _ = change(line, &mut after);
    seen.insert(line.openid.clone(), after);
    Ok(outcome)
}

/// One atomic write with the line's outbox items: `update_follower_and_queue` for a known
/// follower; a new one through `apply_callback` (which creates a record atomically, whoever
/// else writes it meanwhile).
fn write(
    store: &dyn Store,
    account: &str,
    line: &ImportLine,
    change: &LineChange<'_>,
) -> Result<ImportOutcome, StoreError> {
    let mut outcome = ImportOutcome::Unchanged;
    let known = store.update_follower_and_queue(account, &line.openid, &mut |f| {
        outcome = line.outcome(Some(f));
        change(line, f)
    })?;
    if known.is_some() {
        return Ok(outcome);
    }
    let now = crate::outbox::now_ms() / 1000;
    let key = CallbackKey {
        account,
        openid: &line.openid,
        dedupe_key: "followers-import",
        now,
        // Expired as it is written: a later import is never taken for a retry, and the key
        // is dropped by the follower's next write.
        expires_at: now,
    };
    store.apply_callback(key, &mut |stored| {
        outcome = line.outcome(stored.as_ref());
        let mut f = stored.unwrap_or_else(|| Follower::new(&line.openid));
        let effects = change(line, &mut f);
        Commit {
            follower: Some(f),
            answer: Answer {
                reply: None,
                rules: Vec::new(),
            },
            effects,
            // Known before siyu: no arrival, nothing happened today.
            counts: Vec::new(),
        }
    })?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Effect;
    use crate::store::MemoryStore;

    fn tag_vip(line: &ImportLine, f: &mut Follower) -> Vec<NewItem> {
        line.apply(f);
        if f.tags.insert("auto".into()) {
            vec![NewItem {
                effect: Effect::Tag {
                    openid: f.openid.clone(),
                    tag: "auto".into(),
                    add: true,
                },
                origin: "autotag:import".into(),
                not_before_ms: 0,
            }]
        } else {
            Vec::new()
        }
    }

    fn run(store: &MemoryStore, text: &str, dry_run: bool) -> (Summary, Vec<BadLine>) {
        let mut bad = Vec::new();
        let file = ImportFile::open(text.as_bytes()).unwrap();
        let summary = file
            .apply(store, "demo", dry_run, &tag_vip, &mut |b| bad.push(b))
            .unwrap();
        (summary, bad)
    }

    #[test]
    fn lines_are_counted_written_and_their_items_queued() {
        let store = MemoryStore::default();
        let mut known = Follower::new("oB2");
        known.tags.insert("auto".into());
        crate::store::put_follower(&store, "demo", &known).unwrap();
        let text = "openid,tags,counters\noA1,vip,orders=3\noB2,vip,\n,vip,\noA1,,orders=4\n";
        let (summary, bad) = run(&store, text, true);
        let want = Summary {
            new: 1,
            updated: 2,
            unchanged: 0,
            bad: 1,
        };
        assert_eq!(summary, want);
        assert_eq!(
            bad,
            [BadLine {
                line: 4,
                message: "the openid is empty".into()
            }]
        );
        assert_eq!(store.follower("demo", "oA1").unwrap(), None, "a dry run");
        assert!(store.outbox_page(None, 10).unwrap().is_empty());
        let (summary, _) = run(&store, text, false);
        assert_eq!(summary, want, "the real run counts as the dry run did");
        let a = store.follower("demo", "oA1").unwrap().unwrap();
        assert_eq!(a.counters["orders"], 4);
        let queued: Vec<String> = store
            .outbox_page(None, 10)
            .unwrap()
            .into_iter()
            .map(|i| i.effect.describe())
            .collect();
        assert_eq!(queued.len(), 1, "oA1's tag only (oB2 had it): {queued:?}");
        // Again: oA1's two lines still set 3 then 4; oB2 is as the file says.
        let (again, _) = run(&store, text, false);
        let want = Summary {
            new: 0,
            updated: 2,
            unchanged: 1,
            bad: 1,
        };
        assert_eq!(again, want);
        assert_eq!(store.outbox_page(None, 10).unwrap().len(), 1, "nothing new");
    }

    #[test]
    fn a_bad_header_refuses_the_file() {
        for (name, text, want) in [
            ("no openid", "tags\nvip\n", "no `openid` column"),
            (
                "unknown column",
                "openid,tag\no1,vip\n",
                "unknown column `tag`",
            ),
        ] {
            let Err(b) = ImportFile::open(text.as_bytes()) else {
                panic!("{name}: accepted")
            };
            assert_eq!(b.line, 1, "{name}");
            assert!(b.message.contains(want), "{name}: {}", b.message);
        }
    }
}
