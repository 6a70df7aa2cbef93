//! The schema's types, read once from its own SDL and async-graphql's introspection types:
//! what the response mending (`nulls`) and the check of input values (`coercion`) need to know
//! about a document's fields.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, Field, InputValueDefinition, OperationDefinition, OperationType,
    Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Positioned, Value, Variables};
use async_graphql_value::Value as Written;

/// Named input values (arguments, or an input object's fields): their types, and whether each
/// has a default.
pub(super) type InputValues = HashMap<String, (Type, bool)>;

#[derive(Debug, Default)]
pub struct SchemaTypes {
    /// Each object type's fields and their types.
    pub(in crate::graphql) fields: HashMap<String, HashMap<String, Type>>,
    /// Each object type's fields' arguments.
    pub(in crate::graphql) arguments: HashMap<String, HashMap<String, InputValues>>,
    /// Each input object's fields.
    pub(in crate::graphql) inputs: HashMap<String, InputValues>,
    pub(in crate::graphql) enums: HashSet<String>,
    pub(in crate::graphql) query: String,
    pub(in crate::graphql) mutation: String,
}

impl SchemaTypes {
    pub fn from_sdl(sdl: &str) -> Self {
        let mut types = Self {
            query: "Query".to_owned(),
            mutation: "Mutation".to_owned(),
            ..Self::default()
        };
        types.add(sdl);
        // async-graphql prints no introspection types; its own (`model/`) are these.
        types.add(INTROSPECTION);
        let root = types.fields.remove(INTROSPECTION_ROOT).unwrap_or_default();
        let arguments = types
            .arguments
            .remove(INTROSPECTION_ROOT)
            .unwrap_or_default();
        types
            .fields
            .entry(types.query.clone())
            .or_default()
            .extend(root);
        types
            .arguments
            .entry(types.query.clone())
            .or_default()
            .extend(arguments);
        types
    }

    fn add(&mut self, sdl: &str) {
        let types = self;
        // The SDL is the server's own, printed by async-graphql, or the constant below; it
        // always parses.
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            return;
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
    }
}

/// Where [`INTROSPECTION`] puts the query root's introspection fields.
const INTROSPECTION_ROOT: &str = "__Root";

/// async-graphql's introspection types, as its `model` module defines them (its
/// `includeDeprecated` arguments are non-null), so their arguments are checked like the rest.
const INTROSPECTION: &str = r#"
type __Root { __schema: __Schema! __type(name: String!): __Type }
type __Schema {
  description: String! types: [__Type!]! queryType: __Type! mutationType: __Type
  subscriptionType: __Type directives: [__Directive!]!
}
type __Type {
  kind: __TypeKind! name: String description: String
  fields(includeDeprecated: Boolean! = false): [__Field!]
  interfaces: [__Type!] possibleTypes: [__Type!]
  enumValues(includeDeprecated: Boolean! = false): [__EnumValue!]
  inputFields(includeDeprecated: Boolean! = false): [__InputValue!]
  ofType: __Type specifiedByURL: String isOneOf: Boolean
}
type __Field {
  name: String! description: String args(includeDeprecated: Boolean! = false): [__InputValue!]!
  type: __Type! isDeprecated: Boolean! deprecationReason: String
}
type __InputValue {
  name: String! description: String type: __Type! defaultValue: String
  isDeprecated: Boolean! deprecationReason: String
}
type __EnumValue {
  name: String! description: String isDeprecated: Boolean! deprecationReason: String
}
type __Directive {
  name: String! description: String locations: [__DirectiveLocation!]!
  args(includeDeprecated: Boolean! = false): [__InputValue!]! isRepeatable: Boolean!
}
enum __TypeKind { SCALAR OBJECT INTERFACE UNION ENUM INPUT_OBJECT LIST NON_NULL }
enum __DirectiveLocation {
  QUERY MUTATION SUBSCRIPTION FIELD FRAGMENT_DEFINITION FRAGMENT_SPREAD INLINE_FRAGMENT
  VARIABLE_DEFINITION SCHEMA SCALAR OBJECT FIELD_DEFINITION ARGUMENT_DEFINITION INTERFACE
  UNION ENUM ENUM_VALUE INPUT_OBJECT INPUT_FIELD_DEFINITION
}
"#;

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
        let operation = crate::graphql::selected_operation(document, wanted)?;
        Some((operation, self.root(operation.node.ty)?))
    }
}

/// Calls `visit` on each field `set` selects, through its fragments (each once), in document
/// order.
pub(in crate::graphql) fn each_field<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    visit: &mut impl FnMut(&'a Field),
) {
    each_field_where(document, set, visit, &mut |_| true);
}

/// [`each_field`] over the fields that run with `variables` (defaults applied), as the
/// specification collects them: a field, spread or inline fragment that `@skip` or `@include`
/// leaves out takes no place.
pub(in crate::graphql) fn each_running_field<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    variables: &Variables,
    visit: &mut impl FnMut(&'a Field),
) {
    each_field_where(document, set, visit, &mut |directives| {
        !skipped(directives, variables)
    });
}

/// [`each_field`] through the selections whose directives `runs` lets through; it is asked of
/// every field, spread and inline fragment met.
pub(in crate::graphql) fn each_field_where<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    visit: &mut impl FnMut(&'a Field),
    runs: &mut impl FnMut(&'a [Positioned<Directive>]) -> bool,
) {
    fn walk<'a>(
        document: &'a ExecutableDocument,
        set: &'a SelectionSet,
        visit: &mut impl FnMut(&'a Field),
        runs: &mut impl FnMut(&'a [Positioned<Directive>]) -> bool,
        seen: &mut HashSet<&'a Name>,
    ) {
        for item in &set.items {
            let nested = match &item.node {
                Selection::Field(field) => {
                    if runs(&field.node.directives) {
                        visit(&field.node);
                    }
                    continue;
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    // A fragment spread twice adds nothing; one spreading itself (which
                    // validation refuses later) must not make the walk endless.
                    if !runs(&spread.node.directives) || !seen.insert(name) {
                        continue;
                    }
                    document
                        .fragments
                        .get(name)
                        .map(|fragment| &fragment.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => {
                    runs(&fragment.node.directives).then_some(&fragment.node.selection_set.node)
                }
            };
            if let Some(nested) = nested {
                walk(document, nested, visit, runs, seen);
            }
        }
    }
    walk(document, set, visit, runs, &mut HashSet::new());
}

/// Whether `directives` leave their selection out: `@skip(if: true)` or `@include(if: false)`,
/// a variable read from `variables`.
fn skipped(directives: &[Positioned<Directive>], variables: &Variables) -> bool {
    directives.iter().any(|directive| {
        let condition = directive
            .node
            .get_argument("if")
            .and_then(|value| match &value.node {
                Written::Boolean(condition) => Some(*condition),
                Written::Variable(name) => match variables.get(name) {
                    Some(Value::Boolean(condition)) => Some(*condition),
                    _ => None,
                },
                _ => None,
            });
        matches!(
            (directive.node.name.node.as_str(), condition),
            ("skip", Some(true)) | ("include", Some(false))
        )
    })
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
        // The introspection types too, and the query root's introspection fields.
        assert_eq!(
            types.arguments["Query"]["__type"]["name"].0.to_string(),
            "String!"
        );
        assert!(types.fields["Query"].contains_key("__schema"));
        assert!(types.arguments["__Type"]["fields"].contains_key("includeDeprecated"));
        assert!(types.enums.contains("__TypeKind"));
        assert!(!types.fields.contains_key(INTROSPECTION_ROOT));
        assert_eq!(
            (types.query.as_str(), types.mutation.as_str()),
            ("Query", "Mutation")
        );
    }
}
