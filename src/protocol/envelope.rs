//! The outer XML of encrypted callbacks and replies (protocol.md §3–§5).
//!
//! An encrypted POST body is `<xml><ToUserName/><Encrypt/></xml>` (WeCom adds `<AgentID>`,
//! in any order; compatible mode also repeats every plaintext field, ignored here). Only
//! `Encrypt` matters for decryption and `msg_signature`; the rest is for routing and logs.
//! Parsed with the same reader and safety rules as the inner message (`fields.rs`).

use std::borrow::Cow;

use super::crypto::MsgCrypt;
use super::error::ProtocolError;
use super::fields::Fields;
use super::reply::{cdata_element, text_element};
use super::signature::sign_hex;

/// The outer elements of an encrypted callback. Absent or empty elements are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ToUserName`: the account's gh id or the WeCom corp id.
    pub to: Option<String>,
    /// `AgentID`, WeCom only.
    pub agent_id: Option<String>,
    /// `Encrypt`: base64 ciphertext, the value `msg_signature` covers.
    pub encrypt: Option<String>,
}

pub fn parse_envelope(xml: &str) -> Result<Envelope, ProtocolError> {
    let mut f = Fields::parse(xml)?;
    Ok(Envelope {
        to: value(&mut f, "ToUserName"),
        agent_id: value(&mut f, "AgentID"),
        encrypt: value(&mut f, "Encrypt"),
    })
}

/// Only the `Encrypt` value of [`parse_envelope`] (same parse, same refusals), borrowed
/// from `xml` when it comes in one piece: what the callback path needs, without a copy.
pub fn parse_encrypt(xml: &str) -> Result<Option<Cow<'_, str>>, ProtocolError> {
    let mut f = Fields::parse(xml)?;
    Ok(f.take_cow("Encrypt")
        .map(|v| match v {
            Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
            Cow::Owned(v) if v.trim().len() == v.len() => Cow::Owned(v),
            Cow::Owned(v) => Cow::Owned(v.trim().to_owned()),
        })
        .filter(|v| !v.is_empty()))
}

/// Encrypts `plaintext` and writes the whole encrypted passive reply in one buffer: the
/// same bytes as `encrypted_reply_xml(&encrypt, &sign(token, [timestamp, nonce,
/// &encrypt]), timestamp, nonce)` with `encrypt = crypt.encrypt(plaintext, random)`, but
/// the base64 is written in place (it never needs CDATA quoting) and signed from there.
pub fn encrypted_reply(
    crypt: &MsgCrypt,
    token: &str,
    plaintext: &str,
    random: [u8; 16],
    timestamp: &str,
    nonce: &str,
) -> String {
    // Base64 of the frame: 20 header bytes, the message, the receive id, up to 32 of pad.
    let encrypt_len = (20 + plaintext.len() + crypt.receive_id().len() + 32).div_ceil(3) * 4;
    let mut out = String::with_capacity(220 + encrypt_len + timestamp.len() + nonce.len());
    out.push_str("<xml><Encrypt><![CDATA[");
    let start = out.len();
    crypt.encrypt_into(&mut out, plaintext, random);
    let end = out.len();
    out.push_str("]]></Encrypt><MsgSignature><![CDATA[");
    let signature = sign_hex(token, &[timestamp, nonce, &out[start..end]]);
    out.push_str(std::str::from_utf8(&signature).expect("hex digits are ASCII"));
    out.push_str("]]></MsgSignature>");
    text_element(&mut out, "TimeStamp", timestamp);
    cdata_element(&mut out, "Nonce", nonce);
    out.push_str("</xml>");
    out
}

/// The encrypted passive reply. `msg_signature` is `sign(token, [timestamp, nonce, encrypt])`.
pub fn encrypted_reply_xml(
    encrypt: &str,
    msg_signature: &str,
    timestamp: &str,
    nonce: &str,
) -> String {
    let mut out = String::with_capacity(
        160 + encrypt.len() + msg_signature.len() + timestamp.len() + nonce.len(),
    );
    out.push_str("<xml>");
    cdata_element(&mut out, "Encrypt", encrypt);
    cdata_element(&mut out, "MsgSignature", msg_signature);
    text_element(&mut out, "TimeStamp", timestamp);
    cdata_element(&mut out, "Nonce", nonce);
    out.push_str("</xml>");
    out
}

/// None of these values can contain whitespace (base64 and ids), so surrounding
/// whitespace is layout and trimmed.
fn value(f: &mut Fields<'_>, name: &str) -> Option<String> {
    f.take(name)
        .map(|v| {
            if v.trim().len() == v.len() {
                v
            } else {
                v.trim().to_owned()
            }
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/wechat.json"))
            .expect("vectors parse")
    }

    fn env(to: Option<&str>, agent_id: Option<&str>, encrypt: Option<&str>) -> Envelope {
        Envelope {
            to: to.map(str::to_owned),
            agent_id: agent_id.map(str::to_owned),
            encrypt: encrypt.map(str::to_owned),
        }
    }

    #[test]
    fn bodies() {
        let v = vectors();
        let official = v["official_generated"]["message"]["encrypt"]
            .as_str()
            .expect("encrypt");
        let wecom = v["wecom_doc"]["message"]["encrypt"]
            .as_str()
            .expect("encrypt");
        let cases = [
            (
                "official safe mode",
                format!("<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{official}]]></Encrypt></xml>"),
                env(Some("gh_0123456789ab"), None, Some(official)),
            ),
            (
                "WeCom, AgentID first",
                format!("<xml><AgentID><![CDATA[218]]></AgentID><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{wecom}]]></Encrypt></xml>"),
                env(Some("wx5823bf96d3bd56c7"), Some("218"), Some(wecom)),
            ),
            (
                "pretty-printed, no CDATA",
                format!("<?xml version=\"1.0\"?>\n<xml>\n  <Encrypt>\n    {wecom}\n  </Encrypt>\n  <ToUserName>ww1</ToUserName>\n  <AgentID>1000002</AgentID>\n</xml>\n"),
                env(Some("ww1"), Some("1000002"), Some(wecom)),
            ),
            (
                "compatible mode: plaintext fields ignored",
                format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>1</MsgId><Encrypt><![CDATA[{official}]]></Encrypt></xml>"),
                env(Some("gh_1"), None, Some(official)),
            ),
            (
                "plaintext mode: no Encrypt",
                "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><MsgType>text</MsgType></xml>".to_owned(),
                env(Some("gh_1"), None, None),
            ),
            (
                "empty Encrypt",
                "<xml><ToUserName>gh_1</ToUserName><Encrypt><![CDATA[]]></Encrypt></xml>".to_owned(),
                env(Some("gh_1"), None, None),
            ),
            ("empty root", "<xml/>".to_owned(), env(None, None, None)),
        ];
        for (name, xml, expected) in cases {
            assert_eq!(parse_envelope(&xml), Ok(expected), "case {name}");
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "DOCTYPE",
                "<!DOCTYPE xml [<!ENTITY e \"x\">]><xml><Encrypt>&e;</Encrypt></xml>",
                true,
            ),
            (
                "undefined entity",
                "<xml><Encrypt>&e;</Encrypt></xml>",
                false,
            ),
            ("unclosed", "<xml><Encrypt>abc</Encrypt>", false),
            (
                "other root",
                "<envelope><Encrypt>abc</Encrypt></envelope>",
                false,
            ),
            ("empty", "", false),
        ];
        for (name, xml, doctype) in cases {
            let got = parse_envelope(xml);
            if doctype {
                assert_eq!(got, Err(ProtocolError::DoctypeForbidden), "{name}");
            } else {
                assert!(matches!(got, Err(ProtocolError::Xml(_))), "{name}: {got:?}");
            }
        }
    }

    #[test]
    fn encrypted_reply_parses_back() {
        let xml = encrypted_reply_xml(
            "QUJD+/==",
            "c3cdeed4ec0e849cdee1cfdd2b8712402fdb39db",
            "1700000000",
            "1320562132",
        );
        assert_eq!(
            xml,
            "<xml><Encrypt><![CDATA[QUJD+/==]]></Encrypt>\
             <MsgSignature><![CDATA[c3cdeed4ec0e849cdee1cfdd2b8712402fdb39db]]></MsgSignature>\
             <TimeStamp>1700000000</TimeStamp><Nonce><![CDATA[1320562132]]></Nonce></xml>"
        );
        let f = Fields::parse(&xml).expect("well-formed");
        assert_eq!(f.get("Encrypt"), Some("QUJD+/=="));
        assert_eq!(
            f.get("MsgSignature"),
            Some("c3cdeed4ec0e849cdee1cfdd2b8712402fdb39db")
        );
        assert_eq!(f.get("TimeStamp"), Some("1700000000"));
        assert_eq!(f.get("Nonce"), Some("1320562132"));
        assert_eq!(
            parse_envelope(&xml).map(|e| e.encrypt),
            Ok(Some("QUJD+/==".to_owned()))
        );
    }

    #[test]
    fn encrypted_reply_is_the_composition_of_its_parts() {
        let v = vectors();
        let o = &v["official_generated"];
        let key = crate::protocol::AesKey::parse(o["encoding_aes_key"].as_str().expect("key"))
            .expect("key parses");
        let crypt = MsgCrypt::new(key, o["receive_id"].as_str().expect("receive_id"));
        let cases = [
            ("", "1700000000", "1"),
            (
                "<xml><Content><![CDATA[你好]]></Content></xml>",
                "1",
                "n]]><x>&",
            ),
            (&"x".repeat(1000), "1<2&3>", "42"),
        ];
        for (i, (plain, ts, nonce)) in cases.into_iter().enumerate() {
            let random = [i as u8; 16];
            let encrypt = crypt.encrypt(plain, random);
            let signature = crate::protocol::sign("tok", &[ts, nonce, &encrypt]);
            assert_eq!(
                encrypted_reply(&crypt, "tok", plain, random, ts, nonce),
                encrypted_reply_xml(&encrypt, &signature, ts, nonce),
                "case {i}"
            );
        }
    }

    #[test]
    fn parse_encrypt_is_parse_envelope_encrypt() {
        let wecom = vectors()["wecom_doc"]["message"]["encrypt"]
            .as_str()
            .expect("encrypt")
            .to_owned();
        let bodies = [
            format!("<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{wecom}]]></Encrypt></xml>"),
            format!("<xml><Encrypt>\n  {wecom}\n</Encrypt></xml>"),
            "<xml><Encrypt>a&amp;b </Encrypt></xml>".to_owned(),
            "<xml><Encrypt><![CDATA[ab]]>cd</Encrypt></xml>".to_owned(),
            "<xml><Encrypt>  </Encrypt></xml>".to_owned(),
            "<xml><Encrypt/></xml>".to_owned(),
            "<xml><A>1</A></xml>".to_owned(),
            "<xml><Encrypt>1</Encrypt>".to_owned(),
            "<!DOCTYPE x><xml/>".to_owned(),
        ];
        for body in &bodies {
            assert_eq!(
                parse_encrypt(body).map(|e| e.map(Cow::into_owned)),
                parse_envelope(body).map(|e| e.encrypt),
                "{body}"
            );
        }
    }

    #[test]
    fn hostile_query_values_stay_well_formed() {
        // timestamp and nonce are echoed from the request's query string.
        let xml = encrypted_reply_xml("e", "s", "1<2&3>", "n]]><x>&");
        let f = Fields::parse(&xml).expect("well-formed");
        assert_eq!(f.get("TimeStamp"), Some("1<2&3>"));
        assert_eq!(f.get("Nonce"), Some("n]]><x>&"));
    }
}
