//! Rules across instances on one PostgreSQL store (README "Several instances on
//! PostgreSQL"). The database keeps every version of each rule folder. An instance that
//! installs new rules from its own folder (a file changed, SIGHUP, an admin reload or
//! write) publishes them as the folder's newest version; every instance polls the newest
//! versions twice a second and installs one it does not run yet, writing its files into
//! its own folder (so a restart finds them there). At start, a folder whose files were a
//! version once (the instance was down while the others moved on) takes the newest
//! version; files never seen (a deploy) are published as the newest.
//!
//! A folder is named by its path relative to the config's folder, so instances started
//! from the same config agree however they were started.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use super::webhook::Entropy;
use super::AppState;
use crate::rulebook::{Reloaded, RuleBook};
use crate::store::shared_rules::SharedRules;

/// How often an instance looks for rules another instance published.
pub const POLL: Duration = Duration::from_millis(500);

/// The name instances agree on for a folder.
pub fn folder_name(state: &AppState, book: &RuleBook) -> String {
    let base = state.settings.source.parent().unwrap_or(Path::new(""));
    let dir = book.dir();
    dir.strip_prefix(base).unwrap_or(dir).display().to_string()
}

/// Publishes what `book` runs now as its folder's newest version (after a reload or a
/// write through this instance). Errors are logged: the rules are in force here anyway,
/// and the next change publishes again.
pub fn publish(state: &AppState, book: &RuleBook, who: &str) {
    let Some(shared) = state.store.shared_rules() else {
        return;
    };
    let name = folder_name(state, book);
    match book.files() {
        Ok((hash, files)) if hash == book.current().version.hash => {
            match shared.publish_rules(&name, &hash, &files, who, Entropy::fresh().now) {
                Ok(v) => {
                    tracing::info!(dir = %name, version = v.version, hash = %v.hash, "rules published to the other instances")
                }
                Err(e) => {
                    tracing::error!(dir = %name, error = %e, "rules not published; the other instances keep theirs")
                }
            }
        }
        // The folder changed again meanwhile: its own reload publishes it.
        Ok(_) => {}
        Err(e) => tracing::error!(dir = %name, error = %e, "rules not published"),
    }
}

/// At start: agrees with the other instances on each folder (see the module's comment).
pub fn join(state: &AppState) {
    let Some(shared) = state.store.shared_rules() else {
        return;
    };
    let newest = match shared.newest_rules() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the shared rules; serving this folder's");
            return;
        }
    };
    for book in &state.books {
        let name = folder_name(state, book);
        let mine = book.current().version.hash.clone();
        match newest.iter().find(|v| v.dir == name) {
            Some(v) if v.hash == mine => {}
            Some(v) if shared.rules_seen(&name, &mine).unwrap_or(false) => {
                tracing::info!(dir = %name, version = v.version, "this folder holds older rules; taking the newest");
                follow_one(shared, book, &name, v.version, "start");
            }
            _ => publish(state, book, "start"),
        }
    }
}

fn follow_one(shared: &dyn SharedRules, book: &RuleBook, name: &str, version: i64, why: &str) {
    let result = shared
        .rule_files(name, version)
        .map_err(|e| e.to_string())
        .and_then(|files| {
            book.install(&files, Entropy::fresh().now)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(Reloaded::Replaced(v)) => {
            tracing::info!(dir = %name, version, hash = %v.hash, why, "rules followed from another instance")
        }
        Ok(Reloaded::Unchanged(_)) => {}
        Err(e) => tracing::error!(
            dir = %name, version, error = %e,
            "rules of another instance refused here; the rules in force stay in force"
        ),
    }
}

/// Follows the newest versions until the server stops (a thread of its own: installing
/// rules compiles them and writes files).
pub fn follow(state: web::Data<AppState>, stopped: tokio::sync::watch::Receiver<bool>) {
    if state.store.shared_rules().is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("rules-follower".into())
        .spawn(move || {
            let Some(shared) = state.store.shared_rules() else {
                return;
            };
            let books: Vec<(String, Arc<RuleBook>)> = state
                .books
                .iter()
                .map(|b| (folder_name(&state, b), b.clone()))
                .collect();
            // The last version tried per folder: one that does not compile here is not
            // tried twice.
            let mut tried: HashMap<String, i64> = HashMap::new();
            while !*stopped.borrow() {
                match shared.newest_rules() {
                    Ok(newest) => {
                        for v in newest {
                            let Some((_, book)) = books.iter().find(|(n, _)| *n == v.dir) else {
                                continue;
                            };
                            if book.current().version.hash == v.hash
                                || tried.get(&v.dir) == Some(&v.version)
                            {
                                continue;
                            }
                            tried.insert(v.dir.clone(), v.version);
                            follow_one(shared, book, &v.dir, v.version, "published");
                            state.metrics.reload(book.current().version.hash == v.hash);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the shared rules; will retry")
                    }
                }
                std::thread::sleep(POLL);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the rules follower; rules changed on other instances reach this one at its restart");
    }
}
