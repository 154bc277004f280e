//! `GET /admin/v1/people/{unionid}`: one person across the brand's accounts: every
//! identity (an official account's openid, a WeCom contact's external_userid) the people
//! index links to the unionid, each with its follower state.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::admin::{authorize, on_pool, AdminError};
use super::AppState;
use crate::config::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/people/{unionid}", web::get().to(person));
}

async fn person(
    state: web::Data<AppState>,
    req: HttpRequest,
    unionid: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let unionid = unionid.into_inner();
    let u = unionid.clone();
    let identities = on_pool(&state, move |state| {
        let mut out = Vec::new();
        for (account, openid) in state.store.people(&u)? {
            let follower = state.store.follower(&account, &openid)?;
            let kind = state
                .settings
                .account(&account)
                .map(|a| format!("{:?}", a.kind).to_lowercase());
            out.push(json!({
                "account": account,
                "kind": kind,
                "id": openid,
                "subscribed": follower.as_ref().map(|f| f.subscribed),
                "follower": follower,
            }));
        }
        Ok(out)
    })
    .await?;
    if identities.is_empty() {
        return Err(AdminError::NotFound(format!(
            "no follower known with unionid `{unionid}` (sync the accounts first: `siyu followers sync`) (未找到该 unionid 的粉丝)"
        )));
    }
    Ok(HttpResponse::Ok().json(json!({ "unionid": unionid, "identities": identities })))
}
