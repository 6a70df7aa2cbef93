//! DataLoaders: every `createdBy`, and every `totpEnabled`, of a response level resolves in one
//! batched query.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::db::entities::user::Model as User;
use crate::error::AppError;
use crate::service::Service;

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
