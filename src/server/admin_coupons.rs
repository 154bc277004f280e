//! The admin API's coupon routes: what `siyu coupon stats` and `siyu coupon redeem` do,
//! while the server holds the store. (A shop system redeems through `/coupons/v1/redeem`
//! with its own token; these take an admin token and audit under its name.)

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admin::{authorize, AdminError};
use super::reload::audit;
use super::AppState;
use crate::config::Role;
use crate::coupon::CouponStats;
use crate::outbox::now_ms;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/coupons/redeem", web::post().to(redeem))
        .route("/coupons/{batch}/stats", web::get().to(stats));
}

/// A batch's counts, as `GET /admin/v1/coupons/{batch}/stats` answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    pub batch: String,
    #[serde(flatten)]
    pub stats: CouponStats,
}

async fn stats(
    state: web::Data<AppState>,
    req: HttpRequest,
    batch: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let Some(b) = state.settings.coupon_batch(&batch).cloned() else {
        return Err(AdminError::NotFound(format!(
            "no coupon batch `{batch}` (see `siyu coupon list`)"
        )));
    };
    let store = state.store.clone();
    // Counts the batch's codes: off the async threads.
    let stats =
        web::block(move || store.coupon_stats(&b, now_ms() / 1000).map(|s| (b, s))).await??;
    Ok(HttpResponse::Ok().json(BatchStats {
        batch: stats.0.name,
        stats: stats.1,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    code: String,
}

/// Marks a code used, once; refusals are 404 / 409 / 410 / 422 as on the shop's endpoint,
/// with the refusal itself beside the message (`refused`).
async fn redeem(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let body: RedeemBody = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("redeem body: {e}")))?;
    let code = body.code.trim().to_string();
    let store = state.store.clone();
    let (now, zone) = (now_ms() / 1000, state.settings.utc_offset);
    let c = web::block(move || store.redeem_coupon(&code, now, zone)).await???;
    audit(
        &state,
        &who,
        "coupon.redeem",
        &format!("{}/{}", c.account, c.openid),
        format!("{} ({})", c.code, c.batch),
    );
    Ok(HttpResponse::Ok().json(json!({ "redeemed": c })))
}
