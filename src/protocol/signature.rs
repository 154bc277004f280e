//! The SHA-1 signatures WeChat puts on every callback (protocol.md §2–§5).
//!
//! One scheme serves three checks: the official URL-verification `signature` (parts =
//! timestamp, nonce), `msg_signature` over an encrypted body (timestamp, nonce, Encrypt) and
//! WeCom's URL-verification `msg_signature` (timestamp, nonce, echostr). The signature is
//! the only thing that authenticates a callback (the CBC ciphertext carries no MAC), so the
//! comparison is constant time.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::error::ProtocolError;

/// Length of a hex SHA-1 digest.
const HEX_LEN: usize = 40;

/// `hex(sha1(concat(sorted([token] ++ parts))))`, lower-case.
pub fn sign(token: &str, parts: &[&str]) -> String {
    let mut out = String::with_capacity(HEX_LEN);
    push_sign(&mut out, token, parts);
    out
}

/// [`sign`], appended to `out`.
pub fn push_sign(out: &mut String, token: &str, parts: &[&str]) {
    let hex = sign_hex(token, parts);
    out.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
}

/// [`sign`] as ASCII bytes on the stack.
pub(crate) fn sign_hex(token: &str, parts: &[&str]) -> [u8; HEX_LEN] {
    let mut hex = [0u8; HEX_LEN];
    // `encode_to_slice` only fails on a wrong output length, which HEX_LEN rules out.
    hex::encode_to_slice(digest(token, parts), &mut hex).expect("40 hex digits for 20 bytes");
    hex
}

/// Checks `signature` against [`sign`]. Upper-case hex is accepted; anything that is not
/// 40 characters is a mismatch.
pub fn verify(token: &str, parts: &[&str], signature: &str) -> Result<(), ProtocolError> {
    let given = signature.as_bytes();
    if given.len() != HEX_LEN {
        return Err(ProtocolError::SignatureMismatch);
    }
    let mut expected = [0u8; HEX_LEN];
    // `encode_to_slice` only fails on a wrong output length, which HEX_LEN rules out.
    hex::encode_to_slice(digest(token, parts), &mut expected)
        .map_err(|_| ProtocolError::SignatureMismatch)?;
    let mut lowered = [0u8; HEX_LEN];
    for (out, b) in lowered.iter_mut().zip(given) {
        *out = b.to_ascii_lowercase();
    }
    if bool::from(lowered.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ProtocolError::SignatureMismatch)
    }
}

fn digest(token: &str, parts: &[&str]) -> [u8; 20] {
    // Callers pass 2 or 3 parts: sort on the stack, falling back to the heap for more.
    let mut stack = [""; 8];
    let mut heap = Vec::new();
    let all: &mut [&str] = if parts.len() < stack.len() {
        stack[0] = token;
        stack[1..=parts.len()].copy_from_slice(parts);
        &mut stack[..=parts.len()]
    } else {
        heap.push(token);
        heap.extend_from_slice(parts);
        &mut heap
    };
    // Byte order is what WeChat's samples use (Python `sorted`, Java `Arrays.sort` on ASCII).
    all.sort_unstable();
    let mut sha = Sha1::new();
    for part in all.iter() {
        sha.update(part.as_bytes());
    }
    sha.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/wechat.json"))
            .expect("vectors parse")
    }

    fn s<'a>(v: &'a Value, path: &str) -> &'a str {
        let mut cur = v;
        for key in path.split('.') {
            cur = &cur[key];
        }
        cur.as_str()
            .unwrap_or_else(|| panic!("vector {path} missing"))
    }

    #[test]
    fn official_vectors() {
        let v = vectors();
        let o = &v["official_generated"];
        let token = s(o, "token");
        let (ts, nonce) = (s(o, "message.timestamp"), s(o, "message.nonce"));

        assert_eq!(sign(token, &[ts, nonce]), s(o, "message.signature"));
        verify(token, &[ts, nonce], s(o, "message.signature")).expect("url signature");

        let encrypt = s(o, "message.encrypt");
        assert_eq!(
            sign(token, &[ts, nonce, encrypt]),
            s(o, "message.msg_signature")
        );
        verify(token, &[ts, nonce, encrypt], s(o, "message.msg_signature")).expect("msg_signature");
    }

    #[test]
    fn wecom_vectors() {
        let v = vectors();
        let w = &v["wecom_doc"];
        let token = s(w, "token");
        for (name, payload) in [("verify_url", "echostr"), ("message", "encrypt")] {
            let ts = s(w, &format!("{name}.timestamp"));
            let nonce = s(w, &format!("{name}.nonce"));
            let body = s(w, &format!("{name}.{payload}"));
            let expected = s(w, &format!("{name}.msg_signature"));
            assert_eq!(sign(token, &[ts, nonce, body]), expected, "{name}");
            verify(token, &[ts, nonce, body], expected).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let sig = sign("t", &["1", "2"]).to_ascii_uppercase();
        verify("t", &["1", "2"], &sig).expect("upper-case accepted");
    }

    #[test]
    fn order_of_parts_does_not_matter() {
        assert_eq!(sign("t", &["b", "a", "c"]), sign("c", &["a", "t", "b"]));
        let many: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let mut refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let forward = sign("t", &refs);
        refs.reverse();
        assert_eq!(sign("t", &refs), forward);
        // sha1("") of the empty concatenation.
        assert_eq!(sign("", &[]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn mismatches_are_rejected() {
        let good = sign("token", &["1700000000", "42"]);
        let mut flipped = good.clone().into_bytes();
        flipped[39] = if flipped[39] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        let cases: [(&str, &str, &[&str], &str); 7] = [
            ("other token", "tokeN", &["1700000000", "42"], &good),
            ("other nonce", "token", &["1700000000", "43"], &good),
            (
                "one digit changed",
                "token",
                &["1700000000", "42"],
                &flipped,
            ),
            ("too short", "token", &["1700000000", "42"], &good[..39]),
            (
                "too long",
                "token",
                &["1700000000", "42"],
                &format!("{good}0"),
            ),
            ("empty", "token", &["1700000000", "42"], ""),
            ("non-hex", "token", &["1700000000", "42"], &"z".repeat(40)),
        ];
        for (name, token, parts, sig) in cases {
            assert_eq!(
                verify(token, parts, sig),
                Err(ProtocolError::SignatureMismatch),
                "{name}"
            );
        }
    }
}
