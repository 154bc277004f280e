//! `GET /admin/v1/referrals/{name}` (viewer): a referral programme's figures;
//! `GET /admin/v1/referrals/{name}/held` (viewer): the invites held for review;
//! `POST /admin/v1/referrals/{name}/invites/{invitee}/release|reject` (operator, audited as
//! `referral.release` / `referral.reject`). README "Referral programmes (任务宝)".

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::admin::{authorize, on_pool, AdminError};
use super::reload::audit;
use super::AppState;
use crate::config::Role;
use crate::referral::Programme;
use crate::referral_flow::figures::figures;
use crate::referral_flow::review::{held, review, ReviewError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/referrals/{name}", web::get().to(report))
        .route("/referrals/{name}/held", web::get().to(held_list))
        .route(
            "/referrals/{name}/invites/{invitee}/{verdict}",
            web::post().to(decide),
        );
}

fn programme(state: &AppState, name: &str) -> Result<Programme, AdminError> {
    state.settings.referral(name).cloned().ok_or_else(|| {
        AdminError::NotFound(format!(
            "no referral programme `{name}` in referrals.toml (没有这个任务宝活动)"
        ))
    })
}

async fn report(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let p = programme(&state, &path)?;
    let f = on_pool(&state, move |s| Ok(figures(s.store.as_ref(), &p)?)).await?;
    Ok(HttpResponse::Ok().json(f))
}

async fn held_list(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let p = programme(&state, &path)?;
    let held = on_pool(&state, move |s| Ok(held(s.store.as_ref(), &p)?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "held": held })))
}

async fn decide(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let (name, invitee, verdict) = path.into_inner();
    let let_go = match verdict.as_str() {
        "release" => true,
        "reject" => false,
        other => {
            return Err(AdminError::NotFound(format!(
                "`{other}`: release or reject (放行或拒绝)"
            )))
        }
    };
    let p = programme(&state, &name)?;
    let record = on_pool(&state, move |s| {
        let now = crate::outbox::now_ms() / 1000;
        let record = review(s.store.as_ref(), &p, &invitee, let_go, now).map_err(|e| match e {
            ReviewError::NoSuchInvite(_) => AdminError::NotFound(e.to_string()),
            ReviewError::NotHeld(_) => AdminError::Conflict(e.to_string()),
            ReviewError::Store(e) => AdminError::Store(e),
        })?;
        audit(
            s,
            &who,
            &format!("referral.{verdict}"),
            &format!("{}/{}", p.name, record.invitee),
            format!("inviter {}", record.inviter),
        );
        Ok(record)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "invite": record })))
}
