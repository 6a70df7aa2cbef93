//! Fields under one response key must ask for the same thing (the specification's "Field
//! Selection Merging"). async-graphql compares only fields written side by side in one
//! selection set, so `{ me { x: id } me { x: username } }`, or a fragment's field beside one
//! of the same key, ran and answered one of the two. This schema has no interfaces or unions:
//! fields under one key share their parent type, so they merge when they are the same field
//! with the same arguments and their own selections merge in turn.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Positioned, ServerError, ServerResult};

/// Refuses a document in which two fields under one response key differ. Only for a document
/// the limits passed (they bound how far its fragments spread) whose fragments do not spread
/// themselves, which the limits' walk tells (the validator refuses those).
pub fn check(document: &ExecutableDocument) -> ServerResult<()> {
    for (_, operation) in document.operations.iter() {
        merged(document, &[&operation.node.selection_set.node])?;
    }
    Ok(())
}

/// Checks the fields of `sets`, which make one object of the response, then what each key's
/// fields select, together.
fn merged<'a>(document: &'a ExecutableDocument, sets: &[&'a SelectionSet]) -> ServerResult<()> {
    let mut keys: Vec<&'a Name> = Vec::new();
    let mut by_key: HashMap<&'a Name, Vec<&'a Positioned<Field>>> = HashMap::new();
    let mut seen = HashSet::new();
    for set in sets {
        collect(document, set, &mut seen, &mut keys, &mut by_key);
    }
    for key in keys {
        let fields = &by_key[key];
        let first = &fields[0];
        for other in &fields[1..] {
            let (a, b) = (&first.node.name.node, &other.node.name.node);
            let problem = if a != b {
                format!("\"{a}\" and \"{b}\" are different fields")
            } else if !same_arguments(&first.node, &other.node) {
                "they have differing arguments".to_owned()
            } else {
                continue;
            };
            return Err(ServerError::new(
                format!(
                    "Fields \"{key}\" conflict because {problem}. Use different aliases on the \
                     fields to fetch both if this was intentional."
                ),
                Some(other.pos),
            ));
        }
        let below: Vec<&SelectionSet> = fields
            .iter()
            .map(|field| &field.node.selection_set.node)
            .filter(|set| !set.items.is_empty())
            .collect();
        if !below.is_empty() {
            merged(document, &below)?;
        }
    }
    Ok(())
}

/// Adds the fields of `set` to their response keys, through its fragments: each fragment once
/// per object (`seen`).
fn collect<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    seen: &mut HashSet<&'a Name>,
    keys: &mut Vec<&'a Name>,
    by_key: &mut HashMap<&'a Name, Vec<&'a Positioned<Field>>>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let key = field
                    .node
                    .alias
                    .as_ref()
                    .map_or(&field.node.name.node, |alias| &alias.node);
                let fields = by_key.entry(key).or_default();
                if fields.is_empty() {
                    keys.push(key);
                }
                fields.push(field);
            }
            Selection::InlineFragment(inline) => {
                collect(
                    document,
                    &inline.node.selection_set.node,
                    seen,
                    keys,
                    by_key,
                );
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if seen.contains(name) {
                    continue;
                }
                if let Some(fragment) = document.fragments.get(name) {
                    seen.insert(name);
                    collect(
                        document,
                        &fragment.node.selection_set.node,
                        seen,
                        keys,
                        by_key,
                    );
                }
            }
        }
    }
}

/// The same arguments, in any order.
fn same_arguments(a: &Field, b: &Field) -> bool {
    a.arguments.len() == b.arguments.len()
        && a.arguments.iter().all(|(name, value)| {
            b.arguments
                .iter()
                .any(|(other, given)| other.node == name.node && given.node == value.node)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(query: &str) -> Result<(), String> {
        let document = async_graphql::parser::parse_query(query).expect("query parses");
        check(&document).map_err(|error| error.message)
    }

    #[test]
    fn fields_under_one_key_must_be_the_same_field_with_the_same_arguments() {
        for query in [
            "{ me { x: id } me { x: username } }",
            "{ x: me { id } ... on Query { x: serverInfo { name } } }",
            "{ ... on Query { u: users(first: 1) { totalCount } } u: users(first: 2) { totalCount } }",
            "{ me { ...F x: username } } fragment F on User { x: id }",
            "{ a: user(id: 1) { id } ...F } fragment F on Query { a: user(id: 2) { id } }",
            "{ me { createdBy { x: id } } ...F } fragment F on Query { me { createdBy { x: email } } }",
            // A fragment spread beside a field and again inside it.
            "{ me { ...U createdBy { ...U x: email } } } fragment U on User { x: id }",
        ] {
            assert!(verdict(query).is_err(), "{query}");
        }
        for query in [
            "{ me { id } me { username } }",
            "{ me { id } ...F } fragment F on Query { me { id username } }",
            "{ u: users(first: 1, filter: {role: ADMIN}) { totalCount } \
               u: users(filter: {role: ADMIN}, first: 1) { totalCount } }",
            "query($n: Int) { users(first: $n) { totalCount } users(first: $n) { nodes { id } } }",
            "{ a: me { id } b: me { username } }",
            // A fragment spread twice is walked once.
            "{ ...F ...F } fragment F on Query { me { id } }",
            "{ me { ...U createdBy { ...U } } } fragment U on User { x: id }",
        ] {
            assert_eq!(verdict(query), Ok(()), "{query}");
        }
    }
}
