//! `ApiError`: everything an outbound WeChat/WeCom call can end in, one enum.
//!
//! WeChat answers most failures with HTTP 200 and `{"errcode": N, "errmsg": "…"}`
//! (protocol.md §1). Every errcode the client reacts to becomes its own variant, so callers
//! match on meaning (`OutOfWindow`, not `45015`); the rest land in `Other` with the code and
//! WeChat's message. Two questions decide what a caller does next: `is_token_error` (refresh
//! the token and retry once, §8) and `is_transient` (worth retrying later, with backoff).

/// Builds the variant of one errcode.
type Variant = fn() -> ApiError;

/// The errcodes with a variant of their own, in one table so that `from_code` and `code`
/// cannot disagree.
const CODES: &[(i64, Variant)] = &[
    (-1, || ApiError::SystemBusy),
    (40001, || ApiError::InvalidCredential),
    (40003, || ApiError::InvalidOpenid),
    (40014, || ApiError::InvalidAccessToken),
    (40125, || ApiError::InvalidAppSecret),
    (40164, || ApiError::IpNotWhitelisted),
    (42001, || ApiError::AccessTokenExpired),
    (43004, || ApiError::Unsubscribed),
    (45009, || ApiError::DailyQuotaReached),
    (45011, || ApiError::MinuteQuotaReached),
    (45015, || ApiError::OutOfWindow),
    (45047, || ApiError::OverResponseCount),
    (45059, || ApiError::TooManyTagsOnFollower),
    (45065, || ApiError::DuplicateClientMsgId),
    (45157, || ApiError::TagNameExists),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("40001 invalid credential: the access token is wrong or was replaced by a newer one")]
    InvalidCredential,
    #[error("40014 invalid access_token: WeChat does not know this token")]
    InvalidAccessToken,
    #[error("42001 access_token expired")]
    AccessTokenExpired,
    #[error("-1 WeChat system busy: retry later with backoff")]
    SystemBusy,
    #[error("45009 the API's daily call quota is used up")]
    DailyQuotaReached,
    #[error("45011 the API's per-minute call quota is used up")]
    MinuteQuotaReached,
    #[error(
        "45015 out of the customer-service window: the follower has not written, subscribed, \
         scanned or clicked recently enough (48 hours after a message)"
    )]
    OutOfWindow,
    #[error("45047 the customer-service window's message allowance is used up")]
    OverResponseCount,
    #[error("43004 the follower has unsubscribed")]
    Unsubscribed,
    #[error("40003 invalid openid: not a follower of this account")]
    InvalidOpenid,
    #[error("45157 a tag with this name already exists")]
    TagNameExists,
    #[error("45059 the follower already carries the maximum of 20 tags")]
    TooManyTagsOnFollower,
    #[error("40125 invalid AppSecret: check the account's secret")]
    InvalidAppSecret,
    #[error("40164 this server's IP address is not on the account's API IP whitelist")]
    IpNotWhitelisted,
    #[error("45065 a mass-send job with this client_msg_id already exists")]
    DuplicateClientMsgId,
    #[error("WeChat error {code}: {message}")]
    Other { code: i64, message: String },
    /// Refused before sending: the request breaks a documented limit or does not apply to
    /// this kind of account.
    #[error("request refused before sending: {0}")]
    Invalid(String),
    #[error("the WeChat API did not answer in time")]
    Timeout,
    /// Connection refused, reset or closed mid-answer. Never carries the URL (its query
    /// holds the access token or the secret).
    #[error("network error calling the WeChat API: {0}")]
    Network(String),
    #[error("the WeChat API answered HTTP {0}")]
    Http(u16),
    #[error("cannot decode the WeChat API's answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// The error for a non-zero `errcode` and its `errmsg`.
    pub fn from_code(code: i64, message: &str) -> ApiError {
        match CODES.iter().find(|(c, _)| *c == code) {
            Some((_, make)) => make(),
            None => ApiError::Other {
                code,
                message: message.to_string(),
            },
        }
    }

    /// WeChat's errcode, for errors that came with one.
    pub fn code(&self) -> Option<i64> {
        if let ApiError::Other { code, .. } = self {
            return Some(*code);
        }
        CODES
            .iter()
            .find(|(_, make)| make() == *self)
            .map(|(c, _)| *c)
    }

    /// The token was refused: refresh it and retry once (protocol.md §8).
    pub fn is_token_error(&self) -> bool {
        matches!(
            self,
            ApiError::InvalidCredential
                | ApiError::InvalidAccessToken
                | ApiError::AccessTokenExpired
        )
    }

    /// Worth retrying later (with backoff): the platform was busy, a quota will refill, or
    /// the call never got a real answer. Everything else fails the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::SystemBusy
            | ApiError::DailyQuotaReached
            | ApiError::MinuteQuotaReached
            | ApiError::Timeout
            | ApiError::Network(_) => true,
            ApiError::Http(status) => *status >= 500,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        name: &'static str,
        code: i64,
        want: ApiError,
        token: bool,
        transient: bool,
    }

    fn case(name: &'static str, code: i64, want: ApiError, token: bool, transient: bool) -> Case {
        Case {
            name,
            code,
            want,
            token,
            transient,
        }
    }

    #[test]
    fn errcodes_map_to_variants_and_classes() {
        use ApiError::*;
        let cases = [
            case("invalid credential", 40001, InvalidCredential, true, false),
            case("invalid token", 40014, InvalidAccessToken, true, false),
            case("expired token", 42001, AccessTokenExpired, true, false),
            case("system busy", -1, SystemBusy, false, true),
            case("daily quota", 45009, DailyQuotaReached, false, true),
            case("minute quota", 45011, MinuteQuotaReached, false, true),
            case("out of window", 45015, OutOfWindow, false, false),
            case("over count", 45047, OverResponseCount, false, false),
            case("unsubscribed", 43004, Unsubscribed, false, false),
            case("invalid openid", 40003, InvalidOpenid, false, false),
            case("tag exists", 45157, TagNameExists, false, false),
            case("too many tags", 45059, TooManyTagsOnFollower, false, false),
            case("bad secret", 40125, InvalidAppSecret, false, false),
            case("ip whitelist", 40164, IpNotWhitelisted, false, false),
            case(
                "duplicate msg id",
                45065,
                DuplicateClientMsgId,
                false,
                false,
            ),
            case(
                "unknown code keeps code and message",
                48001,
                Other {
                    code: 48001,
                    message: "api unauthorized".into(),
                },
                false,
                false,
            ),
        ];
        for c in cases {
            let got = ApiError::from_code(c.code, "api unauthorized");
            assert_eq!(got, c.want, "{}: errcode {}", c.name, c.code);
            assert_eq!(got.code(), Some(c.code), "{}: code()", c.name);
            assert_eq!(got.is_token_error(), c.token, "{}: is_token_error", c.name);
            assert_eq!(got.is_transient(), c.transient, "{}: is_transient", c.name);
            assert!(
                got.to_string().contains(&c.code.to_string()),
                "{}: message names the code: {got}",
                c.name
            );
        }
    }

    #[test]
    fn transport_errors_are_classified() {
        let cases = [
            ("timeout", ApiError::Timeout, true),
            ("network", ApiError::Network("reset".into()), true),
            ("http 502", ApiError::Http(502), true),
            ("http 404", ApiError::Http(404), false),
            ("decode", ApiError::Decode("eof".into()), false),
            ("invalid", ApiError::Invalid("too long".into()), false),
        ];
        for (name, e, transient) in cases {
            assert_eq!(e.is_transient(), transient, "{name}");
            assert!(!e.is_token_error(), "{name}");
            assert_eq!(e.code(), None, "{name}");
        }
    }
}
