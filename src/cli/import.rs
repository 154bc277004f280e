//! `siyu followers import FILE.csv --account ID [--dry-run]`: the shop's follower file
//! (`openid,tags,attributes,counters`) into follower state, through [`crate::import`]. Tags
//! are added, attributes and counters set; one atomic write per follower, with the outbox
//! items of the account's automatic tags. Every bad line is reported as `FILE:LINE:
//! message` and skipped; the others apply (or, with `--dry-run`, are counted as new /
//! updated / unchanged and nothing is written). Exit 1 if any line was bad.
//!
//! While `siyu serve` holds the (sled) store, the file is sent to the server
//! (`POST /admin/v1/followers/{account}/import`), which applies it with the rules it has in
//! force and answers what this prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use super::remote::{Failure, Server};
use super::{StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::follower::Follower;
use crate::import::{ImportError, ImportFile, Summary};
use crate::ingest::ImportLine;

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

pub fn run(config: &Path, args: &ImportArgs) -> ExitCode {
    let settings = match super::settings_with_account(config, &args.account) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let shown = args.file.display().to_string();
    let opened = match std::fs::File::open(&args.file) {
        Ok(f) => ImportFile::open(std::io::BufReader::new(f)),
        Err(e) => {
            errln!("error: cannot read {shown}: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // The store is opened only once the file's header is sound.
    let file = match opened {
        Ok(f) => f,
        Err(b) => {
            errln!("{shown}:{}: {}", b.line, b.message);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    match super::store_or_server(&settings, Role::Operator) {
        Ok(StoreOrServer::Local(store)) => local(store.as_ref(), &settings, file, args),
        Ok(StoreOrServer::Remote(server)) => remote(&server, args).unwrap_or_else(Failure::exit),
        Err(code) => code,
    }
}

fn local<R: std::io::Read>(
    store: &dyn crate::store::Store,
    settings: &Settings,
    file: ImportFile<R>,
    args: &ImportArgs,
) -> ExitCode {
    let shown = args.file.display().to_string();
    // The account's rules, for its automatic tags: an imported counter may meet one.
    let account = settings
        .account(&args.account)
        .expect("settings_with_account checked it");
    let rules = match crate::rulebook::load_dir(&account.replies_dir, &settings.rule_context()) {
        Ok(t) => t,
        Err(e) => {
            errln!("rules {}: refused\n{e}", account.replies_dir.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let outbound = account.outbound();
    let now = crate::outbox::now_ms() / 1000;
    let change = |line: &ImportLine, f: &mut Follower| {
        line.apply(f);
        crate::engine::autotag_effects(&rules, outbound, f, now, "autotag:import")
    };
    let done = file.apply(store, &args.account, args.dry_run, &change, &mut |b| {
        errln!("{shown}:{}: {}", b.line, b.message);
    });
    let summary = match done {
        Ok(s) => s,
        Err(ImportError::Store { line, source }) => {
            errln!("error: {shown}:{line}: {source}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if !args.dry_run {
        if let Err(e) = store.flush() {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    finish(summary, args.dry_run)
}

/// The server's answer (`server/admin_import.rs`), a 200's or a 422's.
#[derive(Debug, Deserialize)]
struct Answer {
    /// Absent when the header was refused.
    summary: Option<Summary>,
    /// Each bad line as `FILE:LINE: message`.
    #[serde(default)]
    errors: Vec<String>,
}

/// The same through the running server: the file as it is read, named as it was given.
fn remote(server: &Server, args: &ImportArgs) -> Result<ExitCode, Failure> {
    let shown = args.file.display().to_string();
    let body = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            errln!("error: cannot read {shown}: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let limit = crate::server::admin_import::MAX_BODY_BYTES;
    if body.len() > limit {
        errln!(
            "error: {shown} is over {} MiB, more than the server takes; split it, or stop `siyu serve` and import it again (文件过大：请拆分，或先停止服务再导入)",
            limit / (1024 * 1024)
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let path = ["admin", "v1", "followers", args.account.as_str(), "import"];
    let dry_run = if args.dry_run { "true" } else { "false" };
    let query = [("file", shown.as_str()), ("dry_run", dry_run)];
    let answer: Answer = match server.post_bytes(&path, &query, "text/csv", body) {
        Ok(a) => a,
        // Bad lines (or a refused header): the body says which, as on a 200.
        Err(Failure::Refused {
            status: 422, body, ..
        }) if body.get("errors").is_some() => {
            serde_json::from_value(body).map_err(|e| {
                Failure::Runtime(format!(
                    "the server's answer is not what this siyu expects ({e}); is the server another version?"
                ))
            })?
        }
        Err(e) => return Err(e),
    };
    for e in &answer.errors {
        errln!("{e}");
    }
    Ok(match answer.summary {
        Some(summary) => finish(summary, args.dry_run),
        None => ExitCode::from(EXIT_INVALID),
    })
}

/// The summary line, and the exit code it means.
fn finish(summary: Summary, dry_run: bool) -> ExitCode {
    let note = if dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    outln!("{summary}{note}");
    if summary.bad > 0 {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}
