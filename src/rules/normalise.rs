//! Text normalisation: the one function that makes "ＶＩＰ！", " vip " and "VIP" the same.
//!
//! Applied to keywords and intent phrases once, at compile time, and to every message's
//! text at match time, so both sides of a comparison are always in the same form. Regexes
//! run against the normalised text too. Followers type on phone keyboards that switch
//! between full-width and half-width forms and add punctuation freely; operators should
//! not have to list every spelling.

/// Normalises `text` for matching:
///
/// 1. full-width ASCII forms (U+FF01–U+FF5E) become their ASCII twins and the ideographic
///    space (U+3000) a plain space: "ＶＩＰ" → "VIP";
/// 2. everything is lower-cased (Unicode rules);
/// 3. whitespace and punctuation are trimmed from both ends (ASCII punctuation and the
///    common CJK marks: 。，、；：？！…—～·「」『』【】《》〈〉（）“”‘’ and kin):
///    "  优惠券！" → "优惠券";
/// 4. inner runs of whitespace (spaces, tabs, newlines) become one space.
///
/// Punctuation inside the text is kept: "Hello, World!!" → "hello, world".
pub fn normalise(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars() {
        let c = fold_width(c);
        if c.is_ascii() {
            folded.push(c.to_ascii_lowercase());
        } else if CASELESS.contains(&c) {
            folded.push(c);
        } else {
            folded.extend(c.to_lowercase());
        }
    }
    let trimmed = folded.trim_matches(|c: char| c.is_whitespace() || is_edge_punctuation(c));
    let mut out = String::with_capacity(trimmed.len());
    let mut after_space = false;
    for c in trimmed.chars() {
        if c.is_whitespace() {
            if !after_space {
                out.push(' ');
            }
            after_space = true;
        } else {
            out.push(c);
            after_space = false;
        }
    }
    out
}

/// Kana, CJK symbols and the CJK ideographs (most of a Chinese message): no case, so
/// lower-casing them needs no look-up in Unicode's tables (a test checks every one).
const CASELESS: std::ops::RangeInclusive<char> = '\u{3040}'..='\u{9FFF}';

/// Full-width ASCII forms to ASCII, the ideographic space to a space.
fn fold_width(c: char) -> char {
    match c {
        // The full-width block mirrors ASCII 0x21..=0x7E at a fixed distance.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Punctuation trimmed from the ends of a text. Full-width forms of ASCII punctuation
/// (！，？…) are already ASCII by the time this runs.
fn is_edge_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '。' | '，'
                | '、'
                | '；'
                | '：'
                | '？'
                | '！'
                | '…'
                | '‥'
                | '—'
                | '–'
                | '～'
                | '〜'
                | '·'
                | '・'
                | '「'
                | '」'
                | '『'
                | '』'
                | '【'
                | '】'
                | '〔'
                | '〕'
                | '〖'
                | '〗'
                | '《'
                | '》'
                | '〈'
                | '〉'
                | '（'
                | '）'
                | '“'
                | '”'
                | '‘'
                | '’'
                | '﹏'
                | '｡'
                | '｢'
                | '｣'
                | '､'
                | '･'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let cases = [
            ("full-width letters", "ＶＩＰ", "vip"),
            (
                "full-width digits and punctuation",
                "ＶＩＰ１２３！",
                "vip123",
            ),
            (
                "leading spaces, trailing CJK exclamation",
                "  优惠券！",
                "优惠券",
            ),
            ("inner punctuation kept", "Hello, World!!", "hello, world"),
            ("empty", "", ""),
            ("only punctuation", "。。！?", ""),
            ("only whitespace", " \t\n\u{3000}", ""),
            (
                "ideographic space inside",
                "花间\u{3000}\u{3000}茶铺",
                "花间 茶铺",
            ),
            (
                "inner whitespace runs collapse",
                "hello \t\n  world",
                "hello world",
            ),
            ("CJK brackets and quotes trimmed", "【“优惠券”】", "优惠券"),
            ("ellipsis and tilde trimmed", "在吗～～……", "在吗"),
            ("full-width parentheses trimmed", "（人工）", "人工"),
            ("unicode lower-case", "ÀÉÎ Straße", "àéî straße"),
            ("order number kept inside", "订单 12345。", "订单 12345"),
            ("already normal", "多少钱", "多少钱"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(normalise(input), expected, "{name}: {input:?}");
        }
    }

    #[test]
    fn caseless_range_has_no_lower_case() {
        for c in CASELESS {
            assert!(c.to_lowercase().eq([c]), "{c:?} U+{:04X}", c as u32);
        }
    }

    #[test]
    fn idempotent() {
        for input in ["  ＨＥＬＬＯ，ｗｏｒｌｄ！ ", "【优惠券】", "a  b", "！"] {
            let once = normalise(input);
            assert_eq!(normalise(&once), once, "{input:?}");
        }
    }
}
