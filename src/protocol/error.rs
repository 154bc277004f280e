//! `ProtocolError`: every way a callback can fail before it reaches the rule engine.
//!
//! One enum for the whole protocol boundary, so the server maps protocol failures to HTTP
//! in one place. Variants are named after the official WXBizMsgCrypt error codes
//! (protocol.md §4) and `code()` returns them, so our log lines read like WeChat's own
//! samples. Messages never contain key material or ids: they end up in logs.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// -40001: `signature` / `msg_signature` did not match.
    #[error("signature check failed")]
    SignatureMismatch,

    /// -40002: the XML is malformed.
    #[error("malformed XML: {0}")]
    Xml(String),

    /// -40002: a DOCTYPE (and with it any entity declaration) was present. Refused outright
    /// because WeChat never sends one and it is the door to XXE and entity expansion.
    #[error("malformed XML: DOCTYPE and entity declarations are not allowed")]
    DoctypeForbidden,

    /// -40002: a required element is absent.
    #[error("malformed XML: required element <{0}> is missing")]
    MissingField(&'static str),

    /// -40002: an element is present but its content is unusable (e.g. a non-integer
    /// `CreateTime`).
    #[error("malformed XML: element <{field}> is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// -40004: the EncodingAESKey is not 43 characters of base64.
    #[error("invalid EncodingAESKey: expected 43 base64 characters")]
    InvalidAesKey,

    /// -40005: the decrypted frame names another app or corp.
    #[error("receive id does not match the configured app id/corp id")]
    ReceiveIdMismatch,

    /// -40007: AES decryption failed (the ciphertext is not whole AES blocks).
    #[error("AES decrypt failed")]
    Decrypt,

    /// -40008: the decrypted buffer is not a valid frame (padding, length, UTF-8).
    #[error("invalid decrypted buffer: {0}")]
    InvalidBuffer(&'static str),

    /// -40010: `Encrypt` / `echostr` is not valid base64.
    #[error("base64 decode failed")]
    Base64,
}

impl ProtocolError {
    /// The official WXBizMsgCrypt error code for this failure.
    pub fn code(&self) -> i32 {
        match self {
            ProtocolError::SignatureMismatch => -40001,
            ProtocolError::Xml(_)
            | ProtocolError::DoctypeForbidden
            | ProtocolError::MissingField(_)
            | ProtocolError::InvalidField { .. } => -40002,
            ProtocolError::InvalidAesKey => -40004,
            ProtocolError::ReceiveIdMismatch => -40005,
            ProtocolError::Decrypt => -40007,
            ProtocolError::InvalidBuffer(_) => -40008,
            ProtocolError::Base64 => -40010,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_official_samples() {
        let cases = [
            (ProtocolError::SignatureMismatch, -40001),
            (ProtocolError::Xml("x".into()), -40002),
            (ProtocolError::DoctypeForbidden, -40002),
            (ProtocolError::MissingField("MsgType"), -40002),
            (
                ProtocolError::InvalidField {
                    field: "CreateTime",
                    reason: "x".into(),
                },
                -40002,
            ),
            (ProtocolError::InvalidAesKey, -40004),
            (ProtocolError::ReceiveIdMismatch, -40005),
            (ProtocolError::Decrypt, -40007),
            (ProtocolError::InvalidBuffer("padding"), -40008),
            (ProtocolError::Base64, -40010),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            ProtocolError::MissingField("FromUserName").to_string(),
            "malformed XML: required element <FromUserName> is missing"
        );
    }
}
