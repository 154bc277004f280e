//! The WXBizMsgCrypt scheme (protocol.md §4): AES-256-CBC over a framed message.
//!
//! Frame: `random(16) ‖ u32 BE msg length ‖ msg ‖ receive_id`, PKCS#7-padded to **32-byte**
//! blocks (not AES's 16, so stock unpadders refuse WeChat's pad bytes above 16 and we strip
//! by hand), encrypted with IV = the first 16 key bytes, then base64. The random bytes are an
//! argument so that this module stays pure and the vectors are reproducible. The scheme has
//! no MAC: callers must check `msg_signature` before calling [`MsgCrypt::decrypt`], which
//! is also why the padding check need not resist padding-oracle timing.

use std::fmt;

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{alphabet, Engine};
use subtle::ConstantTimeEq;

use super::error::ProtocolError;

/// WeChat pads to 32 bytes, whatever the AES block size.
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const RANDOM_LEN: usize = 16;
/// Random prefix plus the 4-byte length.
const HEADER_LEN: usize = RANDOM_LEN + 4;
const ENCODING_AES_KEY_LEN: usize = 43;

/// Real EncodingAESKeys often carry stray bits in their last symbol, which Python, Java
/// and Node decoders ignore; the default engine would refuse them.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The 32-byte AES key decoded from an account's 43-character EncodingAESKey.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl AesKey {
    pub fn parse(encoding_aes_key: &str) -> Result<AesKey, ProtocolError> {
        let valid = encoding_aes_key.len() == ENCODING_AES_KEY_LEN
            && encoding_aes_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !valid {
            return Err(ProtocolError::InvalidAesKey);
        }
        let mut padded = [b'='; ENCODING_AES_KEY_LEN + 1];
        padded[..ENCODING_AES_KEY_LEN].copy_from_slice(encoding_aes_key.as_bytes());
        let bytes = KEY_ENGINE
            .decode(padded)
            .map_err(|_| ProtocolError::InvalidAesKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| ProtocolError::InvalidAesKey)?;
        Ok(AesKey(key))
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// Encrypts and decrypts callbacks for one app (official AppID, WeCom CorpID or SuiteID).
#[derive(Clone)]
pub struct MsgCrypt {
    /// Expanded once here: the key schedule is the costliest part of a short message.
    cipher: Aes256,
    iv: [u8; AES_BLOCK],
    receive_id: String,
}

impl MsgCrypt {
    pub fn new(key: AesKey, receive_id: impl Into<String>) -> MsgCrypt {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&key.0[..AES_BLOCK]);
        MsgCrypt {
            cipher: Aes256::new(&key.0.into()),
            iv,
            receive_id: receive_id.into(),
        }
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// Decrypts an `Encrypt` element or WeCom `echostr` into the framed message.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, ProtocolError> {
        let mut buf = STANDARD
            .decode(encrypt_b64)
            .map_err(|_| ProtocolError::Base64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(ProtocolError::Decrypt);
        }
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut buf);
        cbc::Decryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &self.iv.into())
            .decrypt_blocks(blocks);

        let framed_len = unpadded_len(&buf)?;
        let framed = &buf[..framed_len];
        if framed.len() < HEADER_LEN {
            return Err(ProtocolError::InvalidBuffer(
                "frame shorter than its header",
            ));
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&framed[RANDOM_LEN..HEADER_LEN]);
        let msg_end = usize::try_from(u32::from_be_bytes(len_bytes))
            .ok()
            .and_then(|len| len.checked_add(HEADER_LEN))
            .filter(|&end| end <= framed.len())
            .ok_or(ProtocolError::InvalidBuffer(
                "message length exceeds the frame",
            ))?;
        let receive_id = &framed[msg_end..];
        if !bool::from(receive_id.ct_eq(self.receive_id.as_bytes())) {
            return Err(ProtocolError::ReceiveIdMismatch);
        }

        // Reuse the decoded buffer for the message: a shift, no new allocation.
        buf.truncate(msg_end);
        buf.drain(..HEADER_LEN);
        String::from_utf8(buf).map_err(|_| ProtocolError::InvalidBuffer("message is not UTF-8"))
    }

    /// Encrypts `plaintext` (a reply's XML) with the caller's 16 random bytes, which must be
    /// fresh for every reply.
    pub fn encrypt(&self, plaintext: &str, random: [u8; 16]) -> String {
        let mut out = String::new();
        self.encrypt_into(&mut out, plaintext, random);
        out
    }

    /// [`MsgCrypt::encrypt`], the base64 appended to `out` (no intermediate string).
    pub fn encrypt_into(&self, out: &mut String, plaintext: &str, random: [u8; 16]) {
        let msg = plaintext.as_bytes();
        let framed_len = HEADER_LEN + msg.len() + self.receive_id.len();
        // Always 1..=32: a frame that fills its last block gets a whole block of padding.
        let pad = PAD_BLOCK - framed_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(framed_len + pad);
        buf.extend_from_slice(&random);
        // A passive reply is built by us and bounded by WeChat's limits (a few KiB), far
        // below 4 GiB; overflowing the frame's u32 length would be a bug in the caller.
        let msg_len = u32::try_from(msg.len()).expect("reply under 4 GiB");
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.receive_id.as_bytes());
        // `pad` is at most 32, so the cast is exact.
        buf.resize(framed_len + pad, pad as u8);

        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut buf);
        cbc::Encryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &self.iv.into())
            .encrypt_blocks(blocks);
        STANDARD.encode_string(&buf, out);
    }
}

impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("key", &"<redacted>")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

/// Length of `buf` without its 32-byte-block PKCS#7 padding.
fn unpadded_len(buf: &[u8]) -> Result<usize, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::InvalidBuffer("bad padding");
    let pad = usize::from(*buf.last().ok_or(BAD)?);
    if pad == 0 || pad > PAD_BLOCK || pad > buf.len() {
        return Err(BAD);
    }
    let start = buf.len() - pad;
    if buf[start..].iter().any(|&b| usize::from(b) != pad) {
        return Err(BAD);
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/wechat.json"))
            .expect("vectors parse")
    }

    fn crypt(v: &Value) -> MsgCrypt {
        let key = AesKey::parse(v["encoding_aes_key"].as_str().expect("key")).expect("key parses");
        MsgCrypt::new(key, v["receive_id"].as_str().expect("receive_id"))
    }

    fn official() -> (MsgCrypt, Value) {
        let v = vectors()["official_generated"].clone();
        (crypt(&v), v)
    }

    /// xorshift64: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes16(&mut self) -> [u8; 16] {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&self.next().to_le_bytes());
            out[8..].copy_from_slice(&self.next().to_le_bytes());
            out
        }
        /// A string of `n` chars mixing ASCII, CJK and emoji.
        fn text(&mut self, n: usize) -> String {
            const CHARS: [char; 8] = ['a', 'Z', '<', '&', '\n', '优', '😀', ']'];
            (0..n)
                .map(|_| CHARS[(self.next() % CHARS.len() as u64) as usize])
                .collect()
        }
        fn ascii(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b'a' + (self.next() % 26) as u8))
                .collect()
        }
    }

    /// Encrypts raw frame bytes as-is, for tests that need a malformed frame.
    fn encrypt_raw(c: &MsgCrypt, mut buf: Vec<u8>) -> String {
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut buf);
        cbc::Encryptor::<Aes256>::inner_iv_init(c.cipher.clone(), &c.iv.into())
            .encrypt_blocks(blocks);
        STANDARD.encode(&buf)
    }

    #[test]
    fn decrypts_every_vector() {
        let v = vectors();
        let w = &v["wecom_doc"];
        let o = &v["official_generated"];
        let cases = [
            (
                "wecom echostr",
                w,
                &w["verify_url"]["echostr"],
                &w["verify_url"]["echostr_plain"],
            ),
            (
                "wecom message",
                w,
                &w["message"]["encrypt"],
                &w["message"]["plaintext_xml"],
            ),
            (
                "official message",
                o,
                &o["message"]["encrypt"],
                &o["message"]["plaintext_xml"],
            ),
        ];
        for (name, account, encrypt, plain) in cases {
            let c = crypt(account);
            let got = c
                .decrypt(encrypt.as_str().expect("encrypt"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, plain.as_str().expect("plain"), "{name}");
        }
        assert_eq!(crypt(w).receive_id(), "wx5823bf96d3bd56c7");
        assert_eq!(crypt(o).receive_id(), "wx0123456789abcdef");
    }

    #[test]
    fn encrypt_reproduces_the_official_vector() {
        let (c, v) = official();
        let random: [u8; 16] = hex::decode(v["random_prefix_hex"].as_str().expect("hex"))
            .expect("hex decodes")
            .try_into()
            .expect("16 bytes");
        let plain = v["message"]["plaintext_xml"].as_str().expect("plain");
        assert_eq!(
            c.encrypt(plain, random),
            v["message"]["encrypt"].as_str().expect("encrypt")
        );
    }

    #[test]
    fn round_trips_every_length_around_block_boundaries() {
        let (c, _) = official();
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let lengths = (0..=130).chain([255, 256, 257, 1000, 4095, 4096, 65_536]);
        for n in lengths {
            for msg in [rng.ascii(n), rng.text(n)] {
                let enc = c.encrypt(&msg, rng.bytes16());
                let raw = STANDARD.decode(&enc).expect("base64");
                assert_eq!(raw.len() % PAD_BLOCK, 0, "len {n}");
                assert_eq!(c.decrypt(&enc).as_deref(), Ok(msg.as_str()), "len {n}");
            }
        }
    }

    #[test]
    fn round_trips_with_a_wecom_receive_id() {
        let v = vectors();
        let c = crypt(&v["wecom_doc"]);
        let enc = c.encrypt("<xml/>", [7; 16]);
        assert_eq!(c.decrypt(&enc).as_deref(), Ok("<xml/>"));
    }

    #[test]
    fn another_receive_id_is_refused() {
        let v = vectors();
        let o = &v["official_generated"];
        let key = AesKey::parse(o["encoding_aes_key"].as_str().expect("key")).expect("key");
        let enc = o["message"]["encrypt"].as_str().expect("encrypt");
        for other in [
            "wx0123456789abcdeX",
            "wx0123456789abcde",
            "wx0123456789abcdeff",
            "",
        ] {
            let c = MsgCrypt::new(key.clone(), other);
            assert_eq!(
                c.decrypt(enc),
                Err(ProtocolError::ReceiveIdMismatch),
                "{other:?}"
            );
        }
    }

    #[test]
    fn tampered_ciphertext_never_panics() {
        let (c, v) = official();
        let raw = STANDARD
            .decode(v["message"]["encrypt"].as_str().expect("encrypt"))
            .expect("base64");
        // Every byte of the last two blocks flipped, plus a sample of earlier ones: all must
        // fail cleanly (or, for the first block's IV-like random part, still decrypt).
        let positions = (0..raw.len()).filter(|i| i % 7 == 0 || *i >= raw.len() - 32);
        for i in positions {
            let mut bad = raw.clone();
            bad[i] ^= 0x5a;
            match c.decrypt(&STANDARD.encode(&bad)) {
                Ok(_)
                | Err(ProtocolError::InvalidBuffer(_))
                | Err(ProtocolError::ReceiveIdMismatch)
                | Err(ProtocolError::Decrypt) => {}
                Err(other) => panic!("byte {i}: unexpected {other:?}"),
            }
        }
        // Changing the last byte of the second-to-last block flips the final pad byte.
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 17] ^= 0x40;
        assert!(matches!(
            c.decrypt(&STANDARD.encode(&bad)),
            Err(ProtocolError::InvalidBuffer(_))
        ));
    }

    #[test]
    fn malformed_frames_are_invalid_buffers() {
        let (c, _) = official();
        let rid = c.receive_id().as_bytes().to_vec();
        let frame = |len: u32, msg: &[u8], pad: &[u8]| {
            let mut f = vec![0u8; 16];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(msg);
            f.extend_from_slice(&rid);
            f.extend_from_slice(pad);
            f
        };
        // 20 + 2 + 18 = 40 bytes of frame: 24 bytes of room to 64.
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("pad byte zero", frame(2, b"hi", &[0; 24])),
            (
                "pad byte above 32",
                frame(2, b"hi", &[[0u8; 23].as_slice(), &[33]].concat()),
            ),
            (
                "pad bytes differ",
                frame(2, b"hi", &[[23u8].as_slice(), &[24; 23]].concat()),
            ),
            ("length past the end", frame(1000, b"hi", &[24; 24])),
            ("length u32::MAX", frame(u32::MAX, b"hi", &[24; 24])),
            ("not UTF-8", frame(2, &[0xff, 0xfe], &[24; 24])),
            (
                "shorter than its header",
                [vec![0u8; 10], vec![22u8; 22]].concat(),
            ),
            ("all padding", vec![32u8; 32]),
        ];
        for (name, buf) in cases {
            assert_eq!(buf.len() % 16, 0, "{name}: test frame must be whole blocks");
            let got = c.decrypt(&encrypt_raw(&c, buf));
            assert!(
                matches!(got, Err(ProtocolError::InvalidBuffer(_))),
                "{name}: {got:?}"
            );
        }
        // A pad byte of 30, as in the WeCom sample, is valid.
        let ok = frame(2, b"hi", &[24; 24]);
        assert_eq!(c.decrypt(&encrypt_raw(&c, ok)).as_deref(), Ok("hi"));
    }

    #[test]
    fn bad_base64_and_lengths() {
        let (c, _) = official();
        let cases = [
            ("not base64", "!!!!", ProtocolError::Base64),
            (
                "missing padding",
                "AAAAAAAAAAAAAAAAAAAAAA",
                ProtocolError::Base64,
            ),
            ("url-safe alphabet", "-_-_", ProtocolError::Base64),
            ("empty", "", ProtocolError::Decrypt),
            ("15 bytes", "AAAAAAAAAAAAAAAAAAAA", ProtocolError::Decrypt),
            (
                "17 bytes",
                "AAAAAAAAAAAAAAAAAAAAAAA=",
                ProtocolError::Decrypt,
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(c.decrypt(input), Err(expected), "{name}");
        }
        // 16 bytes is one whole AES block but too short for a frame.
        assert!(matches!(
            c.decrypt(&STANDARD.encode([0u8; 16])),
            Err(ProtocolError::InvalidBuffer(_))
        ));
    }

    #[test]
    fn key_parsing() {
        let good = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        assert!(
            AesKey::parse(good).is_ok(),
            "stray trailing bits must be accepted"
        );
        let bad = [
            ("42 chars", &good[..42]),
            ("44 chars", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"),
            (
                "43 with padding",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=",
            ),
            (
                "url-safe char",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF-",
            ),
            ("space", "abcdefghijklmnopqrstuvwxyz0123456789ABCDE F"),
            ("non-ASCII", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEé"),
            ("empty", ""),
        ];
        for (name, key) in bad {
            assert_eq!(
                AesKey::parse(key).map(|_| ()),
                Err(ProtocolError::InvalidAesKey),
                "{name}"
            );
        }
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key_str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
        let key = AesKey::parse(key_str).expect("key");
        let raw = KEY_ENGINE.decode(format!("{key_str}=")).expect("decodes");
        let c = MsgCrypt::new(key.clone(), "corp");
        for shown in [format!("{key:?}"), format!("{c:?}")] {
            assert!(!shown.contains(key_str), "{shown}");
            assert!(!shown.contains(&hex::encode(&raw)), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &raw[..4])), "{shown}");
        }
        assert_eq!(format!("{key:?}"), "AesKey(<redacted>)");
    }
}
