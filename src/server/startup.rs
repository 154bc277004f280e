//! Building the app: open the store, compile every rule folder, bind. `Application::build`
//! binds before it runs so tests can ask for port 0 and read the port back.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use super::{configure, AccountState, AppState};
use crate::config::Settings;
use crate::outbox::worker::{Channel, Worker};
use crate::rulebook::{LoadError, RuleBook};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Any mistake in a rule folder, an `issue_coupon` naming a batch the config does not
    /// define included: the compile that reloads and `siyu check` run.
    #[error("rules in {dir} refused:\n{source}")]
    Rules { dir: PathBuf, source: LoadError },
    #[error("account `{account}`: cannot build the API client: {source}")]
    Api {
        account: String,
        source: crate::api::ApiError,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The app's shared state over a given store: every account with its compiled rules.
pub fn build_state(settings: Settings, store: Arc<dyn Store>) -> Result<AppState, StartupError> {
    let now = super::webhook::Entropy::fresh().now;
    let context = settings.rule_context();
    let mut books: HashMap<PathBuf, Arc<RuleBook>> = HashMap::new();
    let mut accounts = HashMap::new();
    for account in &settings.accounts {
        let dir = account.replies_dir.clone();
        let book = match books.get(&dir) {
            Some(b) => b.clone(),
            None => {
                let loaded = RuleBook::load(&dir, context.clone(), now);
                let b = Arc::new(loaded.map_err(|source| StartupError::Rules {
                    dir: dir.clone(),
                    source,
                })?);
                books.insert(dir, b.clone());
                b
            }
        };
        accounts.insert(
            account.id.clone(),
            AccountState {
                settings: account.clone(),
                rules: book,
            },
        );
    }
    for book in books.values() {
        tracing::info!(dir = %book.dir().display(), version = %book.current().version, "rules loaded");
    }
    let clients = api_clients(&settings, &store)?;
    let metrics = super::metrics::Metrics::new();
    if let Some(pg) = store.as_postgres() {
        metrics.watch_postgres(pg);
    }
    Ok(AppState {
        clients,
        outbox_wake: Arc::new(tokio::sync::Notify::new()),
        flusher: Arc::new(crate::store::GroupFlush::over(store.clone())),
        syncs: Default::default(),
        settings,
        accounts,
        books: books.into_values().collect(),
        store,
        metrics,
    })
}

/// One API client per account with API settings.
fn api_clients(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> Result<HashMap<String, Arc<crate::api::ApiClient>>, StartupError> {
    let mut clients = HashMap::new();
    for a in &settings.accounts {
        if let Some(api) = &a.api {
            let client =
                crate::api::ApiClient::new(api.clone(), store.clone()).map_err(|source| {
                    StartupError::Api {
                        account: a.id.clone(),
                        source,
                    }
                })?;
            clients.insert(a.id.clone(), Arc::new(client));
        }
    }
    Ok(clients)
}

/// An outbox worker without the server (`siyu campaign start` while no server runs).
pub fn standalone_worker(
    settings: &Settings,
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
) -> Result<Worker, StartupError> {
    let clients = api_clients(settings, &store)?;
    let channels = settings
        .accounts
        .iter()
        .filter_map(|a| {
            let client = clients.get(&a.id)?;
            Some((a.id.clone(), Channel::new(client.clone(), a.api.as_ref()?)))
        })
        .collect();
    Ok(Worker::new(store, channels, settings.outbox.clone(), wake)
        .with_coupons(settings.coupons.clone())
        .with_referrals(settings.referrals.clone())
        .with_zone(settings.utc_offset))
}

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    store: Arc<dyn Store>,
    state: web::Data<AppState>,
    /// Watches the rule folders from the moment the app is built (not from its first
    /// poll), so no change made after `build` returns can be missed.
    watcher: Option<notify::RecommendedWatcher>,
    worker: Arc<Worker>,
}

/// The outbox worker over the app's clients: one channel per account with API settings.
pub fn outbox_worker(state: &AppState) -> Worker {
    let channels = state
        .settings
        .accounts
        .iter()
        .filter_map(|a| {
            let client = state.clients.get(&a.id)?;
            Some((a.id.clone(), Channel::new(client.clone(), a.api.as_ref()?)))
        })
        .collect();
    Worker::new(
        state.store.clone(),
        channels,
        state.settings.outbox.clone(),
        state.outbox_wake.clone(),
    )
    .with_coupons(state.settings.coupons.clone())
    .with_referrals(state.settings.referrals.clone())
    .with_zone(state.settings.utc_offset)
    .with_flusher(state.flusher.clone())
    .with_metrics(state.metrics.clone())
}

impl Application {
    /// Opens the store (`[storage]`: sled, or PostgreSQL with its migrations applied),
    /// compiles the rules and binds `settings.bind`.
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        let store = crate::store::open(&settings)?;
        let addr = settings.bind.clone();
        let state = web::Data::new(build_state(settings, store.clone())?);
        super::rule_sync::join(&state);
        let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?
            .port();
        let app_state = state.clone();
        let worker = Arc::new(outbox_worker(&state));
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
                .listen(listener)
                .map_err(|source| StartupError::Bind {
                    addr: format!("port {port}"),
                    source,
                })?
                .run();
        let watcher = match super::reload::watch(app_state.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch rule folders; reload with SIGHUP or the admin API");
                None
            }
        };
        Ok(Application {
            port,
            server,
            store,
            state: app_state,
            watcher,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests; signals are handled by actix itself).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves until SIGINT/SIGTERM (actix stops accepting, finishes in-flight requests),
    /// reloading rules on changes and delivering the outbox meanwhile, then flushes the
    /// store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            store,
            state,
            watcher,
            worker,
            ..
        } = self;
        #[cfg(unix)]
        let hup = tokio::spawn(super::reload::on_sighup(state.clone()));
        let (stop_worker, stopped) = tokio::sync::watch::channel(false);
        let campaigns = tokio::spawn(crate::campaign::runner::run(
            state.store.clone(),
            Arc::new(state.settings.clone()),
            state.outbox_wake.clone(),
            stopped.clone(),
        ));
        super::rule_sync::follow(state.clone(), stopped.clone());
        let mut schedules = super::sync_schedule::spawn(state.clone(), stopped.clone());
        schedules.extend(super::channel_codes::spawn(state.clone(), stopped.clone()));
        if !state.settings.referrals.is_empty() {
            schedules.push(tokio::spawn(crate::referral_flow::mature::every(
                state.store.clone(),
                state.settings.referrals.clone(),
                std::time::Duration::from_secs(state.settings.referral_check_secs),
                state.outbox_wake.clone(),
                stopped.clone(),
            )));
        }
        let worker = tokio::spawn(worker.run(stopped));
        let result = server.await;
        #[cfg(unix)]
        hup.abort();
        // A schedule waiting on a sync would wait for its end: nothing of its own to finish.
        for s in &schedules {
            s.abort();
        }
        // The worker finishes the calls it has in flight and records their outcome.
        let _ = stop_worker.send(true);
        if let Err(e) = campaigns.await {
            tracing::error!(error = %e, "campaign runner ended abnormally");
        }
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "outbox worker ended abnormally");
        }
        // Let go of every handle on the store, then wait for the workers and the watcher
        // thread to let go of theirs, so the store is closed (and its file lock released)
        // when this returns: a restart in the same process can open it at once.
        drop(watcher);
        drop(state);
        for _ in 0..500 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        result
    }
}
