//! Input values checked against their types before anything runs, where async-graphql's
//! validation lets a value through to the resolver that reads it: an input object given as
//! a string, a number or a list (a variable or a literal), and an enum given as a string
//! literal. The specification refuses such a request whole; let through, a mutation's earlier
//! fields would run and its later ones fail on the value.

use std::collections::HashSet;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
};
use async_graphql::{Name, Pos, ServerError, ServerResult, Value, Variables};

use super::SchemaTypes;

impl SchemaTypes {
    /// Checks the variables and the argument literals of the operation `wanted`.
    pub fn check_values(
        &self,
        document: &ExecutableDocument,
        wanted: Option<&str>,
        variables: &Variables,
    ) -> ServerResult<()> {
        let Some(operation) = super::selected_operation(document, wanted) else {
            return Ok(());
        };
        let root = match operation.node.ty {
            OperationType::Query => &self.query,
            OperationType::Mutation => &self.mutation,
            OperationType::Subscription => return Ok(()),
        };
        for definition in &operation.node.variable_definitions {
            let variable = &definition.node;
            let ty = &variable.var_type.node;
            let name = &variable.name.node;
            if let Some(default) = &variable.default_value
                && let Some(problem) = self.mismatch(&default.node, ty, Source::Literal)
            {
                return Err(refusal(
                    format!("The default of variable `${name}` is not a `{ty}`: {problem}"),
                    default.pos,
                ));
            }
            if let Some(value) = variables.get(name)
                && let Some(problem) = self.mismatch(value, ty, Source::Json)
            {
                return Err(refusal(
                    format!("Variable `${name}` is not a `{ty}`: {problem}"),
                    definition.pos,
                ));
            }
        }
        let mut walk = Walk {
            types: self,
            document,
            seen: HashSet::new(),
        };
        walk.selections(root, &operation.node.selection_set.node)
    }

    /// What is wrong with `value` as a `ty`, among what async-graphql lets through; the rest
    /// (scalars, enum names, unknown or missing fields) its validation refuses itself.
    fn mismatch(&self, value: &Value, ty: &Type, source: Source) -> Option<String> {
        match (value, &ty.base) {
            (Value::Null, _) => None,
            (Value::List(items), BaseType::List(item)) => items
                .iter()
                .find_map(|value| self.mismatch(value, item, source)),
            // A single value stands for a list of one.
            (value, BaseType::List(item)) => self.mismatch(value, item, source),
            (value, BaseType::Named(name)) => {
                if let Some(fields) = self.inputs.get(name.as_str()) {
                    let Value::Object(object) = value else {
                        return Some(format!("`{name}` is an input object"));
                    };
                    object.iter().find_map(|(key, value)| {
                        let ty = fields.get(key.as_str())?;
                        let problem = self.mismatch(value, ty, source)?;
                        Some(format!("{key}: {problem}"))
                    })
                } else if self.enums.contains(name.as_str()) {
                    let fits = match source {
                        Source::Json => matches!(value, Value::String(_)),
                        Source::Literal => matches!(value, Value::Enum(_)),
                    };
                    (!fits).then(|| match source {
                        Source::Json => format!("`{name}` is an enum, given as a string"),
                        Source::Literal => {
                            format!("`{name}` is an enum: its values are written without quotes")
                        }
                    })
                } else {
                    None
                }
            }
        }
    }
}

/// Where a value comes from: JSON writes an enum value as a string, a document without quotes.
#[derive(Debug, Clone, Copy)]
enum Source {
    Json,
    Literal,
}

/// The argument literals of a document's fields, through its fragments (each once).
struct Walk<'a> {
    types: &'a SchemaTypes,
    document: &'a ExecutableDocument,
    seen: HashSet<&'a Name>,
}

impl<'a> Walk<'a> {
    fn selections(&mut self, parent: &str, set: &'a SelectionSet) -> ServerResult<()> {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let arguments = self
                        .types
                        .arguments
                        .get(parent)
                        .and_then(|fields| fields.get(name));
                    for (argument, value) in &field.arguments {
                        let Some(ty) = arguments.and_then(|a| a.get(argument.node.as_str())) else {
                            continue;
                        };
                        // A variable's own type is checked where it is declared: as null here.
                        let literal = value
                            .node
                            .clone()
                            .into_const_with(|_| Ok::<_, std::convert::Infallible>(Value::Null));
                        let Ok(literal) = literal;
                        if let Some(problem) = self.types.mismatch(&literal, ty, Source::Literal) {
                            return Err(refusal(
                                format!(
                                    "Argument `{}` of `{name}` is not a `{ty}`: {problem}",
                                    argument.node
                                ),
                                value.pos,
                            ));
                        }
                    }
                    // Fields the schema does not list (introspection's) take no input of ours.
                    let child = self
                        .types
                        .fields
                        .get(parent)
                        .and_then(|fields| fields.get(name))
                        .map(|ty| named(ty).to_owned());
                    if let Some(child) = child {
                        self.selections(&child, &field.selection_set.node)?;
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if let Some(fragment) = self.document.fragments.get(name)
                        && self.seen.insert(name)
                    {
                        let on = fragment.node.type_condition.node.on.node.as_str();
                        self.selections(on, &fragment.node.selection_set.node)?;
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |condition| condition.node.on.node.as_str());
                    self.selections(on, &fragment.node.selection_set.node)?;
                }
            }
        }
        Ok(())
    }
}

/// The named type at the bottom of a type's lists.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(item) => named(item),
    }
}

fn refusal(message: String, pos: Pos) -> ServerError {
    ServerError::new(message, Some(pos))
}
