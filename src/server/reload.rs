//! Rule reloads while serving: when a file in a rule folder changes (watched), on SIGHUP,
//! and on an admin API call. Every trigger goes through `reload_book`, which installs a
//! valid folder atomically, keeps the old table on any error, and logs and audits what
//! is new (a new table, a new refusal), never a folder found as it was.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix_web::web;
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};

use super::webhook::Entropy;
use super::AppState;
use crate::audit::AuditEntry;
use crate::rulebook::{is_rule_path, LoadError, Reloaded, RuleBook};

/// Editors write a file in several steps (truncate, write, rename a swap file): wait this
/// long for the folder to be quiet before compiling it, so a half-saved file is not read.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Reloads one folder; `who` names the trigger in logs and the audit trail.
pub fn reload_book(state: &AppState, book: &RuleBook, who: &str) -> Result<Reloaded, LoadError> {
    let now = Entropy::fresh().now;
    let result = book.reload(now);
    let dir = book.dir().display().to_string();
    tracing::debug!(dir = %dir, who, ?result, "reload");
    let (action, detail) = match &result {
        // Nothing new: the folder is what is in force, or what was refused (and logged
        // and audited) last time. One edit is one log line and one audit entry.
        Ok(Reloaded::Unchanged(_)) | Err(LoadError::StillRefused(_)) => return result,
        Ok(Reloaded::Replaced(v)) => {
            tracing::info!(dir = %dir, version = %v, who, "rules reloaded");
            super::rule_sync::publish(state, book, who);
            ("rules.reload", format!("version {}", v.hash))
        }
        Err(e) => {
            tracing::error!(
                dir = %dir, who, error = %e,
                "rules refused; the rules in force stay in force"
            );
            ("rules.reload_failed", e.to_string())
        }
    };
    state.metrics.reload(result.is_ok());
    audit(state, who, action, &dir, detail);
    result
}

/// Records an audit entry; a failure to record is logged, never fatal to the change.
pub fn audit(state: &AppState, who: &str, action: &str, target: &str, detail: String) {
    let entry = AuditEntry {
        at: Entropy::fresh().now,
        who: who.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
    };
    if let Err(e) = state.store.append_audit(&entry) {
        tracing::error!(error = %e, action, "audit entry not recorded");
    }
}

/// Watches every rule folder. The returned watcher must be kept alive; events are handled
/// on a thread of their own (compiling rules is CPU work, kept off the async workers).
///
/// Each folder is watched under its canonical path: `notify` reports absolute paths built
/// from the path it watches, while a folder may be configured relative to the working
/// directory (`--config config.toml`), with `./`, or through a symlink. Comparing the
/// event's folder with the canonical one works for every spelling; the book keeps the
/// spelling of the config for messages.
pub fn watch(state: web::Data<AppState>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    let mut folders: Vec<PathBuf> = Vec::new();
    for book in &state.books {
        let canonical = std::fs::canonicalize(book.dir()).map_err(notify::Error::io)?;
        // Two spellings of one folder (`replies`, `./replies`) make two books: one watch.
        if !folders.contains(&canonical) {
            watcher.watch(&canonical, RecursiveMode::NonRecursive)?;
            folders.push(canonical.clone());
        }
        tracing::debug!(dir = %book.dir().display(), watched = %canonical.display(), "watching rules");
    }
    let books: Vec<(PathBuf, Arc<RuleBook>)> = state
        .books
        .iter()
        .filter_map(|b| Some((std::fs::canonicalize(b.dir()).ok()?, b.clone())))
        .collect();
    std::thread::Builder::new()
        .name("rules-watcher".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut changes = Changes::default();
                changes.take(first);
                if changes.is_empty() {
                    // Not a change: above all, the reads of our own last reload.
                    continue;
                }
                // Quiet means no *change* for DEBOUNCE: reads of the folder (an operator's
                // console polling the rule list) come as events too, and must not hold a
                // reload off for as long as they keep coming.
                let mut quiet_at = Instant::now() + DEBOUNCE;
                loop {
                    let left = quiet_at.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(ev) => {
                            if changes.take(ev) {
                                quiet_at = Instant::now() + DEBOUNCE;
                            }
                        }
                        Err(_) => break,
                    }
                }
                tracing::debug!(paths = ?changes.paths, rescan = changes.rescan, "rule files changed");
                for (folder, book) in &books {
                    if changes.touches(folder) {
                        let _ = reload_book(&state, book, "file-watcher");
                    }
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}

/// The rule files changed in one debounce window.
#[derive(Debug, Default)]
struct Changes {
    /// Changed rule files, as `notify` reports them (under a canonical folder).
    paths: Vec<PathBuf>,
    /// The backend lost events (inotify's queue overflowed): any folder may have changed.
    rescan: bool,
}

impl Changes {
    /// Keeps what `ev` changed. Only creating, writing, renaming and removing a rule file
    /// count: reading one (inotify's open, access and close events, which every reload
    /// causes), metadata such as `touch` or `chmod`, and other files (the `.NAME.tmp`
    /// files that `RuleBook::write_file` renames into place, editors' swap files) do not,
    /// so an idle server never reads its folders.
    ///
    /// Returns whether `ev` was such a change.
    fn take(&mut self, ev: notify::Result<notify::Event>) -> bool {
        let Ok(ev) = ev else { return false };
        let before = self.paths.len();
        let rescan = ev.need_rescan();
        self.rescan |= rescan;
        if is_change(&ev.kind) {
            self.paths
                .extend(ev.paths.into_iter().filter(|p| is_rule_path(p)));
        }
        rescan || self.paths.len() > before
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }

    /// Whether a rule file directly in `folder` changed.
    fn touches(&self, folder: &Path) -> bool {
        self.rescan || self.paths.iter().any(|p| p.parent() == Some(folder))
    }
}

/// A change to a file's content or presence. `Modify(Any)` and `Any` are kept: some
/// backends cannot tell what changed, and a reload of an unchanged folder is cheap.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(m) => matches!(
            m,
            ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
        ),
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// Reloads every folder on each SIGHUP, until the server stops.
#[cfg(unix)]
pub async fn on_sighup(state: web::Data<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with the admin API instead");
        return;
    };
    while hangups.recv().await.is_some() {
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for book in &state.books {
                let _ = reload_book(&state, book, "sighup");
            }
        })
        .await;
    }
}
