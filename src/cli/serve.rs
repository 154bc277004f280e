//! `siyu serve`: load, check, bind, serve until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;
use crate::server::{Application, StartupError};

pub fn run(config: &Path) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    runtime.block_on(async {
        let accounts: Vec<String> = settings.accounts.iter().map(|a| a.id.clone()).collect();
        let app = match Application::build(settings) {
            Ok(app) => app,
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(match e {
                    StartupError::Rules { .. } => EXIT_INVALID,
                    // `bind = "nonsense"` is the config's fault; a port in use is the machine's.
                    StartupError::Bind { ref source, .. }
                        if source.kind() == std::io::ErrorKind::InvalidInput =>
                    {
                        EXIT_INVALID
                    }
                    _ => EXIT_RUNTIME,
                });
            }
        };
        tracing::info!(port = app.port(), accounts = ?accounts, "siyu serving");
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}
