//! `siyu store copy`: moves a whole store from sled to PostgreSQL (a brand outgrowing
//! one machine) or back, with a progress bar; resumable after a crash, counts verified.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{PostgresSettings, Secret, Settings};
use crate::store::portable::{copy, total, Copied, CopyError, Portable};
use crate::store::{PgStore, SledStore, StoreError};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the config's store, every table, into the other backend. Stop every `siyu
    /// serve` on the store first; run it again after a crash to resume.
    Copy(CopyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Postgres,
    Sled,
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The backend to copy into: the config's store is the source.
    #[arg(long, value_enum)]
    pub to: Target,
    /// With `--to postgres`: the environment variable holding the database URL.
    #[arg(long, default_value = "SIYU_DATABASE_URL")]
    pub url_env: String,
    /// With `--to sled`: the folder to create (default: `[storage] path` of the config).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Rows per step (each step is written and checkpointed together).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub page: u32,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn open_sled(path: &std::path::Path) -> Result<SledStore, ExitCode> {
    SledStore::open(path).map_err(|e| {
        match e {
            StoreError::Locked { .. } => errln!(
                "error: {e}\n  the copy needs the store to itself: stop `siyu serve` first \
                 (复制需要独占存储：请先停止 siyu serve)"
            ),
            e => errln!("error: {e}"),
        }
        ExitCode::from(EXIT_RUNTIME)
    })
}

fn open_pg(settings: &PostgresSettings) -> Result<PgStore, ExitCode> {
    PgStore::open(settings).map_err(|e| {
        errln!("error: {e}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

pub fn run(args: &StoreArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let StoreCommand::Copy(a) = &args.command;
    match (a.to, &settings.postgres) {
        (Target::Postgres, None) => {
            let Ok(url) = std::env::var(&a.url_env) else {
                errln!(
                    "error: --url-env: the environment variable {} is not set (it holds the PostgreSQL URL, e.g. postgres://siyu@127.0.0.1/siyu)",
                    a.url_env
                );
                return ExitCode::from(EXIT_INVALID);
            };
            let pg = PostgresSettings {
                url: Secret::new(url),
                pool_size: 4,
                connect_timeout_secs: 5,
                prepared_statements: true,
            };
            let source = match open_sled(&settings.storage_path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let dest = match open_pg(&pg) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(&source, &dest, a.page as usize, &settings)
        }
        (Target::Sled, Some(pg)) => {
            let path = a
                .path
                .clone()
                .unwrap_or_else(|| settings.storage_path.clone());
            let source = match open_pg(pg) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let dest = match open_sled(&path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            errln!("note: stop every `siyu serve` on this database first: what changes during the copy is not copied");
            report(&source, &dest, a.page as usize, &settings)
        }
        (Target::Postgres, Some(_)) | (Target::Sled, None) => {
            errln!(
                "error: the config's store is already {}: --to names the other backend (the config's store is the source) \
                 目标与当前存储相同",
                if settings.postgres.is_some() { "PostgreSQL" } else { "sled" }
            );
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// Copies with a progress bar on stderr (only at a terminal) and prints each table's
/// counts.
fn report(
    source: &dyn Portable,
    dest: &dyn Portable,
    page: usize,
    settings: &Settings,
) -> ExitCode {
    errln!("copying {} → {}", source.describe(), dest.describe());
    let bar = indicatif::ProgressBar::new(total(source).unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows, {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = copy(source, dest, page, now(), &mut |rows, table| {
        bar.set_position(rows);
        bar.set_message(table.name());
    });
    bar.finish_and_clear();
    match result {
        Ok((copied, counts)) => {
            match copied {
                Copied::Done { rows, resumed } => outln!(
                    "copied {rows} rows{} (已复制)",
                    if resumed { ", resumed from the last checkpoint" } else { "" }
                ),
                Copied::AlreadyDone { finished_at } => outln!(
                    "this store was copied here before (finished at {}); nothing written (已复制过，未写入)",
                    settings.utc_offset.date_time(finished_at)
                ),
            }
            outln!("{:<20} {:>12} {:>12}", "table", "source", "copy");
            for (table, a, b) in counts {
                outln!("{:<20} {a:>12} {b:>12}", table.name());
            }
            outln!("counts match (行数一致)");
            ExitCode::SUCCESS
        }
        Err(e @ (CopyError::NotEmpty { .. } | CopyError::OtherSource { .. })) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            errln!("error: {e}\n  run the same command again to resume (再次运行即可继续)");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
