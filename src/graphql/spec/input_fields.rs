//! The specification's "Input Object Field Uniqueness": an input object written in a document
//! names each of its fields once. async-graphql's parser keeps the last of a field given twice,
//! so `{role: ADMIN, role: STANDARD}` would run as `STANDARD` (and a `login` input naming two
//! accounts would sign in to the second), while anything reading the document first (a proxy's
//! filter, a log reader) may take the first. The parser no longer shows the repeat, so the
//! document's text is read for it, as the lexer reads it.

use std::collections::HashSet;
use std::ops::ControlFlow;

use async_graphql::{Pos, ServerError};

use super::strings::{Lexed, lex};

/// Refuses a document whose input object literals name a field twice, at both places. Run on
/// a document that parsed: only argument lists and variable definitions (between parentheses)
/// hold values, so a `{` there opens an input object and a name followed by `:` inside one is
/// a field of it.
pub(in crate::graphql) fn check(query: &str) -> Result<(), ServerError> {
    let Some((name, first, again)) = repeated(query) else {
        return Ok(());
    };
    let mut error = ServerError::new(
        format!("There can only be one input field named \"{name}\""),
        Some(position(query, first)),
    );
    error.locations.push(position(query, again));
    Err(error)
}

/// What a value between parentheses is inside of.
enum Within<'a> {
    /// An input object, with the fields named so far and where.
    Object(HashSet<&'a str>, Vec<(&'a str, usize)>),
    List,
}

/// The first field named twice in one input object, with where it is named each time.
fn repeated(query: &str) -> Option<(&str, usize, usize)> {
    let mut parentheses = 0usize;
    let mut within: Vec<Within<'_>> = Vec::new();
    // The name just read, while only spaces, commas and comments follow it.
    let mut name: Option<(usize, usize)> = None;
    let mut word: Option<usize> = None;
    let mut found = None;
    let _ = lex(query, |lexed| {
        let (at, byte) = match lexed {
            Lexed::Code(at, byte) => (at, byte),
            Lexed::String(..) => {
                word = None;
                name = None;
                return ControlFlow::Continue(());
            }
        };
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            let start = *word.get_or_insert(at);
            // A name starts with a letter or `_`; a run starting with a digit is a number.
            name = (!query.as_bytes()[start].is_ascii_digit()).then_some((start, at + 1));
            return ControlFlow::Continue(());
        }
        word = None;
        match byte {
            // Ignored tokens; beyond ASCII, outside strings and comments, a document that
            // parsed holds only the byte-order mark, which the grammar ignores too.
            b' ' | b'\t' | b'\n' | b'\r' | b',' | 0x80.. => return ControlFlow::Continue(()),
            b'(' => parentheses += 1,
            b')' => {
                parentheses = parentheses.saturating_sub(1);
                within.clear();
            }
            b'{' if parentheses > 0 => within.push(Within::Object(HashSet::new(), Vec::new())),
            b'[' if parentheses > 0 => within.push(Within::List),
            b'}' | b']' if parentheses > 0 => {
                within.pop();
            }
            b':' => {
                if let (Some((start, end)), Some(Within::Object(names, places))) =
                    (name, within.last_mut())
                {
                    let field = &query[start..end];
                    if !names.insert(field) {
                        let first = places
                            .iter()
                            .find(|(named, _)| *named == field)
                            .map_or(start, |(_, at)| *at);
                        found = Some((field, first, start));
                        return ControlFlow::Break(());
                    }
                    places.push((field, start));
                }
            }
            _ => {}
        }
        name = None;
        ControlFlow::Continue(())
    });
    found
}

/// The line and column of byte `at`, as the parser counts them (characters, from 1).
fn position(query: &str, at: usize) -> Pos {
    let before = query.get(..at).unwrap_or(query);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Pos {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(query: &str) -> Option<&str> {
        repeated(query).map(|(name, ..)| name)
    }

    #[test]
    fn a_field_named_twice_in_one_input_object_is_found() {
        let cases = [
            "{ users(filter: {role: ADMIN, role: STANDARD}) { totalCount } }",
            "{ users(filter: {role: ADMIN role : STANDARD}) { totalCount } }",
            "mutation { login(input: {login: \"a\", password: \"p\", login: \"b\"}) { token } }",
            "query($f: UserFilter = {search: \"a\", search: \"b\"}) { users(filter: $f) { totalCount } }",
            "{ a(x: [{b: 1}, {c: {d: 1, d: 2}}]) }",
            "{ a(x: {b: # note\n 1, b\n: 2}) }",
            "{ a(x: {b: \"\"\"s\"\"\", b: 1}) }",
            "{ a(x: {b: 1, b\u{feff}: 2}) }",
            "{ a(x: {b\u{feff}\u{feff} : 1, b: 2}) }",
        ];
        for query in cases {
            assert!(field(query).is_some(), "{query}");
        }
        assert_eq!(field(cases[4]), Some("d"));
    }

    #[test]
    fn fields_named_once_per_object_pass() {
        let cases = [
            // The same name in sibling and nested objects, as an argument and in a selection.
            "{ a(x: [{b: 1}, {b: 2}], y: {b: {b: 1}}) { b: c b: c } }",
            // Names inside strings, enum values and variables are no fields.
            "{ a(x: {b: \"b: 1\", c: B, d: $b}) }",
            "query($b: Int, $c: In = {b: 1}) { a(b: $b, x: {b: 1}) @include(if: true) }",
            // Numbers with exponents are no names.
            "{ a(x: {b: 1e5, c: 2E5}) }",
            "{ a(x: {b: 1}) } { a(x: {b: 1}) }",
        ];
        for query in cases {
            assert_eq!(field(query), None, "{query}");
        }
    }

    #[test]
    fn both_places_are_given() {
        let query = "{ users(filter: {role: ADMIN,\n  role: STANDARD}) { totalCount } }";
        let error = check(query).expect_err("refused");
        assert_eq!(
            error.message,
            "There can only be one input field named \"role\""
        );
        assert_eq!(
            error.locations,
            [
                Pos {
                    line: 1,
                    column: 18
                },
                Pos { line: 2, column: 3 }
            ]
        );
    }
}
