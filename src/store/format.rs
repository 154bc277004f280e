//! The stored record, version 4, and a reader that decodes only what a callback needs.
//! Version 3 had the same layout with the follower of `legacy::FollowerV3`.
//!
//! ```text
//! 3
//! ‖ varint n ‖ postcard(Option<Follower>)          n bytes, its `history` always empty
//! ‖ varint d ‖ d × (varint n ‖ key (n bytes, UTF-8) ‖ zigzag varint expires_at
//!                   ‖ varint m ‖ postcard(Answer) (m bytes))  oldest first
//! ‖ varint h ‖ h × (varint n ‖ postcard(HistoryEntry))        oldest first, to the end
//! ```
//!
//! Every part carries its length, so a callback can check its dedupe key without decoding
//! any cached answer (one is decoded only on a dedupe hit), and can copy the deliveries and
//! history entries it keeps into the new record as they are, without decoding and encoding
//! them again. The history comes last so that a callback need not even walk it: it skips
//! the entries that drop out and copies the rest in one piece. Varints are LEB128
//! (postcard's own encoding of lengths).

use serde::Serialize;

use super::{Answer, Delivery, Record};
use crate::follower::{Follower, HistoryEntry};

/// The first byte of every record in this layout.
pub(super) const VERSION: u8 = 4;
/// The same layout, its follower without the profile fields version 4 added.
pub(super) const VERSION_3: u8 = 3;

/// What makes a stored record unreadable, for `StoreError::Corrupt`.
pub(super) type Invalid = String;

fn truncated() -> Invalid {
    "record truncated".into()
}

pub(super) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_zigzag(out: &mut Vec<u8>, v: i64) {
    push_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A cursor over a record's bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Invalid> {
        // Most varints here (lengths, counts) are one byte.
        if let Some((&b, rest)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = rest;
                return Ok(u64::from(b));
            }
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or_else(truncated)?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn zigzag(&mut self) -> Result<i64, Invalid> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8], Invalid> {
        let n = usize::try_from(n).map_err(|_| truncated())?;
        if n > self.rest.len() {
            return Err(truncated());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// A length-prefixed part.
    fn part(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.varint()?;
        self.bytes(n)
    }

    /// A count of parts still to read, each at least one byte long.
    fn count(&mut self) -> Result<usize, Invalid> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.rest.len())
            .ok_or_else(truncated)
    }
}

/// One cached delivery as stored, its answer still encoded.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeliveryView<'a> {
    /// The whole stored entry, to copy into the next record unchanged.
    pub raw: &'a [u8],
    pub key: &'a [u8],
    pub expires_at: i64,
    answer: &'a [u8],
}

impl DeliveryView<'_> {
    pub fn answer(&self) -> Result<Answer, Invalid> {
        decode_all(self.answer)
    }
}

/// A version-3 or -4 record, split into its parts without decoding them.
#[derive(Debug)]
pub(super) struct View<'a> {
    follower: &'a [u8],
    /// The follower part is a `legacy::FollowerV3`.
    follower_v3: bool,
    pub deliveries: Vec<DeliveryView<'a>>,
    history_count: usize,
    /// The history entries, each with its length, not yet checked.
    history: &'a [u8],
}

impl Default for View<'_> {
    /// No record: no follower, nothing delivered.
    fn default() -> Self {
        View {
            // postcard's `None`.
            follower: &[0],
            follower_v3: false,
            deliveries: Vec::new(),
            history_count: 0,
            history: &[],
        }
    }
}

impl<'a> View<'a> {
    /// `bytes` without the version byte, which is [`VERSION`] or [`VERSION_3`].
    pub fn parse(version: u8, bytes: &'a [u8]) -> Result<View<'a>, Invalid> {
        let mut r = Reader { rest: bytes };
        let follower = r.part()?;
        let n = r.count()?;
        let mut deliveries = Vec::with_capacity(n);
        for _ in 0..n {
            let start = r.rest;
            let key = r.part()?;
            let expires_at = r.zigzag()?;
            let answer = r.part()?;
            let raw = &start[..start.len() - r.rest.len()];
            deliveries.push(DeliveryView {
                raw,
                key,
                expires_at,
                answer,
            });
        }
        let history_count = r.count()?;
        Ok(View {
            follower,
            follower_v3: version == VERSION_3,
            deliveries,
            history_count,
            history: r.rest,
        })
    }

    pub fn history_len(&self) -> usize {
        self.history_count
    }

    /// The history entries after the first `skip`, as stored (for [`Writer::raw_history`]).
    pub fn history_after(&self, skip: usize) -> Result<&'a [u8], Invalid> {
        let mut r = Reader { rest: self.history };
        for _ in 0..skip.min(self.history_count) {
            r.part()?;
        }
        Ok(r.rest)
    }

    /// The follower, its `history` left empty (the entries stay in the view).
    pub fn follower_without_history(&self) -> Result<Option<Follower>, Invalid> {
        let follower: Option<Follower> = if self.follower_v3 {
            decode_all::<Option<super::legacy::FollowerV3>>(self.follower)?.map(Follower::from)
        } else {
            decode_all(self.follower)?
        };
        if follower.is_none() && self.history_count > 0 {
            return Err("history without a follower".into());
        }
        Ok(follower)
    }

    /// The follower, history included: every part checked, to the record's end.
    pub fn follower(&self) -> Result<Option<Follower>, Invalid> {
        let mut follower = self.follower_without_history()?;
        let mut r = Reader { rest: self.history };
        if let Some(f) = follower.as_mut() {
            f.history.reserve_exact(self.history_count);
            for _ in 0..self.history_count {
                f.history.push(decode_all(r.part()?)?);
            }
        }
        if !r.rest.is_empty() {
            return Err("trailing bytes after the record".into());
        }
        Ok(follower)
    }

    pub fn into_record(self) -> Result<Record, Invalid> {
        let follower = self.follower()?;
        let deliveries = self
            .deliveries
            .iter()
            .map(|d| {
                Ok(Delivery {
                    key: String::from_utf8(d.key.to_vec())
                        .map_err(|_| "dedupe key is not UTF-8")?,
                    expires_at: d.expires_at,
                    answer: d.answer()?,
                })
            })
            .collect::<Result<_, Invalid>>()?;
        Ok(Record {
            follower,
            deliveries,
        })
    }
}

fn decode_all<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Invalid> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err("trailing bytes in a record part".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Appends `value`'s postcard encoding, preceded by its length.
fn push_part<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // One byte for the length, moved aside in the rare case it needs more.
    let at = out.len();
    out.push(0);
    let taken = std::mem::take(out);
    // Encoding plain owned data (strings, integers, maps, vectors) into a Vec cannot fail.
    *out = postcard::to_extend(value, taken).expect("plain data encodes");
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        push_varint(&mut prefix, len as u64);
        out.splice(at..=at, prefix);
    }
}

/// Builds a record part by part, in the layout above.
pub(super) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// `capacity`: the expected size, e.g. the previous record's.
    pub fn new(capacity: usize) -> Writer {
        let mut out = Vec::with_capacity(capacity);
        out.push(VERSION);
        Writer { out }
    }

    /// The follower, without its history (written last, by [`Writer::history`]).
    pub fn follower(&mut self, follower: Option<&mut Follower>) {
        match follower {
            Some(f) => {
                let history = std::mem::take(&mut f.history);
                push_part(&mut self.out, &Some(&*f));
                f.history = history;
            }
            None => push_part(&mut self.out, &None::<Follower>),
        }
    }

    pub fn delivery_count(&mut self, n: usize) {
        push_varint(&mut self.out, n as u64);
    }

    /// A delivery kept from the previous record.
    pub fn raw_delivery(&mut self, d: &DeliveryView<'_>) {
        self.out.extend_from_slice(d.raw);
    }

    pub fn delivery(&mut self, key: &str, expires_at: i64, answer: &Answer) {
        push_varint(&mut self.out, key.len() as u64);
        self.out.extend_from_slice(key.as_bytes());
        push_zigzag(&mut self.out, expires_at);
        push_part(&mut self.out, answer);
    }

    pub fn history(&mut self, entries: &[HistoryEntry]) {
        self.history_count(entries.len());
        for h in entries {
            self.history_entry(h);
        }
    }

    /// How many history entries follow (after the deliveries).
    pub fn history_count(&mut self, n: usize) {
        push_varint(&mut self.out, n as u64);
    }

    pub fn history_entry(&mut self, entry: &HistoryEntry) {
        push_part(&mut self.out, entry);
    }

    /// History entries kept from the previous record, from [`View::history_after`].
    pub fn raw_history(&mut self, entries: &[u8]) {
        self.out.extend_from_slice(entries);
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The whole record in this layout.
pub(super) fn encode(r: &mut Record) -> Vec<u8> {
    let mut w = Writer::new(256);
    w.follower(r.follower.as_mut());
    w.delivery_count(r.deliveries.len());
    for d in &r.deliveries {
        w.delivery(&d.key, d.expires_at, &d.answer);
    }
    w.history(r.follower.as_ref().map_or(&[], |f| &f.history));
    w.finish()
}

/// A version-4 record rewritten as version 3 would have stored it, its follower part
/// replaced by `v3_follower` (postcard of `Option<legacy::FollowerV3>`).
#[cfg(test)]
pub(super) fn as_version_3(current: &[u8], v3_follower: &[u8]) -> Vec<u8> {
    let mut r = Reader {
        rest: &current[1..],
    };
    r.part().expect("a follower part");
    let mut out = vec![VERSION_3];
    push_varint(&mut out, v3_follower.len() as u64);
    out.extend_from_slice(v3_follower);
    out.extend_from_slice(r.rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, v);
            assert_eq!(Reader { rest: &out }.varint(), Ok(v));
        }
        for v in [0i64, -1, 1, 1_700_003_600, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_zigzag(&mut out, v);
            assert_eq!(Reader { rest: &out }.zigzag(), Ok(v));
        }
        assert!(Reader { rest: &[0x80; 11] }.varint().is_err());
    }

    #[test]
    fn long_parts_keep_their_length() {
        let long = "长".repeat(100);
        let mut out = vec![VERSION];
        push_part(&mut out, &long);
        let mut r = Reader { rest: &out[1..] };
        let part = r.part().unwrap();
        assert!(r.rest.is_empty());
        assert_eq!(decode_all::<String>(part).unwrap(), long);
    }
}
