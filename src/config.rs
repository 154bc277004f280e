//! Typed settings: the config file, then environment overrides for secrets, validated into
//! `Settings` once at startup.
//!
//! Two stages, like the rule files: `RawConfig` is what the operator wrote (unknown keys are
//! refused so a typo never silently does nothing), `Settings` is what runs: paths resolved
//! against the config file's folder, AES keys parsed, secrets wrapped so they never print.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::ApiSettings;
use crate::protocol::{AesKey, MsgCrypt};

/// WeChat retries an unanswered callback within about 15 seconds; ten minutes covers that
/// with a wide margin (a restart in between included) while keeping records small.
pub const DEFAULT_DEDUPE_TTL_SECS: u64 = 600;
/// Callbacks are a few hundred bytes; 64 KiB leaves room for long texts and refuses floods.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: account `{account}`: {message}")]
    Account {
        path: String,
        account: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// Every mistake of the coupons file, each as `file:line:column: message`.
    #[error("coupons refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Coupons(Vec<crate::coupon::CouponFileError>),
    /// Every mistake of the campaigns file, each as `file:line:column: message`.
    #[error("campaigns refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Campaigns(Vec<crate::located::FileError>),
    /// Every mistake of the channels file, each as `file:line:column: message`.
    #[error("channels refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Channels(Vec<crate::located::FileError>),
    /// Every mistake of the referrals file, each as `file:line:column: message`.
    #[error("{0}")]
    Referrals(crate::referral::LoadError),
    /// Every mistake of `[[ingest.event]]`, each as `file:line:column: message`.
    #[error("[ingest] refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Ingest(Vec<crate::located::FileError>),
}

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Official,
    Wecom,
}

/// The message-security mode chosen in the official-account console (protocol.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Plaintext,
    Compatible,
    Safe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    #[serde(default)]
    replies: Option<RawReplies>,
    #[serde(default)]
    account: Vec<RawAccount>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    coupons: Option<RawCoupons>,
    #[serde(default)]
    campaigns: Option<RawCampaigns>,
    /// `[channels] file = "channels.toml"`: the named sources followers arrive through.
    #[serde(default)]
    channels: Option<RawChannels>,
    /// `[referral] file = "referrals.toml"`: the referral programmes (任务宝).
    #[serde(default)]
    referral: Option<RawReferral>,
    #[serde(default)]
    display: RawDisplay,
    /// `[ingest]`: behaviour from the shop (README "Behaviour from the shop").
    #[serde(default)]
    ingest: Option<crate::ingest::RawIngest>,
}

/// `[display]`: how the command line shows times to people.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisplay {
    /// `+HH:MM`; parsed while deserialising, so a bad value is reported at its file:line.
    utc_offset: Option<crate::local_time::UtcOffset>,
}

/// `[referral]`: the programmes' file and how often invites are matured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReferral {
    file: PathBuf,
    /// Seconds between two maturing runs of `siyu serve` (default 60).
    check_every_secs: Option<u64>,
}

/// The default seconds between two maturing runs: an invite's hold is hours, so a
/// minute's delay is nothing, and a run that finds nothing due costs one scan.
pub const DEFAULT_REFERRAL_CHECK_SECS: u64 = 60;

/// `[campaigns]` and `[channels]`: the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaigns {
    file: PathBuf,
}

/// `[channels]`: the file, and how the server looks after the codes it makes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    file: PathBuf,
    check_secs: Option<u64>,
    reissue_days_before: Option<f64>,
}

/// How `siyu serve` looks after channels with `code = "auto"` (`[channels]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelCodeSettings {
    /// Seconds between two looks at the channels' codes (default 300: a code queued by a
    /// look is made within the outbox's pace, and 5 minutes is nothing against days).
    pub check_secs: u64,
    /// A temporary code with less than this many days left is re-issued (default 3: a
    /// weekend and a holiday's worth of WeChat trouble before the printed code dies).
    pub reissue_days_before: f64,
}

impl Default for ChannelCodeSettings {
    fn default() -> Self {
        ChannelCodeSettings {
            check_secs: 300,
            reissue_days_before: 3.0,
        }
    }
}

/// `[coupons]`: the batches file and the shop system's redeem token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoupons {
    file: PathBuf,
    redeem_token_env: Option<String>,
    redeem_token: Option<Secret>,
}

/// `[outbox]`: how the background worker delivers queued calls to WeChat.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    concurrency: Option<usize>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    max_attempts: Option<u32>,
    tag_batch_delay_ms: Option<u64>,
    lease_secs: Option<u64>,
}

/// The outbox worker's settings (`[outbox]`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxSettings {
    /// Calls in flight at once, all accounts together.
    pub concurrency: usize,
    pub retry: crate::outbox::RetryPolicy,
    /// How long a tag change waits for others to share its batch call (up to 50 openids).
    pub tag_batch_delay_ms: u64,
    /// How long an instance holds the items it is delivering (several instances on
    /// PostgreSQL): longer than any API call takes; an instance killed mid-call leaves its
    /// items to the others after this.
    pub lease_secs: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            concurrency: 8,
            retry: crate::outbox::RetryPolicy::default(),
            tag_batch_delay_ms: 1_000,
            lease_secs: 60,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: Role,
    secret_env: Option<String>,
    secret: Option<Secret>,
}

/// What an admin token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads rules, followers, tags, simulations.
    Viewer,
    /// Also writes rule files, reloads, edits followers' tags.
    Operator,
    /// Everything, including the audit trail.
    Admin,
}

/// A bearer token for `/admin/v1`.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Shown in the audit trail.
    pub name: String,
    pub role: Role,
    pub secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: String,
    #[serde(default = "default_skew")]
    max_clock_skew_secs: u64,
    #[serde(default = "default_body")]
    max_body_bytes: usize,
    #[serde(default = "default_ttl")]
    dedupe_ttl_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default)]
    backend: BackendKind,
    /// The sled folder (backend "sled").
    path: Option<PathBuf>,
    /// The environment variable holding the PostgreSQL URL (backend "postgres").
    url_env: Option<String>,
    /// The PostgreSQL URL written in the file (warned like other secrets).
    url: Option<String>,
    #[serde(default = "default_pool_size")]
    pool_size: usize,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    /// false behind a pooler in transaction mode (PgBouncer), which cannot keep named
    /// prepared statements.
    #[serde(default = "yes")]
    prepared_statements: bool,
}

fn default_pool_size() -> usize {
    16
}

fn default_connect_timeout() -> u64 {
    5
}

fn yes() -> bool {
    true
}

/// Where siyu keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Embedded, one process per store (the default).
    #[default]
    Sled,
    /// Shared by several instances.
    Postgres,
}

/// `[storage]` for `backend = "postgres"`.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: Secret,
    pub pool_size: usize,
    pub connect_timeout_secs: u64,
    pub prepared_statements: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplies {
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    kind: AccountKind,
    app_id: Option<String>,
    corp_id: Option<String>,
    token: Option<Secret>,
    encoding_aes_key: Option<Secret>,
    mode: Option<Mode>,
    /// A rule folder of this account's own; default: the shared `replies/`.
    replies: Option<PathBuf>,
    /// Calls to WeChat's API (QR codes, tags, messages): where and with which secret.
    api: Option<RawApi>,
    /// `[account.sync]`: the follower sync's daily schedule in `siyu serve`.
    sync: Option<RawAccountSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccountSync {
    /// `HH:MM`, China time; parsed while deserialising, so a bad value is reported at its
    /// file:line:column.
    daily_at: Option<crate::sync::schedule::DailyAt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    secret_env: Option<String>,
    secret: Option<Secret>,
    api_base: Option<String>,
    #[serde(default)]
    stable_token: bool,
    timeout_ms: Option<u64>,
    agent_id: Option<i64>,
    rate_per_sec: Option<f64>,
    #[serde(default)]
    corp_tags: std::collections::BTreeMap<String, String>,
}

fn outbox_settings(raw: RawOutbox) -> Result<OutboxSettings, String> {
    let d = OutboxSettings::default();
    let s = OutboxSettings {
        concurrency: raw.concurrency.unwrap_or(d.concurrency),
        retry: crate::outbox::RetryPolicy {
            base_ms: raw.retry_base_ms.unwrap_or(d.retry.base_ms),
            max_ms: raw.retry_max_ms.unwrap_or(d.retry.max_ms),
            max_attempts: raw.max_attempts.unwrap_or(d.retry.max_attempts),
        },
        tag_batch_delay_ms: raw.tag_batch_delay_ms.unwrap_or(d.tag_batch_delay_ms),
        lease_secs: raw.lease_secs.unwrap_or(d.lease_secs).max(1),
    };
    if s.concurrency == 0 || s.retry.max_attempts == 0 || s.retry.base_ms == 0 {
        return Err(
            "[outbox] concurrency, max_attempts and retry_base_ms must be at least 1".into(),
        );
    }
    if s.retry.max_ms < s.retry.base_ms {
        return Err("[outbox] retry_max_ms must be at least retry_base_ms".into());
    }
    Ok(s)
}

fn channel_code_settings(raw: Option<&RawChannels>) -> Result<ChannelCodeSettings, String> {
    let d = ChannelCodeSettings::default();
    let Some(raw) = raw else { return Ok(d) };
    let s = ChannelCodeSettings {
        check_secs: raw.check_secs.unwrap_or(d.check_secs),
        reissue_days_before: raw.reissue_days_before.unwrap_or(d.reissue_days_before),
    };
    if s.check_secs == 0 {
        return Err("[channels] check_secs must be at least 1 (渠道码检查间隔至少 1 秒)".into());
    }
    if !(0.0..30.0).contains(&s.reissue_days_before) {
        return Err(format!(
            "[channels] reissue_days_before {}: 0 to less than 30 days (a temporary code lives at most 30) (提前重新生成的天数须小于 30)",
            s.reissue_days_before
        ));
    }
    Ok(s)
}

fn default_skew() -> u64 {
    300
}
fn default_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_ttl() -> u64 {
    DEFAULT_DEDUPE_TTL_SECS
}

/// Everything `siyu` needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file this came from, for messages.
    pub source: PathBuf,
    pub bind: String,
    /// 0 disables the timestamp check.
    pub max_clock_skew_secs: u64,
    pub max_body_bytes: usize,
    pub dedupe_ttl_secs: u64,
    /// The sled folder (used when `postgres` is `None`, and by `siyu store copy`).
    pub storage_path: PathBuf,
    /// `Some` with `[storage] backend = "postgres"`.
    pub postgres: Option<PostgresSettings>,
    pub replies_dir: PathBuf,
    pub accounts: Vec<Account>,
    pub admin_tokens: Vec<AdminToken>,
    /// Things worth a warning at startup (e.g. a secret written in the file).
    pub warnings: Vec<String>,
    pub outbox: OutboxSettings,
    /// The coupons file (`[coupons] file`), read by [`Settings::load`] into `coupons`.
    pub coupons_file: Option<PathBuf>,
    /// The coupon batches, by name order of the file.
    pub coupons: Vec<crate::coupon::Batch>,
    /// The campaigns file (`[campaigns] file`), read by [`Settings::load`] into `campaigns`.
    pub campaigns_file: Option<PathBuf>,
    /// Campaigns defined in the file (those started are also in the store).
    pub campaigns: Vec<crate::campaign::Campaign>,
    /// The channels file (`[channels] file`), read by [`Settings::load`] into `channels`.
    pub channels_file: Option<PathBuf>,
    pub channels: Vec<crate::channel::Channel>,
    /// The codes siyu makes (channels with `code = "auto"`), read with `channels`.
    pub channel_codes: Vec<crate::channel::CodeOrder>,
    pub channel_code_settings: ChannelCodeSettings,
    /// The referrals file (`[referral] file`), read by [`Settings::load`] into `referrals`.
    pub referrals_file: Option<PathBuf>,
    pub referrals: Vec<crate::referral::Programme>,
    /// Seconds between two maturing runs of invites (`[referral] check_every_secs`).
    pub referral_check_secs: u64,
    /// The bearer token a shop system presents to `POST /coupons/v1/redeem`.
    pub redeem_token: Option<Secret>,
    /// The offset at which the command line shows times (`[display] utc_offset`, default
    /// China time); stored values and the APIs' JSON stay in unix seconds.
    pub utc_offset: crate::local_time::UtcOffset,
    /// `[ingest]`: the shop's event endpoint (its token, unknown followers, the mapping).
    pub ingest: crate::ingest::IngestSettings,
}

/// One official account or WeCom app, served at `/wx/{id}`.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub kind: AccountKind,
    /// App id (official) or corp id (WeCom): the receive id inside every encrypted frame.
    pub receive_id: String,
    pub token: Secret,
    /// Present unless the account runs in plaintext mode without a key.
    pub crypt: Option<MsgCrypt>,
    pub mode: Mode,
    pub replies_dir: PathBuf,
    /// Present when the account has an API secret (`[account.api]` or
    /// `SIYU_<ID>_APP_SECRET`).
    pub api: Option<ApiSettings>,
    /// `[account.sync] daily_at`: `siyu serve` starts the follower sync once a day at this
    /// time (China time); only with `api`.
    pub sync_daily_at: Option<crate::sync::schedule::DailyAt>,
}

impl Account {
    /// How the account's side effects reach WeChat: `None` without API settings (then
    /// rules still change local state, and nothing is queued).
    pub fn outbound(&self) -> Option<crate::engine::Outbound> {
        self.api.as_ref().map(|_| match self.kind {
            AccountKind::Official => crate::engine::Outbound::Official,
            AccountKind::Wecom => crate::engine::Outbound::WeCom,
        })
    }
}

impl Settings {
    /// Reads and validates a config file; secrets may be overridden from the environment
    /// (`SIYU_<ACCOUNT>_TOKEN`, `SIYU_<ACCOUNT>_ENCODING_AES_KEY`, and `SIYU_BIND`).
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut settings = Settings::parse(path, &text, |name| std::env::var(name).ok())?;
        settings.load_coupons()?;
        settings.load_campaigns()?;
        settings.load_channels()?;
        settings.load_referrals()?;
        Ok(settings)
    }

    /// Parses config text; `env` looks up environment overrides (a closure so tests need
    /// not touch the process environment).
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let shown = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax {
                path: shown.clone(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let replies_dir = base.join(
            raw.replies
                .map(|r| r.dir)
                .unwrap_or_else(|| PathBuf::from("replies")),
        );
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.clone(),
            message,
        };
        if raw.account.is_empty() {
            return Err(invalid("no [[account]] configured".into()));
        }
        let mut seen = HashSet::new();
        let mut file_secrets = Vec::new();
        let mut accounts = Vec::with_capacity(raw.account.len());
        for a in raw.account {
            if !seen.insert(a.id.clone()) {
                return Err(invalid(format!("account id `{}` is used twice", a.id)));
            }
            accounts.push(validate_account(
                &shown,
                &base,
                &replies_dir,
                a,
                &env,
                &mut file_secrets,
            )?);
        }
        let mut warnings = file_secrets;
        let postgres = postgres_settings(&raw.storage, &env, &mut warnings).map_err(invalid)?;
        let mut admin_tokens = Vec::new();
        for t in raw.admin.token {
            let secret = match (&t.secret_env, t.secret) {
                (Some(var), None) => Secret::new(env(var).ok_or_else(|| {
                    invalid(format!(
                        "admin token `{}`: environment variable {var} is not set",
                        t.name
                    ))
                })?),
                (None, Some(s)) => {
                    warnings.push(format!(
                        "admin token `{}` has its secret written in {shown}; prefer secret_env",
                        t.name
                    ));
                    s
                }
                _ => {
                    return Err(invalid(format!(
                        "admin token `{}` needs exactly one of `secret_env` and `secret`",
                        t.name
                    )))
                }
            };
            // Short secrets can be guessed: 16 characters is the least we accept.
            if secret.expose().chars().count() < 16 {
                return Err(invalid(format!(
                    "admin token `{}`: the secret must be at least 16 characters",
                    t.name
                )));
            }
            if admin_tokens.iter().any(|a: &AdminToken| a.name == t.name) {
                return Err(invalid(format!(
                    "admin token name `{}` is used twice",
                    t.name
                )));
            }
            admin_tokens.push(AdminToken {
                name: t.name,
                role: t.role,
                secret,
            });
        }
        let ingest = ingest_settings(raw.ingest, &shown, text, &env, &mut warnings)?;
        Ok(Settings {
            ingest,
            admin_tokens,
            warnings,
            source: path.to_path_buf(),
            bind: env("SIYU_BIND").unwrap_or(raw.server.bind),
            max_clock_skew_secs: raw.server.max_clock_skew_secs,
            max_body_bytes: raw.server.max_body_bytes,
            dedupe_ttl_secs: raw.server.dedupe_ttl_secs,
            utc_offset: raw.display.utc_offset.unwrap_or_default(),
            storage_path: base.join(
                raw.storage
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("data/siyu.sled")),
            ),
            postgres,
            replies_dir,
            accounts,
            outbox: outbox_settings(raw.outbox).map_err(invalid)?,
            coupons_file: raw.coupons.as_ref().map(|c| base.join(&c.file)),
            coupons: Vec::new(),
            campaigns_file: raw.campaigns.as_ref().map(|c| base.join(&c.file)),
            campaigns: Vec::new(),
            channels_file: raw.channels.as_ref().map(|c| base.join(&c.file)),
            channels: Vec::new(),
            channel_codes: Vec::new(),
            channel_code_settings: channel_code_settings(raw.channels.as_ref()).map_err(invalid)?,
            referrals_file: raw.referral.as_ref().map(|r| base.join(&r.file)),
            referrals: Vec::new(),
            referral_check_secs: raw
                .referral
                .as_ref()
                .and_then(|r| r.check_every_secs)
                .unwrap_or(DEFAULT_REFERRAL_CHECK_SECS)
                .max(1),
            redeem_token: match raw.coupons {
                Some(RawCoupons {
                    redeem_token_env: Some(var),
                    redeem_token: None,
                    ..
                }) => Some(Secret::new(env(&var).ok_or_else(|| {
                    invalid(format!("coupons: environment variable {var} is not set"))
                })?)),
                Some(RawCoupons {
                    redeem_token_env: None,
                    redeem_token: Some(t),
                    ..
                }) => Some(t),
                Some(RawCoupons {
                    redeem_token_env: Some(_),
                    redeem_token: Some(_),
                    ..
                }) => {
                    return Err(invalid(
                        "[coupons] takes one of redeem_token_env and redeem_token".into(),
                    ))
                }
                _ => None,
            },
        })
    }

    /// Reads the coupons file named by `[coupons] file` (CSV files it names are relative
    /// to it).
    pub fn load_coupons(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.coupons_file.clone() else {
            return Ok(());
        };
        let (shown, text) = read_listed(&path)?;
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let read_csv = |p: &str| std::fs::read_to_string(dir.join(p)).map_err(|e| e.to_string());
        self.coupons =
            crate::coupon::parse_batches(&shown, &text, &read_csv).map_err(ConfigError::Coupons)?;
        Ok(())
    }

    /// Reads the campaigns file named by `[campaigns] file`, checked against the accounts
    /// and coupon batches (so coupons are read first).
    pub fn load_campaigns(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.campaigns_file.clone() else {
            return Ok(());
        };
        let (shown, text) = read_listed(&path)?;
        let kinds = |id: &str| self.account(id).map(|a| a.kind);
        let known = crate::campaign::Known {
            accounts: &kinds,
            coupons: &self.coupons,
        };
        let campaigns = crate::campaign::parse_campaigns(&shown, &text, &known)
            .map_err(ConfigError::Campaigns)?;
        self.campaigns = campaigns;
        Ok(())
    }

    /// Reads the channels file named by `[channels] file`, checked against the accounts.
    pub fn load_channels(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.channels_file.clone() else {
            return Ok(());
        };
        let (shown, text) = read_listed(&path)?;
        let kinds = |id: &str| self.account(id).map(|a| a.kind);
        let (channels, codes) = crate::channel::parse_channel_file(&shown, &text, &kinds)
            .map_err(ConfigError::Channels)?;
        self.channels = channels;
        self.channel_codes = codes;
        Ok(())
    }

    /// The code siyu makes for a channel, if it has `code = "auto"`.
    pub fn channel_code(&self, account: &str, channel: &str) -> Option<&crate::channel::CodeOrder> {
        self.channel_codes
            .iter()
            .find(|o| o.account == account && o.channel == channel)
    }

    /// Reads the referrals file named by `[referral] file`, checked against the accounts
    /// and coupon batches (so coupons are read first).
    pub fn load_referrals(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.referrals_file.clone() else {
            return Ok(());
        };
        let kinds = |id: &str| self.account(id).map(|a| a.kind);
        let batches = |name: &str| self.coupon_batch(name).is_some();
        self.referrals = crate::referral::load(&path, &kinds, &batches, self.utc_offset)
            .map_err(ConfigError::Referrals)?;
        Ok(())
    }

    /// The referral programme called `name`.
    pub fn referral(&self, name: &str) -> Option<&crate::referral::Programme> {
        self.referrals.iter().find(|p| p.name == name)
    }

    /// What the rule folders are compiled against (the coupon batches `issue_coupon` may
    /// name): one context for startup, `siyu check`, `siyu simulate` and every reload.
    pub fn rule_context(&self) -> crate::rules::RuleContext {
        crate::rules::RuleContext::with_coupon_batches(self.coupons.iter().map(|b| b.name.clone()))
    }

    pub fn coupon_batch(&self, name: &str) -> Option<&crate::coupon::Batch> {
        self.coupons.iter().find(|b| b.name == name)
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// The distinct rule folders in use, each with the accounts that read it.
    pub fn rule_dirs(&self) -> BTreeMap<PathBuf, Vec<String>> {
        let mut dirs: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for a in &self.accounts {
            dirs.entry(a.replies_dir.clone())
                .or_default()
                .push(a.id.clone());
        }
        dirs
    }
}

/// `[storage]`'s PostgreSQL part, checked: a URL from exactly one place, a pool of at
/// least one connection.
fn postgres_settings(
    raw: &RawStorage,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<PostgresSettings>, String> {
    if raw.backend == BackendKind::Sled {
        if raw.url.is_some() || raw.url_env.is_some() {
            return Err(
                "[storage] url / url_env are for backend = \"postgres\"; this store is sled".into(),
            );
        }
        return Ok(None);
    }
    let url = match (&raw.url_env, &raw.url) {
        (Some(var), None) => env(var).ok_or_else(|| {
            format!("[storage] url_env: the environment variable {var} is not set (it holds the PostgreSQL URL, e.g. postgres://siyu@127.0.0.1/siyu)")
        })?,
        (None, Some(url)) => {
            warnings.push(
                "[storage] url is written in the config file (it may hold a password); prefer url_env"
                    .into(),
            );
            url.clone()
        }
        _ => {
            return Err(
                "[storage] backend = \"postgres\" needs exactly one of url_env and url".into(),
            )
        }
    };
    if raw.pool_size == 0 {
        return Err("[storage] pool_size must be at least 1".into());
    }
    Ok(Some(PostgresSettings {
        url: Secret::new(url),
        pool_size: raw.pool_size,
        connect_timeout_secs: raw.connect_timeout_secs.max(1),
        prepared_statements: raw.prepared_statements,
    }))
}

fn validate_account(
    path: &str,
    base: &Path,
    shared_replies: &Path,
    a: RawAccount,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Account, ConfigError> {
    let err = |message: String| ConfigError::Account {
        path: path.to_string(),
        account: a.id.clone(),
        message,
    };
    if a.id.is_empty()
        || !a
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(err(
            "id must be non-empty ASCII letters, digits, `-` or `_` (it is part of the URL)".into(),
        ));
    }
    let prefix = format!("SIYU_{}_", a.id.to_ascii_uppercase().replace('-', "_"));
    let secret = |field: &str, from_file: Option<Secret>| {
        env(&format!("{prefix}{}", field.to_ascii_uppercase()))
            .map(Secret::new)
            .or(from_file)
    };
    let receive_id = match a.kind {
        AccountKind::Official => a
            .app_id
            .clone()
            .ok_or_else(|| err("an official account needs `app_id`".into()))?,
        AccountKind::Wecom => a
            .corp_id
            .clone()
            .ok_or_else(|| err("a wecom app needs `corp_id`".into()))?,
    };
    let token = secret("token", a.token.clone())
        .ok_or_else(|| err(format!("no `token` (set it in the file or {prefix}TOKEN)")))?;
    if token.expose().is_empty() {
        return Err(err("`token` is empty".into()));
    }
    let mode = match (a.kind, a.mode) {
        (AccountKind::Official, m) => m.unwrap_or(Mode::Safe),
        (AccountKind::Wecom, None | Some(Mode::Safe)) => Mode::Safe,
        (AccountKind::Wecom, Some(_)) => {
            return Err(err(
                "wecom callbacks are always encrypted: leave `mode` out or set it to \"safe\""
                    .into(),
            ))
        }
    };
    let key = secret("encoding_aes_key", a.encoding_aes_key.clone());
    let crypt = match key {
        Some(k) => Some(MsgCrypt::new(
            AesKey::parse(k.expose()).map_err(|e| err(format!("encoding_aes_key: {e}")))?,
            receive_id.clone(),
        )),
        None if mode == Mode::Plaintext => None,
        None => {
            return Err(err(format!(
                "mode {mode:?} needs `encoding_aes_key` (or {prefix}ENCODING_AES_KEY)"
            )))
        }
    };
    let api = match (env(&format!("{prefix}APP_SECRET")), a.api) {
        (None, None) => None,
        (from_env, raw) => {
            let raw = raw.unwrap_or(RawApi {
                secret_env: None,
                secret: None,
                api_base: None,
                stable_token: false,
                timeout_ms: None,
                agent_id: None,
                rate_per_sec: None,
                corp_tags: Default::default(),
            });
            let secret = match (from_env, &raw.secret_env, raw.secret) {
                (Some(s), _, _) => Secret::new(s),
                (None, Some(var), None) => Secret::new(env(var).ok_or_else(|| {
                    err(format!("api: environment variable {var} is not set"))
                })?),
                (None, None, Some(s)) => {
                    warnings.push(format!(
                        "account `{}`: the API secret is written in {path}; prefer secret_env",
                        a.id
                    ));
                    s
                }
                _ => {
                    return Err(err(format!(
                        "[account.api] needs exactly one of `secret_env` and `secret` (or {prefix}APP_SECRET)"
                    )))
                }
            };
            let mut api = ApiSettings::new(a.id.clone(), a.kind, receive_id.clone(), secret);
            if let Some(base) = raw.api_base {
                api.api_base = base.trim_end_matches('/').to_string();
            }
            api.use_stable_token = raw.stable_token;
            if let Some(ms) = raw.timeout_ms {
                api.timeout = std::time::Duration::from_millis(ms);
            }
            api.agent_id = raw.agent_id;
            match raw.rate_per_sec {
                Some(r) if !(r >= 0.0 && r.is_finite()) => {
                    return Err(err(format!(
                        "api.rate_per_sec must be a number ≥ 0 (0: unlimited), not {r}"
                    )))
                }
                Some(r) => api.rate_per_sec = r,
                None => {}
            }
            api.corp_tags = raw.corp_tags;
            Some(api)
        }
    };
    let sync_daily_at = a.sync.and_then(|s| s.daily_at);
    if sync_daily_at.is_some() && api.is_none() {
        return Err(err(format!(
            "[account.sync] daily_at needs [account.api] (or {prefix}APP_SECRET): the sync asks WeChat for the followers (定时同步需要配置 [account.api])"
        )));
    }
    Ok(Account {
        api,
        sync_daily_at,
        replies_dir: a
            .replies
            .map(|p| base.join(p))
            .unwrap_or_else(|| shared_replies.to_path_buf()),
        id: a.id,
        kind: a.kind,
        receive_id,
        token,
        crypt,
        mode,
    })
}

/// `[ingest]`: the token from the environment (or the file, warned) and the mapping
/// compiled, every mistake at its place.
fn ingest_settings(
    raw: Option<crate::ingest::RawIngest>,
    shown: &str,
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<crate::ingest::IngestSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let invalid = |message: String| ConfigError::Invalid {
        path: shown.to_string(),
        message,
    };
    let token = match (raw.token_env, raw.token) {
        (Some(var), None) => Some(Secret::new(env(&var).ok_or_else(|| {
            invalid(format!("[ingest]: environment variable {var} is not set"))
        })?)),
        (None, Some(t)) => {
            warnings.push(format!(
                "[ingest] has its token written in {shown}; prefer token_env"
            ));
            Some(t)
        }
        (Some(_), Some(_)) => {
            return Err(invalid("[ingest] takes one of token_env and token".into()))
        }
        (None, None) => None,
    };
    // Short tokens can be guessed: the same floor as admin secrets.
    if token
        .as_ref()
        .is_some_and(|t| t.expose().chars().count() < 16)
    {
        return Err(invalid(
            "[ingest]: the token must be at least 16 characters".into(),
        ));
    }
    let mapping = crate::ingest::compile(&raw.event, shown, text).map_err(ConfigError::Ingest)?;
    Ok(crate::ingest::IngestSettings {
        token,
        unknown: raw.unknown,
        mapping,
    })
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// A file the config names (coupons, campaigns, channels): its name as shown in
/// messages, and its text.
fn read_listed(path: &Path) -> Result<(String, String), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    Ok((shown, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config.toml");

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(Path::new("conf/config.toml"), text, |_| None)
    }

    #[test]
    fn shipped_config_loads() {
        let s = parse(SHIPPED).expect("shipped config.toml must be valid");
        assert!(s.account("demo").is_some());
        assert_eq!(s.replies_dir, Path::new("conf/replies"));
        assert_eq!(s.max_clock_skew_secs, 300);
    }

    const MINIMAL: &str = r#"
[server]
bind = "127.0.0.1:0"
[storage]
path = "data/x.sled"
[[account]]
id = "demo"
kind = "official"
app_id = "wx0123456789abcdef"
token = "siyutoken"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
mode = "safe"
"#;

    #[test]
    fn env_overrides_secrets_and_secrets_never_print() {
        let s = Settings::parse(Path::new("c.toml"), MINIMAL, |name| {
            (name == "SIYU_DEMO_TOKEN").then(|| "from-env".to_string())
        })
        .unwrap();
        let a = s.account("demo").unwrap();
        assert_eq!(a.token.expose(), "from-env");
        let debug = format!("{s:?}");
        assert!(!debug.contains("from-env"), "{debug}");
        assert!(!debug.contains("abcdefghijklmnopqrstuvwxyz"), "{debug}");
    }

    #[test]
    fn errors_name_the_place() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "unknown key",
                "[server]\nbind = \"x\"\nbnid = 1\n",
                "conf/config.toml:3:1",
            ),
            (
                "wecom without corp id",
                &MINIMAL.replace("kind = \"official\"", "kind = \"wecom\""),
                "needs `corp_id`",
            ),
            (
                "bad aes key",
                &MINIMAL.replace("ABCDEFG", "ABC"),
                "encoding_aes_key",
            ),
            (
                "safe without key",
                &MINIMAL.replace(
                    "encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
                    "",
                ),
                "needs `encoding_aes_key`",
            ),
            (
                "duplicate account",
                &format!(
                    "{MINIMAL}{}",
                    &MINIMAL[MINIMAL.find("[[account]]").unwrap()..]
                ),
                "used twice",
            ),
        ];
        for (name, text, want) in cases {
            let err = parse(text).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn api_settings_from_file_or_env() {
        let with_api = format!(
            "{MINIMAL}[account.api]\nsecret_env = \"DEMO_SECRET\"\napi_base = \"http://127.0.0.1:9100/\"\ntimeout_ms = 500\n"
        );
        let s = Settings::parse(Path::new("c.toml"), &with_api, |name| {
            (name == "DEMO_SECRET").then(|| "s3cret-from-env".to_string())
        })
        .unwrap();
        let api = s.account("demo").unwrap().api.clone().unwrap();
        assert_eq!(api.secret.expose(), "s3cret-from-env");
        assert_eq!(api.api_base, "http://127.0.0.1:9100");
        assert_eq!(api.timeout, std::time::Duration::from_millis(500));
        assert!(s.warnings.is_empty());
        assert!(!format!("{s:?}").contains("s3cret"));

        let missing = Settings::parse(Path::new("c.toml"), &with_api, |_| None).unwrap_err();
        assert!(missing.to_string().contains("DEMO_SECRET"), "{missing}");
        let none = parse(MINIMAL).unwrap();
        assert!(none.account("demo").unwrap().api.is_none());
        let by_env = Settings::parse(Path::new("c.toml"), MINIMAL, |name| {
            (name == "SIYU_DEMO_APP_SECRET").then(|| "x".to_string())
        })
        .unwrap();
        let api = by_env.account("demo").unwrap().api.clone().unwrap();
        assert_eq!(api.api_base, crate::api::OFFICIAL_API_BASE);
        let in_file = format!("{MINIMAL}[account.api]\nsecret = \"plain\"\n");
        assert_eq!(parse(&in_file).unwrap().warnings.len(), 1);
    }

    #[test]
    fn display_offset_defaults_to_china_and_a_bad_one_names_its_line() {
        use crate::local_time::UtcOffset;
        assert_eq!(parse(MINIMAL).unwrap().utc_offset, UtcOffset::CHINA);
        let west = format!("{MINIMAL}[display]\nutc_offset = \"-05:00\"\n");
        assert_eq!(parse(&west).unwrap().utc_offset.to_string(), "-05:00");
        let bad = format!("{MINIMAL}[display]\nutc_offset = \"+8\"\n");
        let line = bad.lines().count();
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!("conf/config.toml:{line}:")) && err.contains("+HH:MM"),
            "{err}"
        );
    }

    #[test]
    fn a_daily_sync_needs_the_api_and_a_bad_time_names_its_place() {
        let api = "[account.api]\nsecret = \"plain\"\n";
        let good = format!("{MINIMAL}{api}[account.sync]\ndaily_at = \"03:30\"\n");
        let s = parse(&good).unwrap();
        let at = s.account("demo").unwrap().sync_daily_at.unwrap();
        assert_eq!(at.to_string(), "03:30");
        assert!(parse(MINIMAL).unwrap().accounts[0].sync_daily_at.is_none());
        let bad = format!("{MINIMAL}{api}[account.sync]\ndaily_at = \"3:30\"\n");
        let line = bad.lines().count();
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!("conf/config.toml:{line}:12:")) && err.contains("HH:MM"),
            "{err}"
        );
        let typo = format!("{MINIMAL}{api}[account.sync]\ndaily = \"03:30\"\n");
        let err = parse(&typo).unwrap_err().to_string();
        assert!(err.contains("unknown field `daily`"), "{err}");
        let no_api = format!("{MINIMAL}[account.sync]\ndaily_at = \"03:30\"\n");
        let err = parse(&no_api).unwrap_err().to_string();
        assert!(
            err.contains("account `demo`") && err.contains("needs [account.api]"),
            "{err}"
        );
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
