//! The rule table in force for a folder of rule files: reading the folder, reloading it,
//! and writing one file of it safely.
//!
//! The rule engine itself is pure (`rules`); this is the thin I/O around it. A `RuleBook`
//! holds the compiled table and its version behind an `Arc` that is swapped whole, so a
//! callback keeps the table it started with even if a reload lands meanwhile, and no
//! callback ever sees half a table. A folder that fails to compile never replaces the
//! table in force: the error is kept for the admin API and logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha1::{Digest, Sha1};

use crate::config::{AccountKind, Settings};
use crate::rules::{Reach, RuleErrors, RuleSource, RuleTable, RuleWarning};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule folder {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("{0}")]
    Rules(#[from] RuleErrors),
    #[error("`{0}` is not a rule file name (letters, digits, `-`, `_`, ending in .toml)")]
    BadName(String),
}

/// Which rules are in force: a hash of every file's name and content, and when they were
/// loaded. Two folders with the same files have the same hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub hash: String,
    pub loaded_at: i64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (loaded at {})", self.hash, self.loaded_at)
    }
}

/// A compiled table with its version, shared by every callback that started under it.
#[derive(Debug)]
pub struct Loaded {
    pub table: RuleTable,
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The folder compiled and differs from what was in force.
    Replaced(Version),
    /// The folder is byte-for-byte what is in force already.
    Unchanged(Version),
}

/// The `*.toml` files of `dir`, in name order (rule order depends on it).
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| LoadError::Io {
            dir: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads every `*.toml` file of `dir`, in name order.
pub fn read_sources(dir: &Path) -> Result<Vec<RuleSource>, LoadError> {
    let io = |source| LoadError::Io {
        dir: dir.display().to_string(),
        source,
    };
    rule_files(dir)?
        .into_iter()
        .map(|p| {
            Ok(RuleSource {
                text: std::fs::read_to_string(&p).map_err(io)?,
                name: p.display().to_string(),
            })
        })
        .collect()
}

/// What `table` asks of the `accounts` reading it (ids from [`Settings::rule_dirs`]) that
/// they cannot deliver: follow-ups and WeCom welcomes without `[account.api]`, follow-ups
/// on a WeCom app (see `rules::delivery`). One warning per rule and account.
pub fn undeliverable(
    table: &RuleTable,
    settings: &Settings,
    accounts: &[String],
) -> Vec<RuleWarning> {
    accounts
        .iter()
        .filter_map(|id| settings.account(id))
        .flat_map(|a| {
            table.undeliverable(Reach {
                account: &a.id,
                wecom: a.kind == AccountKind::Wecom,
                api: a.api.is_some(),
            })
        })
        .collect()
}

pub fn load_dir(dir: &Path) -> Result<RuleTable, LoadError> {
    Ok(RuleTable::compile(&read_sources(dir)?)?)
}

fn hash(sources: &[RuleSource]) -> String {
    let mut h = Sha1::new();
    for s in sources {
        let name = Path::new(&s.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((s.text.len() as u64).to_be_bytes());
        h.update(s.text.as_bytes());
    }
    hex::encode(&h.finalize()[..6])
}

/// The live rule table of one folder.
#[derive(Debug)]
pub struct RuleBook {
    dir: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    last_error: Mutex<Option<String>>,
    /// Serialises reloads and writes, so two reloads never race to install older files.
    writing: Mutex<()>,
}

impl RuleBook {
    pub fn load(dir: &Path, now: i64) -> Result<RuleBook, LoadError> {
        let sources = read_sources(dir)?;
        let table = RuleTable::compile(&sources)?;
        Ok(RuleBook {
            loaded: RwLock::new(Arc::new(Loaded {
                table,
                version: Version {
                    hash: hash(&sources),
                    loaded_at: now,
                },
            })),
            dir: dir.to_path_buf(),
            last_error: Mutex::new(None),
            writing: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The table in force now. A std `RwLock` is enough: it is held only to clone an `Arc`.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last reload's error, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the folder; installs it if it compiles and differs from what is in force.
    pub fn reload(&self, now: i64) -> Result<Reloaded, LoadError> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let result = read_sources(&self.dir).and_then(|s| self.install(s, now));
        self.remember(&result);
        result
    }

    /// Validates the folder as it would be with `name` holding `text`; only if it compiles
    /// is the file written (to a temporary file, then renamed over the old one, so no
    /// reader ever sees half a file) and the new table installed.
    pub fn write_file(&self, name: &str, text: &str, now: i64) -> Result<Reloaded, LoadError> {
        if !is_rule_file_name(name) {
            return Err(LoadError::BadName(name.chars().take(80).collect()));
        }
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join(name);
        let mut sources = read_sources(&self.dir)?;
        let shown = path.display().to_string();
        match sources.iter_mut().find(|s| s.name == shown) {
            Some(s) => s.text = text.to_string(),
            None => {
                sources.push(RuleSource {
                    name: shown,
                    text: text.to_string(),
                });
                sources.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        let table = RuleTable::compile(&sources)?;
        let io = |source| LoadError::Io {
            dir: self.dir.display().to_string(),
            source,
        };
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        let result = self.swap(table, &sources, now);
        self.remember(&Ok(result.clone()));
        Ok(result)
    }

    /// The names of the folder's rule files, in load order (no file is read).
    pub fn file_names(&self) -> Result<Vec<String>, LoadError> {
        Ok(rule_files(&self.dir)?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    /// The text of one rule file.
    pub fn read_file(&self, name: &str) -> Result<String, LoadError> {
        if !is_rule_file_name(name) {
            return Err(LoadError::BadName(name.chars().take(80).collect()));
        }
        std::fs::read_to_string(self.dir.join(name)).map_err(|source| LoadError::Io {
            dir: self.dir.display().to_string(),
            source,
        })
    }

    fn install(&self, sources: Vec<RuleSource>, now: i64) -> Result<Reloaded, LoadError> {
        if hash(&sources) == self.current().version.hash {
            return Ok(Reloaded::Unchanged(self.current().version.clone()));
        }
        let table = RuleTable::compile(&sources)?;
        Ok(self.swap(table, &sources, now))
    }

    fn swap(&self, table: RuleTable, sources: &[RuleSource], now: i64) -> Reloaded {
        let version = Version {
            hash: hash(sources),
            loaded_at: now,
        };
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Loaded {
            table,
            version: version.clone(),
        });
        Reloaded::Replaced(version)
    }

    fn remember(&self, result: &Result<Reloaded, LoadError>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            result.as_ref().err().map(|e| e.to_string());
    }
}

/// A plain file name: no separators, no leading dot, so an API caller cannot step out of
/// the rule folder.
pub fn is_rule_file_name(name: &str) -> bool {
    name.strip_suffix(".toml").is_some_and(|stem| {
        !stem.is_empty()
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[rule]]\nname = \"a\"\nkeywords = [\"hi\"]\nreply = \"one\"\n";

    fn book() -> (tempfile::TempDir, RuleBook) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        let book = RuleBook::load(dir.path(), 1).unwrap();
        (dir, book)
    }

    #[test]
    fn reload_swaps_only_a_valid_changed_folder() {
        let (dir, book) = book();
        let v1 = book.current().version.clone();
        assert!(matches!(book.reload(2).unwrap(), Reloaded::Unchanged(_)));
        let held = book.current();
        std::fs::write(dir.path().join("a.toml"), GOOD.replace("one", "two")).unwrap();
        let Reloaded::Replaced(v2) = book.reload(3).unwrap() else {
            panic!("a changed folder is replaced")
        };
        assert_ne!(v1.hash, v2.hash);
        assert_eq!(v2.loaded_at, 3);
        assert_eq!(held.version, v1, "a holder keeps the table it took");

        std::fs::write(dir.path().join("a.toml"), "[[rule]]\nname = 1\n").unwrap();
        let err = book.reload(4).unwrap_err().to_string();
        assert!(err.contains("a.toml:2"), "{err}");
        assert_eq!(
            book.current().version,
            v2,
            "a bad folder never replaces the table"
        );
        assert!(book.last_error().unwrap().contains("a.toml:2"));
    }

    #[test]
    fn write_file_validates_before_writing() {
        let (dir, book) = book();
        let before = std::fs::read_to_string(dir.path().join("a.toml")).unwrap();
        let err = book
            .write_file("a.toml", "[[rule]]\nname = \"a\"\nintent = \"nope\"\n", 5)
            .unwrap_err();
        assert!(err.to_string().contains("a.toml:3"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.toml")).unwrap(),
            before
        );
        // A duplicate name in a new file is refused too, and the file is not created.
        assert!(book.write_file("b.toml", GOOD, 5).is_err());
        assert!(!dir.path().join("b.toml").exists());

        let ok = GOOD.replace("\"a\"", "\"b\"");
        assert!(matches!(
            book.write_file("b.toml", &ok, 6).unwrap(),
            Reloaded::Replaced(_)
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b.toml")).unwrap(),
            ok
        );
        assert_eq!(book.current().table.len(), 2);
        for bad in ["../x.toml", "x.txt", ".toml", "a/b.toml", ".hidden.toml"] {
            assert!(
                matches!(book.write_file(bad, GOOD, 7), Err(LoadError::BadName(_))),
                "{bad}"
            );
        }
    }
}
