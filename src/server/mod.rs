//! The HTTP layer: thin. Routes call the webhook flow, which goes through the engine;
//! errors become HTTP statuses in exactly one place (`error.rs`).

pub mod error;
pub mod startup;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::config::{Account, Settings};
use crate::protocol::{MsgCrypt, ProtocolError};
use crate::rulebook::RuleBook;
use crate::store::Store;
pub use error::WebhookError;
pub use startup::{build_state, Application, StartupError};

/// Shared by every worker thread: settings, one entry per account, the store.
pub struct AppState {
    pub settings: Settings,
    pub accounts: HashMap<String, AccountState>,
    pub store: Arc<dyn Store>,
}

/// One served account and the rule table it answers from (shared with the other accounts
/// that read the same folder).
pub struct AccountState {
    pub settings: Account,
    pub rules: Arc<RuleBook>,
}

impl AppState {
    pub fn account(&self, id: &str) -> Result<&AccountState, WebhookError> {
        self.accounts
            .get(id)
            .ok_or_else(|| WebhookError::UnknownAccount(id.chars().take(64).collect()))
    }
}

impl AccountState {
    /// The account's cipher; config validation guarantees one unless the account is in
    /// plaintext mode, which never reaches the encrypted path.
    pub fn crypt(&self) -> Result<&MsgCrypt, WebhookError> {
        self.settings
            .crypt
            .as_ref()
            .ok_or(WebhookError::Protocol(ProtocolError::InvalidAesKey))
    }
}

/// The routes, shared by `serve` and the in-process tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).service(
        web::resource("/wx/{account}")
            .route(web::get().to(webhook::get))
            .route(web::post().to(webhook::post)),
    );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}
