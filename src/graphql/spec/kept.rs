//! Objects whose selected fields are all skipped (`@skip`, `@include`) kept as objects while
//! async-graphql runs the document. It makes such an object null, and a null swallows what a
//! later selection of the same field under that response key adds, where the specification
//! merges the two: `{ me { id @skip(if: true) } me { username } }` came back as `{"me": {}}`,
//! or `null` at a nullable field. A selection set that skips anything gets one more field,
//! `__typename` under a key no field of the document has ([`KEPT`], or it numbered), taken out
//! of the response afterwards (async-graphql's complexity does not count `__typename`).

use std::collections::HashSet;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, Selection, SelectionSet,
};
use async_graphql::{Name, Pos, Positioned, Response, Value};

use super::schema_types::each_field_where;

/// The response key of the added field, unless a field of the document has it (a client's
/// own alias, which the answer must keep): then the first of it numbered that none has.
const KEPT: &str = "__rollcallKept";

/// A response key no field of `document` has.
fn free_key(document: &ExecutableDocument) -> Name {
    fn collect<'a>(set: &'a SelectionSet, keys: &mut HashSet<&'a str>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    keys.insert(field.node.response_key().node.as_str());
                    collect(&field.node.selection_set.node, keys);
                }
                Selection::InlineFragment(fragment) => {
                    collect(&fragment.node.selection_set.node, keys);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut keys = HashSet::new();
    for (_, operation) in document.operations.iter() {
        collect(&operation.node.selection_set.node, &mut keys);
    }
    for fragment in document.fragments.values() {
        collect(&fragment.node.selection_set.node, &mut keys);
    }
    let key = (0..)
        .map(|n| match n {
            0 => KEPT.to_owned(),
            n => format!("{KEPT}{n}"),
        })
        .find(|key| !keys.contains(key.as_str()))
        .unwrap_or_else(|| KEPT.to_owned());
    Name::new(key)
}

/// `document` with `__typename` under a free key (returned too) in every field's selection
/// set that skips anything at its own level (through fragments too).
pub fn keep_objects(document: &ExecutableDocument) -> (ExecutableDocument, Name) {
    let key = free_key(document);
    let mut kept = document.clone();
    let mut sets: Vec<&mut SelectionSet> = Vec::new();
    match &mut kept.operations {
        DocumentOperations::Single(operation) => sets.push(&mut operation.node.selection_set.node),
        DocumentOperations::Multiple(operations) => sets.extend(
            operations
                .values_mut()
                .map(|operation| &mut operation.node.selection_set.node),
        ),
    }
    for fragment in kept.fragments.values_mut() {
        sets.push(&mut fragment.node.selection_set.node);
    }
    for set in sets {
        add_kept(document, set, &key);
    }
    (kept, key)
}

/// Adds the field under each field of `set`, nested ones first; `document` is the unchanged
/// one, for the fragments a set spreads.
fn add_kept(document: &ExecutableDocument, set: &mut SelectionSet, key: &Name) {
    for item in &mut set.items {
        match &mut item.node {
            Selection::Field(field) => {
                let nested = &mut field.node.selection_set.node;
                if nested.items.is_empty() {
                    continue;
                }
                let skips = skips_at_level(document, nested);
                add_kept(document, nested, key);
                if skips {
                    nested.items.push(kept_field(key));
                }
            }
            Selection::InlineFragment(fragment) => {
                add_kept(document, &mut fragment.node.selection_set.node, key);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// Whether a field, inline fragment or spread of `set`, or of the fragments it spreads, has
/// `@skip` or `@include`: what could leave the object without fields.
fn skips_at_level(document: &ExecutableDocument, set: &SelectionSet) -> bool {
    let mut skips = false;
    each_field_where(document, set, &mut |_| {}, &mut |directives| {
        skips = skips
            || directives
                .iter()
                .any(|directive| matches!(directive.node.name.node.as_str(), "skip" | "include"));
        true
    });
    skips
}

fn kept_field(key: &Name) -> Positioned<Selection> {
    let at = |name: &str| Positioned::new(Name::new(name), Pos::default());
    let field = Field {
        alias: Some(Positioned::new(key.clone(), Pos::default())),
        name: at("__typename"),
        arguments: Vec::new(),
        directives: Vec::new(),
        selection_set: Positioned::new(SelectionSet::default(), Pos::default()),
    };
    Positioned::new(
        Selection::Field(Positioned::new(field, Pos::default())),
        Pos::default(),
    )
}

/// Takes the field added under `key` out of `response`.
pub fn unkeep(response: &mut Response, key: &Name) {
    remove_kept(&mut response.data, key);
}

fn remove_kept(value: &mut Value, key: &Name) {
    match value {
        Value::Object(fields) => {
            fields.shift_remove(key);
            fields
                .values_mut()
                .for_each(|value| remove_kept(value, key));
        }
        Value::List(items) => items.iter_mut().for_each(|value| remove_kept(value, key)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_under(document: &ExecutableDocument) -> usize {
        fn count(set: &SelectionSet) -> usize {
            set.items
                .iter()
                .map(|item| match &item.node {
                    Selection::Field(field) => {
                        let own =
                            usize::from(field.node.alias.as_ref().is_some_and(|a| a.node == KEPT));
                        own + count(&field.node.selection_set.node)
                    }
                    Selection::InlineFragment(f) => count(&f.node.selection_set.node),
                    Selection::FragmentSpread(_) => 0,
                })
                .sum()
        }
        let operations: usize = document
            .operations
            .iter()
            .map(|(_, o)| count(&o.node.selection_set.node))
            .sum();
        let fragments: usize = document
            .fragments
            .values()
            .map(|f| count(&f.node.selection_set.node))
            .sum();
        operations + fragments
    }

    #[test]
    fn only_sets_that_skip_get_the_field() {
        let parse = |query: &str| async_graphql::parser::parse_query(query).expect("parses");
        let keep = |document: &ExecutableDocument| keep_objects(document).0;
        let plain = parse("{ me { id createdBy { id } } }");
        assert_eq!(kept_under(&keep(&plain)), 0);
        let skips = parse("{ me { id @skip(if: true) createdBy { id } } me { username } }");
        assert_eq!(kept_under(&keep(&skips)), 1);
        // In a fragment's own nested sets.
        let spread = parse(
            "query($d: Boolean!) { me { ...A ...B } } \
             fragment A on User { createdBy { email @include(if: $d) } } \
             fragment B on User { createdBy { username } }",
        );
        assert_eq!(kept_under(&keep(&spread)), 1);
        let spread = parse("{ me { ...F } } fragment F on User { id @skip(if: true) }");
        assert_eq!(kept_under(&keep(&spread)), 1);
        let nested = parse("{ me { ... @skip(if: true) { id } } }");
        assert_eq!(kept_under(&keep(&nested)), 1);
        // A key a client's own field has, in any operation or fragment, is not taken; the
        // name in a value is no key.
        let own = parse(
            "query A { me { ...F } } query B { me { __rollcallKept1: id } } \
             fragment F on User { __rollcallKept: id }",
        );
        assert_eq!(free_key(&own).as_str(), "__rollcallKept2");
        let value = parse("{ user(username: \"__rollcallKept\") { id @skip(if: true) } }");
        assert_eq!(free_key(&value).as_str(), "__rollcallKept");
    }
}
