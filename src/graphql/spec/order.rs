//! The response's root in the order the document asks for. async-graphql resolves a query's
//! root fields concurrently and writes each as it finishes (`#[Object(serial)]` does not reach
//! the root); objects below the root that wait keep their order by resolving serially, except
//! under a root field selected twice, whose occurrences merge in the order they finish.

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{ExecutableDocument, SelectionSet};
use async_graphql::{Name, Response, Value};

use super::schema_types::each_field;

/// The response keys of the root fields of the operation `wanted`, in document order (through
/// fragments), each once.
pub fn root_keys(document: &ExecutableDocument, wanted: Option<&str>) -> Vec<Name> {
    match crate::graphql::selected_operation(document, wanted) {
        Some(operation) => response_keys(document, &[&operation.node.selection_set.node]),
        None => Vec::new(),
    }
}

/// The response keys selected by `sets` (the selections of one response object), in document
/// order, each once.
pub(super) fn response_keys(document: &ExecutableDocument, sets: &[&SelectionSet]) -> Vec<Name> {
    let mut keys = Vec::new();
    for set in sets {
        each_field(document, set, &mut |field| {
            let key = &field.response_key().node;
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        });
    }
    keys
}

/// Whether the operation `wanted` selects a root field more than once under one key (through
/// fragments), for [`order_repeated_root`].
pub fn root_repeats(document: &ExecutableDocument, wanted: Option<&str>) -> bool {
    let Some(operation) = crate::graphql::selected_operation(document, wanted) else {
        return false;
    };
    let mut seen = Vec::new();
    let mut repeats = false;
    each_field(document, &operation.node.selection_set.node, &mut |field| {
        let key = &field.response_key().node;
        repeats = repeats || seen.contains(&key);
        seen.push(key);
    });
    repeats
}

/// Puts the fields below each root field the operation `wanted` selects more than once in
/// the order asked for, at every level.
pub fn order_repeated_root(
    response: &mut Response,
    document: &ExecutableDocument,
    wanted: Option<&str>,
) {
    let Some(operation) = crate::graphql::selected_operation(document, wanted) else {
        return;
    };
    let Value::Object(fields) = &mut response.data else {
        return;
    };
    let root = [&operation.node.selection_set.node];
    for (key, value) in fields.iter_mut() {
        let inner = selections_under(document, &root, key.as_str());
        if inner.len() > 1 {
            order_below(document, &inner, value);
        }
    }
}

/// The selection sets of the fields `sets` select under `key`.
fn selections_under<'a>(
    document: &'a ExecutableDocument,
    sets: &[&'a SelectionSet],
    key: &str,
) -> Vec<&'a SelectionSet> {
    let mut inner = Vec::new();
    for set in sets {
        each_field(document, set, &mut |field| {
            if field.response_key().node.as_str() == key {
                inner.push(&field.selection_set.node);
            }
        });
    }
    inner
}

fn order_below(document: &ExecutableDocument, sets: &[&SelectionSet], value: &mut Value) {
    match value {
        Value::List(items) => {
            for item in items {
                order_below(document, sets, item);
            }
        }
        Value::Object(fields) => {
            in_order(fields, &response_keys(document, sets));
            for (key, value) in fields.iter_mut() {
                let inner = selections_under(document, sets, key.as_str());
                order_below(document, &inner, value);
            }
        }
        _ => {}
    }
}

/// Puts `response`'s root fields in the order of `keys`. A response without errors whose every
/// root field was skipped (`@skip`, `@include`) has an empty `data`, not a null one.
pub fn order_root(response: &mut Response, keys: &[Name]) {
    match &mut response.data {
        Value::Null if response.errors.is_empty() => {
            response.data = Value::Object(Default::default());
        }
        Value::Object(fields) => in_order(fields, keys),
        _ => {}
    }
}

/// Puts `fields` in the order of `keys`; a field `keys` does not name stays, after them.
pub(super) fn in_order(fields: &mut IndexMap<Name, Value>, keys: &[Name]) {
    if fields.len() < 2 {
        return;
    }
    let ordered = keys
        .iter()
        .filter(|key| fields.contains_key(*key))
        .eq(fields.keys());
    if ordered {
        return;
    }
    let mut rest = std::mem::take(fields);
    for key in keys {
        if let Some(value) = rest.shift_remove(key) {
            fields.insert(key.clone(), value);
        }
    }
    fields.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(query: &str, data: serde_json::Value) -> Value {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let mut response = Response::new(Value::from_json(data).expect("value"));
        order_root(&mut response, &root_keys(&document, None));
        response.data
    }

    #[test]
    fn root_fields_follow_the_document() {
        let query = "{ me { id } ...F b: serverInfo { name } ... on Query { c: me { id } } }
                     fragment F on Query { a: users { totalCount } me { id } }";
        let data = serde_json::json!({"c": 3, "b": 2, "a": 1, "me": 0});
        let Value::Object(fields) = ordered(query, data) else {
            panic!("an object");
        };
        let keys: Vec<&str> = fields.keys().map(Name::as_str).collect();
        assert_eq!(keys, ["me", "a", "b", "c"]);
    }

    #[test]
    fn fields_merged_under_a_repeated_root_field_follow_the_document() {
        let query =
            "{ me { sessions { id } } me { username sessions { current } } serverInfo { name } }";
        let document = async_graphql::parser::parse_query(query).expect("parses");
        assert!(root_repeats(&document, None));
        let plain =
            async_graphql::parser::parse_query("{ me { id } a: me { id } }").expect("parses");
        assert!(!root_repeats(&plain, None));
        // As the later-finishing occurrence's fields merge after the other's.
        let data = serde_json::json!({
            "serverInfo": {"name": "rollcall"},
            "me": {"username": "alice", "sessions": [{"current": true, "id": "1"}]},
        });
        let mut response = Response::new(Value::from_json(data).expect("value"));
        order_repeated_root(&mut response, &document, None);
        order_root(&mut response, &root_keys(&document, None));
        let text = serde_json::to_string(&response.data).expect("serializes");
        assert_eq!(
            text,
            r#"{"me":{"sessions":[{"id":"1","current":true}],"username":"alice"},"serverInfo":{"name":"rollcall"}}"#
        );
    }

    #[test]
    fn skipping_every_root_field_leaves_empty_data() {
        let data = ordered("{ me @skip(if: true) { id } }", serde_json::Value::Null);
        assert_eq!(data, Value::Object(Default::default()));
    }
}
