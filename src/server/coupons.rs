//! `POST /coupons/v1/redeem`: a shop system marks a follower's coupon code used, once.
//! Authenticated with the bearer token of `[coupons] redeem_token(_env)`, compared in
//! constant time; every redemption is audited.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::reload::audit;
use super::AppState;
use crate::coupon::RedeemRefused;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/coupons/v1")
            .wrap(actix_web::middleware::from_fn(super::durable_writes))
            .route("/redeem", web::post().to(redeem)),
    );
}

#[derive(Debug, Deserialize)]
struct RedeemBody {
    code: String,
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

async fn redeem(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match (&state.settings.redeem_token, presented) {
        (Some(t), Some(p)) => bool::from(t.expose().as_bytes().ct_eq(p.as_bytes())),
        _ => false,
    };
    if !allowed {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(json!({ "error": "missing or invalid bearer token" }));
    }
    // Parsed after the token check (and whatever the Content-Type says: shop systems vary).
    let body: RedeemBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {{\"code\": \"…\"}}: {e}"),
            )
        }
    };
    let code = body.code.trim().to_string();
    let now = crate::outbox::now_ms() / 1000;
    let (store, zone) = (state.store.clone(), state.settings.utc_offset);
    let result = web::block(move || store.redeem_coupon(&code, now, zone)).await;
    match result {
        Ok(Ok(Ok(c))) => {
            tracing::info!(code = %c.code, batch = %c.batch, account = %c.account, "coupon redeemed");
            audit(
                &state,
                "shop",
                "coupon.redeem",
                &format!("{}/{}", c.account, c.openid),
                format!("{} ({})", c.code, c.batch),
            );
            HttpResponse::Ok().json(json!({ "redeemed": c }))
        }
        Ok(Ok(Err(refused))) => {
            let status = match refused {
                RedeemRefused::Unknown(_) => StatusCode::NOT_FOUND,
                RedeemRefused::AlreadyRedeemed { .. } => StatusCode::CONFLICT,
                RedeemRefused::Expired { .. } => StatusCode::GONE,
                RedeemRefused::NotYetValid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            tracing::warn!(reason = %refused, "coupon redemption refused");
            error(status, refused.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "coupon redemption failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error".into())
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "redeem task failed".into(),
        ),
    }
}
