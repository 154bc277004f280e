//! `siyu migrate`: brings a PostgreSQL store's schema up to date (`siyu serve` does the
//! same at start; this is for a deploy step that runs before the instances restart).

use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;
use crate::store::postgres::{migrate, PgStore, MIGRATIONS};

pub fn run(args: &ConfigArg) -> ExitCode {
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let Some(pg) = &settings.postgres else {
        outln!(
            "the store is sled ({}): it needs no migration (sled 存储无需迁移)",
            settings.storage_path.display()
        );
        return ExitCode::SUCCESS;
    };
    let report = PgStore::connect(pg).and_then(|store| migrate(&store));
    match report {
        Ok(r) if r.applied.is_empty() => {
            outln!(
                "schema up to date at version {} (数据库结构已是最新)",
                r.from
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for (version, name) in &r.applied {
                outln!("applied migration {version} ({name})");
            }
            let to = MIGRATIONS.last().map_or(0, |m| m.0);
            outln!("schema now at version {to} (was {})", r.from);
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
