//! The scene of a participant's personal QR code (PURE): `ref:<programme>:<id>`.
//!
//! WeChat takes a `scene_str` of 1 to 64 characters and sends it back in the subscribe
//! (`qrscene_…`) or scan event. The parts are sized so that every scene fits:
//!
//! - `ref:` (4) marks a referral code apart from the channels of `channels.toml`;
//! - the programme name, 1 to [`MAX_PROGRAMME_NAME`] (43) of `a-z A-Z 0-9 - _`, checked when
//!   the referrals file is read, so no `:` can make the split ambiguous;
//! - `:` (1);
//! - the participant id, exactly [`ID_LEN`] (16) characters of lower-case base32.
//!
//! 4 + 43 + 1 + 16 = 64. The id is derived from the account and the openid (the first 80
//! bits of SHA-1 over both): stable (the same person always gets the same id, so a code made
//! again is the same scene), the same length whatever the openid looks like (WeCom ids run
//! to 64 characters), and it keeps openids out of scenes. It is one-way: whoever stores
//! participants keeps `id → openid`. Two people of one account share an id with a chance of
//! about n²/2⁸¹ (10⁻¹³ for a million participants); the store should refuse a second openid
//! for a taken id rather than credit the wrong person.

use sha1::{Digest, Sha1};

/// What every referral scene starts with.
pub const PREFIX: &str = "ref:";
/// The characters of a participant id.
pub const ID_LEN: usize = 16;
/// The longest programme name that keeps every scene within WeChat's 64 characters.
pub const MAX_PROGRAMME_NAME: usize = crate::channel::MAX_SCENE - PREFIX.len() - 1 - ID_LEN;

/// RFC 4648's base32 alphabet, lower-cased: letters and digits only, no look-alike pairs
/// beyond what lower case gives, safe in scenes, URLs and file names.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A participant's short stable id within an account (see the module docs).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantId(String);

/// Why a scene or a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SceneError {
    #[error(
        "programme name `{0}`: 1 to {MAX_PROGRAMME_NAME} of letters, digits, `-` and `_` \
         (it is part of every participant's QR scene, which WeChat limits to 64 characters)"
    )]
    BadProgramme(String),
    #[error("participant id `{0}`: {ID_LEN} characters of a-z and 2-7")]
    BadId(String),
}

impl ParticipantId {
    /// The id of `openid` in `account`.
    pub fn of(account: &str, openid: &str) -> ParticipantId {
        // The NUL separators make ("ab", "c") and ("a", "bc") different inputs.
        let mut hash = Sha1::new();
        hash.update(b"siyu-referral\0");
        hash.update(account.as_bytes());
        hash.update(b"\0");
        hash.update(openid.as_bytes());
        let digest = hash.finalize();
        // 16 base32 characters are 80 bits: the first 10 bytes of the digest, 5 bits a
        // character.
        let mut bits: u128 = 0;
        for b in &digest[..10] {
            bits = bits << 8 | u128::from(*b);
        }
        let id = (0..ID_LEN)
            .rev()
            .map(|i| BASE32[(bits >> (5 * i) & 31) as usize] as char)
            .collect();
        ParticipantId(id)
    }

    /// An id as written in a scene.
    pub fn parse(s: &str) -> Result<ParticipantId, SceneError> {
        if s.len() == ID_LEN && s.bytes().all(|b| BASE32.contains(&b)) {
            Ok(ParticipantId(s.to_string()))
        } else {
            Err(SceneError::BadId(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ParticipantId {
    type Error = SceneError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ParticipantId::parse(&s)
    }
}

impl From<ParticipantId> for String {
    fn from(id: ParticipantId) -> String {
        id.0
    }
}

/// Whether `name` may name a programme (and so fit in every scene).
pub fn is_programme_name(name: &str) -> bool {
    (1..=MAX_PROGRAMME_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `scene_str` of `id`'s code in `programme`: at most 64 characters.
pub fn scene(programme: &str, id: &ParticipantId) -> Result<String, SceneError> {
    if !is_programme_name(programme) {
        return Err(SceneError::BadProgramme(programme.to_string()));
    }
    Ok(format!("{PREFIX}{programme}:{id}"))
}

/// The programme and participant of a scene, or `None` when it is not a referral scene
/// (any other channel or QR code). The `qrscene_` prefix of a subscribe event's
/// `EventKey` is taken off if the caller left it on.
pub fn parse_scene(scene: &str) -> Option<(&str, ParticipantId)> {
    let scene = scene.strip_prefix("qrscene_").unwrap_or(scene);
    let rest = scene.strip_prefix(PREFIX)?;
    let (programme, id) = rest.split_once(':')?;
    if !is_programme_name(programme) {
        return None;
    }
    Some((programme, ParticipantId::parse(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_short_and_distinct() {
        let a = ParticipantId::of("demo", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M");
        assert_eq!(a, ParticipantId::of("demo", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"));
        assert_eq!(a.as_str().len(), ID_LEN);
        assert!(a.as_str().bytes().all(|b| BASE32.contains(&b)), "{a}");
        assert_ne!(
            a,
            ParticipantId::of("shop2", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M")
        );
        assert_ne!(
            ParticipantId::of("ab", "c"),
            ParticipantId::of("a", "bc"),
            "the separator keeps the parts apart"
        );
        let many: std::collections::BTreeSet<_> = (0..10_000)
            .map(|i| ParticipantId::of("demo", &format!("openid-{i}")))
            .collect();
        assert_eq!(many.len(), 10_000);
        // A WeCom external userid of 64 characters gives an id of the same length.
        assert_eq!(
            ParticipantId::of("corp", &"w".repeat(64)).as_str().len(),
            ID_LEN
        );
    }

    #[test]
    fn scenes_fit_in_64_characters_and_parse_back() {
        assert_eq!(MAX_PROGRAMME_NAME, 43);
        let id = ParticipantId::of("demo", "o1");
        let longest = "p".repeat(MAX_PROGRAMME_NAME);
        for (case, name) in [
            ("one character", "a"),
            ("usual", "spring-2026"),
            ("underscore and digits", "Double_11"),
            ("longest", longest.as_str()),
        ] {
            let s = scene(name, &id).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(s.chars().count() <= 64, "{case}: {s}");
            assert!(
                crate::channel::is_scene(&s),
                "{case}: WeChat takes it back: {s}"
            );
            assert_eq!(parse_scene(&s), Some((name, id.clone())), "{case}");
            let subscribed = format!("qrscene_{s}");
            assert_eq!(
                parse_scene(&subscribed),
                Some((name, id.clone())),
                "{case}: subscribe"
            );
        }
        assert_eq!(
            scene(&longest, &id).unwrap().len(),
            64,
            "the longest is exactly 64"
        );
    }

    #[test]
    fn bad_names_and_foreign_scenes_are_refused() {
        let id = ParticipantId::of("demo", "o1");
        let too_long = "p".repeat(MAX_PROGRAMME_NAME + 1);
        for (case, name) in [
            ("empty", ""),
            ("too long for the scene", too_long.as_str()),
            ("a colon would split", "a:b"),
            ("space", "a b"),
            ("dot", "a.b"),
            ("not ascii", "春季"),
        ] {
            assert_eq!(
                scene(name, &id),
                Err(SceneError::BadProgramme(name.to_string())),
                "{case}"
            );
        }
        let good_id = id.as_str();
        for (case, s) in [
            ("a channel", "spring-poster".to_string()),
            ("no id", "ref:spring".to_string()),
            ("empty id", "ref:spring:".to_string()),
            ("short id", "ref:spring:abc".to_string()),
            (
                "upper-case id",
                format!("ref:spring:{}", good_id.to_uppercase()),
            ),
            ("id with a 1", format!("ref:spring:1{}", &good_id[1..])),
            ("a third part", format!("ref:spring:{good_id}:x")),
            ("empty programme", format!("ref::{good_id}")),
            ("long programme", format!("ref:{too_long}:{good_id}")),
            ("other prefix", format!("REF:spring:{good_id}")),
        ] {
            assert_eq!(parse_scene(&s), None, "{case}: {s}");
        }
        assert!(ParticipantId::parse("abc").is_err());
        assert!(serde_json::from_str::<ParticipantId>("\"abc\"").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ParticipantId>(&json).unwrap(), id);
    }
}
