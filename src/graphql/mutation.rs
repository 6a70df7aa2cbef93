use async_graphql::{Context, ID, Object};

use super::guards::{Access, InOrder, Interactive};
use super::types::{
    ApiTokenPayload, AuthPayload, CreateUserInput, GqlRole, LoginInput, RegisterInput, Timestamp,
    TotpSetup, UpdateUserInput, UserObject, VerificationInput, parse_id, parse_uuid,
};
use super::{caller, origin, service};
use crate::error::AppResult;
use crate::service::{Credential, Verification};

pub struct Mutation;

// Fields without a guard of their own get `InOrder` from here.
#[Object(guard = "InOrder")]
impl Mutation {
    /// Self-registration; the first account on an empty database becomes the owner.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> AppResult<AuthPayload> {
        Ok(service(ctx)?
            .register(input.into(), &origin(ctx))
            .await?
            .into())
    }

    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> AppResult<AuthPayload> {
        Ok(service(ctx)?
            .login(
                &input.login,
                &input.password,
                input.totp_code.as_deref(),
                &origin(ctx),
            )
            .await?
            .into())
    }

    /// Exchanges a refresh token for a new pair; the old refresh token stops working.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> AppResult<AuthPayload> {
        Ok(service(ctx)?
            .refresh(&refresh_token, origin(ctx).ip)
            .await?
            .into())
    }

    /// Ends the session of this refresh token, including its access tokens. `false` when the
    /// token is unknown or expired, or its session had already ended.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> AppResult<bool> {
        let ip = origin(ctx).ip;
        service(ctx)?.logout(&refresh_token, ip).await
    }

    /// Ends one session (its access and refresh tokens stop at once): one's own, or one of a
    /// user one manages. `false` when it had already ended, or for a manager when there is no
    /// such session; a STANDARD user gets `FORBIDDEN` for any id not of a session of theirs,
    /// so ids cannot be probed.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        let id = parse_uuid(&id, "id", "session")?;
        service(ctx)?.revoke_session(&caller(ctx).await?, id).await
    }

    /// Ends every session of the caller, this one included, or with `keepCurrent` every other
    /// one ("sign out my other devices"); returns how many ended.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn logout_everywhere(
        &self,
        ctx: &Context<'_>,
        // Nullable: a client's optional variable left out reaches here as null (async-graphql
        // passes it on where the specification would apply the default), meaning false.
        #[graphql(default_with = "Some(false)")] keep_current: Option<bool>,
    ) -> AppResult<i32> {
        let service = service(ctx)?;
        let keep_current = keep_current.unwrap_or(false);
        let count = service
            .logout_everywhere(&caller(ctx).await?, keep_current)
            .await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// Creating an ADMIN needs step-up `verification` once the login is older than the step-up
    /// window.
    #[graphql(guard = "InOrder.and(Interactive).and(Access::Manager)")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
        verification: Option<VerificationInput>,
    ) -> AppResult<UserObject> {
        let verification = verification.map(Verification::from);
        let (new, role) = input.into_parts();
        let user = service(ctx)?
            .create_user(Some(&caller(ctx).await?), new, role, verification.as_ref())
            .await?;
        Ok(UserObject::new(user))
    }

    /// Changing someone else's password or email needs step-up `verification` once the login
    /// is older than the step-up window: it decides who can sign in as them.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateUserInput,
        verification: Option<VerificationInput>,
    ) -> AppResult<UserObject> {
        let verification = verification.map(Verification::from);
        let mut input = input;
        for field in super::spec::coercion::left_out_fields(ctx, "input") {
            input.leave_out(&field);
        }
        let user = service(ctx)?
            .update_user(
                &caller(ctx).await?,
                parse_id(&id)?,
                input.into(),
                verification.as_ref(),
            )
            .await?;
        Ok(UserObject::new(user))
    }

    /// Returns the deleted user's id. Needs step-up `verification` once the login is older
    /// than the step-up window, for one's own account too.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        verification: Option<VerificationInput>,
    ) -> AppResult<ID> {
        let verification = verification.map(Verification::from);
        let id = service(ctx)?
            .delete_user(&caller(ctx).await?, parse_id(&id)?, verification.as_ref())
            .await?;
        Ok(ID(id.to_string()))
    }

    /// OWNER only. `role: OWNER` transfers ownership: the caller becomes an ADMIN. Needs
    /// step-up `verification` once the login is older than the step-up window.
    #[graphql(guard = "InOrder.and(Interactive).and(Access::Owner)")]
    async fn set_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: GqlRole,
        verification: Option<VerificationInput>,
    ) -> AppResult<UserObject> {
        let verification = verification.map(Verification::from);
        let service = service(ctx)?;
        let caller = caller(ctx).await?;
        let (user, viewer) = service
            .set_role(&caller, parse_id(&id)?, role.into(), verification.as_ref())
            .await?;
        // Its fields are judged as the caller now stands: handing ownership over made them an
        // admin, who may not see what the owner could.
        Ok(match caller.credential {
            Credential::Session(session) => UserObject::viewed_by(user, viewer, session),
            _ => UserObject::new(user),
        })
    }

    /// A new API token for the caller, or for `userId` when the caller manages that user. The
    /// token is in this response only; it acts as its user for queries and never manages
    /// anything. Needs step-up `verification` once the login is older than the step-up window.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        expires_at: Option<Timestamp>,
        user_id: Option<ID>,
        verification: Option<VerificationInput>,
    ) -> AppResult<ApiTokenPayload> {
        let verification = verification.map(Verification::from);
        let user_id = user_id
            .as_ref()
            .map(|id| parse_uuid(id, "userId", "user"))
            .transpose()?;
        let (token, row) = service(ctx)?
            .create_api_token(
                &caller(ctx).await?,
                user_id,
                &name,
                expires_at.map(|at| at.0),
                verification.as_ref(),
            )
            .await?;
        Ok(ApiTokenPayload {
            token,
            api_token: row.into(),
        })
    }

    /// Revokes an API token at once: one's own, or one of a user one manages. `false` when
    /// there was no such token; a STANDARD user gets `FORBIDDEN` for any id not of a token
    /// of theirs, so ids cannot be probed.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        let id = parse_uuid(&id, "id", "token")?;
        service(ctx)?
            .revoke_api_token(&caller(ctx).await?, id)
            .await
    }

    /// Starts two-factor setup: a secret for an authenticator app and ten recovery codes,
    /// shown only now. Logins need a code once `confirmTotp` succeeds. Needs step-up
    /// `verification` once the login is older than the step-up window.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn enable_totp(
        &self,
        ctx: &Context<'_>,
        verification: Option<VerificationInput>,
    ) -> AppResult<TotpSetup> {
        let verification = verification.map(Verification::from);
        Ok(service(ctx)?
            .enable_totp(&caller(ctx).await?, verification.as_ref())
            .await?
            .into())
    }

    /// Turns two-factor login on with a current code from the app just set up. FORBIDDEN
    /// without a setup from `enableTotp` to confirm, or when it is on already.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn confirm_totp(&self, ctx: &Context<'_>, code: String) -> AppResult<bool> {
        service(ctx)?.confirm_totp(&caller(ctx).await?, &code).await
    }

    /// Turns two-factor login off, or drops a setup not yet confirmed. Always needs
    /// `verification`: a TOTP or recovery code while it is on, the password for a setup not
    /// yet confirmed. `false` when there was neither.
    #[graphql(guard = "InOrder.and(Interactive)")]
    async fn disable_totp(
        &self,
        ctx: &Context<'_>,
        verification: VerificationInput,
    ) -> AppResult<bool> {
        let verification = Verification::from(verification);
        service(ctx)?
            .disable_totp(&caller(ctx).await?, &verification)
            .await
    }
}
