//! The schema's types, read once from its own SDL: what the response mending (`nulls`) and the
//! check of input values (`coercion`) need to know about a document's fields.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    ExecutableDocument, Field, InputValueDefinition, OperationDefinition, OperationType, Selection,
    SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Positioned};

/// Named input values (arguments, or an input object's fields): their types, and whether each
/// has a default.
pub(super) type InputValues = HashMap<String, (Type, bool)>;

#[derive(Debug, Default)]
pub struct SchemaTypes {
    /// Each object type's fields and their types.
    pub(super) fields: HashMap<String, HashMap<String, Type>>,
    /// Each object type's fields' arguments.
    pub(super) arguments: HashMap<String, HashMap<String, InputValues>>,
    /// Each input object's fields.
    pub(super) inputs: HashMap<String, InputValues>,
    pub(super) enums: HashSet<String>,
    pub(super) query: String,
    pub(super) mutation: String,
}

impl SchemaTypes {
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
                    let name = definition.name.node.to_string();
                    match definition.kind {
                        TypeKind::Object(object) => {
                            let mut fields = HashMap::new();
                            let mut arguments = HashMap::new();
                            for field in object.fields {
                                let field = field.node;
                                let field_name = field.name.node.to_string();
                                arguments.insert(field_name.clone(), input_values(field.arguments));
                                fields.insert(field_name, field.ty.node);
                            }
                            types.fields.insert(name.clone(), fields);
                            types.arguments.insert(name, arguments);
                        }
                        TypeKind::InputObject(input) => {
                            types.inputs.insert(name, input_values(input.fields));
                        }
                        TypeKind::Enum(_) => {
                            types.enums.insert(name);
                        }
                        _ => {}
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        types
    }
}

impl SchemaTypes {
    /// The root type of operations of type `ty` (none for subscriptions, which this schema
    /// has none of).
    pub(super) fn root(&self, ty: OperationType) -> Option<&str> {
        match ty {
            OperationType::Query => Some(&self.query),
            OperationType::Mutation => Some(&self.mutation),
            OperationType::Subscription => None,
        }
    }

    /// The operation `wanted` of `document` and its root type.
    pub(super) fn selected<'a>(
        &'a self,
        document: &'a ExecutableDocument,
        wanted: Option<&str>,
    ) -> Option<(&'a Positioned<OperationDefinition>, &'a str)> {
        let operation = super::selected_operation(document, wanted)?;
        Some((operation, self.root(operation.node.ty)?))
    }
}

/// Calls `visit` on each field `set` selects, through its fragments (each once), in document
/// order.
pub(super) fn each_field<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    visit: &mut impl FnMut(&'a Field),
) {
    each_field_in(document, set, visit, &mut Vec::new());
}

fn each_field_in<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    visit: &mut impl FnMut(&'a Field),
    seen: &mut Vec<&'a Name>,
) {
    for item in &set.items {
        let nested = match &item.node {
            Selection::Field(field) => {
                visit(&field.node);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                // A fragment spread twice adds nothing; one spreading itself (which
                // validation refuses later) must not make the walk endless.
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                document
                    .fragments
                    .get(name)
                    .map(|fragment| &fragment.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => Some(&fragment.node.selection_set.node),
        };
        if let Some(nested) = nested {
            each_field_in(document, nested, visit, seen);
        }
    }
}

fn input_values(values: Vec<Positioned<InputValueDefinition>>) -> InputValues {
    values
        .into_iter()
        .map(|value| {
            let value = value.node;
            let has_default = value.default_value.is_some();
            (value.name.node.to_string(), (value.ty.node, has_default))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables come from the server's own SDL: one that failed to parse would leave them
    /// empty and turn the checks that read them off without a word.
    #[test]
    fn the_servers_sdl_fills_every_table() {
        let schema = crate::graphql::build_schema(None, crate::graphql::Limits::default());
        let types = SchemaTypes::from_sdl(&schema.sdl());
        assert!(types.fields["Query"].contains_key("users"));
        assert!(types.arguments["Mutation"]["createUser"].contains_key("input"));
        assert!(types.inputs["UpdateUserInput"].contains_key("phone"));
        assert!(types.enums.contains("Role"));
        assert_eq!(
            (types.query.as_str(), types.mutation.as_str()),
            ("Query", "Mutation")
        );
    }
}
