//! Lists of users built in one pass.
//!
//! async-graphql resolves every field of every object as a boxed future of its own and merges
//! the results one by one; on a 50-user page that is hundreds of futures for fields that are
//! already in memory, and it was the largest share of a page's server time. When a page's
//! `nodes` or `edges` select only plain fields (and `createdBy` from the creators fetched with
//! the page) the list is built here directly, with the same values and the same privacy rule.
//! Any other selection (fragments, directives, arguments, a repeated response key, `createdBy`
//! below a creator) goes through async-graphql's own path. The schema registers no
//! extensions, whose per-field hooks this path would skip.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::{enum_value, resolve_list};
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, Value,
};

use super::types::{GqlRole, UserEdge, UserObject};
use crate::auth::RequestAuth;
use crate::db::entities::user::Model as User;

/// A list that is built in one pass when its selection allows, with the schema type of
/// `[T!]!`.
pub struct OnePassList<T>(pub Vec<T>);

/// List items that can be built in one pass.
pub trait OnePass: OutputType + Sized {
    /// The items' values, or `None` where the generic path must build them.
    fn build(selection: &SelectionSet, viewer: Option<&User>, items: &[Self]) -> Option<Value>;
}

impl<T: OnePass> OutputType for OnePassList<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        // Only a viewer the request has already settled; field resolvers would otherwise
        // check the token themselves.
        let viewer = ctx
            .data::<RequestAuth>()
            .ok()
            .and_then(RequestAuth::settled_viewer);
        if let Some(value) = viewer.and_then(|viewer| T::build(&ctx.item.node, viewer, &self.0)) {
            return Ok(value);
        }
        resolve_list(ctx, field, &self.0, Some(self.0.len())).await
    }
}

impl OnePass for UserObject {
    fn build(selection: &SelectionSet, viewer: Option<&User>, users: &[Self]) -> Option<Value> {
        let plan = user_plan(selection, true)?;
        list(users, |user| object(&plan, user, viewer))
    }
}

impl OnePass for UserEdge {
    fn build(selection: &SelectionSet, viewer: Option<&User>, edges: &[Self]) -> Option<Value> {
        let mut plan = Vec::new();
        for (key, field) in plain_fields(selection)? {
            let read = match field.name.node.as_str() {
                "__typename" => EdgeRead::Typename,
                "cursor" => EdgeRead::Cursor,
                "node" => EdgeRead::Node(user_plan(&field.selection_set.node, true)?),
                _ => return None,
            };
            plan.push((key, read));
        }
        list(edges, |edge| {
            fields(&plan, |read| match read {
                EdgeRead::Typename => Some(Value::String("UserEdge".to_owned())),
                EdgeRead::Cursor => Some(Value::String(edge.cursor.clone())),
                EdgeRead::Node(plan) => object(plan, &edge.node, viewer),
            })
        })
    }
}

fn list<T>(items: &[T], each: impl FnMut(&T) -> Option<Value>) -> Option<Value> {
    items
        .iter()
        .map(each)
        .collect::<Option<Vec<_>>>()
        .map(Value::List)
}

/// An object with one value per planned field, in the selection's order.
fn fields<R>(plan: &[(Name, R)], mut value: impl FnMut(&R) -> Option<Value>) -> Option<Value> {
    let mut fields = async_graphql::indexmap::IndexMap::with_capacity(plan.len());
    for (key, read) in plan {
        fields.insert(key.clone(), value(read)?);
    }
    Some(Value::Object(fields))
}

/// What one selected field of a `UserEdge` reads.
enum EdgeRead {
    Typename,
    Cursor,
    Node(Vec<(Name, Read)>),
}

/// What one selected field of a `User` reads.
enum Read {
    Typename,
    Id,
    Username,
    Email,
    FirstName,
    LastName,
    Phone,
    Role,
    Disabled,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
    CreatedBy(Vec<(Name, Read)>),
}

/// The selections of a set with their response keys, when every selection is a plain field
/// without arguments or directives and every response key is distinct.
fn plain_fields(selection: &SelectionSet) -> Option<Vec<(Name, &Field)>> {
    let mut fields: Vec<(Name, &Field)> = Vec::with_capacity(selection.items.len());
    for item in &selection.items {
        let Selection::Field(field) = &item.node else {
            return None;
        };
        let field = &field.node;
        if !field.arguments.is_empty() || !field.directives.is_empty() {
            return None;
        }
        let key = &field.response_key().node;
        if fields.iter().any(|(seen, _)| seen == key) {
            return None;
        }
        fields.push((key.clone(), field));
    }
    Some(fields)
}

/// The reads of a `User` selection set; `createdBy` only where the page's creators serve it.
fn user_plan(selection: &SelectionSet, creators_allowed: bool) -> Option<Vec<(Name, Read)>> {
    let mut reads = Vec::new();
    for (key, field) in plain_fields(selection)? {
        let read = match field.name.node.as_str() {
            "__typename" => Read::Typename,
            "id" => Read::Id,
            "username" => Read::Username,
            "email" => Read::Email,
            "firstName" => Read::FirstName,
            "lastName" => Read::LastName,
            "phone" => Read::Phone,
            "role" => Read::Role,
            "disabled" => Read::Disabled,
            "createdAt" => Read::CreatedAt,
            "updatedAt" => Read::UpdatedAt,
            "lastLoginAt" => Read::LastLoginAt,
            "createdBy" if creators_allowed => {
                Read::CreatedBy(user_plan(&field.selection_set.node, false)?)
            }
            _ => return None,
        };
        reads.push((key, read));
    }
    Some(reads)
}

/// One user as an object; `None` when a creator was not fetched with the page.
fn object(plan: &[(Name, Read)], user: &UserObject, viewer: Option<&User>) -> Option<Value> {
    let model = user.model();
    let visible = user.private_visible(viewer);
    let private = |value: Option<&str>| match value {
        Some(value) if visible => Value::String(value.to_owned()),
        _ => Value::Null,
    };
    fields(plan, |read| {
        Some(match read {
            Read::Typename => Value::String("User".to_owned()),
            Read::Id => Value::String(model.id.to_string()),
            Read::Username => Value::String(model.username.clone()),
            Read::Email => private(Some(&model.email)),
            Read::FirstName => private(model.first_name.as_deref()),
            Read::LastName => private(model.last_name.as_deref()),
            Read::Phone => private(model.phone.as_deref()),
            Read::Role => enum_value(GqlRole::from(model.role)),
            Read::Disabled => Value::Boolean(model.disabled),
            Read::CreatedAt => model.created_at.to_value(),
            Read::UpdatedAt => model.updated_at.to_value(),
            Read::LastLoginAt => model.last_login_at.map_or(Value::Null, |at| at.to_value()),
            Read::CreatedBy(nested) => match model.created_by {
                None => Value::Null,
                Some(id) => object(nested, &UserObject::new(user.creator(id)?), viewer)?,
            },
        })
    })
}
