//! Every reason a callback is refused, and the one place each becomes an HTTP status.
//!
//! The body says why in one short line (WeChat's servers ignore it; a developer pointing
//! curl at the webhook reads it). Nothing secret is ever in a message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::protocol::ProtocolError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    #[error("missing query parameter `{0}`")]
    MissingParam(&'static str),
    #[error("signature check failed (-40001)")]
    BadSignature,
    #[error("timestamp `{0}` is not a number of seconds")]
    BadTimestamp(String),
    #[error("stale timestamp: {skew_secs} s away from our clock (limit {limit_secs} s)")]
    StaleTimestamp { skew_secs: i64, limit_secs: u64 },
    #[error("body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    ModeMismatch(&'static str),
    #[error("{0}")]
    Protocol(ProtocolError),
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
}

impl From<ProtocolError> for WebhookError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::SignatureMismatch => WebhookError::BadSignature,
            other => WebhookError::Protocol(other),
        }
    }
}

impl WebhookError {
    /// A short, stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::UnknownAccount(_) => "unknown_account",
            WebhookError::MissingParam(_) => "missing_param",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::BadTimestamp(_) => "bad_timestamp",
            WebhookError::StaleTimestamp { .. } => "stale_timestamp",
            WebhookError::BodyTooLarge { .. } => "body_too_large",
            WebhookError::NotUtf8 => "not_utf8",
            WebhookError::ModeMismatch(_) => "mode_mismatch",
            WebhookError::Protocol(_) => "bad_message",
            WebhookError::Store(_) => "store",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::UnknownAccount(_) => StatusCode::NOT_FOUND,
            WebhookError::MissingParam(_)
            | WebhookError::BadSignature
            | WebhookError::BadTimestamp(_)
            | WebhookError::StaleTimestamp { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::NotUtf8 | WebhookError::ModeMismatch(_) | WebhookError::Protocol(_) => {
                StatusCode::BAD_REQUEST
            }
            // WeChat retries on a 5xx, and the dedupe key was not written: the retry may
            // succeed once the store recovers.
            WebhookError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}
