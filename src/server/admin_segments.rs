//! `GET /admin/v1/segments/{account}?where=…&format=count|list|csv`: the followers of a
//! segment while the server holds the store, as `siyu followers --where` gives them (the
//! command line comes here when the store is locked). The list and the CSV are streamed:
//! the walk runs on a blocking thread and hands the response body over in pieces, through
//! a small bounded channel, so an export of a million followers never sits in memory and
//! a client that goes away stops the walk.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::admin::{authorize, known_account, AdminError};
use super::AppState;
use crate::config::Role;
use crate::export::{self, Format, CSV_HEADER};
use crate::outbox::now_ms;
use crate::segment::Segment;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/segments/{account}", web::get().to(segment));
}

/// Bytes gathered before a piece of the body is handed over: one network write per
/// ~16 KiB rather than per follower.
const PIECE: usize = 16 * 1024;
/// Pieces waiting for a slow client at most; then the walk waits too.
const PIECES_AHEAD: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentQuery {
    /// The segment expression; everyone without one.
    #[serde(rename = "where")]
    segment: Option<String>,
    /// Default `count`.
    format: Option<Format>,
    /// The CSV's UTF-8 byte-order mark (for Excel); default true.
    bom: Option<bool>,
}

async fn segment(
    state: web::Data<AppState>,
    req: HttpRequest,
    account: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    // Parsed after the token check, so a caller without one learns nothing from it.
    let q = web::Query::<SegmentQuery>::from_query(req.query_string())
        .map_err(|e| AdminError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let account = account.into_inner();
    known_account(&state, &account)?;
    let segment = q
        .segment
        .as_deref()
        .map(Segment::parse)
        .transpose()
        .map_err(|e| AdminError::BadRequest(format!("where {e}")))?;
    if let Some(s) = &segment {
        crate::person::check_accounts(s, &|a| state.settings.account(a).is_some())
            .map_err(|e| AdminError::BadRequest(format!("where {e}")))?;
    }
    let format = q.format.unwrap_or(Format::Count);
    let now = now_ms() / 1000;
    let store = state.store.clone();
    if format == Format::Count {
        let (account2, segment2) = (account.clone(), segment.clone());
        let count = web::block(move || {
            export::walk(
                store.as_ref(),
                &account2,
                segment2.as_ref(),
                now,
                &mut |_| true,
            )
        })
        .await??;
        return Ok(HttpResponse::Ok().json(json!({
            "account": account,
            "where": q.segment,
            "count": count,
        })));
    }
    let zone = state.settings.utc_offset;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(PIECES_AHEAD);
    let mut piece = String::with_capacity(PIECE + 512);
    if format == Format::Csv {
        if q.bom.unwrap_or(true) {
            // U+FEFF in UTF-8 is the byte-order mark, export::UTF8_BOM.
            piece.push('\u{feff}');
        }
        piece.push_str(CSV_HEADER);
    }
    tokio::task::spawn_blocking(move || {
        let walked = export::walk(store.as_ref(), &account, segment.as_ref(), now, &mut |f| {
            export::write_row(&mut piece, format, f, zone);
            if piece.len() < PIECE {
                return true;
            }
            let full = std::mem::replace(&mut piece, String::with_capacity(PIECE + 512));
            // Fails only when the response was dropped: the client has gone, stop.
            tx.blocking_send(Ok(Bytes::from(full))).is_ok()
        });
        match walked {
            Ok(_) => {
                if !piece.is_empty() {
                    let _ = tx.blocking_send(Ok(Bytes::from(piece)));
                }
            }
            // Too late for a status: the body breaks off, and the client sees that it did.
            Err(e) => {
                tracing::error!(error = %e, account = %account, "segment export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .streaming(body))
}
