//! Bounds on what one document may ask for, checked right after parsing, before anything runs:
//! its length and its variables' sizes, depth, aliases and directives, how many fields and
//! bytes of argument values it comes to with its fragments spread (a spread of a fragment it
//! does not define is refused first), and how many password checks it would cause; then the
//! merging of its fields ([`super::spec::overlap`]). Complexity is async-graphql's own limit, set in
//! [`super::build_schema`].

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Value, Variables};

use super::recursion::{MAX_RECURSION_DEPTH, Unwalkable};
use crate::config::Settings;

/// The most bytes of argument values a document's fields may receive in all, fragments spread.
const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Mutation fields that hash or check a password: argon2 work a document may cause once.
const PASSWORD_FIELDS: [&str; 3] = ["login", "register", "createUser"];
/// `updateUser` checks or hashes a password only when its input sets one of these.
const UPDATE_PASSWORD_INPUTS: [&str; 2] = ["password", "currentPassword"];
/// Any field whose step-up `verification` gives a password checks it.
const VERIFICATION_PASSWORD: [&str; 1] = ["password"];

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    pub complexity: usize,
    pub aliases: usize,
    pub directives: usize,
    pub query_bytes: usize,
    pub introspection: bool,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            depth: settings.max_depth,
            complexity: settings.max_complexity,
            aliases: settings.max_aliases,
            directives: settings.max_directives,
            query_bytes: settings.max_query_bytes,
            introspection: settings.introspection,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_settings(&Settings::with_database(String::new()))
    }
}

/// Each operation's name and first root field, recorded for the request log and metrics.
#[derive(Debug, Default)]
pub struct OperationInfo(std::sync::OnceLock<Vec<(Option<String>, String)>>);

impl OperationInfo {
    /// The first root field of the operation `name` selects (the only one when `None`).
    pub fn root_field(&self, name: Option<&str>) -> Option<String> {
        let operations = self.0.get()?;
        let found = match name {
            Some(name) => operations.iter().find(|(n, _)| n.as_deref() == Some(name)),
            None if operations.len() == 1 => operations.first(),
            None => None,
        };
        found.map(|(_, field)| field.clone())
    }
}

/// Checks the document of `request` against `limits` and records its operations in `info`;
/// its text was readied by [`prepare_query`] first. The document is parsed here once and kept
/// in the request, so execution does not parse it again; a document that does not parse is
/// refused with async-graphql's own parse error.
///
/// This runs in the HTTP handler rather than as a schema extension: any registered extension
/// makes async-graphql wrap every field and list item of a response in the extension chain,
/// which slows the `users` page (benches/RESULTS.md).
pub fn check(
    limits: &Limits,
    request: &mut async_graphql::Request,
    info: &OperationInfo,
) -> ServerResult<()> {
    // Set aside while the parsed document borrows the request.
    let variables = std::mem::take(&mut request.variables);
    let checked = variable_weights(&variables, limits.query_bytes).and_then(|weights| {
        request
            .parsed_query()
            .map_err(without_source)
            .and_then(|document| check_document(limits, document, &variables, weights, info))
    });
    request.variables = variables;
    checked?;
    super::spec::input_fields::check(&request.query)?;
    // Once every limit has judged the document as written.
    let merged = request
        .parsed_query()
        .ok()
        .and_then(super::spec::repeats::without_repeats);
    if let Some(merged) = merged {
        request.set_parsed_query(merged);
    }
    Ok(())
}

/// The parser's syntax errors quote the whole source line under a caret diagram: a password
/// typed into a literal would travel on into client error reports and consoles, and one long
/// line makes a message of kilobytes. `locations` has the position; the message keeps what
/// was expected there.
fn without_source(mut error: ServerError) -> ServerError {
    if error.message.trim_start().starts_with("-->") {
        let expected = error
            .message
            .lines()
            .rev()
            .find_map(|line| line.trim_start().strip_prefix("= "));
        error.message = match expected {
            Some(expected) => format!("Syntax error: {expected}"),
            None => "Syntax error".to_owned(),
        };
    }
    error
}

/// Readies the request's query for the parser, or refuses it: within the length limit, and
/// nesting brackets (`{`, `[`) at most [`MAX_NESTING`] deep. The parser recurses once a
/// level, for values and list types without a bound of its own, and a few kilobytes of
/// `[[[…]]]` would overflow a worker thread's stack and abort the process. Its string escapes
/// are then written as the parser reads them (`spec::strings`).
pub fn prepare_query(limits: &Limits, request: &mut async_graphql::Request) -> ServerResult<()> {
    let query = &request.query;
    if query.len() > limits.query_bytes {
        return Err(refusal(format!(
            "The query is {} bytes long; at most {} are accepted",
            query.len(),
            limits.query_bytes
        )));
    }
    if nests_deeper(query, MAX_NESTING) {
        return Err(refusal(format!(
            "The query nests brackets more than {MAX_NESTING} deep"
        )));
    }
    if let Some(lines) = lone_carriage_returns(query) {
        request.query = lines;
    }
    if let Some(mended) = super::spec::strings::mend(&request.query) {
        request.query = mended;
    }
    Ok(())
}

/// `query` with each carriage return not followed by a line feed made one, when it holds
/// any. The specification ends a line at either, the parser at a line feed only, and would
/// place every error of a document written with carriage returns alone on its first line.
/// Nothing else changes: a block string's value reads either as a line feed, and no other
/// token may hold one.
fn lone_carriage_returns(query: &str) -> Option<String> {
    let bytes = query.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !(0..bytes.len()).any(lone) {
        return None;
    }
    let lines: Vec<u8> = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    // Only an ASCII byte changed, so the text is still UTF-8.
    String::from_utf8(lines).ok()
}

/// Far deeper than any document of this schema nests (the parser refuses selection sets past
/// 64), far shallower than the parser's recursion can go.
const MAX_NESTING: usize = 100;

/// Whether `{` and `[` nest deeper than `limit` in `query`, outside strings and comments.
fn nests_deeper(query: &str, limit: usize) -> bool {
    use super::spec::strings::{Lexed, lex};
    use std::ops::ControlFlow;
    let mut depth = 0usize;
    lex(query, |lexed| {
        match lexed {
            Lexed::Code(_, b'{' | b'[') => {
                depth += 1;
                if depth > limit {
                    return ControlFlow::Break(());
                }
            }
            Lexed::Code(_, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
        ControlFlow::Continue(())
    })
    .is_break()
}

/// About the bytes `value` takes as JSON, counted no further than past `bound`.
fn weight(value: &Value, bound: usize) -> usize {
    match value {
        Value::String(text) => text.len() + 2,
        Value::Enum(name) => name.len() + 2,
        Value::Binary(bytes) => bytes.len(),
        Value::List(items) => {
            let mut total = 2;
            for item in items {
                total += weight(item, bound.saturating_sub(total)) + 1;
                if total > bound {
                    break;
                }
            }
            total
        }
        Value::Object(fields) => {
            let mut total = 2;
            for (key, item) in fields {
                total += key.len() + 4 + weight(item, bound.saturating_sub(total));
                if total > bound {
                    break;
                }
            }
            total
        }
        Value::Null | Value::Boolean(_) | Value::Number(_) => 8,
    }
}

/// Each variable's [`weight`], refused over `bound`: async-graphql copies a variable's value at
/// each of its uses while it validates, and a field keeps its copy while it resolves, so a
/// large value used at many arguments would cost that many times its size. No input of this
/// schema comes near the bound.
fn variable_weights(variables: &Variables, bound: usize) -> ServerResult<HashMap<&Name, usize>> {
    variables
        .iter()
        .map(|(name, value)| match weight(value, bound) {
            weight if weight > bound => Err(refusal(format!(
                "Variable `${name}` holds more than {bound} bytes, the most accepted"
            ))),
            weight => Ok((name, weight)),
        })
        .collect()
}

/// [`weight`] of a value as written in the document: a variable weighs what it holds.
fn written_weight(value: &async_graphql_value::Value, variables: &HashMap<&Name, usize>) -> usize {
    use async_graphql_value::Value as Written;
    match value {
        Written::Variable(name) => variables.get(name).copied().unwrap_or(8),
        Written::String(text) => text.len() + 2,
        Written::Enum(name) => name.len() + 2,
        Written::Binary(bytes) => bytes.len(),
        Written::List(items) => items
            .iter()
            .map(|item| written_weight(item, variables) + 1)
            .fold(2, usize::saturating_add),
        Written::Object(fields) => fields
            .iter()
            .map(|(key, item)| key.len() + 4 + written_weight(item, variables))
            .fold(2, usize::saturating_add),
        Written::Null | Written::Boolean(_) | Written::Number(_) => 8,
    }
}

/// The operation a request runs: the one named `wanted`, or the only one.
pub fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    wanted: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    let mut operations = document.operations.iter();
    let selected = match wanted {
        Some(wanted) => operations.find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted)),
        // Several operations and no name: async-graphql refuses the document.
        None if document.operations.iter().count() == 1 => operations.next(),
        None => None,
    };
    selected.map(|(_, operation)| operation)
}

fn check_document<'a>(
    limits: &Limits,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    weights: HashMap<&'a Name, usize>,
    info: &OperationInfo,
) -> ServerResult<()> {
    let roots = document
        .operations
        .iter()
        .map(|(name, operation)| {
            let field = operation
                .node
                .selection_set
                .node
                .items
                .iter()
                .find_map(|item| match &item.node {
                    Selection::Field(field) => Some(field.node.name.node.to_string()),
                    _ => None,
                });
            (
                name.map(|n| n.to_string()),
                field.unwrap_or_else(|| "fragment".to_owned()),
            )
        })
        .collect();
    let _ = info.0.set(roots);
    // Before anything walks the document by recursing. Refused here, a fragment is placed
    // where it is defined, as the engine's refusals are placed, for editors to point at.
    let at = |name: &Name| document.fragments.get(name).map(|fragment| fragment.pos);
    match super::recursion::check(document) {
        Ok(()) => {}
        Err(Unwalkable::Depth) => {
            return Err(refusal(format!(
                "The recursion depth of the query cannot be greater than `{MAX_RECURSION_DEPTH}`"
            )));
        }
        Err(Unwalkable::Cycle(name)) => {
            return Err(ServerError::new(
                format!("Cannot spread fragment \"{name}\" within itself"),
                at(name),
            ));
        }
        Err(Unwalkable::Unused(name)) => {
            return Err(ServerError::new(
                format!("Fragment \"{name}\" is never used"),
                at(name),
            ));
        }
    }
    let counts = Counts::of(document, variables, weights);
    if let Some(spread) = &counts.unknown_fragment {
        return Err(ServerError::new(
            format!("Unknown fragment \"{}\"", spread.node),
            Some(spread.pos),
        ));
    }
    if counts.introspects && !limits.introspection {
        return Err(refusal("Introspection is turned off on this server".into()));
    }
    if counts.depth > limits.depth {
        return Err(refusal(format!(
            "The query is nested {} levels deep; at most {} are accepted",
            counts.depth, limits.depth
        )));
    }
    if counts.fields > limits.complexity {
        return Err(refusal(format!(
            "The document selects {} fields, its fragments spread and skipped fields counted; at \
             most {} (the complexity limit) are accepted",
            counts.fields, limits.complexity
        )));
    }
    if counts.input > MAX_INPUT_BYTES {
        return Err(refusal(format!(
            "The document's fields receive {} bytes of argument values, its fragments spread \
             (a variable's at each use); at most {MAX_INPUT_BYTES}, as much as a request body \
             may hold",
            counts.input
        )));
    }
    if counts.aliases > limits.aliases {
        return Err(refusal(format!(
            "The document has {} aliases; at most {} are accepted",
            counts.aliases, limits.aliases
        )));
    }
    if counts.directives > limits.directives {
        return Err(refusal(format!(
            "The document has {} directives; at most {} are accepted",
            counts.directives, limits.directives
        )));
    }
    if counts.repeats_mutations {
        return Err(refusal(
            "The mutation runs a field more than once under one response key (through \
             fragments spread more than once, or the same field selected again); select each \
             mutation once"
                .into(),
        ));
    }
    if counts.schema_runs > MAX_SCHEMA_RUNS || counts.type_runs > MAX_TYPE_RUNS {
        return Err(refusal(format!(
            "The operation runs `__schema` {} and `__type` {} times, fragments spread; at most \
             {MAX_SCHEMA_RUNS} and {MAX_TYPE_RUNS} are accepted",
            counts.schema_runs, counts.type_runs
        )));
    }
    if counts.password_checks > 1 {
        return Err(refusal(format!(
            "The document selects {} fields that check or set a password ({}, updateUser \
             with a password, or a verification with a password); send one per request",
            counts.password_checks,
            PASSWORD_FIELDS.join(", ")
        )));
    }
    // Walked only for a document that asks for introspection at all.
    let repeats = counts.introspects
        && document.operations.iter().any(|(_, operation)| {
            repeats_in_introspection(document, &operation.node.selection_set.node, false)
        });
    if repeats {
        return Err(refusal(
            "The document selects a field of `__schema` or `__type` more than once in one \
             selection (fragments spread): each would answer from the schema again"
                .into(),
        ));
    }
    super::spec::overlap::check(document)
}

/// Whether a response key comes more than once in one selection set under `__schema` or
/// `__type`, fragments spread as async-graphql spreads them (each time). async-graphql
/// resolves every occurrence where the specification merges them, and each answers from the
/// whole schema, so a small document repeating one through a fragment costs far more than
/// its size. `__typename` costs nothing and may repeat: Apollo and urql add it to
/// every selection set, fragments included. Only for documents whose fragments do not spread
/// themselves, and within the complexity limit, which bounds the walk.
fn repeats_in_introspection(
    document: &ExecutableDocument,
    set: &SelectionSet,
    inside: bool,
) -> bool {
    let mut fields = Vec::new();
    spread_fields(document, set, &mut fields);
    if inside {
        let mut keys = HashSet::new();
        if !fields
            .iter()
            .filter(|field| field.name.node != "__typename")
            .all(|field| keys.insert(&field.response_key().node))
        {
            return true;
        }
    }
    fields.iter().any(|field| {
        let name = field.name.node.as_str();
        repeats_in_introspection(
            document,
            &field.selection_set.node,
            inside || name == "__schema" || name == "__type",
        )
    })
}

/// The fields `set` selects, each fragment spread every time it is (as async-graphql runs them).
fn spread_fields<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    fields: &mut Vec<&'a async_graphql::parser::types::Field>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => fields.push(&field.node),
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    spread_fields(document, &fragment.node.selection_set.node, fields);
                }
            }
            Selection::InlineFragment(inline) => {
                spread_fields(document, &inline.node.selection_set.node, fields);
            }
        }
    }
}

/// `__schema` fields an operation may run: a client's introspection query asks once.
const MAX_SCHEMA_RUNS: usize = 1;
/// `__type` fields an operation may run.
const MAX_TYPE_RUNS: usize = 10;

/// The message of async-graphql's own complexity refusal.
const TOO_COMPLEX: &str = "Query is too complex.";

/// Names the limit in async-graphql's complexity refusal, as every other limit's refusal
/// does.
pub fn name_complexity_limit(response: &mut async_graphql::Response, limit: usize) {
    for error in &mut response.errors {
        if error.message == TOO_COMPLEX {
            let weight = super::types::CREDENTIAL_WEIGHT;
            error.message = format!(
                "The query is too complex: its complexity (each field, times `first` for a \
                 page's fields, {weight} times for a user's `sessions` and `apiTokens` and a \
                 token's `createdBy`) is over {limit}"
            );
        }
    }
}

/// A refusal of the document; `finalize_response` gives it its code, as it does the engine's.
fn refusal(message: String) -> ServerError {
    ServerError::new(message, None)
}

/// What a document holds, as written: every operation and fragment once.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    /// The deepest field nesting, fragments expanded (as async-graphql counts it), except that
    /// introspection's `ofType` adds no level: it is a chain of single objects as long as a
    /// type's modifiers, and clients' standard introspection query nests it seven deep.
    depth: usize,
    aliases: usize,
    directives: usize,
    /// Whether it asks for `__schema` or `__type` (`__typename` is no introspection).
    introspects: bool,
    /// Password-checking mutation fields over all operations, fragments expanded.
    password_checks: usize,
    /// Fields of every operation with its fragments spread: what async-graphql's own
    /// validation walks, which a few fragments that each spread the next twice make
    /// exponential in the document's length.
    fields: usize,
    /// Bytes of the argument values those fields receive (a variable's at each use): each
    /// field copies its own, so a fragment spread many times multiplies a large value.
    input: usize,
    /// A fragment spread that the document does not define. Such a spread counts no fields,
    /// yet async-graphql spreads everything above it, once per path, before refusing it.
    unknown_fragment: Option<Positioned<Name>>,
    /// Whether a mutation runs a root field more often than it has response keys.
    /// async-graphql runs every occurrence (a fragment once per spread) where the
    /// specification merges them into one, so one document could repeat a write thousands of
    /// times under the alias limit.
    repeats_mutations: bool,
    /// The most `__schema` and `__type` fields an operation runs, a fragment once per spread:
    /// each answers from the whole schema, so spreading one a few hundred times costs far
    /// more than the complexity limit's count of its fields says.
    schema_runs: usize,
    type_runs: usize,
}

/// Root fields of an operation, as async-graphql runs them: every occurrence, a fragment once
/// per spread.
#[derive(Debug, Clone, Copy, Default)]
struct RootRuns {
    fields: usize,
    schema: usize,
    types: usize,
}

impl Counts {
    /// `weights` are the given variables' ([`variable_weights`]).
    fn of<'a>(
        document: &'a ExecutableDocument,
        variables: &'a Variables,
        mut weights: HashMap<&'a Name, usize>,
    ) -> Self {
        let mut counts = Counts::default();
        // A variable left out takes its default, which is copied at each use the same way.
        for (_, operation) in document.operations.iter() {
            for definition in &operation.node.variable_definitions {
                let definition = &definition.node;
                if let Some(default) = &definition.default_value {
                    let heaviest = weights.entry(&definition.name.node).or_default();
                    *heaviest = (*heaviest).max(weight(&default.node, usize::MAX));
                }
            }
        }
        // A fragment's size is the same wherever it is spread: one walker serves every
        // operation.
        let mut sizes = Spread::new(&document.fragments);
        sizes.weights = weights;
        for (_, operation) in document.operations.iter() {
            let operation = &operation.node;
            counts.directives += operation.directives.len();
            counts.directives += operation
                .variable_definitions
                .iter()
                .map(|definition| definition.node.directives.len())
                .sum::<usize>();
            counts.add_selections(&operation.selection_set.node, &document.fragments);
            let size = sizes.size(&operation.selection_set.node);
            counts.depth = counts.depth.max(size.depth);
            // Summed: async-graphql validates every operation of a document, not only the one
            // it runs.
            counts.fields = counts.fields.saturating_add(size.fields);
            counts.input = counts.input.saturating_add(size.input);
            let runs = Spread::new(&document.fragments).root_runs(&operation.selection_set.node);
            counts.schema_runs = counts.schema_runs.max(runs.schema);
            counts.type_runs = counts.type_runs.max(runs.types);
            if operation.ty == OperationType::Mutation {
                let mut keys = HashSet::new();
                super::spec::schema_types::each_field(
                    document,
                    &operation.selection_set.node,
                    &mut |field| {
                        if field.name.node != "__typename" {
                            keys.insert(&field.response_key().node);
                        }
                    },
                );
                counts.repeats_mutations |= runs.fields > keys.len();
                // A variable not sent takes its declared default. Looked up, never copied: a
                // document may hold hundreds of operations over a large variables object.
                let defaults: HashMap<&Name, &Value> = operation
                    .variable_definitions
                    .iter()
                    .filter_map(|definition| {
                        let definition = &definition.node;
                        let default = definition.default_value.as_ref()?;
                        Some((&definition.name.node, &default.node))
                    })
                    .collect();
                let variable =
                    |name: &Name| variables.get(name).or_else(|| defaults.get(name).copied());
                counts.password_checks = counts.password_checks.saturating_add(
                    Spread::new(&document.fragments)
                        .password_checks(&operation.selection_set.node, &variable),
                );
            }
        }
        for fragment in document.fragments.values() {
            counts.directives += fragment.node.directives.len();
            counts.add_selections(&fragment.node.selection_set.node, &document.fragments);
        }
        counts
    }

    fn add_selections(
        &mut self,
        set: &SelectionSet,
        fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    ) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    self.aliases += usize::from(field.node.alias.is_some());
                    self.introspects |=
                        matches!(field.node.name.node.as_str(), "__schema" | "__type");
                    self.directives += field.node.directives.len();
                    self.add_selections(&field.node.selection_set.node, fragments);
                }
                Selection::FragmentSpread(spread) => {
                    self.directives += spread.node.directives.len();
                    let name = &spread.node.fragment_name.node;
                    if self.unknown_fragment.is_none() && !fragments.contains_key(name) {
                        self.unknown_fragment = Some(spread.node.fragment_name.clone());
                    }
                }
                Selection::InlineFragment(inline) => {
                    self.directives += inline.node.directives.len();
                    self.add_selections(&inline.node.selection_set.node, fragments);
                }
            }
        }
    }
}

/// The nesting and the number of fields of a selection set, fragments spread, and the bytes
/// of the argument values its fields receive.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    depth: usize,
    fields: usize,
    input: usize,
}

/// Walks selection sets with their fragments spread, each fragment's result worked out once
/// and reused, so the walk is as long as the document however often fragments spread each
/// other. A fragment met again inside itself counts nothing (documents with one are refused
/// before, by [`super::recursion`]).
struct Spread<'a, T> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    done: HashMap<Name, T>,
    open: HashSet<Name>,
    /// Each given variable's [`weight`], for the input a field receives.
    weights: HashMap<&'a Name, usize>,
}

impl<'a, T: Copy + Default> Spread<'a, T> {
    fn new(fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>) -> Self {
        Self {
            fragments,
            done: HashMap::new(),
            open: HashSet::new(),
            weights: HashMap::new(),
        }
    }

    /// `walk` of fragment `name`'s selection set, from memory after the first time.
    fn fragment(&mut self, name: &Name, walk: impl FnOnce(&mut Self, &'a SelectionSet) -> T) -> T {
        if let Some(done) = self.done.get(name) {
            return *done;
        }
        let Some(fragment) = self.fragments.get(name) else {
            return T::default();
        };
        if !self.open.insert(name.clone()) {
            return T::default();
        }
        let result = walk(self, &fragment.node.selection_set.node);
        self.open.remove(name);
        self.done.insert(name.clone(), result);
        result
    }
}

impl<'a> Spread<'a, Size> {
    /// How deep `set` nests fields, and how many fields it holds.
    fn size(&mut self, set: &'a SelectionSet) -> Size {
        let mut total = Size::default();
        for item in &set.items {
            let here = match &item.node {
                Selection::Field(field) => {
                    let below = self.size(&field.node.selection_set.node);
                    let input = field
                        .node
                        .arguments
                        .iter()
                        .map(|(_, value)| written_weight(&value.node, &self.weights))
                        .fold(0usize, usize::saturating_add);
                    Size {
                        depth: usize::from(field.node.name.node != "ofType") + below.depth,
                        fields: below.fields.saturating_add(1),
                        input: below.input.saturating_add(input),
                    }
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node, |walk, set| walk.size(set))
                }
                Selection::InlineFragment(inline) => self.size(&inline.node.selection_set.node),
            };
            total.depth = total.depth.max(here.depth);
            total.fields = total.fields.saturating_add(here.fields);
            total.input = total.input.saturating_add(here.input);
        }
        total
    }
}

impl<'a> Spread<'a, RootRuns> {
    /// The root fields `set` runs, and how many of them are `__schema` and `__type`.
    fn root_runs(&mut self, set: &'a SelectionSet) -> RootRuns {
        let mut runs = RootRuns::default();
        for item in &set.items {
            let here = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    RootRuns {
                        // `__typename` runs nothing: clients add it to every selection set.
                        fields: usize::from(name != "__typename"),
                        schema: usize::from(name == "__schema"),
                        types: usize::from(name == "__type"),
                    }
                }
                Selection::FragmentSpread(spread) => self
                    .fragment(&spread.node.fragment_name.node, |walk, set| {
                        walk.root_runs(set)
                    }),
                Selection::InlineFragment(inline) => {
                    self.root_runs(&inline.node.selection_set.node)
                }
            };
            runs.fields = runs.fields.saturating_add(here.fields);
            runs.schema = runs.schema.saturating_add(here.schema);
            runs.types = runs.types.saturating_add(here.types);
        }
        runs
    }
}

impl<'a> Spread<'a, usize> {
    /// Password-checking fields among a mutation's root fields; `variable` gives a variable's
    /// value as the operation sees it.
    fn password_checks(
        &mut self,
        set: &'a SelectionSet,
        variable: &dyn Fn(&Name) -> Option<&'a Value>,
    ) -> usize {
        let mut count = 0usize;
        for item in &set.items {
            let here = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    // Whether argument `argument` sets one of `keys`. Variables are filled in
                    // by what they hold at those keys only; an undefined one counts as unset.
                    let sets = |argument: &str, keys: &[&str]| {
                        field.arguments.iter().any(|(name, value)| {
                            name.node == argument
                                && value
                                    .node
                                    .clone()
                                    .into_const_with(|name| {
                                        Ok::<_, ()>(
                                            variable(&name)
                                                .map_or(Value::Null, |v| at_keys(v, keys)),
                                        )
                                    })
                                    .is_ok_and(|v| sets_any(&v, keys))
                        })
                    };
                    let checks = PASSWORD_FIELDS.contains(&name)
                        || (name == "updateUser" && sets("input", &UPDATE_PASSWORD_INPUTS))
                        || sets("verification", &VERIFICATION_PASSWORD);
                    usize::from(checks)
                }
                Selection::FragmentSpread(spread) => self
                    .fragment(&spread.node.fragment_name.node, |walk, set| {
                        walk.password_checks(set, variable)
                    }),
                Selection::InlineFragment(inline) => {
                    self.password_checks(&inline.node.selection_set.node, variable)
                }
            };
            count = count.saturating_add(here);
        }
        count
    }
}

/// What `sets_any` needs of a variable's value: an object keeps only `keys`, each as null or
/// not; anything else, whether it is null.
fn at_keys(value: &Value, keys: &[&str]) -> Value {
    let set = |value: &Value| {
        if fills(value) {
            Value::Boolean(true)
        } else {
            Value::Null
        }
    };
    match value {
        Value::Object(object) => Value::Object(
            keys.iter()
                .filter_map(|key| Some((Name::new(key), set(object.get(*key)?))))
                .collect(),
        ),
        other => set(other),
    }
}

/// Whether an input object value (its variables filled in) sets one of `keys`.
fn sets_any(input: &Value, keys: &[&str]) -> bool {
    match input {
        Value::Object(object) => keys.iter().any(|key| object.get(*key).is_some_and(fills)),
        _ => false,
    }
}

/// Whether a value fills a password box: a blank one (an empty string) checks and hashes
/// nothing, as null does not.
fn fills(value: &Value) -> bool {
    !matches!(value, Value::Null) && *value != Value::String(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_do_not_quote_the_source() {
        let limits = Limits::default();
        let query = format!(
            "mutation {{ login(input: {{login: \"alice\", password: \"my secret pass\"}}){} ",
            " ".repeat(2_000)
        );
        let mut request = async_graphql::Request::new(query);
        let error =
            check(&limits, &mut request, &OperationInfo::default()).expect_err("does not parse");
        assert!(
            error.message.starts_with("Syntax error: expected"),
            "{}",
            error.message
        );
        assert!(error.message.len() < 200, "{}", error.message);
        assert!(!error.message.contains("secret"), "{}", error.message);
        assert_eq!(error.locations.len(), 1, "the position is kept");
        // The parser's other errors name no source text: kept as they are.
        let mut request =
            async_graphql::Request::new("query a { me { id } } query a { me { id } }");
        let error = check(&limits, &mut request, &OperationInfo::default())
            .expect_err("two operations named alike");
        assert_eq!(error.message, "operation a is defined twice");
    }

    #[test]
    fn nesting_is_read_as_the_parser_reads_it() {
        let deep = |open: &str, close: &str, n: usize| {
            format!(
                "{{ serverInfo(x: {}1{}) {{ name }} }}",
                open.repeat(n),
                close.repeat(n)
            )
        };
        assert!(!nests_deeper(&deep("[", "]", 99), MAX_NESTING));
        assert!(nests_deeper(&deep("[", "]", 100), MAX_NESTING));
        assert!(nests_deeper(&deep("{a:", "}", 1_500), MAX_NESTING));
        assert!(nests_deeper(
            &format!(
                "query($v: {}Int{}) {{ me {{ id }} }}",
                "[".repeat(101),
                "]".repeat(101)
            ),
            MAX_NESTING
        ));
        // Brackets in strings, block strings (an escaped closing quote included) and comments
        // are no nesting; closing brackets never take the depth below nought.
        let hidden = "[".repeat(200);
        for query in [
            format!("{{ a(s: \"{hidden}\\\" {hidden}\") }}"),
            format!("{{ a(s: \"\"\"{hidden} \\\"\"\" {hidden}\"\"\") }}"),
            format!("# {hidden}\n{{ a }}"),
            format!("]]]]{}", "[".repeat(100)),
        ] {
            assert!(!nests_deeper(&query, MAX_NESTING), "{query}");
        }
        // A string left open at a line break ends there, as the parser's does.
        assert!(nests_deeper(
            &format!("{{ a(s: \"x\n{hidden}) }}"),
            MAX_NESTING
        ));
    }

    /// The lists of fields that check passwords, held to the schema: a mutation taking a
    /// password that is in none of them would escape the one-check-per-document bound.
    #[test]
    fn every_mutation_taking_a_password_is_counted() {
        use super::super::spec::schema_types::SchemaTypes;
        let schema = crate::graphql::build_schema(None, Limits::default());
        let types = SchemaTypes::from_sdl(&schema.sdl());
        let named = |ty: &async_graphql::parser::types::Type| {
            ty.to_string()
                .trim_matches(|c| "[]!".contains(c))
                .to_owned()
        };
        let mut taking = Vec::new();
        for (field, arguments) in &types.arguments["Mutation"] {
            for (argument, (ty, _)) in arguments {
                let Some(input) = types.inputs.get(&named(ty)) else {
                    continue;
                };
                if argument == "verification" {
                    assert!(VERIFICATION_PASSWORD.iter().all(|f| input.contains_key(*f)));
                } else if field == "updateUser" {
                    assert!(
                        UPDATE_PASSWORD_INPUTS
                            .iter()
                            .all(|f| input.contains_key(*f))
                    );
                } else if input.contains_key("password") {
                    taking.push(field.as_str());
                }
            }
        }
        taking.sort_unstable();
        let mut counted = PASSWORD_FIELDS.to_vec();
        counted.sort_unstable();
        assert_eq!(taking, counted);
    }

    fn counts(query: &str, variables: serde_json::Value) -> Counts {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let variables = Variables::from_json(variables);
        let weights = variable_weights(&variables, usize::MAX).expect("weighed");
        Counts::of(&document, &variables, weights)
    }

    /// Root fields counted as async-graphql runs them: a fragment once per spread.
    #[test]
    fn repeated_mutations_and_introspection_are_found() {
        let none = || serde_json::json!({});
        let token = "createApiToken(name: \"t\") { token }";
        for repeated in [
            format!("mutation {{ {token} {token} }}"),
            format!("mutation {{ ...F ...F }} fragment F on Mutation {{ {token} }}"),
            format!("mutation {{ ...F {token} }} fragment F on Mutation {{ {token} }}"),
            format!("mutation {{ ... {{ ...F }} ...F }} fragment F on Mutation {{ a: {token} }}"),
        ] {
            assert!(counts(&repeated, none()).repeats_mutations, "{repeated}");
        }
        for once in [
            format!("mutation {{ a: {token} b: {token} }}"),
            // What Apollo and urql send: `__typename` in every selection set, fragments too.
            format!(
                "mutation {{ ...F ...G __typename }} fragment F on Mutation {{ a: {token} __typename }} fragment G on Mutation {{ b: {token} __typename }}"
            ),
            format!("mutation {{ ...F c: {token} }} fragment F on Mutation {{ a: {token} }}"),
            // The same keys in a query are merged answers to reads, and in another operation
            // another request's.
            format!(
                "query R {{ me {{ id }} me {{ username }} ...Q ...Q }} fragment Q on Query {{ me {{ id }} }} mutation M {{ {token} }}"
            ),
        ] {
            assert!(!counts(&once, none()).repeats_mutations, "{once}");
        }
        let spread = counts(
            "{ ...I ...I a: __type(name: \"User\") { name } } fragment I on Query { __schema { queryType { name } } }",
            none(),
        );
        assert_eq!((spread.schema_runs, spread.type_runs), (2, 1));
    }

    #[test]
    fn introspection_repeats_no_key() {
        let repeats = |query: &str| {
            let document = async_graphql::parser::parse_query(query).expect("parses");
            let (_, operation) = document.operations.iter().next().expect("an operation");
            repeats_in_introspection(&document, &operation.node.selection_set.node, false)
        };
        for repeated in [
            "{ __schema { ...T ...T } } fragment T on __Schema { types { name } }",
            "{ __schema { types { name } types { kind } } }",
            "{ __type(name: \"User\") { fields { ... { args { name } } ...A } } } fragment A on __Field { args { name } }",
        ] {
            assert!(repeats(repeated), "{repeated}");
        }
        for once in [
            "{ __schema { types { name fields { name type { name ofType { name } } } } } }",
            // Outside introspection, keys repeat as fragments colocated by components make them.
            "{ me { id ...A } ...B } fragment A on User { id } fragment B on Query { me { id } }",
            // As Apollo and urql send it: `__typename` in every selection set.
            "{ __type(name: \"Role\") { __typename ...E } } fragment E on __Type { __typename enumValues { name } }",
        ] {
            assert!(!repeats(once), "{once}");
        }
    }

    #[test]
    fn password_checks_are_found_however_they_are_written() {
        let none = serde_json::json!({});
        let login = r#"login(input: {login: "a", password: "b"}) { accessToken }"#;
        assert_eq!(
            counts(&format!("mutation {{ {login} }}"), none.clone()).password_checks,
            1
        );
        assert_eq!(
            counts(
                &format!("mutation {{ a: {login} b: {login} }}"),
                none.clone()
            ),
            Counts {
                depth: 2,
                aliases: 2,
                directives: 0,
                introspects: false,
                password_checks: 2,
                fields: 4,
                // Each login's input object, as written.
                input: 58,
                unknown_fragment: None,
                repeats_mutations: false,
                schema_runs: 0,
                type_runs: 0,
            }
        );
        let fragments = format!(
            "mutation {{ ...F ... on Mutation {{ {login} }} }} fragment F on Mutation {{ {login} }}"
        );
        assert_eq!(counts(&fragments, none.clone()).password_checks, 2);
        let operations = format!("mutation A {{ {login} }} mutation B {{ {login} }}");
        assert_eq!(counts(&operations, none.clone()).password_checks, 2);
        // A query selecting a field called `login` is no password check.
        assert_eq!(
            counts("query { login: me { id } }", none.clone()).password_checks,
            0
        );
    }

    #[test]
    fn update_user_counts_only_when_it_touches_a_password() {
        let edit = |input: &str| {
            format!(
                r#"mutation($input: UpdateUserInput!, $p: String) {{ updateUser(id: "1", input: {input}) {{ id }} }}"#
            )
        };
        let vars = serde_json::json!({"input": {"firstName": "A"}, "p": null});
        assert_eq!(
            counts(&edit(r#"{firstName: "A"}"#), vars.clone()).password_checks,
            0
        );
        assert_eq!(
            counts(&edit(r#"{password: "x"}"#), vars.clone()).password_checks,
            1
        );
        assert_eq!(
            counts(&edit("{currentPassword: $p}"), vars.clone()).password_checks,
            0
        );
        assert_eq!(counts(&edit("$input"), vars).password_checks, 0);
        let vars = serde_json::json!({"input": {"currentPassword": "x"}});
        assert_eq!(counts(&edit("$input"), vars).password_checks, 1);
        // A variable not sent takes its default; one sent as null does not.
        let with_default =
            r#"mutation($p: String = "x") { updateUser(id: "1", input: {password: $p}) { id } }"#;
        let none = serde_json::json!({});
        assert_eq!(counts(with_default, none).password_checks, 1);
        let null = serde_json::json!({"p": null});
        assert_eq!(counts(with_default, null).password_checks, 0);
    }

    #[test]
    fn a_verification_password_counts_once_per_field() {
        let none = serde_json::json!({});
        let set_role = r#"setRole(id: "1", role: ADMIN, verification: {password: "x"}) { id }"#;
        let by_code = r#"setRole(id: "1", role: ADMIN, verification: {totpCode: "1"}) { id }"#;
        let admin = r#"createUser(input: {username: "a", email: "a@b.c", password: "p"}, verification: {password: "x"}) { id }"#;
        let count = |query: String| counts(&query, none.clone()).password_checks;
        assert_eq!(count(format!("mutation {{ {set_role} }}")), 1);
        assert_eq!(count(format!("mutation {{ {by_code} }}")), 0);
        assert_eq!(count(format!("mutation {{ {admin} }}")), 1);
        assert_eq!(
            count(format!("mutation {{ a: {set_role} b: {set_role} }}")),
            2
        );
        // Blank boxes check nothing: a profile form sending them counts no password, written
        // in the document or in variables.
        let blank = r#"updateUser(id: "1", input: {firstName: "A", currentPassword: ""}, verification: {password: ""}) { id }"#;
        assert_eq!(count(format!("mutation {{ {blank} {set_role} }}")), 1);
        let by_variables = r#"mutation($p: String, $i: UpdateUserInput!, $v: VerificationInput) {
            a: updateUser(id: "1", input: {currentPassword: $p}) { id }
            b: updateUser(id: "1", input: $i, verification: $v) { id }
            c: setRole(id: "1", role: ADMIN, verification: $v) { id }
        }"#;
        let blanks = serde_json::json!({
            "p": "", "i": {"currentPassword": ""}, "v": {"password": ""}
        });
        assert_eq!(counts(by_variables, blanks).password_checks, 0);
    }

    #[test]
    fn depth_counts_fields_through_fragments_but_not_of_type() {
        let none = serde_json::json!({});
        assert_eq!(counts("{ me { id } }", none.clone()).depth, 2);
        let query = "{ me { ...A } } fragment A on User { createdBy { ... on User { id } } }";
        assert_eq!(counts(query, none.clone()).depth, 3);
        let introspection =
            "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }";
        assert_eq!(counts(introspection, none).depth, 5);
    }

    /// A fragment spread inside itself is refused before any walk that would not end.
    #[test]
    fn fragments_spreading_themselves_are_refused() {
        for (query, name) in [
            (
                "{ me { ...F } } fragment F on User { id createdBy { ...F } }",
                "F",
            ),
            (
                "{ me { ...A } } fragment A on User { x: id createdBy { ...B } } \
                 fragment B on User { x: email createdBy { ...A } }",
                "A",
            ),
        ] {
            let document = async_graphql::parser::parse_query(query).expect("parses");
            let variables = Variables::default();
            let checked = check_document(
                &Limits::default(),
                &document,
                &variables,
                HashMap::new(),
                &OperationInfo::default(),
            );
            let message = checked.expect_err(query).message;
            assert_eq!(
                message,
                format!("Cannot spread fragment \"{name}\" within itself")
            );
        }
    }

    /// Fragments that each spread the next twice: 2^40 fields, counted in a moment.
    #[test]
    fn fragments_spreading_each_other_are_counted_once_each() {
        let mut query = String::from("mutation { ...F0 } ");
        for i in 0..40 {
            query += &format!(
                "fragment F{i} on Mutation {{ ...F{n} ...F{n} }} ",
                n = i + 1
            );
        }
        query += r#"fragment F40 on Mutation { logout(refreshToken: "x") }"#;
        let none = serde_json::json!({});
        let spread = counts(&query, none.clone());
        assert_eq!(spread.fields, 1 << 40);
        assert_eq!(spread.depth, 1);
        assert_eq!(spread.password_checks, 0);
        let with_login = query.replace(
            r#"logout(refreshToken: "x")"#,
            r#"login(input: {login: "a", password: "b"}) { accessToken }"#,
        );
        assert_eq!(counts(&with_login, none.clone()).password_checks, 1 << 40);
        // async-graphql validates every operation of a document: their fields add up.
        let two = "query a { me { id } } query b { me { id } }";
        assert_eq!(counts(two, none).fields, 4);
    }

    #[test]
    fn directives_everywhere_are_counted() {
        let query = r#"query Q($a: Boolean!) @x { me @include(if: $a) { ...F @skip(if: $a) ... @include(if: $a) { id } } } fragment F on User @y { id @z }"#;
        assert_eq!(counts(query, serde_json::json!({})).directives, 6);
    }

    /// The whole check on a request: refusals, parse errors, variables left in place and the
    /// operations recorded for the request log.
    #[test]
    fn check_refuses_records_and_keeps_the_request_whole() {
        let limits = Limits {
            depth: 3,
            complexity: 100,
            aliases: 1,
            directives: 1,
            query_bytes: 200,
            introspection: false,
        };
        let run = |query: &str| {
            let mut request = async_graphql::Request::new(query)
                .variables(Variables::from_json(serde_json::json!({"a": 1})));
            let info = OperationInfo::default();
            let outcome = prepare_query(&limits, &mut request)
                .and_then(|()| check(&limits, &mut request, &info))
                .map_err(|error| error.message);
            (outcome, info, request)
        };

        let (outcome, info, request) = run("query Q { me { id } } mutation M { logout }");
        assert_eq!(outcome, Ok(()));
        assert_eq!(info.root_field(Some("M")).as_deref(), Some("logout"));
        assert_eq!(
            request.variables,
            Variables::from_json(serde_json::json!({"a": 1}))
        );

        let refused = |query: &str| run(query).0.expect_err(query);
        assert!(refused(&format!("{{ me {{ id }} }} #{}", "x".repeat(200))).contains("bytes"));
        assert!(refused("{ me { id ").contains("expected"), "a parse error");
        assert!(refused("{ __schema { queryType { name } } }").contains("Introspection"));
        assert!(refused("{ me { createdBy { createdBy { id } } } }").contains("nested 4"));
        assert!(refused("{ a: me { id } b: me { id } }").contains("2 aliases"));
        assert!(
            refused("{ me @skip(if: false) { id @skip(if: false) } }").contains("2 directives")
        );
        let two = r#"mutation { login(input: {login: "a", password: "b"}) { accessToken }
            register(input: {username: "u", email: "u@x.y", password: "p"}) { accessToken } }"#;
        assert!(refused(two).contains("2 fields that check or set a password"));
    }
}
