//! `siyu campaign`: list, define, plan (dry run), start (with a progress bar), status
//! (the report), pause and resume.
//!
//! Works on the store; while `siyu serve` holds it, through the admin API
//! (`/admin/v1/campaigns/…`, see [`remote`]): the server's own runner and outbox then do
//! the sending, and `start` shows the server's progress. `start` without a server sends
//! from this process until the campaign is done (Ctrl-C stops it cleanly; `start` again,
//! or `siyu serve`, carries on where it stopped).

mod remote;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::campaign::runner::{self, CampaignError};
use crate::campaign::{parse_campaigns, Campaign, CampaignRun, Known, Report, RunState};
use crate::config::{Role, Settings};
use crate::local_time::{add_local_times, UtcOffset};
use crate::outbox::now_ms;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: CampaignAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum CampaignAction {
    /// Every campaign: from the campaigns file and defined here, with its state.
    List,
    /// Define a campaign from the command line (kept in the store; not started).
    Define(Box<DefineArgs>),
    /// Dry run: the audience's size now, how many each channel would reach, and how
    /// many are unreachable and why. Writes nothing.
    Plan { name: String },
    /// Start a campaign (or carry on with a running one) and send it from this process
    /// with a progress bar, until done or Ctrl-C.
    Start { name: String },
    /// The campaign's report: targeted, sent by channel, failed and skipped by reason,
    /// coupons issued and redeemed since.
    Status {
        name: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop queuing and sending; what is queued stays queued.
    Pause { name: String },
    /// Carry on after a pause.
    Resume { name: String },
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    pub name: String,
    /// The account; repeat it to reach each person once across several accounts, in
    /// order of preference (`--account a --account b`).
    #[arg(long, required = true)]
    pub account: Vec<String>,
    /// A segment expression, as for `siyu followers --where`.
    #[arg(long)]
    pub audience: String,
    /// The customer-service message (official) or app message (WeCom); placeholders allowed.
    #[arg(long)]
    pub text: Option<String>,
    /// A template message's id, for followers outside the customer-service window.
    #[arg(long)]
    pub template_id: Option<String>,
    /// Template data, `key=value` (repeatable; placeholders allowed).
    #[arg(long = "data", value_name = "KEY=VALUE")]
    pub data: Vec<String>,
    #[arg(long)]
    pub template_url: Option<String>,
    /// A coupon batch: one code per follower, issued at send time.
    #[arg(long)]
    pub coupon: Option<String>,
    /// Start by itself at this time while `siyu serve` runs (`2026-12-01T10:00:00+08:00`).
    #[arg(long)]
    pub start: Option<String>,
    /// Send nothing from this time on.
    #[arg(long)]
    pub end: Option<String>,
    /// Sends per second for this campaign.
    #[arg(long)]
    pub rate: Option<f64>,
}

pub fn run(args: &CampaignArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // A definition is checked before any store: the same refusals either way.
    let defined = match &args.action {
        CampaignAction::Define(d) => match definition(&settings, d) {
            Ok(defined) => Some(defined),
            Err(code) => return code,
        },
        _ => None,
    };
    let need = match args.action {
        CampaignAction::List | CampaignAction::Plan { .. } | CampaignAction::Status { .. } => {
            Role::Viewer
        }
        _ => Role::Operator,
    };
    let store = match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => store,
        Ok(StoreOrServer::Remote(server)) => {
            return remote::run(&server, &settings, &args.action, defined)
        }
        Err(code) => return code,
    };
    let now = now_ms() / 1000;
    let result = match &args.action {
        CampaignAction::List => list(store.as_ref(), &settings),
        CampaignAction::Define(_) => match defined {
            Some((_, campaign)) => runner::define(store.as_ref(), &settings, campaign)
                .and_then(|run| Ok(store.flush().map(|()| run)?))
                .map(|run| defined_message(&run)),
            None => unreachable!("a definition was made above"),
        },
        CampaignAction::Plan { name } => runner::find(store.as_ref(), &settings, name)
            .and_then(|(c, _)| runner::plan(store.as_ref(), &settings, &c, now))
            .map(|plan| {
                outln!("{plan}");
                ExitCode::SUCCESS
            }),
        CampaignAction::Start { name } => start(store, settings, name),
        CampaignAction::Status { name, json } => runner::find(store.as_ref(), &settings, name)
            .and_then(|_| {
                runner::report(
                    store.as_ref(),
                    name,
                    settings.utc_offset,
                    crate::outbox::now_ms() / 1000,
                )
            })
            .map(|r| {
                print_status(&r, *json, settings.utc_offset);
                ExitCode::SUCCESS
            }),
        CampaignAction::Pause { name } => runner::pause(store.as_ref(), name)
            // On disk before the new state is printed.
            .and_then(|r| Ok(store.flush().map(|()| r)?))
            .map(|r| paused(name, r.state)),
        CampaignAction::Resume { name } => runner::resume(store.as_ref(), name)
            // On disk before the new state is printed.
            .and_then(|r| Ok(store.flush().map(|()| r)?))
            .map(|r| resumed(name, r.state)),
    };
    match result {
        Ok(code) => code,
        Err(CampaignError::Store(e)) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn list(store: &dyn Store, settings: &Settings) -> Result<ExitCode, CampaignError> {
    let all = runner::all(store, settings)?;
    print_list(&all, settings.utc_offset);
    Ok(ExitCode::SUCCESS)
}

fn print_list(all: &[(Campaign, Option<CampaignRun>)], zone: UtcOffset) {
    if all.is_empty() {
        outln!("(no campaigns: add [campaigns] file = \"campaigns.toml\" to the config, or `siyu campaign define`)");
    }
    for (c, run) in all {
        let state = match &run {
            Some(r) => r.state.to_string(),
            None if c.start_at.is_some() => "scheduled".to_string(),
            None => "not started".to_string(),
        };
        let when = c
            .start_at
            .map(|t| format!(" starts {}", zone.date_time(t)))
            .unwrap_or_default();
        outln!(
            "{:<20} {:<12} account {:<10} audience: {}{when}",
            c.name,
            state,
            c.accounts().collect::<Vec<_>>().join(","),
            c.audience
        );
    }
}

/// A campaign from flags, checked by the campaigns file's own rules: the flags become one
/// `[[campaign]]` table. Its text (what the admin API takes) and the campaign; or the
/// mistakes printed and the exit code.
fn definition(settings: &Settings, d: &DefineArgs) -> Result<(String, Campaign), ExitCode> {
    let mut t = toml::Table::new();
    t.insert("name".into(), d.name.clone().into());
    match d.account.as_slice() {
        [one] => t.insert("account".into(), one.clone().into()),
        many => t.insert("accounts".into(), many.to_vec().into()),
    };
    t.insert("audience".into(), d.audience.clone().into());
    if let Some(c) = &d.coupon {
        t.insert("coupon".into(), c.clone().into());
    }
    if let Some(r) = d.rate {
        t.insert("rate_per_sec".into(), r.into());
    }
    for (key, value) in [("start", &d.start), ("end", &d.end)] {
        if let Some(v) = value {
            match v.parse::<toml::value::Datetime>() {
                Ok(dt) => {
                    t.insert(key.into(), toml::Value::Datetime(dt));
                }
                Err(e) => {
                    errln!("error: --{key} {v:?}: {e} (e.g. 2026-12-01T10:00:00+08:00)");
                    return Err(ExitCode::from(EXIT_INVALID));
                }
            }
        }
    }
    if let Some(text) = &d.text {
        let mut m = toml::Table::new();
        m.insert("text".into(), text.clone().into());
        t.insert("message".into(), m.into());
    }
    if let Some(id) = &d.template_id {
        let mut tpl = toml::Table::new();
        tpl.insert("id".into(), id.clone().into());
        if let Some(u) = &d.template_url {
            tpl.insert("url".into(), u.clone().into());
        }
        let mut data = toml::Table::new();
        for kv in &d.data {
            let Some((k, v)) = kv.split_once('=') else {
                errln!("error: --data {kv:?}: write KEY=VALUE");
                return Err(ExitCode::from(EXIT_INVALID));
            };
            data.insert(k.trim().into(), v.into());
        }
        tpl.insert("data".into(), data.into());
        t.insert("template".into(), tpl.into());
    } else if !d.data.is_empty() || d.template_url.is_some() {
        errln!("error: --data and --template-url need --template-id");
        return Err(ExitCode::from(EXIT_INVALID));
    }
    let mut file = toml::Table::new();
    file.insert("campaign".into(), toml::Value::Array(vec![t.into()]));
    let text = toml::to_string(&file).unwrap_or_default();
    let kinds = |id: &str| settings.account(id).map(|a| a.kind);
    let known = Known {
        accounts: &kinds,
        coupons: &settings.coupons,
    };
    let campaign = match parse_campaigns("(command line)", &text, &known) {
        Ok(mut c) if c.len() == 1 => c.remove(0),
        Ok(_) => return Err(ExitCode::from(EXIT_INVALID)),
        Err(errors) => {
            for e in errors {
                errln!("error: {}", e.message);
            }
            return Err(ExitCode::from(EXIT_INVALID));
        }
    };
    Ok((text, campaign))
}

fn defined_message(run: &CampaignRun) -> ExitCode {
    outln!(
        "campaign {} defined ({}); `siyu campaign plan {}` to see its reach",
        run.campaign.name,
        if run.campaign.start_at.is_some() {
            "starts by itself at its time while `siyu serve` runs"
        } else {
            "start it with `siyu campaign start`"
        },
        run.campaign.name
    );
    ExitCode::SUCCESS
}

/// Starts the campaign and sends it from this process: the campaign runner queues the
/// audience, an outbox worker delivers, a progress bar shows how far it is.
fn start(store: Arc<dyn Store>, settings: Settings, name: &str) -> Result<ExitCode, CampaignError> {
    let now = now_ms() / 1000;
    let run = runner::start(store.as_ref(), &settings, name, now)?;
    store.flush()?;
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let worker =
        match crate::server::startup::standalone_worker(&settings, store.clone(), wake.clone()) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                errln!("error: {e}");
                return Ok(ExitCode::from(EXIT_RUNTIME));
            }
        };
    running(name, &run.campaign);
    let settings = Arc::new(settings);
    let outcome = runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker_task = tokio::spawn(worker.run(stopped.clone()));
        let runner_task = tokio::spawn(runner::run(
            store.clone(),
            settings.clone(),
            wake.clone(),
            stopped,
        ));
        let bar = progress_bar();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let finished = loop {
            let state = store.campaign_run(name).ok().flatten();
            let pending = store.campaign_pending(name).unwrap_or(0);
            if let Some(run) = &state {
                bar.set_length(run.targeted);
                bar.set_position(run.targeted.saturating_sub(pending));
                bar.set_message(if run.enqueued_all {
                    run.state.to_string()
                } else {
                    format!("{} (still queuing the audience)", run.state)
                });
                if matches!(run.state, RunState::Done | RunState::Paused) {
                    break true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = &mut ctrl_c => break false,
            }
        };
        bar.finish();
        let _ = stop.send(true);
        let _ = runner_task.await;
        let _ = worker_task.await;
        finished
    });
    if let Err(e) = store.flush() {
        errln!("error: {e}");
    }
    if !outcome {
        outln!("stopped; `siyu campaign start {name}` (or `siyu serve`) carries on from here");
    }
    let report = runner::report(
        store.as_ref(),
        name,
        settings.utc_offset,
        crate::outbox::now_ms() / 1000,
    )?;
    print_report(&report, settings.utc_offset);
    Ok(ExitCode::SUCCESS)
}

fn running(name: &str, c: &Campaign) {
    outln!(
        "campaign {name} running (account {}, audience: {})",
        c.accounts().collect::<Vec<_>>().join(", "),
        c.audience
    );
}

/// How far a started campaign is: its followers settled of those targeted (on stderr, and
/// only at a terminal: indicatif draws nothing into a pipe).
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} settled, {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn paused(name: &str, state: RunState) -> ExitCode {
    outln!("campaign {name} is {state}");
    ExitCode::SUCCESS
}

fn resumed(name: &str, state: RunState) -> ExitCode {
    outln!("campaign {name} is {state} (`siyu campaign start {name}` or `siyu serve` sends it)");
    ExitCode::SUCCESS
}

fn print_status(r: &Report, json: bool, zone: UtcOffset) {
    if json {
        // Unix seconds for scripts, beside local date-times for people.
        let mut v = serde_json::to_value(r).unwrap_or_default();
        add_local_times(&mut v, zone);
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_report(r, zone);
    }
}

/// The report, then its times as local date-times.
fn print_report(r: &Report, zone: UtcOffset) {
    outln!("{r}");
    for (label, at) in [("started ", r.started_at), ("finished", r.finished_at)] {
        if let Some(at) = at {
            outln!("  {label}  {}", zone.date_time(at));
        }
    }
}
