//! The WeChat / WeCom wire protocol: signatures, the WXBizMsgCrypt scheme, inbound XML and
//! passive-reply XML.
//!
//! Pure code: bytes and strings in, typed values out. No I/O, no clocks, no randomness
//! (callers pass timestamps and random bytes in), nothing logged, so every function here
//! is tested against the official vectors and by round-trips.

pub mod crypto;
pub mod envelope;
pub mod error;
mod fields;
pub mod inbound;
pub mod message;
pub mod reply;
pub mod signature;

pub use crypto::{AesKey, MsgCrypt};
pub use envelope::{encrypted_reply, encrypted_reply_xml, parse_encrypt, parse_envelope, Envelope};
pub use error::ProtocolError;
pub use inbound::parse_inbound;
pub use message::{Event, ExternalContactChange, Inbound, InboundKind, PicSource};
pub use reply::{reply_xml, Article, Reply};
pub use signature::{push_sign, sign, verify};
