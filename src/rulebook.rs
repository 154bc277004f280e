//! The rule table in force for a folder of rule files: reading the folder, reloading it,
//! and writing one file of it safely.
//!
//! The rule engine itself is pure (`rules`); this is the thin I/O around it. A `RuleBook`
//! holds the compiled table and its version behind an `Arc` that is swapped whole, so a
//! callback keeps the table it started with even if a reload lands meanwhile, and no
//! callback ever sees half a table. A folder that fails to compile never replaces the
//! table in force: the error is kept for the admin API and logged.
//!
//! Every compile here (the first load, each reload, each file written through the API)
//! runs against the book's one [`RuleContext`], the one `siyu check` uses too, so what
//! starts a server is exactly what a reload accepts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha1::{Digest, Sha1};

use crate::config::{AccountKind, Settings};
use crate::rules::{Reach, RuleContext, RuleErrors, RuleSource, RuleTable, RuleWarning};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule folder {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("{0}")]
    Rules(#[from] RuleErrors),
    #[error("`{0}` is not a rule file name (letters, digits, `-`, `_`, ending in .toml)")]
    BadName(String),
    /// The folder is byte-for-byte the one the last reload refused; this is that refusal's
    /// error. Nothing new happened, so there is nothing new to log or audit.
    #[error("{0}")]
    StillRefused(String),
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

/// One rule file by name (no folder), as instances on one store share them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleFile {
    pub name: String,
    pub text: String,
}

/// Whether a path in a rule folder names a rule file: `*.toml`. Not the `.NAME.tmp`
/// files `write_file` renames into place, nor editors' swap and backup files, so a
/// watcher that uses this reacts only to what a reload would read.
pub fn is_rule_path(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "toml")
}

/// The `*.toml` files of `dir`, in name order (rule order depends on it).
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| LoadError::Io {
            dir: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_rule_path(p) && p.is_file())
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

/// Reads and compiles `dir` once, against `context` (`siyu check`, `siyu simulate`).
pub fn load_dir(dir: &Path, context: &RuleContext) -> Result<RuleTable, LoadError> {
    Ok(RuleTable::compile(&read_sources(dir)?, context)?)
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
    /// As configured (maybe relative), for messages; watchers resolve it themselves.
    dir: PathBuf,
    /// What the folder's rules are checked against, fixed for the book's life.
    context: RuleContext,
    loaded: RwLock<Arc<Loaded>>,
    refusal: Mutex<Option<Refusal>>,
    /// Serialises reloads and writes, so two reloads never race to install older files.
    writing: Mutex<()>,
}

/// Why the last reload was refused, and which folder content it refused.
#[derive(Debug)]
struct Refusal {
    error: String,
    /// The refused content's hash; `None` when the folder could not be read at all.
    hash: Option<String>,
}

impl RuleBook {
    pub fn load(dir: &Path, context: RuleContext, now: i64) -> Result<RuleBook, LoadError> {
        let sources = read_sources(dir)?;
        let table = RuleTable::compile(&sources, &context)?;
        Ok(RuleBook {
            loaded: RwLock::new(Arc::new(Loaded {
                table,
                version: Version {
                    hash: hash(&sources),
                    loaded_at: now,
                },
            })),
            dir: dir.to_path_buf(),
            context,
            refusal: Mutex::new(None),
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
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.error.clone())
    }

    /// Re-reads the folder; installs it if it compiles and differs from what is in force.
    /// A folder identical to the one refused last time is not compiled again:
    /// [`LoadError::StillRefused`], so callers can tell a new refusal from an old one.
    pub fn reload(&self, now: i64) -> Result<Reloaded, LoadError> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let sources = match read_sources(&self.dir) {
            Ok(sources) => sources,
            Err(e) => {
                self.refuse(&e, None);
                return Err(e);
            }
        };
        let hash = hash(&sources);
        let current = self.current();
        if hash == current.version.hash {
            self.accept();
            return Ok(Reloaded::Unchanged(current.version.clone()));
        }
        if let Some(error) = self.refused_before(&hash) {
            return Err(LoadError::StillRefused(error));
        }
        match RuleTable::compile(&sources, &self.context) {
            Ok(table) => {
                self.accept();
                Ok(self.swap(table, hash, now))
            }
            Err(errors) => {
                let e = LoadError::Rules(errors);
                self.refuse(&e, Some(hash));
                Err(e)
            }
        }
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
        let table = RuleTable::compile(&sources, &self.context)?;
        self.write_durably(name, text)?;
        let result = self.swap(table, hash(&sources), now);
        self.accept();
        Ok(result)
    }

    /// Writes one rule file of the folder through a `.NAME.tmp` renamed into place, synced
    /// (the watcher ignores the temporary name).
    fn write_durably(&self, name: &str, text: &str) -> Result<(), LoadError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        write_durably(&tmp, &self.dir.join(name), text).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, source: std::io::Error) -> LoadError {
        LoadError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// The folder's rule files as they are on disk, and the version hash they load as.
    pub fn files(&self) -> Result<(String, Vec<RuleFile>), LoadError> {
        let sources = read_sources(&self.dir)?;
        let files = sources
            .iter()
            .map(|s| RuleFile {
                name: Path::new(&s.name)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text: s.text.clone(),
            })
            .collect();
        Ok((hash(&sources), files))
    }

    /// Makes the folder hold exactly `files` (another instance's rules): they are compiled
    /// first, and only if they compile is each written (durably, as `write_file` does),
    /// every other rule file of the folder removed, and the table swapped. A bad name or a
    /// compile error leaves folder and table as they were.
    pub fn install(&self, files: &[RuleFile], now: i64) -> Result<Reloaded, LoadError> {
        if let Some(bad) = files.iter().find(|f| !is_rule_file_name(&f.name)) {
            return Err(LoadError::BadName(bad.name.chars().take(80).collect()));
        }
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut sources: Vec<RuleSource> = files
            .iter()
            .map(|f| RuleSource {
                name: self.dir.join(&f.name).display().to_string(),
                text: f.text.clone(),
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let wanted = hash(&sources);
        let current = self.current();
        let on_disk = read_sources(&self.dir)?;
        if wanted == current.version.hash && hash(&on_disk) == wanted {
            return Ok(Reloaded::Unchanged(current.version.clone()));
        }
        let table = RuleTable::compile(&sources, &self.context)?;
        for f in files {
            let path = self.dir.join(&f.name);
            let unchanged = on_disk
                .iter()
                .any(|s| Path::new(&s.name) == path && s.text == f.text);
            if !unchanged {
                self.write_durably(&f.name, &f.text)?;
            }
        }
        for old in &on_disk {
            let path = Path::new(&old.name);
            let kept = files
                .iter()
                .any(|f| path.file_name() == Some(std::ffi::OsStr::new(&f.name)));
            if !kept {
                std::fs::remove_file(path).map_err(|e| self.io_error(e))?;
            }
        }
        let result = self.swap(table, wanted, now);
        self.accept();
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

    fn swap(&self, table: RuleTable, hash: String, now: i64) -> Reloaded {
        let version = Version {
            hash,
            loaded_at: now,
        };
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Loaded {
            table,
            version: version.clone(),
        });
        Reloaded::Replaced(version)
    }

    /// The error of the last refusal, if it refused exactly this content.
    fn refused_before(&self, hash: &str) -> Option<String> {
        let refusal = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        refusal
            .as_ref()
            .filter(|r| r.hash.as_deref() == Some(hash))
            .map(|r| r.error.clone())
    }

    fn refuse(&self, error: &LoadError, hash: Option<String>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(Refusal {
            error: error.to_string(),
            hash,
        });
    }

    /// What is on disk is in force: no refusal stands.
    fn accept(&self) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Writes `text` to `tmp`, syncs it, renames it over `path` and syncs the folder: an
/// operator told "saved" (the admin API's 200) keeps the file across a power cut, and no
/// reader ever sees half of it.
fn write_durably(tmp: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        // A rename is durable once the folder's entry is: fsync the folder itself.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

    /// A rule that issues from the `new-guest` batch, its value at line 4, column 16.
    const CLAIM: &str =
        "[[rule]]\nname = \"claim\"\nkeywords = [\"领券\"]\nissue_coupon = \"new-guest\"\n";

    fn book() -> (tempfile::TempDir, RuleBook) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        let book = RuleBook::load(dir.path(), RuleContext::default(), 1).unwrap();
        (dir, book)
    }

    #[test]
    fn install_makes_the_folder_hold_exactly_the_files_given_or_changes_nothing() {
        let (dir, book) = book();
        let (_, mine) = book.files().unwrap();
        let theirs = vec![RuleFile {
            name: "b.toml".into(),
            text: GOOD.replace("one", "two").replace("\"a\"", "\"b\""),
        }];
        // Another instance's folder, as its `files()` reported it: the same version here.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("b.toml"), &theirs[0].text).unwrap();
        let there = RuleBook::load(other.path(), RuleContext::default(), 1).unwrap();
        let Reloaded::Replaced(v) = book.install(&theirs, 5).unwrap() else {
            panic!("new files replace the table")
        };
        assert_eq!(
            v.hash,
            there.current().version.hash,
            "one hash for one set of files"
        );
        assert_eq!(book.file_names().unwrap(), ["b.toml"], "a.toml was removed");
        assert!(book
            .reload(6)
            .is_ok_and(|r| matches!(r, Reloaded::Unchanged(_))));
        assert!(matches!(
            book.install(&theirs, 7).unwrap(),
            Reloaded::Unchanged(_)
        ));

        let broken = vec![RuleFile {
            name: "c.toml".into(),
            text: "[[rule]]\nname = \"c\"\n".into(),
        }];
        assert!(matches!(book.install(&broken, 8), Err(LoadError::Rules(_))));
        let bad_name = vec![RuleFile {
            name: "../escape.toml".into(),
            text: GOOD.into(),
        }];
        assert!(matches!(
            book.install(&bad_name, 8),
            Err(LoadError::BadName(_))
        ));
        assert_eq!(book.file_names().unwrap(), ["b.toml"], "nothing written");
        assert_eq!(book.current().version, v);
        assert!(book.install(&mine, 9).is_ok());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.toml")).unwrap(),
            GOOD
        );
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

    /// Load, reload and write run the one compile, with the book's context: a batch the
    /// config does not define is the same `file:line:column` error from each, and the same
    /// file is fine where the batch is defined.
    #[test]
    fn every_compile_checks_coupon_batches_against_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let claim = dir.path().join("claim.toml");
        std::fs::write(&claim, CLAIM).unwrap();
        let expected = format!(
            "{}:4:16: unknown coupon batch `new-guest` (no coupon batches are defined)",
            claim.display()
        );
        let err = RuleBook::load(dir.path(), RuleContext::default(), 1).unwrap_err();
        assert_eq!(err.to_string(), expected, "load");

        let defined = RuleContext::with_coupon_batches(["new-guest"]);
        assert!(RuleBook::load(dir.path(), defined.clone(), 1).is_ok());
        assert!(load_dir(dir.path(), &defined).is_ok());
        assert_eq!(
            load_dir(dir.path(), &RuleContext::default())
                .unwrap_err()
                .to_string(),
            expected,
            "load_dir"
        );

        std::fs::remove_file(&claim).unwrap();
        let (dir, book) = book();
        let err = book.write_file("claim.toml", CLAIM, 2).unwrap_err();
        let shown = dir.path().join("claim.toml").display().to_string();
        assert!(
            err.to_string()
                .starts_with(&format!("{shown}:4:16: unknown coupon batch")),
            "write_file: {err}"
        );
        assert!(
            !dir.path().join("claim.toml").exists(),
            "refused, not written"
        );
        std::fs::write(dir.path().join("claim.toml"), CLAIM).unwrap();
        let err = book.reload(3).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{shown}:4:16: unknown coupon batch")),
            "reload: {err}"
        );
    }

    /// A watcher reloads on every change it sees; the book tells a new refusal from the
    /// same content refused again, so the second is not logged or audited twice.
    #[test]
    fn the_same_broken_folder_is_refused_once_then_still_refused() {
        let (dir, book) = book();
        let a = dir.path().join("a.toml");
        std::fs::write(&a, "[[rule]]\nname = 1\n").unwrap();
        let first = book.reload(2).unwrap_err();
        assert!(matches!(first, LoadError::Rules(_)), "{first:?}");
        let again = book.reload(3).unwrap_err();
        assert!(matches!(again, LoadError::StillRefused(_)), "{again:?}");
        assert_eq!(again.to_string(), first.to_string());
        assert_eq!(book.last_error(), Some(first.to_string()));

        // Other broken content is a new refusal; fixing the folder clears it.
        std::fs::write(&a, "[[rule]]\nname = 2\n").unwrap();
        assert!(matches!(book.reload(4), Err(LoadError::Rules(_))));
        std::fs::write(&a, GOOD).unwrap();
        assert!(matches!(book.reload(5), Ok(Reloaded::Unchanged(_))));
        assert_eq!(book.last_error(), None);
        // Broken again after a good state: refused (and reported) anew.
        std::fs::write(&a, "[[rule]]\nname = 1\n").unwrap();
        assert!(matches!(book.reload(6), Err(LoadError::Rules(_))));
    }

    #[test]
    fn only_toml_files_are_rule_paths() {
        let cases = [
            ("a rule file", "replies/a.toml", true),
            ("write_file's temporary file", "replies/.a.toml.tmp", false),
            ("a vim swap file", "replies/.a.toml.swp", false),
            ("a backup", "replies/a.toml~", false),
            ("another file", "replies/notes.txt", false),
        ];
        for (name, path, expected) in cases {
            assert_eq!(is_rule_path(Path::new(path)), expected, "{name}: {path}");
        }
    }
}
