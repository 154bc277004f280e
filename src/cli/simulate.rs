//! `siyu simulate`: try a message or event against the rules before it goes live.
//!
//! Runs the engine's own path (`engine::dry_run`, or `engine::handle` with `--commit`)
//! against the real store, so the follower's real tags and counters decide conditions.
//! A dry run writes nothing. While `siyu serve` holds the store, the server runs it
//! (`POST /admin/v1/simulate`, viewer; `…/simulate/commit`, operator) with the rules it has
//! in force, and this prints its answer the same way. With `--tests FILE` it runs an operator regression suite
//! against the account's rules instead: the rules alone, no store (see `rules::Suite`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Deserialize;

use super::check::{read_suite, run_suite};
use super::remote::{Failure, Server};
use super::{StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{AccountKind, Role, Settings};
use crate::engine::{self, Context, Outcome};
use crate::follower::Follower;
use crate::protocol::{Inbound, Reply};
use crate::rulebook;
use crate::server::webhook::Entropy;
use crate::trial::Trial;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
    /// The follower's openid (WeCom: UserID, or the external user id for contact events).
    #[arg(long, default_value = "o_simulated_follower")]
    pub from: String,
    /// Simulate an event instead of a text message.
    #[arg(long, value_enum)]
    pub event: Option<SimEvent>,
    /// The QR scene (subscribe, scan) or channel-code state (add_external_contact).
    #[arg(long)]
    pub scene: Option<String>,
    /// The menu key (click, view).
    #[arg(long)]
    pub key: Option<String>,
    /// Apply the state change for real (as if WeChat had called); default: a dry run.
    #[arg(long)]
    pub commit: bool,
    /// Picks among reply variants; random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Instead of one message, run this regression suite (a TOML file of `[[case]]` test
    /// messages, each with the rule expected to answer it); exit 1 on any mismatch.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["text", "event", "scene", "key", "commit", "seed"]
    )]
    pub tests: Option<PathBuf>,
    /// The text of the message.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SimEvent {
    Subscribe,
    Unsubscribe,
    Scan,
    Click,
    View,
    EnterAgent,
    AddExternalContact,
    DelExternalContact,
}

pub fn run(args: &SimulateArgs) -> ExitCode {
    match simulate(args) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let Some(account) = settings.account(&args.account) else {
        let ids: Vec<&str> = settings.accounts.iter().map(|a| a.id.as_str()).collect();
        errln!(
            "error: no account `{}` (configured: {})",
            args.account,
            ids.join(", ")
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let table = match rulebook::load_dir(&account.replies_dir, &settings.rule_context()) {
        Ok(t) => t,
        Err(e) => {
            errln!("rules {}: refused\n{e}", account.replies_dir.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if let Some(path) = &args.tests {
        let passed =
            read_suite(path).is_some_and(|suite| run_suite(&table, &suite, &account.replies_dir));
        return Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_INVALID)
        });
    }
    let msg = match build_message(args, account.kind, &account.receive_id) {
        Ok(m) => m,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let need = if args.commit {
        Role::Operator
    } else {
        Role::Viewer
    };
    let store = match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => store,
        Ok(StoreOrServer::Remote(server)) => return Ok(remote(&server, args)),
        Err(code) => return Ok(code),
    };
    let entropy = Entropy::fresh();
    let ctx = Context {
        account: &account.id,
        rules: &table,
        now: entropy.now,
        now_ms: entropy.now_ms,
        seed: args.seed.unwrap_or(entropy.seed),
        dedupe_ttl_secs: settings.dedupe_ttl_secs,
        channels: &settings.channels,
        zone: settings.utc_offset,
        coupons: &settings.coupons,
        outbound: account.outbound(),
        referral: None,
    };
    let (outcome, after) = if args.commit {
        let o = engine::handle(store.as_ref(), ctx, &msg)?;
        store.flush()?;
        let after = store.follower(&account.id, &o.follower_id)?;
        (o, after)
    } else {
        engine::dry_run(store.as_ref(), ctx, &msg)?
    };
    let shown = Shown::from_outcome(outcome, after, entropy.now_ms);
    print_outcome(&account.id, &shown, args.commit);
    Ok(ExitCode::SUCCESS)
}

/// What a simulation shows: from the engine here, or from the admin API's answer (whose
/// fields these are).
#[derive(Debug, Deserialize)]
struct Shown {
    follower: String,
    rules: Vec<String>,
    reply: Option<Reply>,
    actions: Vec<String>,
    effects: Vec<ShownEffect>,
    follower_after: Option<Follower>,
}

#[derive(Debug, Deserialize)]
struct ShownEffect {
    describe: String,
    /// How long after the reply it goes out.
    after_ms: i64,
}

impl Shown {
    fn from_outcome(o: Outcome, after: Option<Follower>, now_ms: i64) -> Shown {
        Shown {
            follower: o.follower_id,
            rules: o.answer.rules,
            reply: o.answer.reply,
            actions: o.actions.iter().map(ToString::to_string).collect(),
            effects: o
                .effects
                .iter()
                .map(|e| ShownEffect {
                    describe: e.effect.describe(),
                    after_ms: (e.not_before_ms - now_ms).max(0),
                })
                .collect(),
            follower_after: after,
        }
    }
}

/// The same through the server, with the rules it has in force.
fn remote(server: &Server, args: &SimulateArgs) -> ExitCode {
    let body = serde_json::json!({
        "account": args.account,
        "from": args.from,
        "text": args.text,
        "event": event_name(args),
        "scene": args.scene,
        "key": args.key,
        "seed": args.seed,
    });
    let path: &[&str] = if args.commit {
        &["admin", "v1", "simulate", "commit"]
    } else {
        &["admin", "v1", "simulate"]
    };
    match server.post::<Shown>(path, Some(&body)) {
        Ok(shown) => {
            print_outcome(&args.account, &shown, args.commit);
            ExitCode::SUCCESS
        }
        Err(e) => Failure::exit(e),
    }
}

/// The event as the engine names it (`add_external_contact`).
fn event_name(args: &SimulateArgs) -> Option<String> {
    args.event.map(|e| {
        e.to_possible_value()
            .map(|v| v.get_name().replace('-', "_"))
            .unwrap_or_default()
    })
}

fn build_message(
    args: &SimulateArgs,
    kind: AccountKind,
    receive_id: &str,
) -> Result<Inbound, String> {
    let entropy = Entropy::fresh();
    let trial = Trial {
        from: Some(args.from.clone()),
        text: args.text.clone(),
        event: event_name(args),
        scene: args.scene.clone(),
        key: args.key.clone(),
    };
    trial.message(kind, receive_id, entropy.now, entropy.seed)
}

fn print_outcome(account: &str, o: &Shown, committed: bool) {
    outln!("account   {account}");
    outln!("follower  {}", o.follower);
    if o.rules.is_empty() {
        outln!("rules     (none matched)");
    } else {
        outln!("rules     {}", o.rules.join(" → "));
    }
    match &o.reply {
        None => outln!("reply     (none: answered `success`)"),
        Some(r) => outln!("reply     {}", describe(r)),
    }
    if o.actions.is_empty() {
        outln!("actions   (none)");
    } else {
        for (i, a) in o.actions.iter().enumerate() {
            outln!("{}{a}", if i == 0 { "actions   " } else { "          " });
        }
    }
    for (i, e) in o.effects.iter().enumerate() {
        let wait = e.after_ms / 1000;
        let when = if wait > 0 {
            format!(" (after {wait} s)")
        } else {
            String::new()
        };
        outln!(
            "{}{}{when}",
            if i == 0 { "to WeChat " } else { "          " },
            e.describe
        );
    }
    if let Some(f) = &o.follower_after {
        let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
        outln!(
            "state     subscribed={} tags=[{}] messages_in={} first_scene={}",
            f.subscribed,
            tags.join(", "),
            f.messages_in,
            f.first_scene.as_deref().unwrap_or("-")
        );
        for (k, v) in &f.counters {
            outln!("          counter {k} = {v}");
        }
        for (k, v) in &f.attributes {
            outln!("          attribute {k} = {v}");
        }
    }
    if committed {
        outln!("(committed to the store)");
    } else {
        outln!("(dry run: nothing written; --commit applies it)");
    }
}

fn describe(r: &Reply) -> String {
    match r {
        Reply::Text { content } => format!("text: {content}"),
        Reply::Image { media_id } => format!("image: {media_id}"),
        Reply::Voice { media_id } => format!("voice: {media_id}"),
        Reply::Video {
            media_id, title, ..
        } => {
            format!("video: {media_id} {}", title.as_deref().unwrap_or(""))
        }
        Reply::Music { title, .. } => format!("music: {}", title.as_deref().unwrap_or("")),
        Reply::News { articles } => {
            let titles: Vec<&str> = articles.iter().map(|a| a.title.as_str()).collect();
            format!("news: {}", titles.join(" | "))
        }
        Reply::TransferCustomerService { kf_account } => format!(
            "transfer to customer service{}",
            kf_account
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default()
        ),
    }
}
