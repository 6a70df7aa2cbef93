//! Role guards for fields whose rule does not depend on the target. Target-dependent rules
//! are checked again in the service layer.

use async_graphql::{Context, Guard, Result};

use super::{ClientIp, caller, service, viewer};
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

/// A credential attempt (login, register, refreshToken): it draws from the client IP's bucket
/// before anything else runs.
pub struct IpLimited;

impl Guard for IpLimited {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        Ok(limit_ip(ctx)?)
    }
}

/// The IP bucket check, for resolvers where only some calls are credential attempts.
pub fn limit_ip(ctx: &Context<'_>) -> crate::error::AppResult<()> {
    let ip = ctx.data_opt::<ClientIp>().and_then(|client| client.0);
    service(ctx)?.limit_ip(ip)
}
