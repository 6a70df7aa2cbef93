//! How deep a document's walks recurse, worked out without recursing. Every walk of a parsed
//! document (async-graphql's checks and validation, the limits' counts, the mends of
//! `spec`) recurses once for each nested selection set and each fragment spread. The
//! nesting limit bounds the braces of the text, but not a chain of fragments each spreading
//! the next: a few thousand of them, in a document of about 100 KB, overflowed a worker
//! thread's stack and aborted the process. So this bound is checked first, by a walk that
//! keeps its own stack. Fragments no operation spreads are refused here too: validation
//! refuses them anyway, after a walk of them that costs far more than their size (a few
//! hundred kilobytes of unused fragments spreading one another took seconds).

use std::collections::{HashMap, HashSet};

use async_graphql::Name;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// async-graphql's own bound on how deep a query recurses (`limit_recursive_depth`'s
/// default), which it checks by recursing.
pub const MAX_RECURSION_DEPTH: usize = 32;

/// Why a document is not walked.
#[derive(Debug, PartialEq, Eq)]
pub enum Unwalkable<'a> {
    /// An operation or a fragment nests deeper than [`MAX_RECURSION_DEPTH`].
    Depth,
    /// A fragment spreads itself, directly or through others, so a walk would not end.
    Cycle(&'a Name),
    /// No operation spreads this fragment, directly or through others.
    Unused(&'a Name),
}

/// Checks that no operation or fragment of `document` nests deeper than
/// [`MAX_RECURSION_DEPTH`], counted as async-graphql counts it: a level for each field with a
/// selection set, each fragment spread and each inline fragment; and that no fragment spreads
/// itself, nor goes unused.
pub fn check(document: &ExecutableDocument) -> Result<(), Unwalkable<'_>> {
    let locals: HashMap<&Name, Local> = document
        .fragments
        .iter()
        .map(|(name, fragment)| (name, Local::of(&fragment.node.selection_set.node)))
        .collect();
    // How deep each fragment nests, its spreads followed; `None` while it is being worked out.
    let mut heights: HashMap<&Name, Option<usize>> = HashMap::new();
    // In document order, so that the same document is always refused for the same fragment.
    let mut roots: Vec<_> = document.fragments.iter().collect();
    roots.sort_by_key(|(_, fragment)| fragment.pos);
    for &(root, _) in &roots {
        if heights.contains_key(root) {
            continue;
        }
        heights.insert(root, None);
        // Fragments being worked out, each with the index of its next spread to follow.
        let mut stack: Vec<(&Name, usize)> = vec![(root, 0)];
        while let Some((name, next)) = stack.last_mut() {
            let local = &locals[*name];
            if let Some((spread, _)) = local.spreads.get(*next) {
                *next += 1;
                if !locals.contains_key(spread) {
                    // Unknown: refused elsewhere, and walked by none.
                    continue;
                }
                match heights.get(spread) {
                    Some(None) => return Err(Unwalkable::Cycle(spread)),
                    Some(Some(_)) => {}
                    None => {
                        heights.insert(spread, None);
                        stack.push((spread, 0));
                    }
                }
            } else {
                let height = local.height(&heights);
                if height > MAX_RECURSION_DEPTH {
                    return Err(Unwalkable::Depth);
                }
                heights.insert(name, Some(height));
                stack.pop();
            }
        }
    }
    let operations: Vec<Local> = document
        .operations
        .iter()
        .map(|(_, operation)| Local::of(&operation.node.selection_set.node))
        .collect();
    if operations
        .iter()
        .any(|operation| operation.height(&heights) > MAX_RECURSION_DEPTH)
    {
        return Err(Unwalkable::Depth);
    }
    // Every fragment the operations spread, through one another.
    let mut used: HashSet<&Name> = HashSet::new();
    let mut spreads: Vec<&Name> = operations
        .iter()
        .flat_map(|operation| operation.spreads.iter().map(|(name, _)| *name))
        .collect();
    while let Some(name) = spreads.pop() {
        if let Some(local) = locals.get(name)
            && used.insert(name)
        {
            spreads.extend(local.spreads.iter().map(|(name, _)| *name));
        }
    }
    match roots.iter().find(|(name, _)| !used.contains(name)) {
        Some((name, _)) => Err(Unwalkable::Unused(name)),
        None => Ok(()),
    }
}

/// A selection set on its own: how deep it nests, and the fragments it spreads with the depth
/// of each spread's selection set.
struct Local<'a> {
    depth: usize,
    spreads: Vec<(&'a Name, usize)>,
}

impl<'a> Local<'a> {
    fn of(set: &'a SelectionSet) -> Self {
        let mut local = Local {
            depth: 0,
            spreads: Vec::new(),
        };
        let mut sets = vec![(set, 0usize)];
        while let Some((set, depth)) = sets.pop() {
            local.depth = local.depth.max(depth);
            for item in &set.items {
                match &item.node {
                    Selection::Field(field) if !field.node.selection_set.node.items.is_empty() => {
                        sets.push((&field.node.selection_set.node, depth + 1));
                    }
                    Selection::Field(_) => {}
                    Selection::FragmentSpread(spread) => {
                        local
                            .spreads
                            .push((&spread.node.fragment_name.node, depth + 1));
                    }
                    Selection::InlineFragment(inline) => {
                        sets.push((&inline.node.selection_set.node, depth + 1));
                    }
                }
            }
        }
        local
    }

    /// How deep the set nests with its spreads followed, given how deep each fragment does
    /// (unknown fragments spread nothing).
    fn height(&self, heights: &HashMap<&Name, Option<usize>>) -> usize {
        self.spreads
            .iter()
            .filter_map(|(name, at)| Some(at.saturating_add((*heights.get(name)?)?)))
            .fold(self.depth, usize::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(query: &str) -> Result<(), String> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        check(&document).map_err(|too_deep| format!("{too_deep:?}"))
    }

    /// `{ ...f0 } fragment f0 on Query { ...f1 } … fragment f{n-1} on Query { __typename }`.
    fn chain(n: usize) -> String {
        let mut query = "{ ...f0 }".to_owned();
        for i in 0..n - 1 {
            query.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
        }
        query.push_str(&format!(" fragment f{} on Query {{ __typename }}", n - 1));
        query
    }

    #[test]
    fn depth_is_counted_as_async_graphql_counts_it() {
        // The operation's set is level 0; each spread's fragment one more.
        assert_eq!(checked(&chain(MAX_RECURSION_DEPTH)), Ok(()));
        assert_eq!(
            checked(&chain(MAX_RECURSION_DEPTH + 1)),
            Err("Depth".into())
        );
        // A chain far longer than a worker's stack would take, walked without recursing.
        assert_eq!(checked(&chain(5_000)), Err("Depth".into()));
        let nested = |n: usize| format!("{}id{}", "{ me ".repeat(n), " }".repeat(n));
        assert_eq!(checked(&nested(MAX_RECURSION_DEPTH + 1)), Ok(()));
        assert_eq!(
            checked(&nested(MAX_RECURSION_DEPTH + 2)),
            Err("Depth".into())
        );
        // Fields, spreads and inline fragments all count, through one another.
        let mixed = "{ me { ... on User { ...A } } } fragment A on User { createdBy { id } }";
        assert_eq!(checked(mixed), Ok(()));
    }

    #[test]
    fn cycles_and_unused_fragments_are_found() {
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(checked(cycle).is_err_and(|why| why.starts_with("Cycle")));
        let unused = "{ __typename } fragment A on Query { ...A }";
        assert!(checked(unused).is_err_and(|why| why.starts_with("Cycle")));
        let unused = "{ ...A } fragment A on Query { __typename } fragment B on Query { ...A }";
        assert_eq!(checked(unused), Err("Unused(Name(\"B\"))".into()));
        // Used by another operation of the document is used.
        let other = "query Q { __typename } query R { ...A } fragment A on Query { __typename }";
        assert_eq!(checked(other), Ok(()));
        // A fragment spread from many places is worked out once, and is no cycle.
        let diamond = "{ ...A ...B } fragment A on Query { ...C } fragment B on Query { ...C } \
                       fragment C on Query { __typename }";
        assert_eq!(checked(diamond), Ok(()));
        // Unknown fragments are for the limits to name.
        assert_eq!(checked("{ ...Nowhere }"), Ok(()));
    }
}
