use async_graphql::{Context, ID, Object};

use super::guards::Access;
use super::types::{
    AuditConnection, AuditFilter, List, ServerInfo, UserConnection, UserFilter, UserObject,
    decode_cursor, parse_id,
};
use super::{or_null, request_auth, service, viewer};
use crate::db::Position;
use crate::db::users::Filter;
use crate::error::{AppError, AppResult, FieldCode, FieldError};
use crate::service::validation::{self, Fields};
use crate::service::{DEFAULT_PAGE, MAX_PAGE, UserRef};

pub struct Query;

// async-graphql resolves the query root's fields concurrently whatever this type says; the
// response lists them in the order asked for afterwards (`order`).
#[Object]
impl Query {
    /// The signed-in user.
    #[graphql(guard = "Access::SignedIn")]
    async fn me(&self, ctx: &Context<'_>) -> AppResult<UserObject> {
        Ok(UserObject::new(viewer(ctx).await?.clone()))
    }

    /// One user by `id`, `username` or `email` (exactly one of them; a username or an email
    /// in any case, as a login takes it); null when there is none. A STANDARD user may ask
    /// only for themselves: anyone else, existing or not, is FORBIDDEN.
    // No guard: by id, the caller is authenticated in the same query as the lookup.
    async fn user(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        username: Option<String>,
        email: Option<String>,
    ) -> Option<UserObject> {
        or_null(ctx, find_user(ctx, id, username, email).await)
    }

    /// Users in creation order, by keyset pagination. ADMIN or OWNER only.
    #[graphql(
        guard = "Access::Manager",
        // Each of up to `first` users costs what is selected of it.
        complexity = "page_complexity(__ctx, __variables_definition, __field, child_complexity)"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Users on the page, 0 to 100; 20 when left out.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before; left out, the first page.")]
        after: Option<String>,
        #[graphql(desc = "Only the users that match every part given.")] filter: Option<UserFilter>,
    ) -> AppResult<UserConnection> {
        // Every refused argument at once, so a client fixes its input in one round.
        let mut fields = Fields::new();
        let after = page_arguments(&mut fields, List::Users, first, after.as_deref())?;
        let filter: Filter = filter.map(Into::into).unwrap_or_default();
        if let Some(search) = filter.search.as_deref() {
            fields.check("search", validation::search(search));
        }
        fields.into_result()?;
        let page = service(ctx)?
            .list_users(viewer(ctx).await?, first, after, &filter)
            .await?;
        Ok(UserConnection::new(page, filter))
    }

    /// Changes to accounts, roles, tokens, sessions and two-factor login, newest first, by
    /// keyset pagination. The OWNER sees every entry; an ADMIN sees entries about STANDARD
    /// users and about themselves.
    #[graphql(
        guard = "Access::Manager",
        complexity = "page_complexity(__ctx, __variables_definition, __field, child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Entries on the page, 0 to 100; 20 when left out.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before; left out, the first page.")]
        after: Option<String>,
        #[graphql(desc = "Only the entries that match every part given.")] filter: Option<
            AuditFilter,
        >,
    ) -> AppResult<AuditConnection> {
        let mut fields = Fields::new();
        let after = page_arguments(&mut fields, List::Audit, first, after.as_deref())?;
        let filter = filter.map(|filter| filter.parse(&mut fields)).transpose()?;
        fields.into_result()?;
        let filter = filter.unwrap_or_default();
        let page = service(ctx)?
            .audit_log(viewer(ctx).await?, first, after, &filter)
            .await?;
        Ok(AuditConnection::new(page, filter))
    }

    /// Public facts about this server.
    async fn server_info(&self, ctx: &Context<'_>) -> AppResult<ServerInfo> {
        let service = service(ctx)?;
        Ok(ServerInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: i32::try_from(service.uptime().as_secs()).unwrap_or(i32::MAX),
            database: service.db().backend_name().into(),
            registration_open: service.accepts_registrations(),
            demo: service.demo(),
        })
    }
}

/// A list's `after` as a position, its refusal and that of `first` recorded in `fields`.
fn page_arguments(
    fields: &mut Fields,
    list: List,
    first: Option<i32>,
    after: Option<&str>,
) -> AppResult<Option<Position>> {
    fields.absorb(validation::page_size(first))?;
    let after = after.map(|after| decode_cursor(list, after)).transpose();
    Ok(fields.absorb(after)?.flatten())
}

/// A list's complexity (`users`, `auditLog`): each of up to `first` entries costs what is
/// selected of it. async-graphql counts every operation of a document, run or not, and reads
/// the request's variables for each: an operation not run may use a variable the request does
/// not give (GraphiQL sends its whole editor and names the one to run) or gives for another
/// operation's use of the name. A nullable variable left out reads as null, so such a `first`
/// counts as the default page it would run with; one of another type counts as the largest
/// page instead of refusing the document (in the operation that runs, validation and coercion
/// refuse it with their own errors). The arguments are the ones async-graphql's `complexity`
/// attribute has in scope.
fn page_complexity(
    ctx: &async_graphql::VisitorContext<'_>,
    variables: &[async_graphql::Positioned<async_graphql::parser::types::VariableDefinition>],
    field: &async_graphql::parser::types::Field,
    child_complexity: usize,
) -> usize {
    let first = ctx
        .param_value::<Option<i32>>(variables, field, "first", None)
        .unwrap_or(Some(MAX_PAGE));
    let size = usize::try_from(first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE)).unwrap_or(0);
    size.saturating_mul(child_complexity).saturating_add(1)
}

/// `user`: exactly one of `id`, `username` and `email`.
async fn find_user(
    ctx: &Context<'_>,
    id: Option<ID>,
    username: Option<String>,
    email: Option<String>,
) -> AppResult<Option<UserObject>> {
    let given = [id.is_some(), username.is_some(), email.is_some()];
    let by = match (id, username, email) {
        (Some(id), None, None) => UserRef::Id(parse_id(&id)?),
        (None, Some(username), None) => UserRef::Username(username),
        (None, None, Some(email)) => UserRef::Email(email),
        _ => {
            // None given: one is required (each of them); more: each given is one too many.
            let none = !given.contains(&true);
            let code = if none {
                FieldCode::Required
            } else {
                FieldCode::NotAllowed
            };
            let error = FieldError::new(code, "give exactly one of id, username and email");
            let fields = ["id", "username", "email"]
                .into_iter()
                .zip(given)
                .filter(|(_, given)| none || *given)
                .map(|(field, _)| (field.to_owned(), error.clone()))
                .collect();
            return Err(AppError::BadInput(fields));
        }
    };
    let service = service(ctx)?;
    let auth = request_auth(ctx)?;
    let (viewer, prefetched) = match &by {
        UserRef::Id(id) => auth.viewer_and(service, *id).await?,
        UserRef::Username(_) | UserRef::Email(_) => (auth.viewer(service).await?, None),
    };
    let user = service.get_user(viewer, by, prefetched).await?;
    Ok(user.map(UserObject::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists' `first` descriptions are text: they must say the page sizes the code uses.
    #[test]
    fn page_size_descriptions_match_the_limits() {
        let said = format!("0 to {MAX_PAGE}; {DEFAULT_PAGE} when left out.");
        assert_eq!(crate::graphql::sdl().matches(&said).count(), 2, "{said}");
    }
}
