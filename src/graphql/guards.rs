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
