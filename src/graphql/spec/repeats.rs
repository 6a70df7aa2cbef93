//! A selection written twice runs once. The specification merges the fields under one response
//! key into one; async-graphql runs every occurrence, each its own future and its own query,
//! so the same fragment spread twice in a selection set, or a field repeated, multiplied a
//! document's work and memory without changing its answer (658 bytes of fragments spreading
//! each other twice ran a page's `totalCount` 8,192 times). Before a document runs, an item
//! identical to the first item of its kind and key in its selection set is dropped, which is
//! what merging would make of it. Documents repeating a mutation field are refused before this
//! by the limits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};
use async_graphql_value::Value;

/// `document` with its repeated selections dropped, or `None` when it has none (the common
/// case, told without copying it).
pub fn without_repeats(document: &ExecutableDocument) -> Option<ExecutableDocument> {
    let sets = operation_sets(document).chain(
        document
            .fragments
            .values()
            .map(|fragment| &fragment.node.selection_set.node),
    );
    if !sets.into_iter().any(repeats) {
        return None;
    }
    let mut document = document.clone();
    match &mut document.operations {
        DocumentOperations::Single(operation) => {
            drop_repeats(&mut operation.node.selection_set.node)
        }
        DocumentOperations::Multiple(operations) => operations
            .values_mut()
            .for_each(|operation| drop_repeats(&mut operation.node.selection_set.node)),
    }
    for fragment in document.fragments.values_mut() {
        drop_repeats(&mut fragment.node.selection_set.node);
    }
    Some(document)
}

fn operation_sets(document: &ExecutableDocument) -> impl Iterator<Item = &SelectionSet> {
    document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
}

/// What an item is compared with: the first item of its kind under the same key.
fn key(selection: &Selection) -> (u8, &str) {
    match selection {
        Selection::Field(field) => (0, field.node.response_key().node.as_str()),
        Selection::FragmentSpread(spread) => (1, spread.node.fragment_name.node.as_str()),
        Selection::InlineFragment(fragment) => (
            2,
            fragment
                .node
                .type_condition
                .as_ref()
                .map_or("", |condition| condition.node.on.node.as_str()),
        ),
    }
}

fn below(selection: &Selection) -> Option<&SelectionSet> {
    match selection {
        Selection::Field(field) => Some(&field.node.selection_set.node),
        Selection::InlineFragment(fragment) => Some(&fragment.node.selection_set.node),
        Selection::FragmentSpread(_) => None,
    }
}

fn below_mut(selection: &mut Selection) -> Option<&mut SelectionSet> {
    match selection {
        Selection::Field(field) => Some(&mut field.node.selection_set.node),
        Selection::InlineFragment(fragment) => Some(&mut fragment.node.selection_set.node),
        Selection::FragmentSpread(_) => None,
    }
}

/// Whether `set`, or a set below it, holds an item that [`drop_repeats`] drops (or that it
/// would, once the sets below are rid of theirs).
fn repeats(set: &SelectionSet) -> bool {
    let mut first: HashMap<(u8, &str), &Selection> = HashMap::new();
    for item in &set.items {
        let item = &item.node;
        match first.entry(key(item)) {
            Entry::Occupied(earlier) if same(earlier.get(), item) => return true,
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(item);
            }
        }
        if below(item).is_some_and(repeats) {
            return true;
        }
    }
    false
}

/// Drops, below and then in `set`, each item identical to the first of its kind and key.
fn drop_repeats(set: &mut SelectionSet) {
    for item in &mut set.items {
        if let Some(below) = below_mut(&mut item.node) {
            drop_repeats(below);
        }
    }
    let items = std::mem::take(&mut set.items);
    let mut first: HashMap<(u8, String), usize> = HashMap::new();
    for item in items {
        let (kind, name) = key(&item.node);
        match first.entry((kind, name.to_owned())) {
            Entry::Occupied(earlier) if same(&set.items[*earlier.get()].node, &item.node) => {
                continue;
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(set.items.len());
            }
        }
        set.items.push(item);
    }
}

/// Whether two selections are written alike, positions aside.
fn same(a: &Selection, b: &Selection) -> bool {
    match (a, b) {
        (Selection::Field(a), Selection::Field(b)) => {
            let (a, b) = (&a.node, &b.node);
            a.alias.as_ref().map(|alias| &alias.node) == b.alias.as_ref().map(|alias| &alias.node)
                && a.name.node == b.name.node
                && same_arguments(&a.arguments, &b.arguments)
                && same_directives(&a.directives, &b.directives)
                && same_sets(&a.selection_set.node, &b.selection_set.node)
        }
        (Selection::FragmentSpread(a), Selection::FragmentSpread(b)) => {
            a.node.fragment_name.node == b.node.fragment_name.node
                && same_directives(&a.node.directives, &b.node.directives)
        }
        (Selection::InlineFragment(a), Selection::InlineFragment(b)) => {
            let on = |fragment: &Positioned<async_graphql::parser::types::InlineFragment>| {
                fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map(|condition| condition.node.on.node.clone())
            };
            on(a) == on(b)
                && same_directives(&a.node.directives, &b.node.directives)
                && same_sets(&a.node.selection_set.node, &b.node.selection_set.node)
        }
        _ => false,
    }
}

fn same_sets(a: &SelectionSet, b: &SelectionSet) -> bool {
    a.items.len() == b.items.len()
        && a.items
            .iter()
            .zip(&b.items)
            .all(|(a, b)| same(&a.node, &b.node))
}

fn same_arguments(
    a: &[(Positioned<Name>, Positioned<Value>)],
    b: &[(Positioned<Name>, Positioned<Value>)],
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((a_name, a_value), (b_name, b_value))| {
                a_name.node == b_name.node && a_value.node == b_value.node
            })
}

fn same_directives(a: &[Positioned<Directive>], b: &[Positioned<Directive>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.node.name.node == b.node.name.node
                && same_arguments(&a.node.arguments, &b.node.arguments)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(query: &str) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        without_repeats(&document).map(|document| {
            let mut fields = Vec::new();
            fn names(set: &SelectionSet, out: &mut Vec<String>) {
                for item in &set.items {
                    match &item.node {
                        Selection::Field(field) => {
                            out.push(field.node.name.node.to_string());
                            names(&field.node.selection_set.node, out);
                        }
                        Selection::FragmentSpread(spread) => {
                            out.push(format!("...{}", spread.node.fragment_name.node));
                        }
                        Selection::InlineFragment(fragment) => {
                            names(&fragment.node.selection_set.node, out);
                        }
                    }
                }
            }
            for set in operation_sets(&document) {
                names(set, &mut fields);
            }
            // By name: the document keeps its fragments in no order.
            let mut fragments: Vec<_> = document.fragments.iter().collect();
            fragments.sort_by_key(|(name, _)| name.as_str());
            for (name, fragment) in fragments {
                fields.push(format!("{name}:"));
                names(&fragment.node.selection_set.node, &mut fields);
            }
            fields.join(" ")
        })
    }

    #[test]
    fn a_selection_written_twice_runs_once() {
        // Nothing repeated: nothing copied.
        assert_eq!(merged("{ me { id username } serverInfo { name } }"), None);
        assert_eq!(merged("{ me { id } b: me { id } }"), None);
        assert_eq!(merged("{ me { id } me { username } }"), None);
        assert_eq!(merged("{ me { id id } }").as_deref(), Some("me id"),);
        assert_eq!(merged("{ me { id } me { id } }").as_deref(), Some("me id"),);
        // Fragments spreading another twice keep one spread each.
        assert_eq!(
            merged("{ me { ...B } } fragment A on User { id } fragment B on User { ...A ...A }")
                .as_deref(),
            Some("me ...B A: id B: ...A"),
        );
        // Different arguments or directives are different selections.
        assert_eq!(
            merged("{ users(first: 1) { totalCount } users(first: 2) { totalCount } }"),
            None
        );
        assert_eq!(
            merged("query($s: Boolean!) { me { id @skip(if: $s) id } }"),
            None
        );
    }
}
