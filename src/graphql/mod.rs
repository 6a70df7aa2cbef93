//! The GraphQL API: schema, types, resolvers, guards and loaders. Resolvers only translate
//! between GraphQL and the service layer.

mod guards;
mod loaders;
mod mutation;
mod query;
mod types;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, EmptySubscription, Schema};

pub use loaders::UserLoader;
pub use mutation::Mutation;
pub use query::Query;
pub use types::encode_cursor;

use crate::auth::RequestAuth;
use crate::db::entities::user::Model as User;
use crate::error::{AppError, AppResult};
use crate::service::Service;

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

/// Deep enough for any real client, shallow enough that `createdBy` chains cannot be used to
/// make one request do unbounded work.
const MAX_DEPTH: usize = 12;
const MAX_COMPLEXITY: usize = 2_000;

pub fn build_schema(service: Option<Service>) -> ApiSchema {
    let mut builder = Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    if let Some(service) = service {
        builder = builder.data(service);
    }
    builder.finish()
}

/// The SDL that `rollcall schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

/// Per-request data: the caller's credentials and a fresh DataLoader, so nothing cached
/// outlives the request (instances stay stateless).
pub fn request_data(
    request: async_graphql::Request,
    service: &Service,
    token: Option<String>,
) -> async_graphql::Request {
    // The cache lives only as long as the request.
    request
        .data(RequestAuth::new(token))
        .data(RequestLoader::new(service))
}

fn service<'a>(ctx: &Context<'a>) -> AppResult<&'a Service> {
    ctx.data::<Service>()
        .map_err(|_| AppError::internal("service missing from schema data"))
}

/// The signed-in user, loaded once per request.
async fn viewer<'a>(ctx: &Context<'a>) -> AppResult<&'a User> {
    let auth = ctx
        .data::<RequestAuth>()
        .map_err(|_| AppError::internal("request auth missing"))?;
    auth.viewer(service(ctx)?).await
}

async fn optional_viewer<'a>(ctx: &Context<'a>) -> Option<&'a User> {
    let auth = ctx.data::<RequestAuth>().ok()?;
    auth.optional_viewer(service(ctx).ok()?).await
}
