//! One HTTP exchange with the WeChat API and its uniform decoding, shared by the client
//! and the token fetch.
//!
//! WeChat reports errors as HTTP 200 with a non-zero `errcode` (protocol.md §1), so the
//! status line says little: the body decides. Every failure, from a refused connection to
//! an errcode, becomes an [`ApiError`]; none carries the request URL, whose query holds the
//! access token or the AppSecret.

use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ApiError;

/// Sends `request` and decodes WeChat's answer: transport failures, HTTP errors and
/// `errcode`s all become [`ApiError`]s. Error texts never carry the URL, whose query holds
/// the token or the secret.
pub(super) async fn exchange<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, ApiError> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ApiError::Http(status.as_u16()));
    }
    let bytes = response.bytes().await.map_err(transport)?;
    decode(&bytes)
}

/// The uniform decoding of an answer body: a non-zero `errcode` is an error whatever else
/// the body holds; otherwise the body is the typed answer.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    let status: Status =
        serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))?;
    if status.errcode != 0 {
        return Err(ApiError::from_code(status.errcode, &status.errmsg));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))
}

fn transport(e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        return ApiError::Timeout;
    }
    // The causes say what happened (reset, refused, closed early); the URL is dropped.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::Network(text)
}

/// `base` + `path` with the query pairs encoded.
pub(super) fn url(base: &str, path: &str, query: &[(&str, &str)]) -> Result<Url, ApiError> {
    let mut url = Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .map_err(|e| ApiError::Invalid(format!("bad API base URL: {e}")))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn answers_decode_uniformly() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Sent {
            msgid: i64,
        }
        let ok: Result<Sent, _> = decode(br#"{"errcode":0,"errmsg":"ok","msgid":7}"#);
        assert_eq!(ok, Ok(Sent { msgid: 7 }));
        let no_errcode: Result<Sent, _> = decode(br#"{"msgid":8}"#);
        assert_eq!(no_errcode, Ok(Sent { msgid: 8 }));
        let refused: Result<Sent, _> = decode(br#"{"errcode":45015,"errmsg":"out of time"}"#);
        assert_eq!(refused, Err(ApiError::OutOfWindow));
        let missing: Result<Sent, _> = decode(br#"{"errcode":0}"#);
        assert!(matches!(missing, Err(ApiError::Decode(_))), "{missing:?}");
        let garbage: Result<Sent, _> = decode(b"<html>busy</html>");
        assert!(matches!(garbage, Err(ApiError::Decode(_))), "{garbage:?}");
    }

    #[test]
    fn urls_encode_the_query_and_ignore_a_trailing_slash() {
        let u = url("http://h:1/", "/cgi-bin/token", &[("secret", "a b&c")]).unwrap();
        assert_eq!(u.as_str(), "http://h:1/cgi-bin/token?secret=a+b%26c");
    }
}
