//! The one XML reader behind `inbound.rs` and `envelope.rs`: a WeChat document flattened to
//! `(path, text)` pairs, e.g. `("ScanCodeInfo/ScanType", "qrcode")`.
//!
//! WeChat XML is a flat record with a few nested groups and no attributes that matter, so a
//! flat list searched linearly beats a tree or serde. The safety rules live here once:
//! DOCTYPE refused (XXE and entity expansion), only the five predefined entities and
//! character references, the root must be `<xml>`, and every input, however broken, ends in
//! an error, never a panic. Text borrows from the input when it comes in one piece.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::error::ProtocolError;

/// Deeper nesting than this is never WeChat's (it uses 4 levels at most); refusing it keeps
/// the path buffer small on hostile input.
const MAX_DEPTH: usize = 16;

/// The leaf elements of a document, in document order.
pub(crate) struct Fields<'a> {
    /// All paths, back to back, each leaf holding its range; or, for a flat document
    /// ([`Fields::parse_flat`]), the document itself, each leaf's range its element name.
    paths: Cow<'a, str>,
    leaves: Vec<(Range<usize>, Cow<'a, str>)>,
}

impl<'a> Fields<'a> {
    pub(crate) fn parse(xml: &'a str) -> Result<Fields<'a>, ProtocolError> {
        match Fields::parse_flat(xml) {
            Some(fields) => Ok(fields),
            None => Fields::parse_events(xml),
        }
    }

    /// The shape WeChat sends, read without an XML reader: `<xml>`, then elements with
    /// one CDATA section or plain text each (no references, no CR, no `>` in text), XML
    /// whitespace between them, `</xml>`. Anything else (nesting, attributes, comments,
    /// declarations, references…) is `None`, and [`Fields::parse_events`] decides. For the
    /// documents it accepts, the result is the one `parse_events` gives (tested below).
    fn parse_flat(xml: &'a str) -> Option<Fields<'a>> {
        let b = xml.as_bytes();
        let mut i = skip_whitespace(b, 0);
        i = after(b, i, b"<xml>")?;
        let mut leaves = Vec::with_capacity(16);
        loop {
            i = skip_whitespace(b, i);
            if b[i..].starts_with(b"</xml>") {
                i += b"</xml>".len();
                break;
            }
            i = after(b, i, b"<")?;
            let name = i..i + b[i..].iter().take_while(|c| is_name_byte(**c)).count();
            if name.is_empty() {
                return None;
            }
            i = after(b, name.end, b">")?;
            let value = if let Some(start) = b[i..].strip_prefix(b"<![CDATA[") {
                let start = b.len() - start.len();
                let end = start + cdata_end(&b[start..])?;
                if memchr::memchr(b'\r', &b[start..end]).is_some() {
                    return None;
                }
                i = end + b"]]>".len();
                start..end
            } else {
                let end = i + memchr::memchr(b'<', &b[i..])?;
                if memchr::memchr3(b'&', b'\r', b'>', &b[i..end]).is_some() {
                    return None;
                }
                let text = i..end;
                i = end;
                text
            };
            i = after(b, i, b"</")?;
            i = after(b, i, &b[name.clone()])?;
            i = after(b, i, b">")?;
            // Every boundary is an ASCII byte, so these slices are whole characters.
            leaves.push((name, Cow::Borrowed(&xml[value])));
        }
        if skip_whitespace(b, i) != b.len() {
            return None;
        }
        Some(Fields {
            paths: Cow::Borrowed(xml),
            leaves,
        })
    }

    /// Any document, through quick-xml's reader.
    fn parse_events(xml: &'a str) -> Result<Fields<'a>, ProtocolError> {
        let mut reader = Reader::from_str(xml);
        let mut fields = Fields {
            paths: Cow::Owned(String::with_capacity(128)),
            leaves: Vec::with_capacity(16),
        };
        // Path of the open element below the root, e.g. "SendPicsInfo/PicList".
        let mut path = String::with_capacity(64);
        let mut depth = 0usize;
        let mut root_done = false;
        let mut text = LeafText::default();

        loop {
            let event = reader.read_event().map_err(|e| xml_error(&reader, e))?;
            match event {
                Event::Start(start) => {
                    if root_done {
                        return Err(malformed("content after the root element"));
                    }
                    let name = start.name().into_inner();
                    if depth == 0 {
                        if name != "xml" {
                            return Err(malformed("root element must be <xml>"));
                        }
                    } else {
                        if depth >= MAX_DEPTH {
                            return Err(malformed("elements nested too deeply"));
                        }
                        if depth > 1 {
                            path.push('/');
                        }
                        path.push_str(name);
                    }
                    depth += 1;
                    text = LeafText::open();
                }
                Event::Empty(start) => {
                    if root_done {
                        return Err(malformed("content after the root element"));
                    }
                    let name = start.name().into_inner();
                    if depth == 0 {
                        if name != "xml" {
                            return Err(malformed("root element must be <xml>"));
                        }
                        root_done = true;
                        continue;
                    }
                    let start_len = path.len();
                    if depth > 1 {
                        path.push('/');
                    }
                    path.push_str(name);
                    fields.push(&path, Cow::Borrowed(""));
                    path.truncate(start_len);
                    // The parent now has a child, so it is not a leaf.
                    text = LeafText::default();
                }
                Event::End(_) => {
                    // quick-xml has already checked that the name matches the start tag.
                    depth = depth.saturating_sub(1);
                    if depth >= 1 {
                        if let Some(value) = text.finish() {
                            fields.push(&path, value);
                        }
                        let parent_len = path.rfind('/').unwrap_or(0);
                        path.truncate(parent_len);
                    } else {
                        root_done = true;
                    }
                    text = LeafText::default();
                }
                Event::Text(t) => {
                    let content = t.xml10_content();
                    if depth == 0 {
                        if !is_xml_whitespace(&content) {
                            return Err(malformed("text outside the root element"));
                        }
                    } else {
                        text.push_text(content);
                    }
                }
                Event::CData(c) => {
                    if depth == 0 {
                        return Err(malformed("CDATA outside the root element"));
                    }
                    text.push_cdata(c.xml10_content());
                }
                Event::GeneralRef(r) => {
                    if depth == 0 {
                        return Err(malformed("reference outside the root element"));
                    }
                    let ch = if r.is_char_ref() {
                        r.resolve_char_ref()
                            .ok()
                            .flatten()
                            .ok_or_else(|| malformed("invalid character reference"))?
                    } else {
                        match &*r {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            _ => return Err(malformed("undefined entity reference")),
                        }
                    };
                    text.push_char(ch);
                }
                Event::DocType(_) => return Err(ProtocolError::DoctypeForbidden),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => {
                    return if root_done {
                        Ok(fields)
                    } else if depth == 0 {
                        Err(malformed("no root element"))
                    } else {
                        Err(malformed("unexpected end of document: unclosed element"))
                    };
                }
            }
        }
    }

    /// The first leaf at `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&str> {
        self.position(path).map(|i| &*self.leaves[i].1)
    }

    /// Moves the first leaf at `path` out (later lookups of it see an empty string), to
    /// avoid a copy when the text is already owned.
    pub(crate) fn take(&mut self, path: &str) -> Option<String> {
        let i = self.position(path)?;
        Some(std::mem::take(&mut self.leaves[i].1).into_owned())
    }

    /// [`Fields::take`] without the copy when the text borrows from the input.
    pub(crate) fn take_cow(&mut self, path: &str) -> Option<Cow<'a, str>> {
        let i = self.position(path)?;
        Some(std::mem::take(&mut self.leaves[i].1))
    }

    /// Every leaf at `path`, e.g. each `SendPicsInfo/PicList/item/PicMd5Sum`.
    pub(crate) fn all<'s>(&'s self, path: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.leaves
            .iter()
            .filter(move |(range, _)| &self.paths[range.clone()] == path)
            .map(|(_, text)| &**text)
    }

    /// How many leaves the document has.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.leaves.len()
    }

    fn position(&self, path: &str) -> Option<usize> {
        self.leaves
            .iter()
            .position(|(range, _)| &self.paths[range.clone()] == path)
    }

    /// Only for `parse_events`, whose `paths` are owned.
    fn push(&mut self, path: &str, text: Cow<'a, str>) {
        let paths = self.paths.to_mut();
        let start = paths.len();
        paths.push_str(path);
        self.leaves.push((start..paths.len(), text));
    }
}

/// The text of the innermost open element, while it may still be a leaf.
///
/// WeChat wraps text in CDATA; when an element has any CDATA section, whitespace-only text
/// around it is layout (pretty-printed XML), not content, so it is dropped. Without CDATA,
/// text is kept exactly.
#[derive(Default)]
struct LeafText<'a> {
    /// `None` once the element has a child element: containers have no value.
    all: Option<Cow<'a, str>>,
    /// The same text without whitespace-only text events.
    significant: Cow<'a, str>,
    has_cdata: bool,
}

impl<'a> LeafText<'a> {
    fn open() -> Self {
        LeafText {
            all: Some(Cow::Borrowed("")),
            significant: Cow::Borrowed(""),
            has_cdata: false,
        }
    }

    fn push_text(&mut self, piece: Cow<'a, str>) {
        let Some(all) = &mut self.all else { return };
        if !is_xml_whitespace(&piece) {
            append(&mut self.significant, piece.clone());
        }
        append(all, piece);
    }

    fn push_cdata(&mut self, piece: Cow<'a, str>) {
        let Some(all) = &mut self.all else { return };
        self.has_cdata = true;
        append(&mut self.significant, piece.clone());
        append(all, piece);
    }

    fn push_char(&mut self, ch: char) {
        let Some(all) = &mut self.all else { return };
        all.to_mut().push(ch);
        self.significant.to_mut().push(ch);
    }

    fn finish(self) -> Option<Cow<'a, str>> {
        let all = self.all?;
        Some(if self.has_cdata {
            self.significant
        } else {
            all
        })
    }
}

/// Appends without allocating while the text is a single borrowed piece.
fn append<'a>(acc: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if acc.is_empty() {
        *acc = piece;
    } else if !piece.is_empty() {
        acc.to_mut().push_str(&piece);
    }
}

/// The index of the first byte at or after `i` that is not XML whitespace.
fn skip_whitespace(b: &[u8], i: usize) -> usize {
    i + b[i..]
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count()
}

/// Where `]]>` starts in `b`. `>` is rare in text, so looking for it beats setting up a
/// substring searcher for each section.
fn cdata_end(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let gt = from + memchr::memchr(b'>', &b[from..])?;
        if gt >= 2 && &b[gt - 2..gt] == b"]]" {
            return Some(gt - 2);
        }
        from = gt + 1;
    }
}

/// The index after `expected` if `b` has it at `i`.
fn after(b: &[u8], i: usize, expected: &[u8]) -> Option<usize> {
    b[i..].starts_with(expected).then_some(i + expected.len())
}

/// The element names `parse_flat` accepts (all of WeChat's).
fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_xml_whitespace(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn malformed(reason: &str) -> ProtocolError {
    ProtocolError::Xml(reason.to_owned())
}

fn xml_error(reader: &Reader<&[u8]>, e: quick_xml::Error) -> ProtocolError {
    ProtocolError::Xml(format!("{e} at byte {}", reader.error_position()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(xml: &str) -> Vec<(String, String)> {
        let f = Fields::parse(xml).unwrap_or_else(|e| panic!("{xml}: {e}"));
        pairs_of(&f)
    }

    fn pairs_of(f: &Fields<'_>) -> Vec<(String, String)> {
        f.leaves
            .iter()
            .map(|(r, t)| (f.paths[r.clone()].to_owned(), t.to_string()))
            .collect()
    }

    /// Whatever `parse_flat` accepts, `parse_events` reads the same: random documents of
    /// WeChat's shape with random defects (names, text, CDATA, whitespace, end tags).
    #[test]
    fn flat_reading_agrees_with_the_reader() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        const NAMES: [&str; 8] = ["A", "MsgType", "xml", "B_2", "a:b", "A B", "", "Ä"];
        const PIECES: [&str; 18] = [
            "a",
            " ",
            "\n",
            "\r",
            "\t",
            "&",
            "&amp;",
            "<",
            ">",
            "]",
            "]]>",
            "优",
            "😀",
            "\0",
            "\"",
            "<![CDATA[",
            "</A>",
            "<!--x-->",
        ];
        const GAPS: [&str; 5] = ["", " ", "\n  ", "\r\n", "x"];
        let (mut accepted, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut xml = String::new();
            xml.push_str(GAPS[next(4)]);
            xml.push_str(["<xml>", "<xml >", "<root>", "<xml/>"][next(4).saturating_sub(2)]);
            for _ in 0..next(5) {
                xml.push_str(GAPS[next(GAPS.len())]);
                let name = NAMES[next(NAMES.len())];
                xml.push_str(&format!("<{name}>"));
                let mut text = String::new();
                for _ in 0..next(6) {
                    text.push_str(PIECES[next(PIECES.len())]);
                }
                match next(3) {
                    0 => xml.push_str(&format!("<![CDATA[{text}]]>")),
                    _ => xml.push_str(&text),
                }
                let end = if next(10) == 0 {
                    NAMES[next(NAMES.len())]
                } else {
                    name
                };
                xml.push_str(&format!("</{end}>"));
            }
            xml.push_str(GAPS[next(4)]);
            xml.push_str(["</xml>", "</xml>", "</xml>", ""][next(4)]);
            xml.push_str(GAPS[next(GAPS.len())]);
            total += 1;
            let Some(flat) = Fields::parse_flat(&xml) else {
                continue;
            };
            accepted += 1;
            match Fields::parse_events(&xml) {
                Ok(full) => assert_eq!(pairs_of(&flat), pairs_of(&full), "{xml:?}"),
                Err(e) => panic!("flat accepted what the reader refuses ({e}): {xml:?}"),
            }
        }
        // The generator must exercise both sides.
        assert!(
            accepted > total / 20 && accepted < total,
            "{accepted} of {total}"
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn flattens_nested_groups() {
        let xml = "<xml><A>1</A><G><B><![CDATA[2]]></B><L><item><C>3</C></item><item><C>4</C></item></L></G><E/><F></F></xml>";
        assert_eq!(
            leaves(xml),
            pairs(&[
                ("A", "1"),
                ("G/B", "2"),
                ("G/L/item/C", "3"),
                ("G/L/item/C", "4"),
                ("E", ""),
                ("F", "")
            ])
        );
    }

    #[test]
    fn text_rules() {
        let cases = [
            (
                "split CDATA",
                "<xml><A><![CDATA[a ]]]]><![CDATA[> b]]></A></xml>",
                "a ]]> b",
            ),
            (
                "escapes",
                "<xml><A>&lt;&amp;&gt;&quot;&apos;&#x41;&#66;</A></xml>",
                "<&>\"'AB",
            ),
            (
                "pretty CDATA",
                "<xml><A>\n  <![CDATA[ x ]]>\n</A></xml>",
                " x ",
            ),
            (
                "plain text kept exactly",
                "<xml><A>  x\n</A></xml>",
                "  x\n",
            ),
            ("CRLF normalised", "<xml><A>a\r\nb</A></xml>", "a\nb"),
            ("comment inside", "<xml><A>a<!-- c -->b</A></xml>", "ab"),
            (
                "ref next to CDATA",
                "<xml><A><![CDATA[a]]>&amp;</A></xml>",
                "a&",
            ),
        ];
        for (name, xml, expected) in cases {
            assert_eq!(leaves(xml), pairs(&[("A", expected)]), "{name}");
        }
    }

    #[test]
    fn refusals() {
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        let cases: Vec<(&str, &str)> = vec![
            ("empty", ""),
            ("whitespace only", "  \n"),
            ("unclosed root", "<xml><A>1</A>"),
            ("unclosed leaf", "<xml><A>1</xml>"),
            ("mismatched end", "<xml><A>1</B></xml>"),
            ("stray end", "<xml></A></xml>"),
            ("other root", "<root><A>1</A></root>"),
            ("second root", "<xml></xml><xml></xml>"),
            ("text after root", "<xml></xml>junk"),
            ("text before root", "junk<xml></xml>"),
            ("undefined entity", "<xml><A>&xxe;</A></xml>"),
            ("dangling ampersand", "<xml><A>a & b</A></xml>"),
            ("bad char ref", "<xml><A>&#0;</A></xml>"),
            ("unclosed CDATA", "<xml><A><![CDATA[x</A></xml>"),
            ("unclosed tag", "<xml><A"),
            ("too deep", &deep),
        ];
        for (name, xml) in cases {
            match Fields::parse(xml) {
                Err(ProtocolError::Xml(_)) => {}
                Err(other) => panic!("{name}: unexpected {other:?}"),
                Ok(_) => panic!("{name}: accepted"),
            }
        }
    }

    #[test]
    fn doctype_is_forbidden() {
        let xml = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><A>&xxe;</A></xml>";
        assert!(matches!(
            Fields::parse(xml),
            Err(ProtocolError::DoctypeForbidden)
        ));
    }

    #[test]
    fn get_take_and_all() {
        let mut f =
            Fields::parse("<xml><A>a&amp;</A><B>b</B><B>c</B><G><B>d</B></G></xml>").expect("ok");
        assert_eq!(f.get("B"), Some("b"));
        assert_eq!(f.all("B").collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(f.get("G/B"), Some("d"));
        assert_eq!(f.get("Z"), None);
        assert_eq!(f.take("A").as_deref(), Some("a&"));
    }
}
