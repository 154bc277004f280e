//! `siyu referral`: a referral programme's figures (`report NAME [--json]`), the invites
//! held for review (`held NAME`), and an operator's verdict on one (`release|reject NAME
//! INVITEE`, audited). Reads the store, or while `siyu serve` holds it the admin API
//! (`/admin/v1/referrals/…`). README "Referral programmes (任务宝)".

use std::process::ExitCode;

use super::remote::Failure;
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::referral::InviteRecord;
use crate::referral_flow::figures::{figures, Figures};
use crate::referral_flow::review::{held, review};

#[derive(Debug, clap::Args)]
pub struct ReferralArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: ReferralAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReferralAction {
    /// Participants, invites by state, rewards per tier, top inviters, new followers.
    Report {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The invites held for review (a burst), oldest first.
    Held { name: String },
    /// Let a held invite go on: pending again, valid once its hold is over.
    Release { name: String, invitee: String },
    /// Refuse a held invite: it never counts.
    Reject { name: String, invitee: String },
}

pub fn run(args: &ReferralArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let name = match &args.action {
        ReferralAction::Report { name, .. }
        | ReferralAction::Held { name }
        | ReferralAction::Release { name, .. }
        | ReferralAction::Reject { name, .. } => name,
    };
    let Some(p) = settings.referral(name).cloned() else {
        errln!("error: no referral programme `{name}` in the referrals file (没有这个任务宝活动)");
        return ExitCode::from(EXIT_INVALID);
    };
    let need = match args.action {
        ReferralAction::Release { .. } | ReferralAction::Reject { .. } => Role::Operator,
        _ => Role::Viewer,
    };
    match super::store_or_server(&settings, need) {
        Ok(StoreOrServer::Local(store)) => {
            let store = store.as_ref();
            let now = crate::outbox::now_ms() / 1000;
            let done = match &args.action {
                ReferralAction::Report { json, .. } => {
                    figures(store, &p).map(|f| print_figures(&f, *json))
                }
                ReferralAction::Held { .. } => held(store, &p).map(|h| print_held(&h)),
                ReferralAction::Release { invitee, .. }
                | ReferralAction::Reject { invitee, .. } => {
                    let let_go = matches!(args.action, ReferralAction::Release { .. });
                    match review(store, &p, invitee, let_go, now) {
                        Ok(r) => {
                            let entry = crate::audit::AuditEntry {
                                at: now,
                                who: "cli".into(),
                                action: format!("referral.{}", verdict(let_go)),
                                target: format!("{}/{}", p.name, r.invitee),
                                detail: format!("inviter {}", r.inviter),
                            };
                            store
                                .append_audit(&entry)
                                .and_then(|()| store.flush())
                                .map(|()| print_verdict(&r))
                        }
                        Err(e) => {
                            errln!("error: {e}");
                            return ExitCode::from(EXIT_INVALID);
                        }
                    }
                }
            };
            done.unwrap_or_else(|e| {
                errln!("error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            })
        }
        Ok(StoreOrServer::Remote(server)) => {
            let base = ["admin", "v1", "referrals", p.name.as_str()];
            let done = match &args.action {
                ReferralAction::Report { json, .. } => server
                    .get::<Figures>(&base, &[])
                    .map(|f| print_figures(&f, *json)),
                ReferralAction::Held { .. } => {
                    let mut path = base.to_vec();
                    path.push("held");
                    server
                        .get::<serde_json::Value>(&path, &[])
                        .and_then(|v| records(&v["held"]))
                        .map(|h| print_held(&h))
                }
                ReferralAction::Release { invitee, .. }
                | ReferralAction::Reject { invitee, .. } => {
                    let let_go = matches!(args.action, ReferralAction::Release { .. });
                    let mut path = base.to_vec();
                    path.extend(["invites", invitee.as_str(), verdict(let_go)]);
                    server
                        .post::<serde_json::Value>(&path, None)
                        .and_then(|v| {
                            serde_json::from_value::<InviteRecord>(v["invite"].clone())
                                .map_err(|e| Failure::Runtime(e.to_string()))
                        })
                        .map(|r| print_verdict(&r))
                }
            };
            done.unwrap_or_else(Failure::exit)
        }
        Err(code) => code,
    }
}

fn verdict(let_go: bool) -> &'static str {
    if let_go {
        "release"
    } else {
        "reject"
    }
}

fn records(v: &serde_json::Value) -> Result<Vec<InviteRecord>, Failure> {
    serde_json::from_value(v.clone()).map_err(|e| Failure::Runtime(e.to_string()))
}

fn print_figures(f: &Figures, json: bool) -> ExitCode {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(f).expect("plain data encodes")
        );
        return ExitCode::SUCCESS;
    }
    let r = &f.report;
    let i = &r.invites;
    outln!("referral {} ({})", r.programme, f.title);
    outln!(
        "  participants (inviters with an invite): {}",
        r.participants
    );
    outln!(
        "  invites: pending {}, held {}, valid {}, revoked {}, rejected {}, capped {}",
        i.pending,
        i.held,
        i.valid,
        i.revoked,
        i.rejected,
        i.capped
    );
    outln!(
        "  refused: self-invite {}, mutual {}, not new {}",
        i.refused_self,
        i.refused_mutual,
        i.refused_not_new
    );
    outln!(
        "  new followers brought: {}, still following: {}",
        r.new_followers,
        r.still_following
    );
    for (reach, given) in r.tiers.iter().zip(&f.rewards) {
        outln!(
            "  tier {} ({}): {} inviters there now, {} rewards given",
            reach.invites,
            reach.coupon,
            reach.inviters,
            given.given
        );
    }
    for t in &r.top {
        outln!(
            "  top: {} valid {} pending {}",
            t.inviter,
            t.valid,
            t.pending
        );
    }
    ExitCode::SUCCESS
}

fn print_held(held: &[InviteRecord]) -> ExitCode {
    if held.is_empty() {
        outln!("no invites held for review (没有待审核的邀请)");
    }
    for r in held {
        outln!(
            "{}  invited by {}  at {}",
            r.invitee,
            r.inviter,
            r.created_at
        );
    }
    ExitCode::SUCCESS
}

fn print_verdict(r: &InviteRecord) -> ExitCode {
    outln!("{}: {:?} (invited by {})", r.invitee, r.state, r.inviter);
    ExitCode::SUCCESS
}
