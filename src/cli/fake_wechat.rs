//! `siyu fake-wechat`: run the fake WeChat/WeCom API server for local development, until
//! Ctrl-C. Point an account's `api_base` at it and drive it with the `/fake/*` endpoints.

use std::process::ExitCode;

use super::EXIT_RUNTIME;
use crate::fake_wechat::FakeWechat;

#[derive(Debug, clap::Args)]
pub struct FakeWechatArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub bind: String,
}

pub fn run(args: &FakeWechatArgs) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let fake = match FakeWechat::start(&args.bind) {
            Ok(f) => f,
            Err(e) => {
                errln!("error: cannot bind {}: {e}", args.bind);
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        tracing::info!(
            url = fake.base_url(),
            "fake WeChat API serving; Ctrl-C stops it"
        );
        // The fake leaves signals to its owner (tests run many); here that is us.
        let server = fake.server_handle();
        let stop_on_ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                server.stop(false).await;
            }
        });
        let result = fake.stopped().await;
        stop_on_ctrl_c.abort();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}
