//! Access tokens: one per account, shared by every task, fetched as rarely as possible.
//!
//! WeChat limits token fetches (2000 a day for `/cgi-bin/token`) and each new token retires
//! the previous one within about five minutes (protocol.md §8), so a burst of tasks must not
//! each fetch one, and a restart must not either. Hence:
//! - a cache with the expiry, refreshed [`REFRESH_AHEAD_SECS`] before it runs out, so no call
//!   goes out with a token about to die in flight;
//! - single flight: a `tokio::sync::Mutex` is held for the whole refresh (an await on the
//!   network, which a std mutex must not span); whoever gets it second re-checks the cache and
//!   finds the fresh token instead of fetching again;
//! - the token is written to the store and read back from it before any fetch, so a new
//!   process (or client) over the same store reuses it;
//! - across instances sharing a store (PostgreSQL), a refresh takes the store's lease
//!   `token:<account>` first: the other instances wait for the token it stores instead of
//!   fetching their own, and the store never lets an older token replace a newer one.
//!
//! Tokens and secrets are held as [`Secret`] and never logged.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Client;
use serde::Deserialize;

use super::transport::{exchange, url};
use super::ApiError;
use crate::config::{AccountKind, Secret};
use crate::store::{Store, StoredToken};

/// Refresh this long before expiry: WeChat's own stable-token renewal window (§8), and time
/// enough for any call that takes the token now to finish with it.
pub const REFRESH_AHEAD_SECS: i64 = 300;

/// Where an account's token comes from.
#[derive(Debug)]
pub(crate) struct TokenSource {
    pub account: String,
    pub kind: AccountKind,
    /// The AppID, or the CorpID for WeCom.
    pub app_id: String,
    pub secret: Secret,
    pub api_base: String,
    pub use_stable_token: bool,
}

/// The token cache of one account.
pub(crate) struct Tokens {
    source: TokenSource,
    http: Client,
    store: Arc<dyn Store>,
    /// A std mutex: only ever held to copy the token in or out, never across an await.
    cached: Mutex<Option<StoredToken>>,
    /// Held during a refresh so that only one runs at a time (see the module doc).
    flight: tokio::sync::Mutex<()>,
    /// This process, as the holder of the store's refresh lease.
    owner: &'static str,
}

/// How long a refresh may hold the store's lease (a fetch times out well before).
const REFRESH_LEASE_MS: i64 = 15_000;
/// How often an instance waiting for another's refresh looks at the store again.
const REFRESH_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: i64,
}

impl Tokens {
    pub fn new(source: TokenSource, http: Client, store: Arc<dyn Store>) -> Tokens {
        Tokens {
            source,
            http,
            store,
            cached: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
            owner: crate::outbox::worker::instance_id(),
        }
    }

    /// A token good for at least [`REFRESH_AHEAD_SECS`]: from memory, else from the store,
    /// else fetched (by one task, however many ask at once).
    pub async fn current(&self) -> Result<Secret, ApiError> {
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        let _flight = self.flight.lock().await;
        // Whoever held the lock before us may have just refreshed it.
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        if let Some(t) = self.stored().filter(|t| fresh(t, unix_now())) {
            tracing::debug!(account = %self.source.account, "access token taken from the store");
            return Ok(self.keep_in_memory(t));
        }
        self.refresh(|t| fresh(t, unix_now())).await
    }

    /// WeChat refused `rejected`: fetch a new token, unless another task already replaced
    /// it, in which case that one is returned (one refresh per rejection wave, not per task).
    pub async fn replace(&self, rejected: &Secret) -> Result<Secret, ApiError> {
        let _flight = self.flight.lock().await;
        let now = unix_now();
        let newer = |t: &StoredToken| t.access_token != *rejected && fresh(t, now);
        if let Some(t) = self.cached_copy().filter(newer) {
            return Ok(t.access_token);
        }
        if let Some(t) = self.stored().filter(newer) {
            return Ok(self.keep_in_memory(t));
        }
        self.refresh(newer).await
    }

    /// Fetches a token while holding the store's refresh lease; while another instance
    /// holds it, waits for the token that instance stores (`good` says it will do). If the
    /// holder never stores one (it died mid-fetch), its lease runs out and this one fetches.
    async fn refresh(&self, good: impl Fn(&StoredToken) -> bool) -> Result<Secret, ApiError> {
        let lease = format!("token:{}", self.source.account);
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(REFRESH_LEASE_MS as u64 + 1000);
        loop {
            let granted = self
                .store
                .lease(&lease, self.owner, unix_now() * 1000, REFRESH_LEASE_MS)
                .unwrap_or_else(|e| {
                    tracing::warn!(account = %self.source.account, error = %e, "cannot take the token refresh lease; refreshing anyway");
                    true
                });
            if granted {
                // Another instance may have stored one between our look and the lease.
                if let Some(t) = self.stored().filter(&good) {
                    let _ = self.store.release(&lease, self.owner);
                    return Ok(self.keep_in_memory(t));
                }
            }
            if granted || std::time::Instant::now() >= deadline {
                let fetched = self.fetch_and_keep().await;
                if granted {
                    let _ = self.store.release(&lease, self.owner);
                }
                return fetched;
            }
            tokio::time::sleep(REFRESH_POLL).await;
            if let Some(t) = self.stored().filter(&good) {
                tracing::debug!(account = %self.source.account, "access token refreshed by another instance");
                return Ok(self.keep_in_memory(t));
            }
        }
    }

    fn cached_copy(&self) -> Option<StoredToken> {
        // Nothing panics while this lock is held (a clone or an assignment).
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fresh_cached(&self) -> Option<Secret> {
        self.cached_copy()
            .filter(|t| fresh(t, unix_now()))
            .map(|t| t.access_token)
    }

    fn keep_in_memory(&self, t: StoredToken) -> Secret {
        let token = t.access_token.clone();
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        token
    }

    /// The stored token. A store failure costs one extra fetch, never a failed send.
    fn stored(&self) -> Option<StoredToken> {
        // sled reads take microseconds: no need to move this off the async thread.
        self.store
            .token(&self.source.account)
            .inspect_err(|e| {
                tracing::warn!(account = %self.source.account, error = %e, "cannot read the stored access token")
            })
            .ok()
            .flatten()
    }

    async fn fetch_and_keep(&self) -> Result<Secret, ApiError> {
        let answer = self.fetch().await?;
        if answer.expires_in <= 0 || answer.access_token.is_empty() {
            return Err(ApiError::Decode(format!(
                "token answer without a usable token (expires_in {})",
                answer.expires_in
            )));
        }
        let t = StoredToken {
            access_token: Secret::new(answer.access_token),
            expires_at: unix_now() + answer.expires_in,
        };
        tracing::info!(account = %self.source.account, expires_in = answer.expires_in, "access token fetched");
        if let Err(e) = self.store.put_token(&self.source.account, &t) {
            tracing::warn!(account = %self.source.account, error = %e, "cannot store the access token; a restart will fetch a new one");
        }
        Ok(self.keep_in_memory(t))
    }

    async fn fetch(&self) -> Result<TokenAnswer, ApiError> {
        let s = &self.source;
        let request = match (s.kind, s.use_stable_token) {
            (AccountKind::Official, false) => self.http.get(url(
                &s.api_base,
                "/cgi-bin/token",
                &[
                    ("grant_type", "client_credential"),
                    ("appid", &s.app_id),
                    ("secret", s.secret.expose()),
                ],
            )?),
            // Normal mode (force_refresh false): repeated calls return the same token while
            // it is valid; forcing retires it at once and is rationed to 20 a day (§8).
            (AccountKind::Official, true) => self
                .http
                .post(url(&s.api_base, "/cgi-bin/stable_token", &[])?)
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": s.app_id,
                    "secret": s.secret.expose(),
                    "force_refresh": false,
                })),
            (AccountKind::Wecom, _) => self.http.get(url(
                &s.api_base,
                "/cgi-bin/gettoken",
                &[("corpid", &s.app_id), ("corpsecret", s.secret.expose())],
            )?),
        };
        exchange::<TokenAnswer>(request).await.map_err(|e| match e {
            // serde_json's messages may quote the value, and this value is the token.
            ApiError::Decode(_) => ApiError::Decode("malformed access-token answer".into()),
            other => other,
        })
    }
}

fn fresh(t: &StoredToken, now: i64) -> bool {
    now < t.expires_at - REFRESH_AHEAD_SECS
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_fresh_until_five_minutes_before_expiry() {
        let t = StoredToken {
            access_token: Secret::new("t"),
            expires_at: 10_000,
        };
        for (name, now, want) in [
            ("long before", 1_000, true),
            ("one second before the margin", 9_699, true),
            ("at the margin", 9_700, false),
            ("expired", 10_001, false),
        ] {
            assert_eq!(fresh(&t, now), want, "{name}: now {now}");
        }
    }
}
