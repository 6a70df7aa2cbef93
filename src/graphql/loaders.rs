//! DataLoaders: `createdBy` lookups a page query did not already answer (the creators'
//! own creators, a single user's) resolve in one batched query per level.

use std::collections::HashMap;
use std::sync::Arc;

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
    /// Shared: every `createdBy` that names the same user reads one cached copy.
    type Value = Arc<User>;
    /// The error is logged where it happens; resolvers only learn that the lookup failed.
    type Error = ();

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Arc<User>>, ()> {
        match self.service.users_by_ids(keys).await {
            Ok(users) => Ok(shared(users)),
            Err(err) => {
                tracing::error!(error = %err, "loading users by id");
                Err(())
            }
        }
    }
}

/// Users by id, each behind an `Arc` so that every object naming it shares one copy.
pub(super) fn shared(users: HashMap<Uuid, User>) -> HashMap<Uuid, Arc<User>> {
    users.into_iter().map(|(id, u)| (id, Arc::new(u))).collect()
}
