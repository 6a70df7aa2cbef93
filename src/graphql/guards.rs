//! Role guards for fields whose rule does not depend on the target. Target-dependent rules
//! are checked again in the service layer.

use async_graphql::{Context, Guard, Result};

use super::{caller, viewer};
use crate::db::Role;
use crate::error::AppError;

pub enum Access {
    /// Any signed-in, enabled user.
    SignedIn,
    /// ADMIN or OWNER.
    Manager,
    Owner,
}

impl Guard for Access {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let user = viewer(ctx).await?;
        let allowed = match self {
            Access::SignedIn => true,
            Access::Manager => user.role.is_manager(),
            Access::Owner => user.role == Role::Owner,
        };
        if allowed {
            Ok(())
        } else {
            Err(AppError::Forbidden("Your role does not allow this").into())
        }
    }
}

/// Mutations that manage users or credentials: a login's access token, never an API token.
pub struct Interactive;

impl Guard for Interactive {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        caller(ctx).await?.session()?;
        Ok(())
    }
}

/// A mutation's fields run one after another, and once one has failed the rest do not run,
/// as in the specification's serial execution: each is non-null, so its failure nulls `data`
/// (see `nulls`), and a field run after it would change the database with nothing in the
/// response to say so. async-graphql itself runs them all. Each field that runs starts with
/// its caller read again (one the fields before it deleted or signed out is refused) and the
/// request's loader emptied, so it answers with what the fields before it changed.
pub struct InOrder;

impl Guard for InOrder {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        // async-graphql records each root field that failed, with its one-segment path, as
        // the fields run; a lock poisoned by a panic counts as a failure too.
        let failed = ctx.query_env.errors.lock().map_or(true, |errors| {
            errors.iter().any(|error| error.path.len() == 1)
        });
        if failed {
            return Err(
                AppError::NotRun("Not run: a mutation before it in this document failed").into(),
            );
        }
        super::request_auth(ctx)?
            .still_signed_in(super::service(ctx)?)
            .await?;
        if let Ok(loader) = ctx.data::<super::RequestLoader>() {
            loader.forget();
        }
        Ok(())
    }
}
