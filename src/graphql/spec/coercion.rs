//! Input values checked against their types before anything runs, where async-graphql lets a
//! value through to the resolver that reads it: an input object given as a string, a number
//! or a list (a variable or a literal), an enum given as a string literal, and a variable used
//! where its type does not fit (the specification's "All Variable Usages Are Allowed": a
//! `RegisterInput` variable for `createUser`'s input, a nullable one for a non-null argument).
//! The specification refuses such a request whole; let through, a mutation's earlier fields
//! would run and its later ones fail on the value.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, Selection, SelectionSet, Type, VariableDefinition,
};
use async_graphql::{Context, Name, ServerError, ServerResult, Value, Variables};
use async_graphql_value::Value as Written;

use super::schema_types::SchemaTypes;

impl SchemaTypes {
    /// Checks the argument literals and variable usages of every operation in `document`, and
    /// the variables of the operation `wanted`: each given one against its type, a required one
    /// neither left out nor null. Its left-out variables then take their defaults
    /// (async-graphql would not apply them to `@skip` and `@include`), or are null, as
    /// async-graphql would read them anyway: its validation skips every argument that holds a
    /// variable the request does not give, unknown and ill-typed input fields included.
    pub fn check_values(
        &self,
        document: &ExecutableDocument,
        wanted: Option<&str>,
        variables: &mut Variables,
    ) -> ServerResult<CheckedValues> {
        let mut skips = false;
        for (_, operation) in document.operations.iter() {
            let Some(root) = self.root(operation.node.ty) else {
                continue;
            };
            let definitions: HashMap<&Name, &VariableDefinition> = operation
                .node
                .variable_definitions
                .iter()
                .map(|definition| (&definition.node.name.node, &definition.node))
                .collect();
            let mut walk = Walk::new(self, document, definitions);
            for definition in &operation.node.variable_definitions {
                let variable = &definition.node;
                // No directive of this schema is allowed there, and async-graphql ignores them.
                if let Some(directive) = variable.directives.first() {
                    return Err(ServerError::new(
                        format!(
                            "Directive `@{}` may not be used on a variable definition",
                            directive.node.name.node
                        ),
                        Some(directive.pos),
                    ));
                }
                if let Some(default) = &variable.default_value {
                    let value = default.node.clone().into_value();
                    let ty = &variable.var_type.node;
                    // async-graphql's own refusal calls the variable an argument and drops `!`.
                    if matches!(value, Written::Null) && !ty.nullable {
                        return Err(ServerError::new(
                            format!(
                                "The default of variable `${}` is not a `{ty}`: it must not be null",
                                variable.name.node
                            ),
                            Some(default.pos),
                        ));
                    }
                    walk.check(&value, ty, false, Source::Document, default.pos, || {
                        format!("The default of variable `${}`", variable.name.node)
                    })?;
                }
            }
            walk.selections(root, &operation.node.selection_set.node)?;
            skips = skips || walk.skips;
        }
        let mut checked = CheckedValues {
            skips,
            left_out: LeftOut::default(),
        };
        let Some(operation) = crate::graphql::selected_operation(document, wanted) else {
            return Ok(checked);
        };
        // Values from JSON, which holds no variables.
        let walk = Walk::new(self, document, HashMap::new());
        for definition in &operation.node.variable_definitions {
            let variable = &definition.node;
            let name = &variable.name.node;
            let ty = &variable.var_type.node;
            // async-graphql would run the operation and fail the fields that use a required
            // variable left out or null one by one, or pass a null into a nullable argument.
            let required = |problem: &str| {
                Err(ServerError::new(
                    format!("Variable `${name}` of type `{ty}` {problem}"),
                    Some(definition.pos),
                ))
            };
            if let Some(value) = variables.get_mut(name) {
                whole_numbers_as_integers(value);
            }
            match (variables.get(name), &variable.default_value) {
                // A default stands in only for a variable left out, not for a null.
                (Some(Value::Null), _) if !ty.nullable => return required("must not be null"),
                (Some(value), _) => {
                    let value = value.clone().into_value();
                    walk.check(&value, ty, false, Source::Json, definition.pos, || {
                        format!("Variable `${name}`")
                    })?;
                }
                (None, Some(default)) => {
                    variables.insert(name.clone(), default.node.clone());
                }
                (None, None) if !ty.nullable => return required("was not provided"),
                (None, None) => {
                    checked.left_out.0.insert(name.clone());
                    variables.insert(name.clone(), Value::Null);
                }
            }
        }
        Ok(checked)
    }
}

/// What [`SchemaTypes::check_values`] found beside the refusals.
pub struct CheckedValues {
    /// Whether the document skips fields (`@skip`, `@include`) anywhere.
    pub skips: bool,
    pub left_out: LeftOut,
}

/// The variables the request left out that had no default (now null in its variables), kept
/// in the request's data: the specification leaves an input field given as one of them out,
/// where async-graphql would pass null.
#[derive(Debug, Default)]
pub struct LeftOut(HashSet<Name>);

/// Where a value comes from: JSON writes an enum value as a string, a document without quotes.
#[derive(Debug, Clone, Copy)]
enum Source {
    Json,
    Document,
}

/// One operation's values, through its fragments (each once).
struct Walk<'a> {
    types: &'a SchemaTypes,
    document: &'a ExecutableDocument,
    /// The operation's variables, for their usages.
    definitions: HashMap<&'a Name, &'a VariableDefinition>,
    seen: HashSet<&'a Name>,
    /// Whether a `@skip` or `@include` was met.
    skips: bool,
}

impl<'a> Walk<'a> {
    fn new(
        types: &'a SchemaTypes,
        document: &'a ExecutableDocument,
        definitions: HashMap<&'a Name, &'a VariableDefinition>,
    ) -> Self {
        Self {
            types,
            document,
            definitions,
            seen: HashSet::new(),
            skips: false,
        }
    }

    fn selections(&mut self, parent: &str, set: &'a SelectionSet) -> ServerResult<()> {
        for item in &set.items {
            let (directives, nested) = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let arguments = self
                        .types
                        .arguments
                        .get(parent)
                        .and_then(|fields| fields.get(name));
                    for (argument, value) in &field.arguments {
                        // Arguments the schema does not list (introspection's) are left to
                        // async-graphql.
                        let Some((ty, has_default)) =
                            arguments.and_then(|a| a.get(argument.node.as_str()))
                        else {
                            continue;
                        };
                        self.check(
                            &value.node,
                            ty,
                            *has_default,
                            Source::Document,
                            value.pos,
                            || format!("Argument `{}` of `{name}`", argument.node),
                        )?;
                    }
                    let child = self
                        .types
                        .fields
                        .get(parent)
                        .and_then(|fields| fields.get(name))
                        .map(|ty| named(ty).to_owned());
                    if let Some(child) = child {
                        self.selections(&child, &field.selection_set.node)?;
                    }
                    (&field.directives, None)
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    let fragment = self
                        .document
                        .fragments
                        .get(name)
                        .filter(|_| self.seen.insert(name))
                        .map(|fragment| {
                            let on = fragment.node.type_condition.node.on.node.as_str();
                            (on, &fragment.node.selection_set.node)
                        });
                    (&spread.node.directives, fragment)
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |condition| condition.node.on.node.as_str());
                    (
                        &fragment.node.directives,
                        Some((on, &fragment.node.selection_set.node)),
                    )
                }
            };
            for directive in directives {
                let name = directive.node.name.node.as_str();
                if !matches!(name, "skip" | "include") {
                    continue;
                }
                self.skips = true;
                // What `@skip(if:)` and `@include(if:)` take.
                let condition = Type {
                    base: BaseType::Named(Name::new("Boolean")),
                    nullable: false,
                };
                for (argument, value) in &directive.node.arguments {
                    let what = || format!("Argument `{}` of `@{name}`", argument.node);
                    // async-graphql's validation takes any literal here (`if: "x"` skipped
                    // nothing), where a field's arguments are checked.
                    let literal = match &value.node {
                        Written::Null => Some("it takes true or false".to_owned()),
                        other => builtin_scalar_mismatch("Boolean", other),
                    };
                    if let Some(problem) = literal {
                        return Err(ServerError::new(
                            format!("{} is not a `{condition}`: {problem}", what()),
                            Some(value.pos),
                        ));
                    }
                    self.check(
                        &value.node,
                        &condition,
                        false,
                        Source::Document,
                        value.pos,
                        what,
                    )?;
                }
            }
            if let Some((on, set)) = nested {
                let on = on.to_owned();
                self.selections(&on, set)?;
            }
        }
        Ok(())
    }

    /// Refuses `value` at a position of type `ty` (with a default or not) when
    /// [`Self::mismatch`] finds it does not fit; `what` names the position.
    fn check(
        &self,
        value: &Written,
        ty: &Type,
        has_default: bool,
        source: Source,
        pos: async_graphql::Pos,
        what: impl FnOnce() -> String,
    ) -> ServerResult<()> {
        match self.mismatch(value, ty, has_default, source) {
            Some(problem) => Err(ServerError::new(
                format!("{} is not a `{ty}`: {problem}", what()),
                Some(pos),
            )),
            None => Ok(()),
        }
    }

    /// What is wrong with `value` as a `ty`, among what async-graphql lets through; the rest
    /// (scalars, enum names, unknown or missing fields) its validation refuses itself.
    fn mismatch(
        &self,
        value: &Written,
        ty: &Type,
        has_default: bool,
        source: Source,
    ) -> Option<String> {
        let types = self.types;
        match (value, &ty.base) {
            (Written::Variable(name), _) => {
                // An undefined variable is async-graphql's to refuse.
                let variable = self.definitions.get(name)?;
                (!usage_allowed(variable, ty, has_default))
                    .then(|| format!("variable `${name}` is a `{}`", variable.var_type.node))
            }
            (Written::Null, _) => None,
            (Written::List(items), BaseType::List(item)) => items
                .iter()
                .find_map(|value| self.mismatch(value, item, false, source)),
            // A single value stands for a list of one.
            (value, BaseType::List(item)) => self.mismatch(value, item, false, source),
            (value, BaseType::Named(name)) => {
                if let Some(fields) = types.inputs.get(name.as_str()) {
                    let Written::Object(object) = value else {
                        return Some(format!("`{name}` is an input object"));
                    };
                    object.iter().find_map(|(key, value)| {
                        let (ty, has_default) = fields.get(key.as_str())?;
                        let problem = self.mismatch(value, ty, *has_default, source)?;
                        Some(format!("{key}: {problem}"))
                    })
                } else if types.enums.contains(name.as_str()) {
                    let fits = match source {
                        Source::Json => matches!(value, Written::String(_)),
                        Source::Document => matches!(value, Written::Enum(_)),
                    };
                    (!fits).then(|| match source {
                        Source::Json => format!("`{name}` is an enum: send its value as a string"),
                        Source::Document if matches!(value, Written::String(_)) => {
                            format!("`{name}` is an enum: its values are written without quotes")
                        }
                        Source::Document => format!("`{name}` is an enum: give one of its values"),
                    })
                } else if let Source::Json = source {
                    builtin_scalar_mismatch(name.as_str(), value)
                } else if name == "Int" && matches!(value, Written::Number(_)) {
                    // async-graphql's validation takes any 64-bit whole number literal as an
                    // `Int`, which then fails as its field runs (the document half run).
                    builtin_scalar_mismatch("Int", value)
                } else {
                    None
                }
            }
        }
    }
}

/// JSON does not tell `1.0` from `1`, and clients send either for an `Int` (Python's and
/// Java's JSON writers the first for a number held as a float), as JavaScript's GraphQL
/// servers read both: a whole number written as a fraction or with an exponent is read as
/// the integer it is. A document's literal `1.0` stays a `Float`, as the specification says.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(whole) = number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e18)
            {
                // Exact: a whole number below 2^63 in magnitude converts without loss.
                *number = serde_json::Number::from(whole as i64);
            }
        }
        Value::List(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// What is wrong with a value for one of GraphQL's own scalars (a variable's, from JSON, or a
/// directive's literal), decided by
/// async-graphql's own parsing: its validation would refuse the value too, but once for each
/// argument the variable reaches and without naming the variable. The value is not repeated.
fn builtin_scalar_mismatch(name: &str, value: &Written) -> Option<String> {
    use async_graphql::InputType;
    fn fails<T: InputType>(value: async_graphql::Value) -> bool {
        T::parse(Some(value)).is_err()
    }
    let value = value.clone().into_const()?;
    let (failed, expected) = match name {
        "Int" => (
            fails::<i32>(value),
            "a whole number from -2147483648 to 2147483647",
        ),
        "Float" => (fails::<f64>(value), "a number"),
        "String" => (fails::<String>(value), "a string"),
        "Boolean" => (fails::<bool>(value), "true or false"),
        "ID" => (
            fails::<async_graphql::ID>(value),
            "a string or a whole number",
        ),
        _ => return None,
    };
    failed.then(|| format!("it takes {expected}"))
}

/// The specification's IsVariableUsageAllowed: a nullable variable fits a non-null position
/// only with a default of its own or of the position's.
fn usage_allowed(variable: &VariableDefinition, location: &Type, location_default: bool) -> bool {
    let ty = &variable.var_type.node;
    if !location.nullable && ty.nullable {
        let own_default = variable
            .default_value
            .as_ref()
            .is_some_and(|default| default.node != Value::Null);
        return (own_default || location_default) && bases_compatible(&ty.base, &location.base);
    }
    types_compatible(ty, location)
}

/// The specification's AreTypesCompatible.
fn types_compatible(variable: &Type, location: &Type) -> bool {
    (location.nullable || !variable.nullable) && bases_compatible(&variable.base, &location.base)
}

fn bases_compatible(variable: &BaseType, location: &BaseType) -> bool {
    match (variable, location) {
        (BaseType::List(variable), BaseType::List(location)) => {
            types_compatible(variable, location)
        }
        (BaseType::Named(variable), BaseType::Named(location)) => variable == location,
        _ => false,
    }
}

/// The named type at the bottom of a type's lists.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(item) => named(item),
    }
}

/// The fields of argument `argument`'s object literal given as a variable the request left out
/// ([`LeftOut`]). The specification leaves such a field out; async-graphql passes it on as
/// null, so `updateUser(input: {firstName: $first, phone: $phone})` sent without `phone`
/// would clear the phone.
pub fn left_out_fields(ctx: &Context<'_>, argument: &str) -> Vec<String> {
    let Some(LeftOut(left_out)) = ctx.data_opt::<LeftOut>() else {
        return Vec::new();
    };
    let literal = ctx
        .item
        .node
        .arguments
        .iter()
        .find(|(name, _)| name.node == argument)
        .map(|(_, value)| &value.node);
    let Some(Written::Object(fields)) = literal else {
        return Vec::new();
    };
    fields
        .iter()
        .filter(|(_, value)| matches!(value, Written::Variable(name) if left_out.contains(name)))
        .map(|(key, _)| key.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_variables_must_be_given_and_not_null() {
        let schema = crate::graphql::build_schema(None, crate::graphql::Limits::default());
        let types = SchemaTypes::from_sdl(&schema.sdl());
        let check = |query: &str, name: Option<&str>, variables: serde_json::Value| {
            let document = async_graphql::parser::parse_query(query).expect("parses");
            let mut variables = Variables::from_json(variables);
            types
                .check_values(&document, name, &mut variables)
                .map(drop)
                .map_err(|err| err.message)
        };
        let none = serde_json::json!({});
        let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
        assert_eq!(
            check(login, None, none.clone()),
            Err("Variable `$i` of type `LoginInput!` was not provided".to_owned())
        );
        assert_eq!(
            check(login, None, serde_json::json!({"i": null})),
            Err("Variable `$i` of type `LoginInput!` must not be null".to_owned())
        );
        assert_eq!(check(login, None, serde_json::json!({"i": {}})), Ok(()));
        // Nullable, or with a default: may be left out.
        assert_eq!(
            check("query($f: Int) { me { id } }", None, none.clone()),
            Ok(())
        );
        assert_eq!(
            check("query($f: Int! = 5) { me { id } }", None, none.clone()),
            Ok(())
        );
        assert_eq!(
            check(
                "query($f: Int! = 5) { me { id } }",
                None,
                serde_json::json!({"f": null})
            ),
            Err("Variable `$f` of type `Int!` must not be null".to_owned())
        );
        assert_eq!(
            check("query($f: Int! = null) { me { id } }", None, none.clone()),
            Err("The default of variable `$f` is not a `Int!`: it must not be null".to_owned())
        );
        assert_eq!(
            check(
                "query($f: Int) { me { id } }",
                None,
                serde_json::json!({"f": null})
            ),
            Ok(())
        );
        // A JSON value for one of GraphQL's own scalars is refused once, naming the variable
        // (and the input field), without repeating the value.
        let page = "query($n: Int) { users(first: $n) { totalCount } }";
        assert_eq!(
            check(page, None, serde_json::json!({"n": "secret"})),
            Err(
                "Variable `$n` is not a `Int`: it takes a whole number from -2147483648 to \
                 2147483647"
                    .to_owned()
            )
        );
        for refused in [serde_json::json!(1.5), serde_json::json!(3_000_000_000_i64)] {
            assert!(check(page, None, serde_json::json!({"n": refused})).is_err());
        }
        assert_eq!(check(page, None, serde_json::json!({"n": 5})), Ok(()));
        let user = "query($id: ID) { user(id: $id) { id } }";
        assert_eq!(check(user, None, serde_json::json!({"id": 5})), Ok(()));
        assert_eq!(check(user, None, serde_json::json!({"id": "5"})), Ok(()));
        assert!(check(user, None, serde_json::json!({"id": true})).is_err());
        let refused = check(
            login,
            None,
            serde_json::json!({"i": {"login": 5, "password": "x"}}),
        );
        assert_eq!(
            refused,
            Err("Variable `$i` is not a `LoginInput!`: login: it takes a string".to_owned())
        );
        // `@skip` and `@include` take a Boolean literal, never null.
        for (query, refused) in [
            ("{ me { id } }", false),
            ("{ me @include(if: true) { id } }", false),
            ("query($b: Boolean!) { me @skip(if: $b) { id } }", false),
            ("{ me @include(if: \"x\") { id } }", true),
            ("{ me @skip(if: 1) { id } }", true),
            ("{ me @skip(if: null) { id } }", true),
        ] {
            let variables = serde_json::json!({"b": true});
            assert_eq!(check(query, None, variables).is_err(), refused, "{query}");
        }
        // A literal beyond 32 bits is no `Int` either, in an argument or a default, in an
        // operation that does not run too.
        for query in [
            "{ users(first: 2147483648) { totalCount } }",
            "{ users(first: -2147483649) { totalCount } }",
            "query($n: Int = 3000000000) { users(first: $n) { totalCount } }",
            "query A { users(first: 2147483648) { totalCount } } query B { me { id } }",
        ] {
            let refused = check(query, Some("B"), none.clone());
            assert!(
                refused.is_err_and(|e| e.contains("-2147483648 to")),
                "{query}"
            );
        }
        assert_eq!(
            check(
                "{ users(first: 2147483647) { totalCount } }",
                None,
                none.clone()
            ),
            Ok(())
        );
        // Only the selected operation's variables count.
        let two = "query A($f: Int!) { me { id } } query B { me { id } }";
        assert_eq!(check(two, Some("B"), none.clone()), Ok(()));
        assert!(check(two, Some("A"), none).is_err());
    }
}
