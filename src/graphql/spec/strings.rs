//! Documents as the lexer reads them, before async-graphql parses them: brackets outside
//! strings and comments (for the nesting limit), and string values with the escapes the
//! specification allows and the parser does not: a code point in braces (`\u{1F600}`), and a
//! surrogate pair (`\uD83D\uDE00`) standing for one character. Those are rewritten into what
//! the parser reads: a character beyond the Basic Multilingual Plane as itself, any other as
//! `\uXXXX`. Block strings take no escapes but `\"""`, and are left as they are.

use std::ops::ControlFlow;

/// What the lexer meets: a byte outside strings and comments, or a (quoted, not block) string
/// value's contents between its quotes (as written, escapes and all), each with where it
/// starts. Block strings and comments are passed over without a word.
pub(in crate::graphql) enum Lexed<'a> {
    Code(usize, u8),
    String(usize, &'a str),
}

/// Walks `query` as the lexer would, until `visit` breaks. All delimiters are ASCII, so bytes
/// will do, and every range handed out starts and ends at a character's boundary.
pub(in crate::graphql) fn lex<'a>(
    query: &'a str,
    mut visit: impl FnMut(Lexed<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let bytes = query.as_bytes();
    let at = |i: usize, text: &[u8]| bytes.get(i..).is_some_and(|rest| rest.starts_with(text));
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'#' => {
                while bytes.get(i).is_some_and(|b| !matches!(b, b'\n' | b'\r')) {
                    i += 1;
                }
            }
            b'"' if at(i, b"\"\"\"") => {
                i += 3;
                // A block string ends at the first `"""` that is not escaped as `\"""`.
                while i < bytes.len() && !at(i, b"\"\"\"") {
                    i += if at(i, b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 3;
            }
            b'"' => {
                let start = i + 1;
                i = start;
                // A string ends at its closing quote; a line break ends it unclosed.
                while let Some(&b) = bytes.get(i) {
                    match b {
                        b'"' | b'\n' | b'\r' => break,
                        b'\\' if bytes.get(i + 1).is_some_and(u8::is_ascii) => i += 2,
                        _ => i += 1,
                    }
                }
                let end = i.min(bytes.len());
                visit(Lexed::String(
                    start,
                    query.get(start..end).unwrap_or_default(),
                ))?;
                i += 1;
            }
            _ => {
                visit(Lexed::Code(i, byte))?;
                i += 1;
            }
        }
    }
    ControlFlow::Continue(())
}

/// `query` with its strings' braced escapes and surrogate pairs written as the parser reads
/// them; `None` when it has none. An escape that stands for no character is left for the
/// parser to refuse. The rewrite can shift the columns of what follows on its line, which
/// error locations then count in.
pub(in crate::graphql) fn mend(query: &str) -> Option<String> {
    if !query.contains("\\u") {
        return None;
    }
    let mut mended = String::new();
    let mut copied = 0;
    let _ = lex(query, |lexed| {
        if let Lexed::String(start, text) = lexed
            && let length = text.len()
            && let Some(text) = mend_string(text)
        {
            mended.push_str(&query[copied..start]);
            mended.push_str(&text);
            copied = start + length;
        }
        ControlFlow::Continue(())
    });
    if copied == 0 {
        return None;
    }
    mended.push_str(&query[copied..]);
    Some(mended)
}

/// One string's contents with its braced escapes and surrogate pairs rewritten; `None` when
/// nothing changes.
fn mend_string(text: &str) -> Option<String> {
    if !text.contains("\\u") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let (written, used) = if let Some(braced) = escape.strip_prefix("\\u{") {
            // The hex run, then its brace: looking for the brace first would search the rest
            // of the string once per escape, quadratic in a string of `\u{\u{…`.
            let digits = braced.bytes().take_while(u8::is_ascii_hexdigit).count();
            let hex = braced
                .get(..digits)
                .filter(|_| braced.as_bytes().get(digits) == Some(&b'}'));
            match hex.and_then(|hex| {
                let code = u32::from_str_radix(hex, 16).ok()?;
                Some((char::from_u32(code)?, hex.len() + 4))
            }) {
                Some((c, used)) => (Some(as_parsed(c)), used),
                None => (None, 2),
            }
        } else if let Some(c) = surrogate_pair(escape) {
            (Some(as_parsed(c)), 12)
        } else {
            // Any other escape, copied whole so its second character is not read anew.
            (None, escape.chars().nth(1).map_or(1, |c| 1 + c.len_utf8()))
        };
        match written {
            Some(written) => {
                out.push_str(&written);
                changed = true;
            }
            None => out.push_str(&escape[..used]),
        }
        rest = &escape[used..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `\uD83D\uDE00`: a high and a low surrogate, as one character.
fn surrogate_pair(escape: &str) -> Option<char> {
    let unit = |text: &str| {
        let hex = text.strip_prefix("\\u")?.get(..4)?;
        u32::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let high = unit(escape).filter(|u| (0xD800..0xDC00).contains(u))?;
    let low = unit(escape.get(6..)?).filter(|u| (0xDC00..0xE000).contains(u))?;
    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
}

/// `c` as the parser reads it in a string: itself beyond the Basic Multilingual Plane (where
/// it cannot be a quote, a backslash or a line break), else its four-digit escape.
fn as_parsed(c: char) -> String {
    if u32::from(c) > 0xFFFF {
        c.to_string()
    } else {
        format!("\\u{:04X}", u32::from(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braced_escapes_and_surrogate_pairs_are_read_as_the_specification_says() {
        let cases = [
            (r#"{ a(s: "\u{1F600}") }"#, Some("{ a(s: \"\u{1F600}\") }")),
            (
                r#"{ a(s: "\uD83D\uDE00!") }"#,
                Some("{ a(s: \"\u{1F600}!\") }"),
            ),
            (
                r#"{ a(s: "\u{41}\u{00e9}") }"#,
                Some(r#"{ a(s: "\u0041\u00E9") }"#),
            ),
            // A quote or a backslash by its code stays escaped.
            (
                r#"{ a(s: "\u{22}\u{5C}") }"#,
                Some(r#"{ a(s: "\u0022\u005C") }"#),
            ),
            // Escapes that stand for no character are the parser's to refuse.
            (
                r#"{ a(s: "\u{D800}\u{110000}\u{}\u{+41}\uD83D\u{41 }\u{41") }"#,
                None,
            ),
            // An unclosed brace does not swallow the escape after it.
            (
                r#"{ a(s: "\u{\u{1F600}") }"#,
                Some("{ a(s: \"\\u{\u{1F600}\") }"),
            ),
            // An escaped backslash before `u` is no escape of `u`.
            (r#"{ a(s: "\\u{41}") }"#, None),
            // Block strings, comments and plain escapes are left alone.
            ("{ a(s: \"\"\"\\u{41}\"\"\") } # \"\\u{41}\"", None),
            (r#"{ a(s: "\u0041 \n") }"#, None),
        ];
        for (query, mended) in cases {
            assert_eq!(mend(query).as_deref(), mended, "{query}");
        }
        // Each string on its own, the text between them kept.
        assert_eq!(
            mend(r#"{ a(s: "\u{1F600}", t: "x", u: "\u{1F600}") }"#).as_deref(),
            Some("{ a(s: \"\u{1F600}\", t: \"x\", u: \"\u{1F600}\") }")
        );
    }

    #[test]
    fn mended_documents_parse() {
        let mended = mend(r#"{ a(s: "\u{1F600} \uD83D\uDE00 \u{e9}") }"#).expect("mended");
        let document = async_graphql::parser::parse_query(&mended).expect("parses");
        let text = format!("{document:?}");
        assert!(text.contains("\u{1F600} \u{1F600} \u{e9}"), "{text}");
    }
}
