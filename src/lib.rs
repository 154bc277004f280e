//! siyu (私域, "private domain"): run a brand's own audience on WeChat official accounts
//! and WeCom without renting it from a platform.
//!
//! WeChat's servers call our webhook; we verify and decrypt the callback, route the message
//! through the operator-edited rule table in `replies/` to a passive reply and tagging
//! actions, and keep every follower's state in an embedded store.
//!
//! # Layout
//! - [`protocol`]: PURE. Signatures, the WXBizMsgCrypt scheme, inbound and reply XML.
//! - [`rules`]: PURE. The rule-file format, its compiler, normalisation, matching and
//!   placeholder rendering.
//! - [`follower`]: the follower's state, plain data.
//! - [`store`]: the storage trait and its backends (sled on disk; memory for tests).
//! - [`engine`]: one inbound message → reply + state change, in one atomic commit.
//! - [`rulebook`]: reading a rule folder and holding the table in force.
//! - [`audit`]: the audit trail's entry type.
//! - [`config`]: typed settings from `config.toml` and the environment.
//! - [`local_time`]: PURE. Unix seconds as the dates and times people read.
//! - [`server`]: the actix-web app: routes, startup, the one error → HTTP mapping.
//! - [`api`]: the outbound half: typed WeChat/WeCom API calls, shared access tokens.
//! - [`outbox`]: the durable queue of calls to WeChat and its background worker.
//! - [`channel`]: PURE. Channels (渠道) from `channels.toml`: named sources followers arrive through.
//! - [`channel_code`]: PURE. The codes siyu makes for channels (`code = "auto"`): what is
//!   stored, when one is made or re-issued.
//! - [`coupon`], [`segment`], [`campaign`]: coupon batches, audiences, pushes to them.
//! - [`sync`]: importing an account's existing followers from WeChat, and the merge rules.
//! - [`ingest`]: PURE. Behaviour from the shop: the event mapping (counters, money in fen,
//!   attributes, tags), event validation, the follower CSV import's lines.
//! - [`person`]: one person's identities across accounts (unionid), for `person.*` segments.
//! - [`qr`]: PURE. QR codes drawn as PNG images (channel codes for print).
//! - [`report`]: PURE. Per-channel and per-day counters: what a commit counts, summed into rows.
//! - [`referral`]: PURE. Referral programmes (任务宝) from `referrals.toml`: participants'
//!   QR scenes, the invite state machine with its anti-fraud rules, tiers, posters, reports.
//! - [`referral_flow`]: the referral programmes wired in: the keyword, invites from
//!   callbacks, the maturing run, posters and reward notices through the outbox, reviews.
//! - [`export`]: a segment's followers as a count, a list or a CSV (CLI and admin API).
//! - [`import`]: a follower file applied to the store line by line (CLI and admin API).
//! - [`fake_wechat`]: a fake WeChat/WeCom API server for tests and local development.
//! - [`log_lines`]: the server's log lines, written off the request path in batches.
//! - [`trial`]: synthetic messages for trying rules (simulate).
//! - [`cli`]: one module per subcommand, thin over the library.

pub mod api;
pub mod audit;
pub mod campaign;
pub mod channel;
pub mod channel_code;
pub mod cli;
pub mod config;
pub mod coupon;
pub mod engine;
pub mod export;
pub mod fake_wechat;
pub mod follower;
pub mod import;
pub mod ingest;
pub mod local_time;
pub mod located;
pub mod log_lines;
pub mod outbox;
pub mod person;
pub mod protocol;
pub mod qr;
pub mod referral;
pub mod referral_flow;
pub mod report;
pub mod rulebook;
pub mod rules;
pub mod segment;
pub mod server;
pub mod store;
pub mod sync;
pub mod trial;
