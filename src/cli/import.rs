//! `siyu followers import FILE.csv --account ID [--dry-run]`: the shop's follower file
//! (`openid,tags,attributes,counters`) into follower state. Tags are added, attributes and
//! counters set; one atomic write per follower. Every bad line is reported as
//! `FILE:LINE: message` and skipped; the others apply (or, with `--dry-run`, are counted
//! as new / updated / unchanged and nothing is written). Exit 1 if any line was bad.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Role;
use crate::follower::Follower;
use crate::ingest::{ImportLine, ImportOutcome};
use crate::store::{Answer, CallbackKey, Commit, Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV file: a header line, then `openid,tags,attributes,counters` (tags
    /// `;`-separated, attributes and counters `k=v;k=v`).
    pub file: PathBuf,
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
    /// Report what would change and every bad line; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Default)]
struct Tally {
    new: u64,
    updated: u64,
    unchanged: u64,
    bad: u64,
}

impl Tally {
    fn count(&mut self, o: ImportOutcome) {
        match o {
            ImportOutcome::New => self.new += 1,
            ImportOutcome::Updated => self.updated += 1,
            ImportOutcome::Unchanged => self.unchanged += 1,
        }
    }
}

pub fn run(config: &Path, args: &ImportArgs) -> ExitCode {
    let settings = match super::settings_with_account(config, &args.account) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let shown = args.file.display().to_string();
    let mut reader = match csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(&args.file)
    {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot read {shown}: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let columns = match reader.headers() {
        Ok(h) => {
            let names: Vec<&str> = h.iter().collect();
            match ImportLine::columns(&names) {
                Ok(c) => c,
                Err(m) => {
                    errln!("{shown}:1: {m}");
                    return ExitCode::from(EXIT_INVALID);
                }
            }
        }
        Err(e) => {
            errln!("{shown}:1: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let width = reader.headers().map_or(0, csv::StringRecord::len);
    // The account's rules, for its automatic tags: an imported counter may meet one.
    let account = settings.account(&args.account).expect("checked above");
    let rules = match crate::rulebook::load_dir(&account.replies_dir, &settings.rule_context()) {
        Ok(t) => t,
        Err(e) => {
            errln!("rules {}: refused\n{e}", account.replies_dir.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let now = crate::outbox::now_ms() / 1000;
    let line_with_autotags = |line: &ImportLine, f: &mut Follower| {
        line.apply(f);
        rules.autotag(f, now);
    };
    // The store is opened only once the file's header is sound. Beside a running sled
    // server there is no admin route for an import yet: stop the server (PostgreSQL
    // stores are shared and never in the way).
    let store = match super::store_or_server(&settings, Role::Operator) {
        Ok(StoreOrServer::Local(store)) => store,
        Ok(StoreOrServer::Remote(_)) => {
            errln!(
                "error: `siyu serve` holds the store; `followers import` needs it: stop the server and run it again"
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
        Err(code) => return code,
    };
    let mut tally = Tally::default();
    // A dry run's view of followers earlier lines touched, so a second line for the same
    // openid is counted as the real run would count it.
    let mut seen: HashMap<String, Follower> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                errln!("{shown}:{line}: {e}");
                tally.bad += 1;
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if record.len() > width {
            errln!(
                "{shown}:{line}: {} cells, the header has {width}",
                record.len()
            );
            tally.bad += 1;
            continue;
        }
        let cells: Vec<&str> = record.iter().collect();
        let parsed = match ImportLine::parse(&cells, &columns) {
            Ok(l) => l,
            Err(m) => {
                errln!("{shown}:{line}: {m}");
                tally.bad += 1;
                continue;
            }
        };
        let done = if args.dry_run {
            dry(
                store.as_ref(),
                &args.account,
                &parsed,
                &mut seen,
                &line_with_autotags,
            )
        } else {
            apply(store.as_ref(), &args.account, &parsed, &line_with_autotags)
        };
        match done {
            Ok(o) => tally.count(o),
            Err(e) => {
                errln!("error: {shown}:{line}: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }
    if !args.dry_run {
        if let Err(e) = store.flush() {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    let Tally {
        new,
        updated,
        unchanged,
        bad,
    } = tally;
    let note = if args.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    outln!("new {new}, updated {updated}, unchanged {unchanged}, bad lines {bad}{note}");
    if bad > 0 {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

fn dry(
    store: &dyn Store,
    account: &str,
    line: &ImportLine,
    seen: &mut HashMap<String, Follower>,
    change: &dyn Fn(&ImportLine, &mut Follower),
) -> Result<ImportOutcome, StoreError> {
    let stored = match seen.get(&line.openid) {
        Some(f) => Some(f.clone()),
        None => store.follower(account, &line.openid)?,
    };
    let outcome = line.outcome(stored.as_ref());
    let mut after = stored.unwrap_or_else(|| Follower::new(&line.openid));
    change(line, &mut after);
    seen.insert(line.openid.clone(), after);
    Ok(outcome)
}

/// One atomic write: `update_follower` for a known follower; a new one through
/// `apply_callback` (which creates a record atomically, whoever else writes it meanwhile).
/// `change`: the line's values, then the account's automatic tags.
fn apply(
    store: &dyn Store,
    account: &str,
    line: &ImportLine,
    change: &dyn Fn(&ImportLine, &mut Follower),
) -> Result<ImportOutcome, StoreError> {
    let mut outcome = ImportOutcome::Unchanged;
    let known = store.update_follower(account, &line.openid, &mut |f| {
        outcome = line.outcome(Some(f));
        change(line, f);
    })?;
    if known.is_some() {
        return Ok(outcome);
    }
    let key = CallbackKey {
        account,
        openid: &line.openid,
        dedupe_key: "followers-import",
        now: 1,
        // Already expired: a second import is never taken for a retry.
        expires_at: 2,
    };
    store.apply_callback(key, &mut |stored| {
        outcome = line.outcome(stored.as_ref());
        let mut f = stored.unwrap_or_else(|| Follower::new(&line.openid));
        change(line, &mut f);
        Commit {
            follower: Some(f),
            answer: Answer {
                reply: None,
                rules: Vec::new(),
            },
            effects: Vec::new(),
        }
    })?;
    Ok(outcome)
}
