//! The specification's handling of field errors (GraphQL, "Handling Execution Errors"): a
//! field that fails is `null`, and when its type is non-null the null moves up to the nearest
//! nullable parent, or makes `data` null. async-graphql leaves a failed field out of its object
//! instead, which a client generated from the schema cannot represent (a non-null field that
//! is simply missing). The response is mended here, after execution, and only when some error
//! has a path: a successful response is not walked.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::{Name, PathSegment, Response, Value};

/// Each object type's fields and their types, read once from the schema's SDL.
#[derive(Debug, Default)]
pub struct FieldTypes {
    fields: HashMap<String, HashMap<String, Type>>,
    query: String,
    mutation: String,
}

impl FieldTypes {
    pub fn from_sdl(sdl: &str) -> Self {
        let mut types = Self {
            query: "Query".to_owned(),
            mutation: "Mutation".to_owned(),
            ..Self::default()
        };
        // The SDL is the server's own, printed by async-graphql; it always parses.
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            return types;
        };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    if let Some(query) = schema.query {
                        types.query = query.node.to_string();
                    }
                    if let Some(mutation) = schema.mutation {
                        types.mutation = mutation.node.to_string();
                    }
                }
                TypeSystemDefinition::Type(definition) => {
                    let definition = definition.node;
                    if let TypeKind::Object(object) = definition.kind {
                        let fields = object
                            .fields
                            .into_iter()
                            .map(|field| (field.node.name.node.to_string(), field.node.ty.node))
                            .collect();
                        types
                            .fields
                            .insert(definition.name.node.to_string(), fields);
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        types
    }

    /// Mends `response` to the document's operation `wanted` (see the module's doc).
    pub fn propagate_nulls(
        &self,
        response: &mut Response,
        document: &ExecutableDocument,
        wanted: Option<&str>,
    ) {
        let Some(operation) = super::limits::selected_operation(document, wanted) else {
            return;
        };
        let root = match operation.node.ty {
            OperationType::Query => &self.query,
            OperationType::Mutation => &self.mutation,
            OperationType::Subscription => return,
        };
        for error in &response.errors {
            let Some(nullable) = self.nullability(
                document,
                root,
                &operation.node.selection_set.node,
                &error.path,
            ) else {
                continue;
            };
            null_failed(&mut response.data, &error.path, &nullable);
        }
    }

    /// Whether each position along `path` may be null, or `None` when the path leaves what
    /// the schema describes (introspection, say).
    fn nullability(
        &self,
        document: &ExecutableDocument,
        root: &str,
        selection: &SelectionSet,
        path: &[PathSegment],
    ) -> Option<Vec<bool>> {
        let mut nullable = Vec::with_capacity(path.len());
        let mut parent = root;
        let mut selections = vec![selection];
        let mut current: Option<&Type> = None;
        for segment in path {
            let ty = match segment {
                PathSegment::Field(key) => {
                    let mut name = None;
                    let mut inner = Vec::new();
                    for set in &selections {
                        fields_named(document, set, key, &mut name, &mut inner);
                    }
                    selections = inner;
                    self.fields.get(parent)?.get(name?.as_str())?
                }
                PathSegment::Index(_) => match &current?.base {
                    BaseType::List(item) => item,
                    BaseType::Named(_) => return None,
                },
            };
            if let BaseType::Named(name) = &ty.base {
                parent = name.as_str();
            }
            nullable.push(ty.nullable);
            current = Some(ty);
        }
        Some(nullable)
    }
}

/// Collects the fields of `set` (through fragments) answering to `key`: the field's name, and
/// the selections below them, which the next path segment is looked up in.
fn fields_named<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    key: &str,
    name: &mut Option<&'a Name>,
    inner: &mut Vec<&'a SelectionSet>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) if field.node.response_key().node.as_str() == key => {
                name.get_or_insert(&field.node.name.node);
                inner.push(&field.node.selection_set.node);
            }
            Selection::Field(_) => {}
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    fields_named(
                        document,
                        &fragment.node.selection_set.node,
                        key,
                        name,
                        inner,
                    );
                }
            }
            Selection::InlineFragment(fragment) => {
                fields_named(
                    document,
                    &fragment.node.selection_set.node,
                    key,
                    name,
                    inner,
                );
            }
        }
    }
}

/// Nulls the field at `path` when it is missing from its object, or, when its type is
/// non-null, its nearest nullable parent; `data` itself when none is. A field that is present
/// produced a value despite its error (a partly refused object, say), and stays.
fn null_failed(data: &mut Value, path: &[PathSegment], nullable: &[bool]) {
    let Some((PathSegment::Field(key), parents)) = path.split_last() else {
        return;
    };
    match locate(data, parents) {
        Some(Value::Object(object)) if !object.contains_key(key.as_str()) => {}
        _ => return,
    }
    match nullable.iter().rposition(|&nullable| nullable) {
        Some(at) => set_null(data, &path[..=at]),
        None => *data = Value::Null,
    }
}

fn locate<'a>(mut value: &'a mut Value, path: &[PathSegment]) -> Option<&'a mut Value> {
    for segment in path {
        value = match (segment, value) {
            (PathSegment::Field(key), Value::Object(object)) => object.get_mut(key.as_str())?,
            (PathSegment::Index(index), Value::List(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    match (last, locate(data, parents)) {
        (PathSegment::Field(key), Some(Value::Object(object))) => {
            object.insert(Name::new(key), Value::Null);
        }
        (PathSegment::Index(index), Some(Value::List(items))) => {
            if let Some(item) = items.get_mut(*index) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::ServerError;
    use serde_json::json;

    const SDL: &str = "
        type Query { me: User! user: User list: [User!]! maybe: [User] }
        type Mutation { act: Boolean! }
        type User { id: ID! name: String friend: User best: User! }
        schema { query: Query mutation: Mutation }
    ";

    fn mended(query: &str, data: serde_json::Value, paths: &[serde_json::Value]) -> Value {
        let types = FieldTypes::from_sdl(SDL);
        let document = async_graphql::parser::parse_query(query).expect("query");
        let mut response = Response::new(Value::from_json(data).expect("data"));
        for path in paths {
            let mut error = ServerError::new("failed", None);
            error.path = serde_json::from_value(path.clone()).expect("path");
            response.errors.push(error);
        }
        types.propagate_nulls(&mut response, &document, None);
        response.data
    }

    fn json(value: Value) -> serde_json::Value {
        value.into_json().expect("json")
    }

    #[test]
    fn a_failed_nullable_field_is_null() {
        let data = mended(
            "{ user { id } me { id } }",
            json!({"me": {"id": "1"}}),
            &[json!(["user"])],
        );
        assert_eq!(json(data), json!({"me": {"id": "1"}, "user": null}));
    }

    #[test]
    fn a_failed_non_null_field_nulls_its_nearest_nullable_parent() {
        let data = mended(
            "{ user { friend { best { id } } } }",
            json!({"user": {"friend": {}}}),
            &[json!(["user", "friend", "best"])],
        );
        assert_eq!(json(data), json!({"user": {"friend": null}}));
    }

    #[test]
    fn with_no_nullable_parent_data_is_null() {
        let data = mended(
            "{ user { id } me { id } }",
            json!({"user": null}),
            &[json!(["me"])],
        );
        assert_eq!(json(data), json!(null));
        let data = mended(
            "{ list { id } }",
            json!({"list": [{"id": "1"}, {}]}),
            &[json!(["list", 1, "id"])],
        );
        assert_eq!(json(data), json!(null));
    }

    #[test]
    fn a_nullable_list_item_takes_the_null() {
        let data = mended(
            "query { maybe { ...F } } fragment F on User { best { id } }",
            json!({"maybe": [{"best": {"id": "1"}}, {}]}),
            &[json!(["maybe", 1, "best"])],
        );
        assert_eq!(json(data), json!({"maybe": [{"best": {"id": "1"}}, null]}));
    }

    #[test]
    fn aliases_are_followed_and_present_values_stay() {
        let data = mended(
            "{ a: user { b: best { id } } me { name } }",
            json!({"a": {}, "me": {"name": null}}),
            &[json!(["a", "b"]), json!(["me", "name"])],
        );
        assert_eq!(json(data), json!({"a": null, "me": {"name": null}}));
    }

    #[test]
    fn paths_outside_the_schema_are_left_alone() {
        let data = mended(
            "{ __schema { types { name } } }",
            json!({}),
            &[json!(["__schema"])],
        );
        assert_eq!(json(data), json!({}));
    }
}
