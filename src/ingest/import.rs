//! `siyu followers import FILE.csv`: one line of the shop's follower file, parsed from its
//! cells (the CSV itself is read by the `csv` crate in the CLI).
//!
//! Columns `openid,tags,attributes,counters`: tags `;`-separated, attributes and counters
//! `k=v;k=v`. Tags are added (never removed), attributes set, counters set.

use crate::follower::Follower;

/// A valid line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    pub openid: String,
    pub tags: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub counters: Vec<(String, i64)>,
}

/// What a line does to its follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    New,
    Updated,
    Unchanged,
}

/// The columns a file may have; `openid` is required.
pub const COLUMNS: [&str; 4] = ["openid", "tags", "attributes", "counters"];

impl ImportLine {
    /// Where each of [`COLUMNS`] is in the header (`None`: absent), or what is wrong with it.
    pub fn columns(header: &[&str]) -> Result<[Option<usize>; 4], String> {
        let mut at = [None; 4];
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            let Some(c) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) else {
                return Err(format!(
                    "unknown column `{name}` (the columns are {})",
                    COLUMNS.join(", ")
                ));
            };
            if at[c].replace(i).is_some() {
                return Err(format!("column `{name}` appears twice"));
            }
        }
        if at[0].is_none() {
            return Err("the header has no `openid` column".into());
        }
        Ok(at)
    }

    /// One line's cells, by the header's `columns`.
    pub fn parse(cells: &[&str], columns: &[Option<usize>; 4]) -> Result<ImportLine, String> {
        let cell = |c: usize| {
            columns[c]
                .and_then(|i| cells.get(i))
                .map_or("", |s| s.trim())
        };
        let openid = cell(0);
        if openid.is_empty() {
            return Err("the openid is empty".into());
        }
        if openid.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "openid `{openid}` has a space or control character"
            ));
        }
        let tags = parts(cell(1)).map(str::to_string).collect();
        let attributes = pairs(cell(2), "attributes")?;
        let counters = pairs(cell(3), "counters")?
            .into_iter()
            .map(|(k, v)| match v.parse::<i64>() {
                Ok(n) => Ok((k, n)),
                Err(_) => Err(format!("counters: `{k}={v}`: `{v}` is not a whole number")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ImportLine {
            openid: openid.to_string(),
            tags,
            attributes,
            counters,
        })
    }

    /// Applies the line to a follower.
    pub fn apply(&self, f: &mut Follower) {
        f.tags.extend(self.tags.iter().cloned());
        for (k, v) in &self.attributes {
            f.attributes.insert(k.clone(), v.clone());
        }
        for (k, n) in &self.counters {
            f.counters.insert(k.clone(), *n);
        }
    }

    /// What the line would do to `stored`.
    pub fn outcome(&self, stored: Option<&Follower>) -> ImportOutcome {
        match stored {
            None => ImportOutcome::New,
            Some(f) => {
                let mut after = f.clone();
                self.apply(&mut after);
                if after == *f {
                    ImportOutcome::Unchanged
                } else {
                    ImportOutcome::Updated
                }
            }
        }
    }
}

fn parts(cell: &str) -> impl Iterator<Item = &str> {
    cell.split(';').map(str::trim).filter(|p| !p.is_empty())
}

fn pairs(cell: &str, column: &str) -> Result<Vec<(String, String)>, String> {
    parts(cell)
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("{column}: `{p}` is not name=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_apply() {
        let cols =
            ImportLine::columns(&["\u{feff}openid", "tags", "attributes", "counters"]).unwrap();
        let line = ImportLine::parse(
            &["o1", "vip; 老客户", "city=上海;level=gold", "orders=3"],
            &cols,
        )
        .unwrap();
        assert_eq!(line.tags, ["vip", "老客户"]);
        assert_eq!(line.counters, [("orders".to_string(), 3)]);
        assert_eq!(line.outcome(None), ImportOutcome::New);
        let mut f = Follower::new("o1");
        f.tags.insert("old".into());
        assert_eq!(line.outcome(Some(&f)), ImportOutcome::Updated);
        line.apply(&mut f);
        assert!(
            f.tags.contains("old") && f.tags.contains("vip"),
            "tags are added"
        );
        assert_eq!(f.attributes["city"], "上海");
        assert_eq!(line.outcome(Some(&f)), ImportOutcome::Unchanged);
        // Columns in any order, some absent.
        let cols = ImportLine::columns(&["counters", "openid"]).unwrap();
        let l = ImportLine::parse(&["spend_fen=100", "o2"], &cols).unwrap();
        assert_eq!(l.openid, "o2");
        assert!(l.tags.is_empty());
    }

    #[test]
    fn bad_lines_say_why() {
        let cols = ImportLine::columns(&COLUMNS).unwrap();
        let cases: &[(&str, [&str; 4], &str)] = &[
            ("empty openid", ["", "", "", ""], "the openid is empty"),
            ("space in openid", ["o 1", "", "", ""], "has a space"),
            (
                "counter not a number",
                ["o1", "", "", "orders=three"],
                "`three` is not a whole number",
            ),
            (
                "fractional counter",
                ["o1", "", "", "orders=1.5"],
                "not a whole number",
            ),
            (
                "attribute without =",
                ["o1", "", "city", ""],
                "attributes: `city` is not name=value",
            ),
            ("empty name", ["o1", "", "=x", ""], "is not name=value"),
        ];
        for (name, cells, want) in cases {
            let err = ImportLine::parse(cells, &cols).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        for (header, want) in [
            (&["tags"][..], "no `openid` column"),
            (&["openid", "tag"][..], "unknown column `tag`"),
            (&["openid", "openid"][..], "appears twice"),
        ] {
            let err = ImportLine::columns(header).unwrap_err();
            assert!(err.contains(want), "{header:?}: {err}");
        }
    }
}
