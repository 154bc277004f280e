//! Rule reloads while serving: when a file in a rule folder changes (watched), on SIGHUP,
//! and on an admin API call. Every trigger goes through `reload_book`, which installs a
//! valid folder atomically, keeps the old table on any error, logs, and audits.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use actix_web::web;
use notify::{RecursiveMode, Watcher};

use super::webhook::Entropy;
use super::AppState;
use crate::audit::AuditEntry;
use crate::rulebook::{LoadError, Reloaded, RuleBook};

/// Editors write a file in several steps (truncate, write, rename a swap file): wait this
/// long for the folder to be quiet before compiling it, so a half-saved file is not read.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Reloads one folder; `who` names the trigger in logs and the audit trail.
pub fn reload_book(state: &AppState, book: &RuleBook, who: &str) -> Result<Reloaded, LoadError> {
    let now = Entropy::fresh().now;
    let result = book.reload(now);
    let dir = book.dir().display().to_string();
    let (action, detail) = match &result {
        Ok(Reloaded::Unchanged(_)) => return result,
        Ok(Reloaded::Replaced(v)) => {
            tracing::info!(dir = %dir, version = %v, who, "rules reloaded");
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
pub fn watch(state: web::Data<AppState>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    for book in &state.books {
        watcher.watch(book.dir(), RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("rules-watcher".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut paths: Vec<PathBuf> = Vec::new();
                let mut take = |ev: notify::Result<notify::Event>| {
                    if let Ok(ev) = ev {
                        paths.extend(ev.paths);
                    }
                };
                take(first);
                while let Ok(ev) = rx.recv_timeout(DEBOUNCE) {
                    take(ev);
                }
                let rule_file = |p: &PathBuf| p.extension().is_some_and(|x| x == "toml");
                for book in &state.books {
                    if paths
                        .iter()
                        .any(|p| rule_file(p) && p.parent() == Some(book.dir()))
                    {
                        let _ = reload_book(&state, book, "file-watcher");
                    }
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
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
