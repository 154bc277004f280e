//! `siyu campaign …` while `siyu serve` holds the store: the same commands through
//! `/admin/v1/campaigns`, printed as they print locally. `start` asks the server to start
//! and then shows its progress (the server's runner and outbox send); Ctrl-C stops the
//! watching, not the campaign.

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use super::super::remote::{Failure, Server};
use super::{
    defined_message, paused, print_list, print_report, print_status, progress_bar, resumed,
    running, CampaignAction,
};
use crate::campaign::{Campaign, CampaignRun, Plan, Report, RunState};
use crate::config::Settings;

/// How often `start` asks the server how far it is.
const POLL: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct Listed {
    campaigns: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    campaign: Campaign,
    run: Option<CampaignRun>,
}

#[derive(Deserialize)]
struct Started {
    run: CampaignRun,
}

#[derive(Deserialize)]
struct State {
    state: RunState,
}

/// Runs `action` through the server; `defined` is the checked definition of `define`.
pub(super) fn run(
    server: &Server,
    settings: &Settings,
    action: &CampaignAction,
    defined: Option<(String, Campaign)>,
) -> ExitCode {
    let zone = settings.utc_offset;
    let result = match action {
        CampaignAction::List => server
            .get::<Listed>(&["admin", "v1", "campaigns"], &[])
            .map(|l| {
                let all: Vec<_> = l
                    .campaigns
                    .into_iter()
                    .map(|e| (e.campaign, e.run))
                    .collect();
                print_list(&all, zone);
                ExitCode::SUCCESS
            }),
        CampaignAction::Define(_) => match defined {
            Some((text, _)) => server
                .post_text::<Started>(
                    &["admin", "v1", "campaigns"],
                    "application/toml; charset=utf-8",
                    text,
                )
                .map(|s| defined_message(&s.run)),
            None => unreachable!("a definition was made before"),
        },
        CampaignAction::Plan { name } => server
            .get::<Plan>(&["admin", "v1", "campaigns", name, "plan"], &[])
            .map(|plan| {
                outln!("{plan}");
                ExitCode::SUCCESS
            }),
        CampaignAction::Status { name, json } => server
            .get::<Report>(&["admin", "v1", "campaigns", name], &[])
            .map(|r| {
                print_status(&r, *json, zone);
                ExitCode::SUCCESS
            }),
        CampaignAction::Pause { name } => server
            .post::<State>(&["admin", "v1", "campaigns", name, "pause"], None)
            .map(|s| paused(name, s.state)),
        CampaignAction::Resume { name } => server
            .post::<State>(&["admin", "v1", "campaigns", name, "resume"], None)
            .map(|s| resumed(name, s.state)),
        CampaignAction::Start { name } => start(server, name, settings),
    };
    result.unwrap_or_else(Failure::exit)
}

/// Starts the campaign on the server and shows its progress until it is done or paused
/// (or Ctrl-C), then its report.
fn start(server: &Server, name: &str, settings: &Settings) -> Result<ExitCode, Failure> {
    let started: Started = server.post(&["admin", "v1", "campaigns", name, "start"], None)?;
    running(name, &started.run.campaign);
    let path = ["admin", "v1", "campaigns", name];
    let finished = server.block_on(async {
        let bar = progress_bar();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let finished = loop {
            let r: Report = server.get_async(&path).await?;
            bar.set_length(r.targeted);
            bar.set_position(r.targeted.saturating_sub(r.queued));
            bar.set_message(r.state.clone());
            if r.state == RunState::Done.to_string() || r.state == RunState::Paused.to_string() {
                break true;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut ctrl_c => break false,
            }
        };
        bar.finish();
        Ok::<_, Failure>(finished)
    })?;
    if !finished {
        outln!(
            "stopped watching; the server carries on sending (`siyu campaign status {name}` shows how far)"
        );
    }
    let report: Report = server.get(&path, &[])?;
    print_report(&report, settings.utc_offset);
    Ok(ExitCode::SUCCESS)
}
