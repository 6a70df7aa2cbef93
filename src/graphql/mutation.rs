use async_graphql::{Context, ID, Object};

use super::guards::{Access, IpLimited, limit_ip};
use super::types::{
    AuthPayload, CreateUserInput, GqlRole, LoginInput, RegisterInput, UpdateUserInput, UserObject,
    parse_id, parse_session_id,
};
use super::{origin, service, viewer};
use crate::db::Role;
use crate::error::AppResult;
use crate::service::NewUser;

pub struct Mutation;

#[Object]
impl Mutation {
    /// Self-registration; the first account on an empty database becomes the owner.
    #[graphql(guard = "IpLimited")]
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> AppResult<AuthPayload> {
        Ok(service(ctx)?
            .register(input.into(), &origin(ctx))
            .await?
            .into())
    }

    #[graphql(guard = "IpLimited")]
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> AppResult<AuthPayload> {
        Ok(service(ctx)?
            .login(&input.login, &input.password, &origin(ctx))
            .await?
            .into())
    }

    /// Exchanges a refresh token for a new pair; the old refresh token stops working.
    #[graphql(guard = "IpLimited")]
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> AppResult<AuthPayload> {
        Ok(service(ctx)?.refresh(&refresh_token).await?.into())
    }

    /// Ends the session of this refresh token, including its access tokens.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> AppResult<bool> {
        service(ctx)?.logout(&refresh_token).await
    }

    /// Ends one session (its access and refresh tokens stop at once): one's own, or one of a
    /// user one manages. `false` when it had already ended.
    #[graphql(guard = "Access::SignedIn")]
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        let id = parse_session_id(&id)?;
        service(ctx)?.revoke_session(viewer(ctx).await?, id).await
    }

    /// Ends every session of the caller, this one included; returns how many there were.
    #[graphql(guard = "Access::SignedIn")]
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> AppResult<i32> {
        let count = service(ctx)?.logout_everywhere(viewer(ctx).await?).await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    #[graphql(guard = "Access::Manager")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> AppResult<UserObject> {
        let role = input.role.map_or(Role::Standard, Into::into);
        let new = NewUser {
            username: input.username,
            email: input.email,
            password: input.password,
            first_name: input.first_name,
            last_name: input.last_name,
            phone: input.phone,
        };
        let user = service(ctx)?
            .create_user(Some(viewer(ctx).await?), new, role)
            .await?;
        Ok(UserObject::new(user))
    }

    #[graphql(guard = "Access::SignedIn")]
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateUserInput,
    ) -> AppResult<UserObject> {
        if input.current_password.is_some() {
            // A password re-verification: a credential attempt like a login.
            limit_ip(ctx)?;
        }
        let user = service(ctx)?
            .update_user(viewer(ctx).await?, parse_id(&id)?, input.into())
            .await?;
        Ok(UserObject::new(user))
    }

    /// Returns the deleted user's id.
    #[graphql(guard = "Access::SignedIn")]
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let id = service(ctx)?
            .delete_user(viewer(ctx).await?, parse_id(&id)?)
            .await?;
        Ok(ID(id.to_string()))
    }

    /// OWNER only. `role: OWNER` transfers ownership: the caller becomes an ADMIN.
    #[graphql(guard = "Access::Owner")]
    async fn set_role(&self, ctx: &Context<'_>, id: ID, role: GqlRole) -> AppResult<UserObject> {
        let user = service(ctx)?
            .set_role(viewer(ctx).await?, parse_id(&id)?, role.into())
            .await?;
        Ok(UserObject::new(user))
    }
}
