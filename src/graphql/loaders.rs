//! DataLoaders: every `createdBy`, `totpEnabled`, `sessions` and `apiTokens` of a response
//! level resolves in one batched query per field.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::db::entities::api_token::Model as ApiToken;
use crate::db::entities::user::Model as User;
use crate::error::AppError;
use crate::service::{Service, SessionInfo};

pub struct UserLoader {
    service: Service,
}

impl UserLoader {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

impl Loader<Uuid> for UserLoader {
    /// Shared: every `createdBy` that names the same user reads one cached copy.
    type Value = Arc<User>;
    /// Shared by every key of the failed batch; the resolver maps it to the response.
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Arc<User>>, Self::Error> {
        let users = self.service.users_by_ids(keys).await.map_err(Arc::new)?;
        Ok(users.into_iter().map(|(id, u)| (id, Arc::new(u))).collect())
    }
}

/// Key for whether a user has two-factor login on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotpOf(pub Uuid);

impl Loader<TotpOf> for UserLoader {
    type Value = bool;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[TotpOf]) -> Result<HashMap<TotpOf, bool>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let on = self
            .service
            .totp_enabled_among(&ids)
            .await
            .map_err(Arc::new)?;
        Ok(keys.iter().map(|&key| (key, on.contains(&key.0))).collect())
    }
}

/// Key for a user's live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionsOf(pub Uuid);

impl Loader<SessionsOf> for UserLoader {
    type Value = Vec<SessionInfo>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[SessionsOf],
    ) -> Result<HashMap<SessionsOf, Vec<SessionInfo>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let sessions = self.service.sessions_among(&ids).await.map_err(Arc::new)?;
        Ok(group(keys, sessions, |session| SessionsOf(session.user_id)))
    }
}

/// Key for a user's unexpired API tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiTokensOf(pub Uuid);

impl Loader<ApiTokensOf> for UserLoader {
    type Value = Vec<ApiToken>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[ApiTokensOf],
    ) -> Result<HashMap<ApiTokensOf, Vec<ApiToken>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let tokens = self
            .service
            .api_tokens_among(&ids)
            .await
            .map_err(Arc::new)?;
        Ok(group(keys, tokens, |token| ApiTokensOf(token.user_id)))
    }
}

/// `rows` (in the order wanted within each key) under their keys; every key present, so a
/// user with none gets an empty list rather than a second load.
fn group<K, T>(keys: &[K], rows: Vec<T>, key_of: impl Fn(&T) -> K) -> HashMap<K, Vec<T>>
where
    K: Copy + Eq + std::hash::Hash,
{
    let mut grouped: HashMap<K, Vec<T>> = keys.iter().map(|&key| (key, Vec::new())).collect();
    for row in rows {
        if let Some(list) = grouped.get_mut(&key_of(&row)) {
            list.push(row);
        }
    }
    grouped
}
