//! The command line: one module per subcommand, each thin over the library, and the exit
//! codes they share. Everything they print goes through [`output`] (so a closed pipe ends a
//! command quietly). A command that needs the store opens it through [`store_or_server`]:
//! the store itself, or the running server's admin API when `siyu serve` holds it
//! ([`remote`]).

// First, so that its `outln!`/`errln!` macros are in scope in every module after it.
#[macro_use]
pub mod output;

pub mod audit;
pub mod campaign;
pub mod channels;
pub mod check;
pub mod coupon;
pub mod fake_wechat;
pub mod followers;
pub mod import;
pub mod migrate;
pub mod outbox;
pub mod qrcode;
pub mod referral;
pub mod remote;
pub mod report;
pub mod serve;
pub mod show;
pub mod simulate;
pub mod store;
pub mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Role, Settings};
use crate::store::{Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "siyu",
    version,
    about = "WeChat official-account and WeCom callbacks, answered from your own rules",
    after_help = "While `siyu serve` holds the store, commands that need it go through its admin API \
                  at the config's `server.bind` (or SIYU_BIND), with the admin token in \
                  SIYU_ADMIN_TOKEN (README \"Command line\")."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhook for every configured account at /wx/{id}.
    Serve(ConfigArg),
    /// Validate the config and every rule file; print a summary.
    Check(check::CheckArgs),
    /// Run one message through the engine (the server's own code path) and print the
    /// rule that matched, the reply and the actions.
    Simulate(simulate::SimulateArgs),
    /// Show the audit trail: rule writes and reloads, follower edits, newest first.
    Audit(audit::AuditArgs),
    /// Run a fake WeChat/WeCom API server for tests and local development.
    FakeWechat(fake_wechat::FakeWechatArgs),
    /// Create a channel QR code (parametric, with a scene) and print its ticket and URL.
    Qrcode(qrcode::QrcodeArgs),
    /// Channels of channels.toml with their codes; `issue NAME` makes a channel's code
    /// (`code = "auto"`), `png NAME --out FILE` draws it for print.
    Channels(channels::ChannelsArgs),
    /// Show what waits to be sent to WeChat (pending, retrying, dead); `retry ID` requeues
    /// a dead letter.
    Outbox(outbox::OutboxArgs),
    /// Coupons: list the batches, redeem a code, show a batch's counts.
    Coupon(coupon::CouponArgs),
    /// Count, list or export the followers of a segment (`--where "tag:vip AND …"`).
    Followers(followers::FollowersArgs),
    /// Campaigns: list, define, plan (dry run), start, status (report), pause, resume.
    Campaign(campaign::CampaignArgs),
    /// Bring the PostgreSQL schema up to date (`serve` does it at start too).
    Migrate(ConfigArg),
    /// The store itself: `copy --to postgres` (or `--to sled`) moves every table to the
    /// other backend.
    Store(store::StoreArgs),
    /// Reports from the counters: `channels` (per channel, the funnel), `daily` (per day),
    /// `rebuild` (sum every commit's counts again and compare).
    Report(report::ReportArgs),
    /// Referral programmes (任务宝): `report NAME` (the figures), `held NAME` (invites held
    /// for review), `release|reject NAME INVITEE`.
    Referral(referral::ReferralArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        short,
        env = "SIYU_CONFIG",
        default_value = "config.toml",
        hide_env_values = true,
        global = true
    )]
    pub config: PathBuf,
}

// The exit codes, the same for every subcommand (README "Command line"). Scripts and CI
// tell "fix what you gave it" (1, 2) from "try again / look at the machine" (3).

/// Done (also when the reader of stdout closed the pipe early).
pub const EXIT_OK: u8 = 0;
/// The input was refused: the config, a rule folder, a suite, an argument's value (a
/// segment, a date, a QR scene over 64 characters), an unknown account, campaign or code, a
/// failed regression case.
pub const EXIT_INVALID: u8 = 1;
/// Usage: an unknown subcommand or flag, a missing or malformed argument (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// A runtime failure: the store (locked by a running `siyu serve`, unreadable), the network
/// or WeChat's API, the async runtime, writing the output.
pub const EXIT_RUNTIME: u8 = 3;

/// Parses the command line, or the code to exit with after clap printed help, the version
/// (0) or the usage error (2). Printing ignores a closed pipe (`siyu --help | head -1`).
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK })
    })
}

/// The async runtime of the long-running subcommands, or the exit code saying it failed.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            errln!("error: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })
}

/// Where a command finds the store.
/// The config, and an account it must have: what a command about one account starts with.
/// Either mistake is printed and gives the exit code (1).
pub fn settings_with_account(
    config: &std::path::Path,
    account: &str,
) -> Result<Settings, ExitCode> {
    let settings = Settings::load(config).map_err(|e| {
        errln!("error: {e}");
        ExitCode::from(EXIT_INVALID)
    })?;
    if settings.account(account).is_none() {
        errln!(
            "error: no account `{account}` in {}",
            settings.source.display()
        );
        return Err(ExitCode::from(EXIT_INVALID));
    }
    Ok(settings)
}

pub enum StoreOrServer {
    /// Nobody else holds it: the command works on it itself.
    Local(Arc<dyn Store>),
    /// `siyu serve` holds it: the command asks the server (see [`remote`]).
    Remote(remote::Server),
}

/// Opens the store for a command that needs `need` to do the same through the admin API;
/// when the server holds the store (sled: one process per store), the server instead.
/// Without a way to the server (no `SIYU_ADMIN_TOKEN`, no address), prints what to do and
/// gives [`EXIT_RUNTIME`]: never just "locked".
///
/// The one place the command line opens the store, so that choosing a backend from the
/// settings is one change here.
pub fn store_or_server(settings: &Settings, need: Role) -> Result<StoreOrServer, ExitCode> {
    // PostgreSQL is never locked: commands use it beside running servers.
    match crate::store::open(settings) {
        Ok(store) => Ok(StoreOrServer::Local(store)),
        Err(StoreError::Locked { .. }) => {
            remote::Server::connect(settings, need).map(StoreOrServer::Remote)
        }
        Err(e) => {
            errln!("error: {e}");
            Err(ExitCode::from(EXIT_RUNTIME))
        }
    }
}

/// Runs the subcommand; flushes its output and settles the exit code ([`output::finish`]).
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Serve(a) => serve::run(&a.config),
        Command::Check(a) => check::run(&a),
        Command::Simulate(a) => simulate::run(&a),
        Command::Audit(a) => audit::run(&a),
        Command::FakeWechat(a) => fake_wechat::run(&a),
        Command::Qrcode(a) => qrcode::run(&a),
        Command::Channels(a) => channels::run(&a),
        Command::Outbox(a) => outbox::run(&a),
        Command::Coupon(a) => coupon::run(&a),
        Command::Campaign(a) => campaign::run(&a),
        Command::Followers(a) => followers::run(&a),
        Command::Migrate(a) => migrate::run(&a),
        Command::Store(a) => store::run(&a),
        Command::Report(a) => report::run(&a),
        Command::Referral(a) => referral::run(&a),
    };
    output::finish(code)
}
