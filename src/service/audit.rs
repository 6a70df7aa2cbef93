//! Reading the audit trail: the owner sees every entry, admins those about standard users and
//! about themselves.

use super::{Service, validation};
use crate::db::Position;
use crate::db::audit::{self, Filter, Scope};
use crate::db::entities::audit_entry::Model as AuditEntry;
use crate::db::entities::user::{Model as User, Role};
use crate::error::{AppError, AppResult};

/// One page of entries, newest first.
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub has_next: bool,
    pub has_previous: bool,
}

/// Which entries `viewer` may read.
fn scope(viewer: &User) -> AppResult<Scope> {
    match viewer.role {
        Role::Owner => Ok(Scope::All),
        Role::Admin => Ok(Scope::StandardAnd(viewer.id)),
        Role::Standard => Err(AppError::Forbidden("Only admins can read the audit log")),
    }
}

impl Service {
    pub async fn audit_log(
        &self,
        viewer: &User,
        first: Option<i32>,
        after: Option<Position>,
        filter: &Filter,
    ) -> AppResult<AuditPage> {
        let scope = scope(viewer)?;
        let first = validation::page_size(first)?;
        let (entries, has_next) =
            audit::page(self.db().conn(), scope, filter, after, first).await?;
        Ok(AuditPage {
            entries,
            has_next,
            has_previous: after.is_some(),
        })
    }

    /// How many entries `viewer` may read that match `filter`, across all pages.
    pub async fn count_audit(&self, viewer: &User, filter: &Filter) -> AppResult<u64> {
        Ok(audit::count(self.db().conn(), scope(viewer)?, filter).await?)
    }

    /// Deletes the entries older than `ROLLCALL_AUDIT_RETENTION`, at most `batch` a statement;
    /// the periodic housekeeping calls it.
    pub async fn purge_audit(&self, batch: u64) -> AppResult<u64> {
        let before = crate::db::earlier(crate::db::now(), self.0.audit_retention);
        Ok(audit::purge(self.db().writer(), before, batch).await?)
    }
}
