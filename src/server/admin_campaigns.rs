//! The admin API's campaign routes: what `siyu campaign` does, while the server runs
//! (the server's own campaign runner and outbox worker then do the sending).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::admin::{authorize, on_pool, AdminError};
use super::reload::audit;
use super::AppState;
use crate::campaign::runner::{self, CampaignError};
use crate::campaign::{parse_campaigns, Known};
use crate::config::Role;
use crate::outbox::now_ms;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/campaigns", web::get().to(list))
        .route("/campaigns", web::post().to(define))
        .route("/campaigns/{name}", web::get().to(report))
        .route("/campaigns/{name}/plan", web::get().to(plan))
        .route("/campaigns/{name}/start", web::post().to(start))
        .route("/campaigns/{name}/pause", web::post().to(pause))
        .route("/campaigns/{name}/resume", web::post().to(resume));
}

impl From<CampaignError> for AdminError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Store(e) => AdminError::Store(e),
            CampaignError::Unknown(_) => AdminError::NotFound(e.to_string()),
            CampaignError::State { .. } | CampaignError::Exists(_) => {
                AdminError::Conflict(e.to_string())
            }
            other => AdminError::BadRequest(other.to_string()),
        }
    }
}

/// Every campaign with its state (file definitions not started: `not started` or
/// `scheduled`).
async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let all = on_pool(&state, |state| {
        Ok(runner::all(state.store.as_ref(), &state.settings)?)
    })
    .await?;
    let campaigns: Vec<_> = all
        .into_iter()
        .map(|(c, run)| {
            let status = match &run {
                Some(r) => r.state.to_string(),
                None if c.start_at.is_some() => "scheduled".into(),
                None => "not started".into(),
            };
            json!({ "campaign": c, "state": status, "run": run })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "campaigns": campaigns })))
}

/// Defines a campaign (what `siyu campaign define` does): the body is one `[[campaign]]`
/// table, written as in the campaigns file and checked by the same rules (every mistake
/// listed, 422). Kept in the store, not started; 409 when the name is taken.
async fn define(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let text = std::str::from_utf8(&body)
        .map_err(|_| AdminError::BadRequest("the campaign must be UTF-8 TOML".into()))?;
    let kinds = |id: &str| state.settings.account(id).map(|a| a.kind);
    let known = Known {
        accounts: &kinds,
        coupons: &state.settings.coupons,
    };
    let mut campaigns = parse_campaigns("campaign.toml", text, &known).map_err(|errors| {
        AdminError::Refused(
            errors
                .iter()
                .map(|e| format!("{}:{}:{}: {}", e.file, e.line, e.column, e.message))
                .collect(),
        )
    })?;
    if campaigns.len() != 1 {
        return Err(AdminError::BadRequest(format!(
            "the body must define exactly one [[campaign]], not {}",
            campaigns.len()
        )));
    }
    let campaign = campaigns.remove(0);
    let run = on_pool(&state, move |state| {
        let run = runner::define(state.store.as_ref(), &state.settings, campaign)?;
        audit(
            state,
            &who,
            "campaign.define",
            &run.campaign.name,
            run.campaign.audience.clone(),
        );
        Ok(run)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "state": run.state, "run": run })))
}

async fn report(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let name = name.into_inner();
    let r = on_pool(&state, move |state| {
        // Unknown (404) before not started (409).
        runner::find(state.store.as_ref(), &state.settings, &name)?;
        Ok(runner::report(
            state.store.as_ref(),
            &name,
            state.settings.utc_offset,
            crate::outbox::now_ms() / 1000,
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(r))
}

async fn plan(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let name = name.into_inner();
    let p = on_pool(&state, move |state| {
        let (campaign, _) = runner::find(state.store.as_ref(), &state.settings, &name)?;
        Ok(runner::plan(
            state.store.as_ref(),
            &state.settings,
            &campaign,
            now_ms() / 1000,
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(p))
}

async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let name = name.into_inner();
    let run = on_pool(&state, move |state| {
        let run = runner::start(
            state.store.as_ref(),
            &state.settings,
            &name,
            now_ms() / 1000,
        )?;
        audit(
            state,
            &who,
            "campaign.start",
            &name,
            run.campaign.audience.clone(),
        );
        Ok(run)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "state": run.state, "run": run })))
}

async fn pause(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let name = name.into_inner();
    let run = on_pool(&state, move |state| {
        let run = runner::pause(state.store.as_ref(), &name)?;
        audit(state, &who, "campaign.pause", &name, String::new());
        Ok(run)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "state": run.state })))
}

async fn resume(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let name = name.into_inner();
    let run = on_pool(&state, move |state| {
        let run = runner::resume(state.store.as_ref(), &name)?;
        state.outbox_wake.notify_one();
        audit(state, &who, "campaign.resume", &name, String::new());
        Ok(run)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "state": run.state })))
}
