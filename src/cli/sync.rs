//! `siyu followers sync --account ID`: import the account's existing followers from
//! WeChat, with a progress bar; Ctrl-C stops after the batch in hand, and the next `sync`
//! goes on from there. While `siyu serve` holds the store, the server runs the sync
//! (`POST /admin/v1/followers/{account}/sync`) and this shows its progress.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::remote::{Failure, Server};
use super::{StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::store::Store;
use crate::sync::runner::{self, runnable, SyncError, SyncOptions};
use crate::sync::{SyncRun, SyncState};

const POLL: Duration = Duration::from_millis(300);

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
    /// Start again from the first page, dropping an unfinished sync's position.
    #[arg(long)]
    pub restart: bool,
    /// Print the finished run as JSON (counts, failures) instead of the summary line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: &Path, args: &SyncArgs) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Err(e) = runnable(&settings, &args.account) {
        errln!("error: {e}");
        return ExitCode::from(EXIT_INVALID);
    }
    match super::store_or_server(&settings, Role::Operator) {
        Ok(StoreOrServer::Local(store)) => local(store, &settings, args),
        Ok(StoreOrServer::Remote(server)) => remote(&server, args).unwrap_or_else(Failure::exit),
        Err(code) => code,
    }
}

fn local(store: Arc<dyn Store>, settings: &Settings, args: &SyncArgs) -> ExitCode {
    let api = match runnable(settings, &args.account) {
        Ok(api) => api,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let rate = api.rate_per_sec;
    let client = match crate::api::ApiClient::new(api, store.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let account_settings = settings
        .account(&args.account)
        .expect("runnable checked it");
    let rules =
        match crate::rulebook::load_dir(&account_settings.replies_dir, &settings.rule_context()) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                errln!(
                    "rules {}: refused\n{e}",
                    account_settings.replies_dir.display()
                );
                return ExitCode::from(EXIT_INVALID);
            }
        };
    let kept: runner::KeptEvents = {
        let (rules, shop, account) = (rules.clone(), settings.ingest.clone(), args.account.clone());
        let outbound = account_settings.outbound();
        let zone = settings.utc_offset;
        // Tags queued here are delivered by the next `siyu serve` (or the next command
        // that runs the outbox).
        Arc::new(move |store: &dyn Store, people: &[String]| {
            let writer = crate::ingest::Writer {
                store,
                settings: &shop,
                account: &account,
                rules: &rules,
                outbound,
                zone,
            };
            let now = crate::outbox::now_ms().div_euclid(1000);
            writer.apply_kept(people, now).map(drop)
        })
    };
    let options = SyncOptions {
        restart: args.restart,
        by: "cli".into(),
        rate_per_sec: rate,
        owner: format!("cli-{}", std::process::id()),
        autotag: Some({
            let outbound = account_settings.outbound();
            Arc::new(move |f, now| {
                crate::engine::autotag_effects(&rules, outbound, f, now, "autotag:sync")
            })
        }),
        scheduled_on: None,
        kept: Some(kept),
    };
    let account = args.account.clone();
    let outcome = runtime.block_on(async {
        let (progress, mut seen) = tokio::sync::watch::channel(SyncRun::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let store = store.clone();
            async move { runner::run(store, client, &account, options, progress, stopped).await }
        });
        let bar = progress_bar();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut interrupted = false;
        loop {
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        break; // the run ended
                    }
                    show(&bar, &seen.borrow_and_update());
                }
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    bar.set_message("stopping after this batch (正在停止)…");
                    let _ = stop.send(true);
                }
            }
        }
        bar.finish_and_clear();
        task.await.unwrap_or_else(|e| {
            Err(SyncError::Store(crate::store::StoreError::Backend(
                e.to_string(),
            )))
        })
    });
    if let Err(e) = store.flush() {
        errln!("error: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    match outcome {
        Ok(run) => finished(&run, args.json),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The same on the running server: started there, its progress polled.
fn remote(server: &Server, args: &SyncArgs) -> Result<ExitCode, Failure> {
    let path = ["admin", "v1", "followers", args.account.as_str(), "sync"];
    let body = serde_json::json!({ "restart": args.restart });
    let _: SyncRun = server.post(&path, Some(&body))?;
    let interrupted = server.block_on(async {
        let bar = progress_bar();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let interrupted = loop {
            let run: SyncRun = server.get_async(&path).await?;
            show(&bar, &run);
            if run.state != SyncState::Running {
                break false;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut ctrl_c => break true,
            }
        };
        bar.finish_and_clear();
        Ok::<_, Failure>(interrupted)
    })?;
    if interrupted {
        // The server stops after the batch in hand and answers the run as it left it.
        let stop = [
            "admin",
            "v1",
            "followers",
            args.account.as_str(),
            "sync",
            "stop",
        ];
        let run: SyncRun = server.post(&stop, None)?;
        return Ok(finished(&run, args.json));
    }
    let run: SyncRun = server.get(&path, &[])?;
    Ok(finished(&run, args.json))
}

fn finished(run: &SyncRun, json: bool) -> ExitCode {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(run).unwrap_or_else(|e| e.to_string())
        );
    } else {
        outln!("account {}: {}", run.account, run.summary());
        for f in &run.failures {
            outln!(
                "  failed: {} follower(s) from {}: {}",
                f.followers,
                f.openid,
                f.reason
            );
        }
        if let Some(e) = &run.error {
            outln!("  note: {e}");
        }
    }
    match run.state {
        SyncState::Done => ExitCode::SUCCESS,
        SyncState::Running => {
            outln!(
                "stopped at {} of {}; `siyu followers sync --account {}` goes on from here (已停止，再次运行即从此处继续)",
                run.counts.listed(),
                run.total,
                run.account
            );
            ExitCode::SUCCESS
        }
        SyncState::Failed => ExitCode::from(EXIT_RUNTIME),
    }
}

fn show(bar: &indicatif::ProgressBar, run: &SyncRun) {
    bar.set_length(run.total);
    bar.set_position(run.counts.listed().min(run.total));
    bar.set_message(format!(
        "{} new, {} updated, {} unchanged, {} failed{}",
        run.counts.new,
        run.counts.updated,
        run.counts.unchanged,
        run.counts.failed,
        if run.phase == crate::sync::Phase::Sweep {
            format!("; marking unsubscribed: {}", run.counts.unsubscribed)
        } else {
            String::new()
        }
    ));
}

/// On stderr, and only at a terminal: indicatif draws nothing into a pipe.
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} followers, {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
