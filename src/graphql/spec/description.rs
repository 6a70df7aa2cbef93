//! The schema's description. async-graphql answers `__schema { description }` with a fixed
//! text of its own, about GraphQL schemas in general, which the SDL it prints does not carry:
//! rollcall's description takes its place in both, so GraphiQL's documentation opens on it and
//! an SDL rebuilt from introspection matches `schema.graphql`.

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Name, Response, Value};

use super::schema_types::each_field;

/// What the schema is, as introspection and `schema.graphql` tell it.
pub const DESCRIPTION: &str = "rollcall: user accounts, roles (OWNER, ADMIN, STANDARD), \
    sessions and API tokens. Errors carry extensions.code; invalid input names every field in \
    extensions.fields and extensions.fieldCodes.";

/// The SDL with the description on its `schema` definition.
pub fn described_sdl(sdl: &str) -> String {
    sdl.replacen(
        "\nschema {",
        &format!("\n\"\"\"\n{DESCRIPTION}\n\"\"\"\nschema {{"),
        1,
    )
}

/// The response keys of each `description` under a root `__schema` of the operation `wanted`
/// (through fragments and aliases), as (the `__schema` key, the `description` key).
pub fn description_keys(document: &ExecutableDocument, wanted: Option<&str>) -> Vec<(Name, Name)> {
    let Some(operation) = crate::graphql::selected_operation(document, wanted) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    each_field(document, &operation.node.selection_set.node, &mut |field| {
        if field.name.node != "__schema" {
            return;
        }
        let outer = &field.response_key().node;
        each_field(document, &field.selection_set.node, &mut |inner| {
            if inner.name.node == "description" {
                keys.push((outer.clone(), inner.response_key().node.clone()));
            }
        });
    });
    keys
}

/// Puts the description where `keys` say the response holds async-graphql's.
pub fn describe(response: &mut Response, keys: &[(Name, Name)]) {
    let Value::Object(root) = &mut response.data else {
        return;
    };
    for (outer, inner) in keys {
        if let Some(Value::Object(schema)) = root.get_mut(outer)
            && let Some(description) = schema.get_mut(inner)
        {
            *description = Value::String(DESCRIPTION.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_replaces_async_graphqls_wherever_asked() {
        let query = "{ s: __schema { d: description ...F } ...R }
                     fragment F on __Schema { description queryType { description } }
                     fragment R on Query { __schema { description } }";
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let keys = description_keys(&document, None);
        let fixed = "A GraphQL Schema defines the capabilities of a GraphQL server.";
        let data = serde_json::json!({
            "s": {"d": fixed, "description": fixed, "queryType": {"description": "Q"}},
            "__schema": {"description": fixed},
        });
        let mut response = Response::new(Value::from_json(data).expect("value"));
        describe(&mut response, &keys);
        let data = response.data.into_json().expect("json");
        assert_eq!(data["s"]["d"], DESCRIPTION);
        assert_eq!(data["s"]["description"], DESCRIPTION);
        assert_eq!(data["s"]["queryType"]["description"], "Q");
        assert_eq!(data["__schema"]["description"], DESCRIPTION);
    }

    #[test]
    fn the_sdl_carries_it_on_the_schema_definition() {
        let sdl = described_sdl("type Query {\n\ta: Int\n}\nschema {\n\tquery: Query\n}\n");
        assert!(
            sdl.ends_with(&format!(
                "}}\n\"\"\"\n{DESCRIPTION}\n\"\"\"\nschema {{\n\tquery: Query\n}}\n"
            )),
            "{sdl}"
        );
    }
}
