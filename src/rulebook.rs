//! The rule table in force for a folder of rule files, and reading that folder.
//!
//! The rule engine itself is pure (`rules`); this is the thin I/O around it. A `RuleBook`
//! holds the compiled table behind an `Arc` that is swapped whole, so a callback keeps the
//! table it started with even if a reload lands meanwhile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::rules::{RuleErrors, RuleSource, RuleTable};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule folder {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("{0}")]
    Rules(#[from] RuleErrors),
}

/// Reads every `*.toml` file of `dir`, in name order (rule order depends on it).
pub fn read_sources(dir: &Path) -> Result<Vec<RuleSource>, LoadError> {
    let io = |source| LoadError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(RuleSource {
                text: std::fs::read_to_string(&p).map_err(io)?,
                name: p.display().to_string(),
            })
        })
        .collect()
}

pub fn load_dir(dir: &Path) -> Result<RuleTable, LoadError> {
    Ok(RuleTable::compile(&read_sources(dir)?)?)
}

/// The live rule table of one folder.
#[derive(Debug)]
pub struct RuleBook {
    dir: PathBuf,
    table: RwLock<Arc<RuleTable>>,
}

impl RuleBook {
    pub fn load(dir: &Path) -> Result<RuleBook, LoadError> {
        Ok(RuleBook {
            table: RwLock::new(Arc::new(load_dir(dir)?)),
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The table in force now. A std `RwLock` is enough: it is held only to clone an `Arc`.
    pub fn current(&self) -> Arc<RuleTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new table; callbacks in flight keep the one they hold.
    pub fn replace(&self, table: RuleTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }
}
