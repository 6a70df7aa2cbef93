//! The specification's handling of field errors (GraphQL, "Handling Execution Errors"): a
//! field that fails is `null`, and when its type is non-null the null moves up to the nearest
//! nullable parent, or makes `data` null. async-graphql leaves a failed field out of its object
//! instead (an object whose every selected field failed becomes `null`, a list with a failed
//! item is left out), which a client generated from the schema cannot represent: a non-null
//! field that is missing or null. The response is mended here, after execution, and only when
//! some error has a path (or the document skips fields): a successful response is not walked.

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{BaseType, ExecutableDocument, SelectionSet, Type};
use async_graphql::{Name, PathSegment, Response, Value};

use super::schema_types::SchemaTypes;
use super::schema_types::each_field;

impl SchemaTypes {
    /// Mends `response` to the document's operation `wanted` (see the module's doc).
    pub fn propagate_nulls(
        &self,
        response: &mut Response,
        document: &ExecutableDocument,
        wanted: Option<&str>,
    ) {
        let Some((operation, root)) = self.selected(document, wanted) else {
            return;
        };
        let failures: Vec<_> = response
            .errors
            .iter()
            .filter_map(|error| {
                let selection = &operation.node.selection_set.node;
                let nullable = self.nullability(document, root, selection, &error.path)?;
                Some((&error.path, nullable))
            })
            .collect();
        // First every object async-graphql nulled because all its fields failed is an object
        // again, so that each failure below can be judged on its own.
        for (path, _) in &failures {
            restore_emptied(&mut response.data, path);
        }
        for (path, nullable) in &failures {
            null_failed(&mut response.data, path, nullable);
        }
    }

    /// Makes each object async-graphql nulled because every field selected of it was skipped
    /// (`@skip`, `@include`) an empty object, where its type is non-null: without an error
    /// there, null is no value such a position can have. (At a nullable position such a null
    /// cannot be told from a resolver's, and stays.)
    pub fn restore_skipped(
        &self,
        response: &mut Response,
        document: &ExecutableDocument,
        wanted: Option<&str>,
    ) {
        let Some((operation, root)) = self.selected(document, wanted) else {
            return;
        };
        if let Value::Object(fields) = &mut response.data {
            let sets = [&operation.node.selection_set.node];
            self.restore_skipped_in(document, root, &sets, fields, &mut Selected::new());
        }
    }

    /// `seen` holds what each key of `fields` was found to select, shared by the objects of
    /// one list: each would otherwise walk the document's selections again.
    fn restore_skipped_in<'a>(
        &'a self,
        document: &'a ExecutableDocument,
        parent: &str,
        sets: &[&'a SelectionSet],
        fields: &mut IndexMap<Name, Value>,
        seen: &mut Selected<'a>,
    ) {
        for (key, value) in fields.iter_mut() {
            let (ty, inner) = seen.entry(key.clone()).or_insert_with(|| {
                let mut name = None;
                let mut inner = Vec::new();
                for set in sets {
                    fields_named(document, set, key.as_str(), &mut name, &mut inner);
                }
                let ty = name.and_then(|name| self.fields.get(parent)?.get(name.as_str()));
                (ty, inner)
            });
            if let Some(ty) = ty {
                self.restore_skipped_at(document, ty, inner, value);
            }
        }
    }

    fn restore_skipped_at<'a>(
        &'a self,
        document: &'a ExecutableDocument,
        ty: &Type,
        sets: &[&'a SelectionSet],
        value: &mut Value,
    ) {
        let mut seen = Selected::new();
        match (&ty.base, value) {
            (BaseType::List(item), Value::List(items)) => {
                for value in items {
                    self.restore_skipped_item(document, item, sets, value, &mut seen);
                }
            }
            (_, value) => self.restore_skipped_item(document, ty, sets, value, &mut seen),
        }
    }

    fn restore_skipped_item<'a>(
        &'a self,
        document: &'a ExecutableDocument,
        ty: &Type,
        sets: &[&'a SelectionSet],
        value: &mut Value,
        seen: &mut Selected<'a>,
    ) {
        match (&ty.base, value) {
            // The schema has no lists of lists.
            (BaseType::List(_), _) => {}
            // Objects only: scalars and enums have no fields to skip.
            (BaseType::Named(name), value) if self.fields.contains_key(name.as_str()) => {
                match value {
                    Value::Null if !ty.nullable => *value = Value::Object(Default::default()),
                    Value::Object(fields) => {
                        self.restore_skipped_in(document, name.as_str(), sets, fields, seen);
                    }
                    _ => {}
                }
            }
            _ => {}
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

/// What each response key of an object selects: the field's type, and the selection sets below.
type Selected<'a> = std::collections::HashMap<Name, (Option<&'a Type>, Vec<&'a SelectionSet>)>;

/// Collects the fields of `set` (through fragments) answering to `key`: the field's name, and
/// the selections below them, which the next path segment is looked up in.
fn fields_named<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    key: &str,
    name: &mut Option<&'a Name>,
    inner: &mut Vec<&'a SelectionSet>,
) {
    each_field(document, set, &mut |field| {
        if field.response_key().node.as_str() == key {
            name.get_or_insert(&field.name.node);
            inner.push(&field.selection_set.node);
        }
    });
}

/// Makes each null above the failed field at the end of `path` an empty object: an error
/// below a null means the null is no value but an object whose every selected field failed
/// (a resolver cannot fail below a null it returned). `data` itself, too.
fn restore_emptied(data: &mut Value, path: &[PathSegment]) {
    let mut value = data;
    for (at, segment) in path.iter().enumerate() {
        if matches!(value, Value::Null) {
            if !matches!(segment, PathSegment::Field(_)) {
                return;
            }
            *value = Value::Object(Default::default());
        }
        if at + 1 == path.len() {
            return;
        }
        let Some(next) = child_mut(value, segment) else {
            return;
        };
        value = next;
    }
}

/// Mends the response along one error's `path`: the first position there that is missing
/// (a failed field, or a list whose item failed) or null (an object whose every selected field
/// failed) is where the failure shows; it, or when its type is non-null its nearest nullable
/// parent, becomes null, or `data` itself when there is none. A null at a nullable position
/// is already right; a path whose value is present produced a value despite its error (a
/// partly refused object, say) and stays.
fn null_failed(data: &mut Value, path: &[PathSegment], nullable: &[bool]) {
    let mut value = &*data;
    let mut failed = None;
    for (at, segment) in path.iter().enumerate() {
        match child(value, segment) {
            Some(Value::Null) | None => {
                failed = Some(at);
                break;
            }
            Some(next) => value = next,
        }
    }
    let Some(failed) = failed else {
        return;
    };
    match nullable[..=failed].iter().rposition(|&nullable| nullable) {
        Some(at) => set_null(data, &path[..=at]),
        None => *data = Value::Null,
    }
}

/// The value one path segment below `value`, if there is one.
fn child<'a>(value: &'a Value, segment: &PathSegment) -> Option<&'a Value> {
    match (segment, value) {
        (PathSegment::Field(key), Value::Object(object)) => object.get(key.as_str()),
        (PathSegment::Index(index), Value::List(items)) => items.get(*index),
        _ => None,
    }
}

fn child_mut<'a>(value: &'a mut Value, segment: &PathSegment) -> Option<&'a mut Value> {
    match (segment, value) {
        (PathSegment::Field(key), Value::Object(object)) => object.get_mut(key.as_str()),
        (PathSegment::Index(index), Value::List(items)) => items.get_mut(*index),
        _ => None,
    }
}

fn locate<'a>(mut value: &'a mut Value, path: &[PathSegment]) -> Option<&'a mut Value> {
    for segment in path {
        value = child_mut(value, segment)?;
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
    use async_graphql::{EmptyMutation, EmptySubscription, ID, Object, Result, Schema};
    use serde_json::json;

    use super::*;

    /// Resolvers that fail where asked, so the tests mend what async-graphql really answers.
    struct Root;

    #[Object]
    impl Root {
        async fn me(&self) -> Result<Person> {
            Err("no viewer".into())
        }
        async fn user(&self, fail: bool) -> Result<Option<Person>> {
            if fail {
                Err("refused".into())
            } else {
                Ok(Some(Person(false)))
            }
        }
        async fn people(&self) -> Vec<Person> {
            vec![Person(false), Person(true)]
        }
        async fn maybe(&self) -> Vec<Option<Person>> {
            vec![Some(Person(false)), Some(Person(true))]
        }
        async fn count(&self) -> Result<i32> {
            Err("the database is away".into())
        }
        async fn fine(&self) -> i32 {
            1
        }
    }

    /// A person whose `id` and `best` fail when it is a failing one.
    struct Person(bool);

    #[Object]
    impl Person {
        async fn id(&self) -> Result<ID> {
            if self.0 {
                Err("no id".into())
            } else {
                Ok(ID::from("1"))
            }
        }
        async fn name(&self) -> Option<String> {
            None
        }
        async fn nick(&self) -> Result<Option<String>> {
            if self.0 {
                Err("no nick".into())
            } else {
                Ok(Some("n".into()))
            }
        }
        async fn friend(&self) -> Option<Person> {
            Some(Person(self.0))
        }
        async fn best(&self) -> Result<Person> {
            if self.0 {
                Err("no best".into())
            } else {
                Ok(Person(false))
            }
        }
        async fn tags(&self) -> Result<Vec<Vec<String>>> {
            if self.0 {
                Err("no tags".into())
            } else {
                Ok(vec![vec!["a".into()]])
            }
        }
    }

    async fn mended(query: &str) -> serde_json::Value {
        let schema = Schema::new(Root, EmptyMutation, EmptySubscription);
        let types = SchemaTypes::from_sdl(&schema.sdl());
        let mut response = schema.execute(query).await;
        assert!(!response.errors.is_empty(), "{query} fails somewhere");
        let document = async_graphql::parser::parse_query(query).expect("query");
        types.propagate_nulls(&mut response, &document, None);
        response.data.into_json().expect("json")
    }

    /// Objects whose every selected field was skipped: async-graphql answers null.
    #[tokio::test]
    async fn skipped_objects_are_empty_where_null_cannot_be() {
        let schema = Schema::new(Root, EmptyMutation, EmptySubscription);
        let types = SchemaTypes::from_sdl(&schema.sdl());
        let query = "{ people { name @skip(if: true) } \
                     user(fail: false) { name @skip(if: true) } fine }";
        let mut response = schema.execute(query).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let document = async_graphql::parser::parse_query(query).expect("query");
        types.restore_skipped(&mut response, &document, None);
        // `user` is nullable: a resolver's null looks the same, so it stays.
        assert_eq!(
            response.data.into_json().expect("json"),
            json!({"people": [{}, {}], "user": null, "fine": 1})
        );
    }

    #[tokio::test]
    async fn a_failed_nullable_field_is_null() {
        let data = mended("{ user(fail: true) { id } fine }").await;
        assert_eq!(data, json!({"user": null, "fine": 1}));
        let data = mended("{ a: user(fail: false) { id } b: user(fail: true) { id } }").await;
        assert_eq!(data, json!({"a": {"id": "1"}, "b": null}));
    }

    #[tokio::test]
    async fn a_failed_non_null_field_nulls_its_nearest_nullable_parent() {
        let data = mended("{ people { friend { best { id } } } }").await;
        assert_eq!(
            data,
            json!({"people": [{"friend": {"best": {"id": "1"}}}, {"friend": null}]})
        );
    }

    #[tokio::test]
    async fn with_no_nullable_parent_data_is_null() {
        assert_eq!(mended("{ fine me { id } }").await, json!(null));
        assert_eq!(mended("{ fine count }").await, json!(null));
        // The second person's only selected field fails: async-graphql answers its object
        // with null, in a list of non-null items under a non-null field.
        assert_eq!(mended("{ fine people { id } }").await, json!(null));
        assert_eq!(mended("{ fine people { id name } }").await, json!(null));
        assert_eq!(mended("{ fine people { tags } }").await, json!(null));
    }

    #[tokio::test]
    async fn a_nullable_list_item_takes_the_null() {
        let data = mended("query { maybe { ...F } } fragment F on Person { best { id } }").await;
        assert_eq!(data, json!({"maybe": [{"best": {"id": "1"}}, null]}));
        let data = mended("{ maybe { ... on Person { id } } }").await;
        assert_eq!(data, json!({"maybe": [{"id": "1"}, null]}));
    }

    #[tokio::test]
    async fn objects_whose_fields_all_failed_are_judged_field_by_field() {
        // A nullable root field alone: async-graphql answers `data: null`.
        assert_eq!(
            mended("{ user(fail: true) { id } }").await,
            json!({"user": null})
        );
        // A person whose only selected field (nullable) failed is a person with it null.
        let data = mended("{ people { pal: friend { nick } } }").await;
        assert_eq!(
            data,
            json!({"people": [{"pal": {"nick": "n"}}, {"pal": {"nick": null}}]})
        );
        let data = mended("{ people { nick } }").await;
        assert_eq!(data, json!({"people": [{"nick": "n"}, {"nick": null}]}));
    }

    #[tokio::test]
    async fn present_values_stay() {
        let data = mended("{ u: user(fail: false) { name } b: user(fail: true) { id } }").await;
        assert_eq!(data, json!({"u": {"name": null}, "b": null}));
    }

    #[test]
    fn paths_outside_the_schema_are_left_alone() {
        let types = SchemaTypes::from_sdl("type Query { fine: Int }");
        let document =
            async_graphql::parser::parse_query("{ elsewhere { types { name } } }").expect("query");
        let mut response = Response::new(Value::from_json(json!({})).expect("data"));
        let mut error = async_graphql::ServerError::new("failed", None);
        error.path = vec![PathSegment::Field("elsewhere".into())];
        response.errors.push(error);
        types.propagate_nulls(&mut response, &document, None);
        assert_eq!(response.data.into_json().expect("json"), json!({}));
    }
}
