//! DataLoaders: `createdBy` of a whole page resolves in one batched query.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::db::entities::user::Model as User;
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
    type Value = User;
    /// The error is logged where it happens; resolvers only learn that the lookup failed.
    type Error = ();

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, User>, ()> {
        self.service.users_by_ids(keys).await.map_err(|err| {
            tracing::error!(error = %err, "loading users by id");
        })
    }
}
