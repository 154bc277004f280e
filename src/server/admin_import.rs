//! `POST /admin/v1/followers/{account}/import`: a follower file (the body, the CSV of
//! `siyu followers import`) applied by the server, so that the command works beside a
//! running sled server, which holds the store. The same code as the command
//! ([`crate::import`]): each good line one atomic write with its automatic tags' outbox
//! items, each bad line reported as `FILE:LINE: message` and skipped, `?dry_run=true`
//! writes nothing. `?file=NAME` names the file in those messages (the command sends the
//! path it was given).
//!
//! Answers 200 with the summary when every line was good; 422 with the same body when a
//! line was bad (the others are applied, as the command does) or the header is refused
//! (then nothing is). A real run is audited (`followers.import`) with its summary.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::admin::{authorize, known_account, on_pool, AdminError};
use super::AppState;
use crate::config::Role;
use crate::import::{BadLine, ImportError, ImportFile};
use crate::store::StoreError;

/// The largest file taken: 32 MiB, some 300,000 lines of a shop's export, held in memory
/// while it is applied. Bigger: split the file, or stop the server and import it with the
/// command (which streams the file).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How the file is called in messages when the request does not say.
const UNNAMED: &str = "import.csv";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/followers/{account}/import")
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route(web::post().to(import)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    #[serde(default)]
    dry_run: bool,
    file: Option<String>,
}

#[tracing::instrument(skip_all, fields(account))]
async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
    q: web::Query<ImportQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let account = account.into_inner();
    tracing::Span::current().record("account", account.as_str());
    known_account(&state, &account)?;
    let ImportQuery { dry_run, file } = q.into_inner();
    let file = file.filter(|f| !f.is_empty()).unwrap_or(UNNAMED.into());
    let shown = |b: &BadLine| format!("{file}:{}: {}", b.line, b.message);
    let done = on_pool(&state, {
        let (account, file) = (account.clone(), file.clone());
        move |state| {
            let opened = match ImportFile::open(&body[..]) {
                Ok(f) => f,
                Err(b) => return Ok(Err(b)),
            };
            let a = &state.accounts[&account];
            let rules = a.rules.current();
            let outbound = a.settings.outbound();
            let now = crate::outbox::now_ms() / 1000;
            let change = |line: &crate::ingest::ImportLine, f: &mut crate::follower::Follower| {
                line.apply(f);
                crate::engine::autotag_effects(&rules.table, outbound, f, now, "autotag:import")
            };
            let mut bad = Vec::new();
            let summary = opened
                .apply(state.store.as_ref(), &account, dry_run, &change, &mut |b| {
                    bad.push(b)
                })
                .map_err(|ImportError::Store { line, source }| {
                    AdminError::Store(StoreError::Backend(format!(
                        "{file}:{line}: {source} (the lines before it are applied)"
                    )))
                })?;
            if !dry_run {
                state.outbox_wake.notify_one();
            }
            Ok(Ok((summary, bad)))
        }
    })
    .await;
    let (summary, bad) = match done {
        Ok(Ok(done)) => done,
        Ok(Err(header)) => {
            return Ok(HttpResponse::build(StatusCode::UNPROCESSABLE_ENTITY).json(json!({
                "error": format!("{file}: the header is refused; nothing was imported (表头有误，未导入)"),
                "errors": [shown(&header)],
                "bad_lines": [header],
                "dry_run": dry_run,
            })))
        }
        Err(e) => {
            // A store failure part-way: what was applied stays applied; audit it as such.
            if !dry_run {
                super::reload::audit(&state, &who, "followers.import", &format!("{account}/{file}"), format!("failed: {e}"));
            }
            return Err(e);
        }
    };
    if !dry_run {
        super::reload::audit(
            &state,
            &who,
            "followers.import",
            &format!("{account}/{file}"),
            summary.to_string(),
        );
    }
    tracing::info!(%summary, dry_run, "followers imported");
    let errors: Vec<String> = bad.iter().map(shown).collect();
    let mut answer = json!({
        "account": account,
        "file": file,
        "dry_run": dry_run,
        "summary": summary,
        "errors": errors,
        "bad_lines": bad,
    });
    if bad.is_empty() {
        return Ok(HttpResponse::Ok().json(answer));
    }
    let done = if dry_run {
        "dry run: nothing changed (试运行，未改动)"
    } else {
        "the other lines are applied (其余行已导入)"
    };
    answer["error"] = json!(format!(
        "{file}: {} bad line(s) skipped; {done}",
        summary.bad
    ));
    Ok(HttpResponse::build(StatusCode::UNPROCESSABLE_ENTITY).json(answer))
}
