//! `siyu check`: validate the config and every rule folder, print a summary, exit 1 on
//! any error (all rule errors are listed, each with file:line:column).

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_INVALID;
use crate::config::{AccountKind, Settings};
use crate::rulebook;

pub fn run(config: &Path) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    println!("config {}: ok", config.display());
    for a in &settings.accounts {
        let kind = match a.kind {
            AccountKind::Official => "official account",
            AccountKind::Wecom => "wecom app",
        };
        println!(
            "  account {}: {kind}, {} mode, /wx/{}, rules from {}",
            a.id,
            format!("{:?}", a.mode).to_lowercase(),
            a.id,
            a.replies_dir.display()
        );
    }
    let mut failed = false;
    for (dir, accounts) in settings.rule_dirs() {
        match rulebook::load_dir(&dir) {
            Ok(table) => println!(
                "rules {}: ok, {} (accounts: {})",
                dir.display(),
                table.summary(),
                accounts.join(", ")
            ),
            Err(e) => {
                failed = true;
                eprintln!("rules {}: refused", dir.display());
                eprintln!("{e}");
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}
