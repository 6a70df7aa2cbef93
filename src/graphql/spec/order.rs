//! The response's root in the order the document asks for. async-graphql resolves a query's
//! root fields concurrently and writes each as it finishes (`#[Object(serial)]` does not reach
//! the root); objects below the root that wait keep their order by resolving serially, except
//! under a root field selected twice, whose occurrences merge in the order they finish.

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{ExecutableDocument, SelectionSet};
use async_graphql::{Name, Response, Value, Variables};

use super::schema_types::each_running_field;

/// The response keys of the root fields of the operation `wanted` that run with `variables`
/// (defaults applied), in document order (through fragments), each once; and whether one is
/// selected more than once, for [`order_repeated_root`].
pub fn root_keys(
    document: &ExecutableDocument,
    wanted: Option<&str>,
    variables: &Variables,
) -> (Vec<Name>, bool) {
    let mut keys = Vec::new();
    let mut repeats = false;
    if let Some(operation) = crate::graphql::selected_operation(document, wanted) {
        let root = &operation.node.selection_set.node;
        each_running_field(document, root, variables, &mut |field| {
            let key = &field.response_key().node;
            if keys.contains(key) {
                repeats = true;
            } else {
                keys.push(key.clone());
            }
        });
    }
    (keys, repeats)
}

/// The response keys selected by `sets` (the selections of one response object) that run, in
/// document order, each once.
fn response_keys(
    document: &ExecutableDocument,
    sets: &[&SelectionSet],
    variables: &Variables,
) -> Vec<Name> {
    let mut keys = Vec::new();
    for set in sets {
        each_running_field(document, set, variables, &mut |field| {
            let key = &field.response_key().node;
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        });
    }
    keys
}

/// Puts the fields below each root field the operation `wanted` selects more than once in
/// the order asked for, at every level.
pub fn order_repeated_root(
    response: &mut Response,
    document: &ExecutableDocument,
    wanted: Option<&str>,
    variables: &Variables,
) {
    let Some(operation) = crate::graphql::selected_operation(document, wanted) else {
        return;
    };
    let Value::Object(fields) = &mut response.data else {
        return;
    };
    let root = [&operation.node.selection_set.node];
    for (key, value) in fields.iter_mut() {
        let inner = selections_under(document, &root, key.as_str(), variables);
        if inner.len() > 1 {
            Order::of(document, &inner, variables).apply(value);
        }
    }
}

/// The selection sets of the fields `sets` select under `key` that run.
fn selections_under<'a>(
    document: &'a ExecutableDocument,
    sets: &[&'a SelectionSet],
    key: &str,
    variables: &Variables,
) -> Vec<&'a SelectionSet> {
    let mut inner = Vec::new();
    for set in sets {
        each_running_field(document, set, variables, &mut |field| {
            if field.response_key().node.as_str() == key {
                inner.push(&field.selection_set.node);
            }
        });
    }
    inner
}

/// The order of one level's keys and of the objects below them, worked out once from the
/// document however many objects a list holds (each would cost a walk of its selections).
struct Order {
    keys: Vec<Name>,
    below: Vec<(Name, Order)>,
}

impl Order {
    fn of(document: &ExecutableDocument, sets: &[&SelectionSet], variables: &Variables) -> Self {
        let keys = response_keys(document, sets, variables);
        let below = keys
            .iter()
            .filter_map(|key| {
                let inner = selections_under(document, sets, key.as_str(), variables);
                let objects = inner.iter().any(|set| !set.items.is_empty());
                objects.then(|| (key.clone(), Order::of(document, &inner, variables)))
            })
            .collect();
        Self { keys, below }
    }

    fn apply(&self, value: &mut Value) {
        match value {
            Value::List(items) => items.iter_mut().for_each(|item| self.apply(item)),
            Value::Object(fields) => {
                in_order(fields, &self.keys);
                for (key, below) in &self.below {
                    if let Some(value) = fields.get_mut(key) {
                        below.apply(value);
                    }
                }
            }
            _ => {}
        }
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
        order_root(
            &mut response,
            &root_keys(&document, None, &Variables::default()).0,
        );
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
        let none = Variables::default();
        let query =
            "{ me { sessions { id } } me { username sessions { current } } serverInfo { name } }";
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let (keys, repeats) = root_keys(&document, None, &none);
        assert!(repeats);
        let plain =
            async_graphql::parser::parse_query("{ me { id } a: me { id } }").expect("parses");
        assert!(!root_keys(&plain, None, &none).1);
        // As the later-finishing occurrence's fields merge after the other's.
        let data = serde_json::json!({
            "serverInfo": {"name": "rollcall"},
            "me": {"username": "alice", "sessions": [{"current": true, "id": "1"}]},
        });
        let mut response = Response::new(Value::from_json(data).expect("value"));
        order_repeated_root(&mut response, &document, None, &none);
        order_root(&mut response, &keys);
        let text = serde_json::to_string(&response.data).expect("serializes");
        assert_eq!(
            text,
            r#"{"me":{"sessions":[{"id":"1","current":true}],"username":"alice"},"serverInfo":{"name":"rollcall"}}"#
        );
    }

    #[test]
    fn a_skipped_selection_takes_no_place() {
        let variables = Variables::from_json(serde_json::json!({"d": false}));
        let query = "query($d: Boolean!) { me @include(if: $d) { email username } \
                     me { username email } ...F @skip(if: true) s: serverInfo { name } ...F } \
                     fragment F on Query { f: serverInfo { name } }";
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let (keys, repeats) = root_keys(&document, None, &variables);
        let keys: Vec<&str> = keys.iter().map(Name::as_str).collect();
        assert_eq!(keys, ["me", "s", "f"]);
        // The first `me` is skipped: no repeat, and the one that runs decides the order.
        assert!(!repeats);
        let repeated = "{ me { email @skip(if: true) username email } me { id } }";
        let document = async_graphql::parser::parse_query(repeated).expect("parses");
        let none = Variables::default();
        let data = serde_json::json!({"me": {"id": "1", "email": "e", "username": "u"}});
        let mut response = Response::new(Value::from_json(data).expect("value"));
        order_repeated_root(&mut response, &document, None, &none);
        let text = serde_json::to_string(&response.data).expect("serializes");
        assert_eq!(text, r#"{"me":{"username":"u","email":"e","id":"1"}}"#);
    }

    #[test]
    fn skipping_every_root_field_leaves_empty_data() {
        let data = ordered("{ me @skip(if: true) { id } }", serde_json::Value::Null);
        assert_eq!(data, Value::Object(Default::default()));
    }
}
