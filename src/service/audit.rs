//! Reading the audit trail: the owner sees every entry, admins those about standard users and
//! about themselves.

use super::{Service, validation};
use crate::db::audit::{self, Filter, Scope};
use crate::db::entities::audit_entry::Model as AuditEntry;
use crate::db::entities::user::{Model as User, Role};
use crate::db::users::Position;
use crate::error::{AppError, AppResult};

/// One page of entries, newest first.
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub has_next: bool,
    pub has_previous: bool,
}

impl Service {
    pub async fn audit_log(
        &self,
        viewer: &User,
        first: Option<i32>,
        after: Option<Position>,
        filter: &Filter,
    ) -> AppResult<AuditPage> {
        let scope = match viewer.role {
            Role::Owner => Scope::All,
            Role::Admin => Scope::StandardAnd(viewer.id),
            Role::Standard => {
                return Err(AppError::Forbidden("Only admins can read the audit log"));
            }
        };
        let first = validation::page_size(first)?;
        let (entries, has_next) =
            audit::page(self.db().conn(), scope, filter, after, first).await?;
        Ok(AuditPage {
            entries,
            has_next,
            has_previous: after.is_some(),
        })
    }
}
