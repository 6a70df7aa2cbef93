//! The GraphQL API: schema, types, resolvers, guards and loaders. Resolvers only translate
//! between GraphQL and the service layer.

mod guards;
mod limits;
mod loaders;
mod mutation;
mod query;
mod recursion;
mod spec;
mod types;
mod viewer;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, EmptySubscription, Schema};

pub use limits::{
    Limits, OperationInfo, check as check_document, name_complexity_limit, prepare_query,
    selected_operation,
};
pub use loaders::UserLoader;
pub use mutation::Mutation;
pub use query::Query;
pub use spec::description::{describe, description_keys};
pub use spec::kept::{keep_objects, unkeep};
pub use spec::order::{order_repeated_root, order_root, root_keys};
pub use spec::schema_types::SchemaTypes;
pub use types::encode_cursor;
pub use viewer::RequestAuth;

use crate::db::entities::user::Model as User;
use crate::error::{AppError, AppResult};
use crate::service::Service;

/// The client's address, as the HTTP layer determined it (`None` outside HTTP).
pub struct ClientIp(pub Option<std::net::IpAddr>);

/// The client's `User-Agent` header, shortened to [`USER_AGENT_MAX`] characters (`None` outside
/// HTTP or when absent): kept on the sessions a login opens, so their list tells them apart.
pub struct UserAgent(pub Option<String>);

/// The longest User-Agent kept: real ones fit, and a client cannot make session rows large.
pub const USER_AGENT_MAX: usize = 200;

impl UserAgent {
    /// From the header's value; beyond printable ASCII or blank counts as absent. A tab,
    /// which HTTP allows in a value, reads as a space, so no list shows a control character.
    pub fn from_header(value: Option<&axum::http::HeaderValue>) -> Self {
        let text = value
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| {
                let text: String = text
                    .chars()
                    .take(USER_AGENT_MAX)
                    .map(|c| if c == '\t' { ' ' } else { c })
                    .collect();
                text.trim_end().to_owned()
            });
        Self(text)
    }
}

/// Where this request's client came from, for the session a login or registration opens.
fn origin(ctx: &Context<'_>) -> crate::service::Origin {
    crate::service::Origin {
        ip: ctx.data_opt::<ClientIp>().and_then(|client| client.0),
        user_agent: ctx
            .data_opt::<UserAgent>()
            .and_then(|agent| agent.0.clone()),
    }
}

/// The session of the request's access token, once the viewer is loaded.
fn current_session(ctx: &Context<'_>) -> Option<uuid::Uuid> {
    request_auth(ctx).ok()?.session_id()
}

/// A nullable field's value, or null with its error recorded at the field's path, for fields
/// refused often (credentials of users the viewer does not manage, on every row of a page):
/// async-graphql would leave them out of their object, for the response's mending (`nulls`)
/// to put back after parsing the document again.
fn or_null<T>(ctx: &Context<'_>, result: AppResult<Option<T>>) -> Option<T> {
    result.unwrap_or_else(|err| {
        let error = async_graphql::Error::from(err).into_server_error(ctx.item.pos);
        ctx.add_error(ctx.set_error_path(error));
        None
    })
}

/// The request's credential, resolved at most once.
fn request_auth<'a>(ctx: &Context<'a>) -> AppResult<&'a Arc<RequestAuth>> {
    ctx.data::<Arc<RequestAuth>>()
        .map_err(|_| AppError::internal("request auth missing"))
}

/// The signed-in caller with their credential and address, for mutations.
async fn caller<'a>(ctx: &Context<'a>) -> AppResult<crate::service::Caller<'a>> {
    let signed = request_auth(ctx)?.signed(service(ctx)?).await?;
    Ok(crate::service::Caller {
        user: &signed.user,
        credential: signed.credential,
        ip: ctx.data_opt::<ClientIp>().and_then(|client| client.0),
    })
}

pub type ApiSchema = Schema<Query, Mutation, EmptySubscription>;

/// The per-request user loader; its cache lives as long as the request.
pub type UserDataLoader = DataLoader<UserLoader, HashMapCache>;

/// The request's user loader, made on first use: most requests never load a user by id.
pub struct RequestLoader {
    service: Service,
    loader: std::sync::OnceLock<UserDataLoader>,
}

impl RequestLoader {
    fn new(service: &Service) -> Self {
        Self {
            service: service.clone(),
            loader: std::sync::OnceLock::new(),
        }
    }

    /// Forgets what was loaded: a mutation field changes what earlier fields loaded (a
    /// session opened, a token deleted, a creator deleted), and the fields after it must
    /// answer as the database is then.
    pub fn forget(&self) {
        if let Some(loader) = self.loader.get() {
            loader.clear::<uuid::Uuid>();
            loader.clear::<loaders::TotpOf>();
            loader.clear::<loaders::SessionsOf>();
            loader.clear::<loaders::ApiTokensOf>();
        }
    }

    pub fn get(&self) -> &UserDataLoader {
        self.loader.get_or_init(|| {
            DataLoader::with_cache(
                UserLoader::new(self.service.clone()),
                tokio::spawn,
                HashMapCache::default(),
            )
        })
    }
}

/// The schema with async-graphql's complexity limit; the other limits are checked on each
/// request's document before it executes ([`limits::check`]).
pub fn build_schema(service: Option<Service>, limits: Limits) -> ApiSchema {
    let mut builder =
        Schema::build(Query, Mutation, EmptySubscription).limit_complexity(limits.complexity);
    if !limits.introspection {
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(service) = service {
        builder = builder.data(service);
    }
    builder.finish()
}

/// The SDL that `rollcall schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    // With `@specifiedBy`, so a client generated from this file knows what introspection
    // tells: the format of `DateTime`.
    spec::description::described_sdl(
        &build_schema(None, Limits::default())
            .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by()),
    )
}

/// Per-request data: the caller's credentials and a fresh DataLoader, so nothing cached
/// outlives the request (instances stay stateless).
pub fn request_data(
    request: async_graphql::Request,
    service: &Service,
    auth: Arc<RequestAuth>,
    client_ip: std::net::IpAddr,
    user_agent: UserAgent,
) -> async_graphql::Request {
    request
        .data(auth)
        .data(RequestLoader::new(service))
        .data(ClientIp(Some(client_ip)))
        .data(user_agent)
}

fn service<'a>(ctx: &Context<'a>) -> AppResult<&'a Service> {
    ctx.data::<Service>()
        .map_err(|_| AppError::internal("service missing from schema data"))
}

/// The signed-in user, loaded once per request.
async fn viewer<'a>(ctx: &Context<'a>) -> AppResult<&'a User> {
    request_auth(ctx)?.viewer(service(ctx)?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn agent(value: &[u8]) -> Option<String> {
        let value = HeaderValue::from_bytes(value).expect("a header value");
        UserAgent::from_header(Some(&value)).0
    }

    #[test]
    fn user_agents_are_kept_as_printable_ascii() {
        assert_eq!(agent(b"Laptop/1.0").as_deref(), Some("Laptop/1.0"));
        assert_eq!(agent(b" \tApp\t1 ").as_deref(), Some("App 1"));
        assert_eq!(agent(b"caf\xc3\xa9"), None);
        assert_eq!(agent(b" \t "), None);
        assert_eq!(
            agent(&[b'a'; 300]).map(|text| text.len()),
            Some(USER_AGENT_MAX)
        );
        let cut_at_a_tab = [&[b'a'; 199][..], b"\tb"].concat();
        assert_eq!(agent(&cut_at_a_tab).map(|text| text.len()), Some(199));
    }
}
