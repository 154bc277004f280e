//! Building the app: open the store, compile every rule folder, bind. `Application::build`
//! binds before it runs so tests can ask for port 0 and read the port back.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use super::{configure, AccountState, AppState};
use crate::config::Settings;
use crate::rulebook::{LoadError, RuleBook};
use crate::store::{SledStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rules in {dir} refused:\n{source}")]
    Rules { dir: PathBuf, source: LoadError },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The app's shared state over a given store: every account with its compiled rules.
pub fn build_state(settings: Settings, store: Arc<dyn Store>) -> Result<AppState, StartupError> {
    let mut books: HashMap<PathBuf, Arc<RuleBook>> = HashMap::new();
    let mut accounts = HashMap::new();
    for account in &settings.accounts {
        let dir = account.replies_dir.clone();
        let book = match books.get(&dir) {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(RuleBook::load(&dir).map_err(|source| StartupError::Rules {
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
    Ok(AppState {
        settings,
        accounts,
        store,
    })
}

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    store: Arc<SledStore>,
}

impl Application {
    /// Opens the sled store, compiles the rules and binds `settings.bind`.
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        let store = Arc::new(SledStore::open(&settings.storage_path)?);
        let addr = settings.bind.clone();
        let state = web::Data::new(build_state(settings, store.clone())?);
        let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?
            .port();
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
                .listen(listener)
                .map_err(|source| StartupError::Bind {
                    addr: format!("port {port}"),
                    source,
                })?
                .run();
        Ok(Application {
            port,
            server,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests; signals are handled by actix itself).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn store(&self) -> Arc<SledStore> {
        self.store.clone()
    }

    /// Serves until SIGINT/SIGTERM (actix finishes in-flight requests first), then
    /// flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        result
    }
}
