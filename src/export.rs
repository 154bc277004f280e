//! The followers of a segment as people take them away: a count, a list of openids, or a
//! CSV for Excel. One walk and one format, shared by `siyu followers` and
//! `GET /admin/v1/segments/{account}`, so both give the same bytes.
//!
//! The walk reads the store page by page (a million followers never sit in memory) and
//! stops as soon as the consumer says so (a closed pipe, a client that went away). The CSV
//! opens with a UTF-8 byte-order mark, without which Excel reads the file in the local
//! ANSI code page and garbles Chinese tags and scenes, and shows times as local date-times
//! in `[display] utc_offset`, a form Excel reads as a date.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::follower::Follower;
use crate::local_time::UtcOffset;
use crate::segment::Segment;
use crate::store::{Store, StoreError};

/// The UTF-8 byte-order mark: how Excel knows a CSV is UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The CSV's first line.
pub const CSV_HEADER: &str = "openid,subscribed,first_scene,tags,messages_in,last_message_at\n";

/// Followers read from the store at a time: large enough that a page costs one tree
/// scan, small enough that a stopped walk has read little in vain.
const PAGE: usize = 1024;

/// What a listing gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// How many match: one number.
    Count,
    /// Their openids, one per line.
    List,
    /// One CSV row each, after [`CSV_HEADER`].
    Csv,
}

/// Walks the account's followers in key order and calls `each` with every one that
/// matches `segment` (everyone without one) at `now`; stops early when `each` returns
/// false. Returns how many matched (up to the stop).
pub fn walk(
    store: &dyn Store,
    account: &str,
    segment: Option<&Segment>,
    now: i64,
    each: &mut dyn FnMut(&Follower) -> bool,
) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = store.followers_after(account, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        after = Some(last.openid.clone());
        for f in &page {
            if let Some(s) = segment {
                if !crate::person::in_segment(store, account, s, f, now)? {
                    continue;
                }
            }
            count += 1;
            if !each(f) {
                return Ok(count);
            }
        }
    }
}

/// Appends the follower's line in `format` (nothing for a count) to `out`.
pub fn write_row(out: &mut String, format: Format, f: &Follower, zone: UtcOffset) {
    match format {
        Format::Count => {}
        Format::List => {
            out.push_str(&f.openid);
            out.push('\n');
        }
        Format::Csv => {
            let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                csv_field(&f.openid),
                f.subscribed,
                csv_field(f.first_scene.as_deref().unwrap_or("")),
                csv_field(&tags.join(" ")),
                f.messages_in,
                f.last_inbound_at
                    .map_or(String::new(), |t| zone.date_time(t))
            );
        }
    }
}

/// A CSV field, quoted when it needs to be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_quote_what_needs_quoting_and_show_local_times() {
        let zone = UtcOffset::CHINA;
        let cases: &[(&str, Follower, &str)] = &[
            ("plain", Follower::new("o_a"), "o_a,false,,,0,\n"),
            (
                "a comma and a quote in the scene, tags sorted, a local time",
                Follower {
                    subscribed: true,
                    first_scene: Some("a,\"b\"".into()),
                    tags: ["vip".to_string(), "会员".to_string()].into(),
                    messages_in: 3,
                    // 2026-12-01 00:00:00 in China.
                    last_inbound_at: Some(1_796_054_400),
                    ..Follower::new("o_b")
                },
                "o_b,true,\"a,\"\"b\"\"\",vip 会员,3,2026-12-01 00:00:00\n",
            ),
        ];
        for (name, f, want) in cases {
            let mut out = String::new();
            write_row(&mut out, Format::Csv, f, zone);
            assert_eq!(out, *want, "case {name}");
            let mut list = String::new();
            write_row(&mut list, Format::List, f, zone);
            assert_eq!(list, format!("{}\n", f.openid), "case {name}");
        }
    }

    #[test]
    fn the_walk_filters_and_stops_when_told() {
        let store = crate::store::MemoryStore::default();
        for (i, tag) in ["vip", "", "vip", "vip"].iter().enumerate() {
            let mut f = Follower::new(format!("o_{i}"));
            if !tag.is_empty() {
                f.tags.insert(tag.to_string());
            }
            crate::store::put_follower(&store, "a", &f).unwrap();
        }
        let vip = Segment::parse("tag:vip").unwrap();
        let mut seen = Vec::new();
        let n = walk(&store, "a", Some(&vip), 0, &mut |f| {
            seen.push(f.openid.clone());
            true
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, ["o_0", "o_2", "o_3"]);
        let n = walk(&store, "a", None, 0, &mut |_| false).unwrap();
        assert_eq!(n, 1, "stopped after the first");
    }
}
