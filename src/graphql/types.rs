//! GraphQL object and input types. Names and shapes follow the published schema contract.

use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{
    ComplexObject, Context, Enum, ID, InputObject, InputValueError, InputValueResult,
    MaybeUndefined, Object, Scalar, ScalarType, SimpleObject, Value,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

use super::loaders::{ApiTokensOf, SessionsOf, TotpOf, UserLoader};
use super::{RequestLoader, current_session, or_null, service, viewer};
use crate::db::entities::user::Model as User;
use crate::db::users::Filter;
use crate::db::{Position, Role};
use crate::error::{AppError, AppResult, FieldCode};
use crate::service::validation::Fields;
use crate::service::{self, NewUser, Page, UserChanges};

/// Our own `DateTime` rather than async-graphql's, so a malformed value is refused when the
/// request is validated, before any of its fields run, as the specification's input coercion
/// asks; async-graphql's accepts any string until the field that reads it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

/// A moment, as an RFC 3339 date and time with its offset (`2027-01-31T09:30:00Z`,
/// `2027-01-31T10:30:00+01:00`); the server answers in UTC, always in one form, with
/// microseconds and `Z` (`2027-01-31T09:30:00.000000Z`).
#[Scalar(
    name = "DateTime",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for Timestamp {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => DateTime::parse_from_rfc3339(text)
                .map(|at| Self(at.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("must be an RFC 3339 date and time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if DateTime::parse_from_rfc3339(text).is_ok())
    }

    fn to_value(&self) -> Value {
        // One form for every answer: fixed-format parsers (Swift's, say) take one pattern.
        Value::String(self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Self(at)
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "Role", remote = "crate::db::Role")]
pub enum GqlRole {
    Owner,
    Admin,
    Standard,
}

/// A user as some viewer sees it. The model is shared, not copied, with the loader's cache.
pub struct UserObject {
    model: Arc<User>,
    /// In the payload of register, login or refresh (and the users reached from it), the
    /// account that just signed in and its new session: the viewer there, rather than the
    /// request's token (which may be expired, absent or someone else's).
    signed_in: Option<SignedIn>,
}

#[derive(Clone)]
struct SignedIn {
    user: Arc<User>,
    session: Uuid,
}

impl UserObject {
    pub fn new(model: impl Into<Arc<User>>) -> Self {
        Self {
            model: model.into(),
            signed_in: None,
        }
    }

    pub fn of_session(model: User, session: Uuid) -> Self {
        let user = Arc::new(model);
        Self {
            model: user.clone(),
            signed_in: Some(SignedIn { user, session }),
        }
    }

    /// `model` as `viewer` sees it, in `session`: the caller as a mutation left them.
    pub fn viewed_by(model: User, viewer: User, session: Uuid) -> Self {
        Self {
            model: Arc::new(model),
            signed_in: Some(SignedIn {
                user: Arc::new(viewer),
                session,
            }),
        }
    }

    /// Who views this user: the account of a sign-in payload, else the request's caller.
    async fn viewer<'a>(&'a self, ctx: &Context<'a>) -> AppResult<&'a User> {
        match &self.signed_in {
            Some(signed_in) => Ok(&signed_in.user),
            None => viewer(ctx).await,
        }
    }

    /// `value` when the viewer may see this user's private fields, else `None`.
    async fn private<T>(&self, ctx: &Context<'_>, value: Option<T>) -> Option<T> {
        let visible = service::rules::can_see_private(self.viewer(ctx).await.ok(), &self.model);
        value.filter(|_| visible)
    }

    /// This user's credentials of the kind `key` names, through the request's loader (the
    /// kind's default when the batch holds none), when the viewer may see them; else null, with
    /// FORBIDDEN at the field.
    async fn credentials<K>(
        &self,
        ctx: &Context<'_>,
        key: K,
        what: &'static str,
    ) -> Option<<UserLoader as Loader<K>>::Value>
    where
        K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
        UserLoader: Loader<K, Error = Arc<AppError>>,
        <UserLoader as Loader<K>>::Value: Default,
    {
        let loaded = async {
            service::rules::check_credentials(self.viewer(ctx).await?, &self.model)?;
            Ok(Some(load(ctx, key, what).await?.unwrap_or_default()))
        };
        or_null(ctx, loaded.await)
    }
}

#[Object(name = "User", serial)]
impl UserObject {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    async fn username(&self) -> &str {
        &self.model.username
    }

    /// Null unless the viewer is this user, an admin or the owner.
    async fn email(&self, ctx: &Context<'_>) -> Option<&str> {
        self.private(ctx, Some(self.model.email.as_str())).await
    }

    /// Null when not set, and unless the viewer is this user, an admin or the owner.
    async fn first_name(&self, ctx: &Context<'_>) -> Option<&str> {
        self.private(ctx, self.model.first_name.as_deref()).await
    }

    /// Null when not set, and unless the viewer is this user, an admin or the owner.
    async fn last_name(&self, ctx: &Context<'_>) -> Option<&str> {
        self.private(ctx, self.model.last_name.as_deref()).await
    }

    /// Null when not set, and unless the viewer is this user, an admin or the owner.
    async fn phone(&self, ctx: &Context<'_>) -> Option<&str> {
        self.private(ctx, self.model.phone.as_deref()).await
    }

    async fn role(&self) -> GqlRole {
        self.model.role.into()
    }

    async fn disabled(&self) -> bool {
        self.model.disabled
    }

    async fn created_at(&self) -> Timestamp {
        self.model.created_at.into()
    }

    /// The last change to this account (profile, email, password, role, login switch); null
    /// unless the viewer may see its email, since when those changed tells of them.
    async fn updated_at(&self, ctx: &Context<'_>) -> Option<Timestamp> {
        let at = self.private(ctx, Some(self.model.updated_at)).await;
        at.map(Into::into)
    }

    /// The last login (a registration is the first); null for an account never signed in, and
    /// unless the viewer is this user, an admin or the owner (when the admins sign in is theirs
    /// to know). A refresh is no login.
    async fn last_login_at(&self, ctx: &Context<'_>) -> Option<Timestamp> {
        let at = self.private(ctx, self.model.last_login_at).await;
        at.map(Into::into)
    }

    /// The account that created this one with `createUser`, or the one `rollcall user import`
    /// named as its creator (an attribution the operator gave, whoever that account is); null
    /// when self-registered, or once that account is deleted.
    async fn created_by(&self, ctx: &Context<'_>) -> Option<UserObject> {
        related_user(ctx, self.model.created_by, &self.signed_in).await
    }

    /// Live sessions, newest first. This user and those who manage them may see them; anyone
    /// else gets null and a FORBIDDEN error (nullable, so one refused user in a list does not
    /// null the whole list).
    #[graphql(complexity = "credential_list(child_complexity)")]
    async fn sessions(&self, ctx: &Context<'_>) -> Option<Vec<SessionObject>> {
        let sessions = self
            .credentials(ctx, SessionsOf(self.model.id), "loading sessions")
            .await?;
        let current = match &self.signed_in {
            Some(signed_in) => Some(signed_in.session),
            None => current_session(ctx),
        };
        let demo = or_null(ctx, service(ctx).map(|service| Some(service.demo())))?;
        Some(
            sessions
                .into_iter()
                .map(|session| {
                    let current = Some(session.id) == current;
                    let client = service::rules::shows_session_client(demo, current);
                    SessionObject {
                        current,
                        id: ID(session.id.to_string()),
                        created_at: session.created_at.into(),
                        last_used_at: session.last_used_at.into(),
                        expires_at: session.expires_at.into(),
                        user_agent: session.user_agent.filter(|_| client),
                        ip: session.ip.filter(|_| client),
                    }
                })
                .collect(),
        )
    }

    /// Unexpired API tokens, newest first. This user and those who manage them may see them;
    /// anyone else gets null and a FORBIDDEN error. The tokens themselves are never shown again.
    #[graphql(complexity = "credential_list(child_complexity)")]
    async fn api_tokens(&self, ctx: &Context<'_>) -> Option<Vec<ApiTokenObject>> {
        let tokens = self
            .credentials(ctx, ApiTokensOf(self.model.id), "loading API tokens")
            .await?;
        Some(
            tokens
                .into_iter()
                .map(|row| ApiTokenObject {
                    signed_in: self.signed_in.clone(),
                    ..row.into()
                })
                .collect(),
        )
    }

    /// Whether two-factor login is on. This user and those who manage them may see it; anyone
    /// else gets null and a FORBIDDEN error.
    async fn totp_enabled(&self, ctx: &Context<'_>) -> Option<bool> {
        self.credentials(ctx, TotpOf(self.model.id), "loading two-factor state")
            .await
    }
}

/// What a user's `sessions` or `apiTokens`, or an API token's `createdBy`, costs against the
/// complexity limit: ten times what is selected. A token's `createdBy` leads back to its user,
/// so lists of up to a hundred could otherwise nest and multiply without bound. Ten, a
/// typical list rather than the cap, keeps an admin's page of fifty users with their
/// sessions and tokens within the default limit.
fn credential_list(child_complexity: usize) -> usize {
    child_complexity
        .saturating_mul(CREDENTIAL_WEIGHT)
        .saturating_add(1)
}
pub(super) const CREDENTIAL_WEIGHT: usize = 10;

/// A long-lived credential for scripts; its token is shown only when it is created.
#[derive(SimpleObject)]
#[graphql(name = "ApiToken", complex, serial)]
pub struct ApiTokenObject {
    pub id: ID,
    pub name: String,
    pub created_at: Timestamp,
    /// Null until the token is first used; then up to a minute behind the latest use: uses
    /// are recorded at most once a minute.
    pub last_used_at: Option<Timestamp>,
    /// Null: it never expires (revoke it when it is no longer needed).
    pub expires_at: Option<Timestamp>,
    #[graphql(skip)]
    created_by: Option<Uuid>,
    /// The viewer, as for the user whose token this is.
    #[graphql(skip)]
    signed_in: Option<SignedIn>,
}

#[ComplexObject]
impl ApiTokenObject {
    /// Who created the token: its user, or the admin or owner who issued it for them (a
    /// token goes with the account that issued it). A user sees here a credential someone
    /// else made for them.
    #[graphql(complexity = "credential_list(child_complexity)")]
    async fn created_by(&self, ctx: &Context<'_>) -> Option<UserObject> {
        related_user(ctx, self.created_by, &self.signed_in).await
    }
}

impl From<crate::db::entities::api_token::Model> for ApiTokenObject {
    fn from(row: crate::db::entities::api_token::Model) -> Self {
        Self {
            id: ID(row.id.to_string()),
            name: row.name,
            created_at: row.created_at.into(),
            last_used_at: row.last_used_at.map(Into::into),
            expires_at: row.expires_at.map(Into::into),
            created_by: row.created_by,
            signed_in: None,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(serial)]
pub struct ApiTokenPayload {
    /// The token, shown only now: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub api_token: ApiTokenObject,
}

/// What `enableTotp` shows once. Nothing is enforced until `confirmTotp`.
#[derive(SimpleObject)]
pub struct TotpSetup {
    /// The secret in base32, for typing into an authenticator app.
    pub secret: String,
    /// The same as an `otpauth://` URI, for a QR code.
    pub uri: String,
    /// One-time codes that stand in for a TOTP code when the app is lost; keep them safe.
    pub recovery_codes: Vec<String>,
}

impl From<service::TotpSetup> for TotpSetup {
    fn from(setup: service::TotpSetup) -> Self {
        Self {
            secret: setup.secret,
            uri: setup.uri,
            recovery_codes: setup.recovery_codes,
        }
    }
}

/// Proof that the caller is still who signed in, for sensitive actions. With two-factor login
/// on, `totpCode` (a current code or a recovery code) is required; otherwise `password`.
/// Ignored where the action needs none.
#[derive(InputObject, Default)]
pub struct VerificationInput {
    pub password: Option<String>,
    pub totp_code: Option<String>,
}

impl From<VerificationInput> for service::Verification {
    fn from(input: VerificationInput) -> Self {
        Self {
            password: input.password,
            totp_code: input.totp_code,
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "AuditAction", remote = "crate::service::AuditAction")]
pub enum GqlAuditAction {
    UserRegistered,
    UserCreated,
    UserUpdated,
    UserDeleted,
    UsersImported,
    RoleChanged,
    LoggedIn,
    LoggedOut,
    SessionRevoked,
    AllSessionsRevoked,
    RefreshTokenReused,
    ApiTokenCreated,
    ApiTokenRevoked,
    TotpSetupStarted,
    TotpEnabled,
    TotpDisabled,
    RecoveryCodeUsed,
    SigningKeyRotated,
    /// A new signing key made current and every earlier one deleted (`keys rotate --revoke`).
    SigningKeysRevoked,
}

/// One change to an account, a role, a token, a session or two-factor login.
pub struct AuditEntryObject(crate::db::entities::audit_entry::Model);

// Serial, as every object with fields that wait: fields come back in the order asked for.
#[Object(name = "AuditEntry", serial)]
impl AuditEntryObject {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn at(&self) -> Timestamp {
        self.0.at.into()
    }

    /// Null for an action this server does not know (one a newer release wrote, read during a
    /// rolling upgrade).
    async fn action(&self) -> Option<GqlAuditAction> {
        crate::service::AuditAction::from_name(&self.0.action).map(Into::into)
    }

    /// Who made the change; null for the command line and the server itself.
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| ID(id.to_string()))
    }

    /// The actor, while their account exists.
    async fn actor(&self, ctx: &Context<'_>) -> Option<UserObject> {
        or_null(ctx, load_user(ctx, self.0.actor_id).await)
    }

    /// The user the change is about; null for a change about no user (`USERS_IMPORTED`,
    /// `SIGNING_KEY_ROTATED`, `SIGNING_KEYS_REVOKED`).
    async fn target_id(&self) -> Option<ID> {
        self.0.target_id.map(|id| ID(id.to_string()))
    }

    /// The target, while their account exists.
    async fn target(&self, ctx: &Context<'_>) -> Option<UserObject> {
        or_null(ctx, load_user(ctx, self.0.target_id).await)
    }

    /// The target's role once the change was made: for `ROLE_CHANGED`, the role given, so a
    /// promotion reads apart from a demotion, also after the account is deleted. Null for a
    /// change about no user.
    async fn target_role(&self) -> Option<GqlRole> {
        self.0.target_role.map(Into::into)
    }

    /// The actor's client address; null for the command line, for a detected refresh-token
    /// reuse (no actor), for readers who did not manage the actor as they acted (an admin does
    /// not see the owner's addresses, nor a fellow admin's), and in demo mode.
    async fn ip(&self, ctx: &Context<'_>) -> Option<&str> {
        let ip = self.0.ip.as_deref()?;
        let visible = async {
            let actor = self.0.actor_id.zip(self.0.actor_role);
            let demo = service(ctx)?.demo();
            Ok(Some(service::rules::can_see_actor_ip(
                viewer(ctx).await?,
                actor,
                demo,
            )))
        };
        or_null(ctx, visible.await)?.then_some(ip)
    }

    /// The names of the changed fields; never their values.
    async fn fields(&self) -> Vec<&str> {
        self.0.fields.split(',').filter(|f| !f.is_empty()).collect()
    }
}

/// User `id` through the request's loader: every such field of a response level is read in one
/// batched query.
async fn load_user(ctx: &Context<'_>, id: Option<Uuid>) -> AppResult<Option<UserObject>> {
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(load_model(ctx, id).await?.map(UserObject::new))
}

/// User `id`, reached from an object of a sign-in payload (`signed_in`) or of the request's
/// caller, and seen by the same viewer; null, with the error at the field, when loading fails.
async fn related_user(
    ctx: &Context<'_>,
    id: Option<Uuid>,
    signed_in: &Option<SignedIn>,
) -> Option<UserObject> {
    let user = or_null(ctx, load_user(ctx, id).await)?;
    Some(UserObject {
        signed_in: signed_in.clone(),
        ..user
    })
}

async fn load_model(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<Arc<User>>> {
    load(ctx, id, "loading a user by id").await
}

/// What the request's loader holds for `key`, batched with every other such key of the
/// response level; `None` when the batch has nothing for it. `what` names a failed batch in
/// the log.
async fn load<K>(
    ctx: &Context<'_>,
    key: K,
    what: &'static str,
) -> AppResult<Option<<UserLoader as Loader<K>>::Value>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    UserLoader: Loader<K, Error = Arc<AppError>>,
{
    ctx.data::<RequestLoader>()
        .map_err(|_| AppError::internal("user loader missing"))?
        .get()
        .load_one(key)
        .await
        .map_err(|err| match *err {
            // A statement past its timeout answers as it does outside a loader.
            AppError::Timeout(_) => Arc::unwrap_or_clone(err),
            _ => AppError::internal_from(what, err),
        })
}

#[derive(SimpleObject)]
#[graphql(serial)]
pub struct AuditEdge {
    pub cursor: String,
    pub node: AuditEntryObject,
}

/// A page of audit entries. `totalCount` is computed only when a query selects it.
pub struct AuditConnection {
    entries: Vec<crate::db::entities::audit_entry::Model>,
    has_next: bool,
    has_previous: bool,
    filter: service::AuditFilter,
}

impl AuditConnection {
    pub fn new(page: service::AuditPage, filter: service::AuditFilter) -> Self {
        Self {
            entries: page.entries,
            has_next: page.has_next,
            has_previous: page.has_previous,
            filter,
        }
    }
}

fn audit_cursor(entry: &crate::db::entities::audit_entry::Model) -> String {
    position_cursor(List::Audit, entry.at, entry.id)
}

/// A page of audit entries, newest first.
#[Object(serial)]
impl AuditConnection {
    async fn edges(&self) -> Vec<AuditEdge> {
        self.entries
            .iter()
            .map(|entry| AuditEdge {
                cursor: audit_cursor(entry),
                node: AuditEntryObject(entry.clone()),
            })
            .collect()
    }

    async fn nodes(&self) -> Vec<AuditEntryObject> {
        self.entries.iter().cloned().map(AuditEntryObject).collect()
    }

    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next,
            has_previous_page: self.has_previous,
            start_cursor: self.entries.first().map(audit_cursor),
            end_cursor: self.entries.last().map(audit_cursor),
        }
    }

    /// Entries matching the filter that the viewer may read, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> AppResult<i32> {
        let count = service(ctx)?
            .count_audit(viewer(ctx).await?, &self.filter)
            .await?;
        // A GraphQL `Int` is 32 bits: typed clients cannot read a larger one.
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

#[derive(InputObject)]
pub struct AuditFilter {
    pub action: Option<GqlAuditAction>,
    pub actor_id: Option<ID>,
    pub target_id: Option<ID>,
}

impl AuditFilter {
    /// The filter, each id that is no id refused into `fields`.
    pub fn parse(self, fields: &mut Fields) -> AppResult<service::AuditFilter> {
        let mut id = |field: &str, value: Option<ID>| match value {
            Some(id) => fields.absorb(parse_uuid(&id, field, "user")),
            None => Ok(None),
        };
        Ok(service::AuditFilter {
            action: self.action.map(Into::into),
            actor: id("actorId", self.actor_id)?,
            target: id("targetId", self.target_id)?,
        })
    }
}

/// One login and its refresh-token family.
#[derive(SimpleObject)]
#[graphql(name = "Session")]
pub struct SessionObject {
    pub id: ID,
    pub created_at: Timestamp,
    /// The last refresh (the login, before any).
    pub last_used_at: Timestamp,
    /// When the session ends: at its maximum age, or sooner if not refreshed within the idle
    /// limit or the refresh token's lifetime (each refresh moves this on, up to the maximum
    /// age).
    pub expires_at: Timestamp,
    /// The client's User-Agent at login; in demo mode, shown for the current session only.
    pub user_agent: Option<String>,
    /// The client's address at login; in demo mode, shown for the current session only.
    pub ip: Option<String>,
    /// Whether this is the session of the request's access token; in the payload of
    /// `register`, `login` and `refreshToken`, of the session it opened or refreshed.
    pub current: bool,
}

#[derive(SimpleObject)]
#[graphql(serial)]
pub struct AuthPayload {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`: send the access token in an `Authorization: Bearer …` header.
    pub token_type: String,
    /// When the access token expires: the access TTL from now, or the session's end when
    /// sooner (refresh then to learn whether to log in again).
    pub expires_at: Timestamp,
    /// Whole seconds from this answer until `expiresAt`: a client whose clock may be off
    /// schedules its refresh by this rather than by its own reading of `expiresAt`. At most
    /// 2147483647 (about 68 years).
    pub expires_in: i32,
    pub user: UserObject,
}

impl From<service::AuthSession> for AuthPayload {
    fn from(session: service::AuthSession) -> Self {
        Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            token_type: "Bearer".into(),
            expires_in: i32::try_from((session.expires_at - chrono::Utc::now()).num_seconds())
                .unwrap_or(i32::MAX)
                .max(0),
            expires_at: session.expires_at.into(),
            user: UserObject::of_session(session.user, session.session_id),
        }
    }
}

/// Pages go forward, by `first` and `after`.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Whether the page was asked for after a cursor; whether anything matching lies before
    /// that cursor is not looked up.
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(serial)]
pub struct UserEdge {
    pub cursor: String,
    pub node: UserObject,
}

/// A page of users. `totalCount` is computed only when a query selects it.
pub struct UserConnection {
    users: Vec<Arc<User>>,
    has_next: bool,
    has_previous: bool,
    filter: Filter,
}

impl UserConnection {
    pub fn new(page: Page, filter: Filter) -> Self {
        Self {
            users: page.users.into_iter().map(Arc::new).collect(),
            has_next: page.has_next,
            has_previous: page.has_previous,
            filter,
        }
    }
}

// Serial, as every object with fields that wait: fields come back in the order asked for.
#[Object(serial)]
impl UserConnection {
    async fn edges(&self) -> Vec<UserEdge> {
        self.users
            .iter()
            .map(|u| UserEdge {
                cursor: encode_cursor(u),
                node: UserObject::new(u.clone()),
            })
            .collect()
    }

    async fn nodes(&self) -> Vec<UserObject> {
        self.users
            .iter()
            .map(|u| UserObject::new(u.clone()))
            .collect()
    }

    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next,
            has_previous_page: self.has_previous,
            start_cursor: self.users.first().map(|u| encode_cursor(u)),
            end_cursor: self.users.last().map(|u| encode_cursor(u)),
        }
    }

    /// Users matching the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> AppResult<i32> {
        let count = service(ctx)?
            .count_users(viewer(ctx).await?, &self.filter)
            .await?;
        // A GraphQL `Int` is 32 bits: typed clients cannot read a larger one.
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// The list a cursor comes from: one list's position means nothing in another, so a cursor
/// given to the wrong list is refused rather than silently read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Users,
    Audit,
}

impl List {
    fn tag(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Audit => "audit",
        }
    }
}

/// Opaque cursor: the row's creation time (microseconds) and id.
pub fn encode_cursor(user: &User) -> String {
    position_cursor(List::Users, user.created_at, user.id)
}

/// A cursor for a row of `list` at (`at`, `id`) in its keyset order.
fn position_cursor(list: List, at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", list.tag(), at.timestamp_micros(), id))
}

pub fn decode_cursor(list: List, cursor: &str) -> AppResult<Position> {
    let invalid = || AppError::field("after", FieldCode::Format, "is not a valid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let position = text
        .strip_prefix(list.tag())
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    let (micros, id) = position.split_once(':').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    // Within the years both databases store: PostgreSQL refuses times chrono still takes.
    let at = DateTime::from_timestamp_micros(micros)
        .filter(|at| (1..=9999).contains(&at.year()))
        .ok_or_else(invalid)?;
    Ok(Position {
        at,
        id: Uuid::parse_str(id).map_err(|_| invalid())?,
    })
}

/// The uuid in argument `field`, naming what kind of id it should be when it is none.
pub fn parse_uuid(id: &ID, field: &str, kind: &str) -> AppResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        AppError::field(
            field,
            FieldCode::Format,
            format!("is not a valid {kind} id"),
        )
    })
}

pub fn parse_id(id: &ID) -> AppResult<Uuid> {
    parse_uuid(id, "id", "user")
}

#[derive(SimpleObject)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    pub uptime_seconds: i32,
    /// `sqlite` or `postgresql`.
    pub database: String,
    /// Whether `register` is taken now: false when registration is closed or in demo mode.
    pub registration_open: bool,
    /// Read-only demo mode: mutations that change users, API tokens or two-factor login are
    /// refused, and so are `logoutEverywhere` and `revokeSession` of any session but the
    /// caller's current one; logins, refreshes and logouts still work.
    pub demo: bool,
}

#[derive(InputObject)]
pub struct UserFilter {
    /// Case-insensitive literal substring of username, email, first name or last name, each
    /// on its own (a full name matches neither name); spaces around it are no part of it. At
    /// most 200 characters.
    pub search: Option<String>,
    pub role: Option<GqlRole>,
    pub disabled: Option<bool>,
}

impl From<UserFilter> for Filter {
    fn from(f: UserFilter) -> Self {
        Filter {
            // As typed into a search box: spaces before and after are no part of the term.
            search: f
                .search
                .map(|term| term.trim().to_owned())
                .filter(|term| !term.is_empty()),
            role: f.role.map(Into::into),
            disabled: f.disabled,
        }
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub username: String,
    pub email: String,
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

impl From<RegisterInput> for NewUser {
    fn from(i: RegisterInput) -> Self {
        NewUser {
            username: i.username,
            email: i.email,
            password: i.password,
            first_name: i.first_name,
            last_name: i.last_name,
            phone: i.phone,
        }
    }
}

impl CreateUserInput {
    /// The account and its role, STANDARD when none is given (as for `rollcall user create`).
    pub fn into_parts(self) -> (NewUser, Role) {
        let role = self.role.map_or(Role::Standard, Into::into);
        let user = NewUser {
            username: self.username,
            email: self.email,
            password: self.password,
            first_name: self.first_name,
            last_name: self.last_name,
            phone: self.phone,
        };
        (user, role)
    }
}

#[derive(InputObject)]
pub struct LoginInput {
    /// Username or email.
    pub login: String,
    pub password: String,
    /// With two-factor login on: a current TOTP code, or one of the recovery codes. An empty
    /// one counts as none.
    pub totp_code: Option<String>,
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub username: String,
    pub email: String,
    pub password: String,
    /// Defaults to STANDARD.
    pub role: Option<GqlRole>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

/// A change to some of a user's fields: a field left out is kept.
#[derive(InputObject)]
pub struct UpdateUserInput {
    /// Left out or `null`: kept (it cannot be cleared).
    pub username: Option<String>,
    /// Left out or `null`: kept (it cannot be cleared).
    pub email: Option<String>,
    /// Left out, `null` or empty: kept. A new password ends the user's sessions.
    pub password: Option<String>,
    /// Your own password: required when changing your own password or email, and ignored in
    /// any other edit.
    pub current_password: Option<String>,
    /// `null` clears the field; leaving it out keeps it.
    pub first_name: MaybeUndefined<String>,
    /// `null` clears the field; leaving it out keeps it.
    pub last_name: MaybeUndefined<String>,
    /// `null` clears the field; leaving it out keeps it.
    pub phone: MaybeUndefined<String>,
    /// Left out or `null`: kept. `true` ends the user's sessions and deletes their API tokens.
    pub disabled: Option<bool>,
}

impl UpdateUserInput {
    /// Leaves field `name` out, as if the client had not written it: the fields a null
    /// clears are the ones where that differs.
    pub fn leave_out(&mut self, name: &str) {
        match name {
            "firstName" => self.first_name = MaybeUndefined::Undefined,
            "lastName" => self.last_name = MaybeUndefined::Undefined,
            "phone" => self.phone = MaybeUndefined::Undefined,
            _ => {}
        }
    }
}

fn patch(value: MaybeUndefined<String>) -> Option<Option<String>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

impl From<UpdateUserInput> for UserChanges {
    fn from(i: UpdateUserInput) -> Self {
        UserChanges {
            username: i.username,
            email: i.email,
            password: i.password,
            current_password: i.current_password,
            first_name: patch(i.first_name),
            last_name: patch(i.last_name),
            phone: patch(i.phone),
            disabled: i.disabled,
        }
    }
}
