//! Managing users: creation, edits, deletion, roles, and reads.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter,
};
use uuid::Uuid;

use super::validation::{self, Fields};
use super::{Caller, Service, Verification, rules};
use crate::db::Position;
use crate::db::audit::{self, Action, NewEntry};
use crate::db::entities::user::{Column, Entity as Users, Model as User, Role};
use crate::db::users::{self as user_queries, Filter};
use crate::db::{self, UniqueViolation, api_tokens, sessions, unique_violation};
use crate::error::{AppError, AppResult, FieldCode, FieldError};

/// Fields of a new account, as the client sent them. No `Debug`: it holds a password.
#[derive(Clone, Default)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

/// An edit. For the optional profile fields, `None` keeps the value and `Some(None)` clears it.
/// No `Debug`: it holds passwords.
#[derive(Clone, Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub current_password: Option<String>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub disabled: Option<bool>,
}

/// How a single user is looked up. A username or an email is taken as a login is: trimmed,
/// in any case and Unicode form.
pub enum UserRef {
    Id(Uuid),
    Username(String),
    Email(String),
}

/// Ownership needs someone who can sign in: a disabled owner would leave nobody in charge.
const DISABLED_OWNER: AppError =
    AppError::Forbidden("Ownership cannot go to a disabled account; enable it first");

/// Why a username or an email is refused as in use.
const USERNAME_TAKEN: &str = "is already taken";
const EMAIL_TAKEN: &str = "is already registered";

/// A check of an optional text field (a name or the phone).
type Check = fn(Option<&str>) -> validation::Checked<Option<String>>;

/// What `updateUser` may change, in the order its audit entries list them.
const EDITABLE: [&str; 7] = [
    "username",
    "email",
    "password",
    "firstName",
    "lastName",
    "phone",
    "disabled",
];

/// What [`Service::promote_owner`] did.
#[derive(Debug)]
pub enum Promotion {
    /// The user was the owner already.
    Unchanged,
    /// The user became the owner, taking over from the owner named (none where there was
    /// none): the sessions of both ended, as a role change ends them.
    From(Option<String>),
}

impl Service {
    /// Every invalid field of a new account at once, then every name of it already in use;
    /// its profile as stored, and its password.
    pub(super) async fn validate_new_user(
        &self,
        input: &NewUser,
    ) -> AppResult<(validation::Profile, String)> {
        let mut fields = Fields::new();
        let profile = validation::profile(
            &mut fields,
            &input.username,
            &input.email,
            input.first_name.as_deref(),
            input.last_name.as_deref(),
            input.phone.as_deref(),
        );
        // Judged against the names as stored: an email typed with a space or in full-width
        // letters must not let its own local part through as a password, nor hold that
        // refusal back until another field is put right.
        let (username, email) = match &profile {
            Some(p) => (p.username.clone(), p.email.clone()),
            None => (
                validation::refused_name(&input.username),
                validation::refused_name(&input.email),
            ),
        };
        let password = fields.check(
            "password",
            self.new_password(&input.password, &username, &email)
                .await?,
        );
        fields.into_result()?;
        let (Some(profile), Some(password)) = (profile, password) else {
            return Err(AppError::internal("validated field missing"));
        };
        let username_key = profile.username.to_ascii_lowercase();
        self.check_free(Some(&username_key), Some(&profile.email), None)
            .await?;
        Ok((profile, password))
    }

    /// [`validation::new_password`], then, when it passes, [`validation::guessable`] on the
    /// hashing threads: that can take the better part of a second of CPU, which must not hold
    /// an async worker.
    async fn new_password(
        &self,
        text: &str,
        username: &str,
        email: &str,
    ) -> AppResult<validation::Checked<String>> {
        let password = match validation::new_password(text, username, email) {
            Ok(password) => password,
            refused => return Ok(refused),
        };
        let (username, email) = (username.to_owned(), email.to_owned());
        self.0
            .passwords
            .compute(move || validation::guessable(&password, &username, &email).map(|()| password))
            .await
    }

    /// Creates an account for someone else. `caller` is `None` when the operator uses the
    /// command line, which alone may create the first owner.
    /// Creating an ADMIN is a sensitive action: it needs step-up verification.
    pub async fn create_user(
        &self,
        caller: Option<&Caller<'_>>,
        input: NewUser,
        role: Role,
        verification: Option<&Verification>,
    ) -> AppResult<User> {
        if let Some(caller) = caller {
            caller.session()?;
            rules::check_create(caller.user.role, role)?;
            self.writable()?;
        }
        // Every invalid field and every name in use first: a verification is not asked for
        // (nor counted, nor a recovery code spent) on input that could not be created anyway.
        let validated = self.validate_new_user(&input).await?;
        let actor = caller.map(|caller| caller.user.id);
        // Hashed before the verification too: a hash refused (the threads busy) or given up on
        // (the request's timeout) must not have spent a code.
        let mut model = self.prepare_new_user(validated, actor).await?;
        model.role = role;
        if let Some(caller) = caller.filter(|_| role == Role::Admin) {
            self.step_up(caller, verification).await?;
        }
        let by = caller.map(|caller| (caller.user.id, caller.user.role));
        let entry = NewEntry::new(Action::UserCreated, by, caller.and_then(|c| c.ip))
            .target(model.id, role);
        let tx = self.db().begin_write().await?;
        if let Some(caller) = caller {
            // The caller as they are now: a role lost since the check above (even earlier in
            // the same request) must not create what only that role could.
            let rule = |actor: &User, _: &User| rules::check_create(actor.role, role);
            self.recheck(&tx, caller, caller.user.id, rule).await?;
        }
        // Stamped as late as it can be: a list's cursor past a user added meanwhile would
        // leave one stamped long before its commit behind it.
        model.created_at = db::now();
        model.updated_at = model.created_at;
        match Users::insert(model.clone().into_active_model().reset_all())
            .exec_without_returning(&tx)
            .await
        {
            Ok(_) => {
                audit::record(&tx, entry).await?;
                tx.commit().await?;
                Ok(model)
            }
            Err(err) => {
                tx.rollback().await?;
                Err(self
                    .unique_error(err, &model.username_key, &model.email, model.id)
                    .await)
            }
        }
    }

    /// A new account from its validated profile and password ([`validate_new_user`]), its
    /// password hashed.
    pub(super) async fn prepare_new_user(
        &self,
        (profile, password): (validation::Profile, String),
        created_by: Option<Uuid>,
    ) -> AppResult<User> {
        let validation::Profile {
            username,
            email,
            first_name,
            last_name,
            phone,
        } = profile;
        let username_key = username.to_ascii_lowercase();
        let password_hash = self.0.passwords.hash(password).await?;
        let now = db::now();
        Ok(User {
            id: Uuid::now_v7(),
            username,
            username_key,
            email,
            password_hash,
            first_name,
            last_name,
            phone,
            role: Role::Standard,
            disabled: false,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            created_by,
        })
    }

    /// CONFLICT listing every taken field.
    async fn check_free(
        &self,
        username_key: Option<&str>,
        email: Option<&str>,
        except: Option<Uuid>,
    ) -> AppResult<()> {
        let (username_taken, email_taken) =
            user_queries::taken(self.db().conn(), username_key, email, except).await?;
        let mut fields = Fields::new();
        if username_taken {
            fields.add("username", FieldCode::Taken, USERNAME_TAKEN);
        }
        if email_taken {
            fields.add("email", FieldCode::Taken, EMAIL_TAKEN);
        }
        fields.into_conflict()
    }

    /// Turns a failed insert or update into the right client error: a unique violation that
    /// raced past [`Self::check_free`] is still a CONFLICT, on the fields the written row
    /// (`username_key`, `email`, id `id`) now shares with another.
    pub(super) async fn unique_error(
        &self,
        err: DbErr,
        username_key: &str,
        email: &str,
        id: Uuid,
    ) -> AppError {
        let field = match unique_violation(&err) {
            Some(UniqueViolation::Username) => "username",
            Some(UniqueViolation::Email) => "email",
            Some(UniqueViolation::Owner) => {
                return AppError::Forbidden(
                    "An owner already exists; transfer ownership instead (setRole to OWNER, or `rollcall user promote-owner`)",
                );
            }
            _ => return err.into(),
        };
        match self
            .check_free(Some(username_key), Some(email), Some(id))
            .await
        {
            Err(conflict) => conflict,
            // The other row is gone again; report the index that refused the write.
            Ok(()) => {
                let error = FieldError::new(FieldCode::Taken, "is already in use");
                AppError::Conflict([(field.to_owned(), error)].into())
            }
        }
    }

    /// Edits a user: oneself (a new password or email needs the current password), or someone
    /// the caller manages (a new password or email for them needs step-up verification).
    /// The edit is judged on the row as read, its credentials checked, and it is written once
    /// judged again on the row as locked.
    pub async fn update_user(
        &self,
        caller: &Caller<'_>,
        id: Uuid,
        mut changes: UserChanges,
        verification: Option<&Verification>,
    ) -> AppResult<User> {
        caller.session()?;
        // A profile form's blank new-password box, as its blank current-password box: no
        // password given, so none to judge or to verify for.
        changes.password = changes.password.filter(|password| !password.is_empty());
        let actor = caller.user;
        self.writable()?;
        rules::check_reach(actor, id, "You may not edit this user")?;
        let target = user_queries::by_id(self.db().conn(), id)
            .await?
            .ok_or(AppError::NotFound("No such user"))?;
        rules::check_edit(actor, &target, changes.disabled == Some(true))?;
        let mut edit = self.judge_edit(caller, &target, &changes).await?;
        let changed = edit.changed();
        if changed.is_empty() {
            return Ok(target);
        }
        self.authorize_edit(caller, &target, &changes, &edit)
            .await?;
        let new_key = edit
            .username_key()
            .filter(|key| *key != target.username_key);
        let new_email = edit.email.as_deref().filter(|_| edit.email_changes);
        self.check_free(new_key.as_deref(), new_email, Some(target.id))
            .await?;
        let password_hash = match edit.password.take() {
            Some(p) => Some(self.0.passwords.hash(p).await?),
            None => None,
        };
        if caller.user.id != target.id && (changes.password.is_some() || edit.email_changes) {
            // Whoever sets another's password or email can sign in as them. Asked last, so
            // no verification is spent on an edit refused anyway (the caller may list users,
            // so the names in use tell them nothing new), nor on a hash refused or given up on.
            self.step_up(caller, verification).await?;
        }
        self.write_edit(caller, target, &changes, edit, password_hash, changed)
            .await
    }

    /// Every invalid field of an edit at once, judged against `target` as read. A value sent
    /// back as it is stored is no change: it is not judged again (it may predate a rule, as a
    /// profile form sends every field) and not written.
    async fn judge_edit(
        &self,
        caller: &Caller<'_>,
        target: &User,
        changes: &UserChanges,
    ) -> AppResult<JudgedEdit> {
        // Judging a new password takes a hashing thread (the strength estimate), so it is
        // counted like a credential attempt before it runs: a signed-in client sending new
        // passwords in a loop would otherwise keep the threads from logins.
        if changes.password.is_some() {
            self.limit_ip(caller.ip)?;
            // One's own new password comes with the current one, whose check a throttled
            // session is refused: refused before the judging too.
            if caller.user.id == target.id {
                let subject = super::Subject::Session {
                    session: caller.session()?,
                    factor: super::Factor::Password,
                };
                self.refuse_if_throttled(&subject).await?;
            }
        }
        let mut fields = Fields::new();
        let username = changes
            .username
            .as_deref()
            .filter(|u| *u != target.username)
            .and_then(|u| fields.check("username", validation::username(u)));
        let email = changes
            .email
            .as_deref()
            .filter(|e| *e != target.email)
            .and_then(|e| fields.check("email", validation::email(e)));
        let password = match changes.password.as_deref() {
            Some(p) => {
                // Against the names the edit sends, valid or not: the refusal comes with the
                // others, not after they are put right.
                let sent = |valid: &Option<String>, sent: &Option<String>, stored: &str| {
                    valid.clone().unwrap_or_else(|| {
                        sent.as_deref()
                            .filter(|sent| *sent != stored)
                            .map_or_else(|| stored.to_owned(), validation::refused_name)
                    })
                };
                let username = sent(&username, &changes.username, &target.username);
                let email = sent(&email, &changes.email, &target.email);
                fields.check("password", self.new_password(p, &username, &email).await?)
            }
            None => None,
        };
        let mut text =
            |name: &str, value: &Option<Option<String>>, stored: &Option<String>, check: Check| {
                value
                    .as_ref()
                    .filter(|value| *value != stored)
                    .and_then(|value| fields.check(name, check(value.as_deref())))
                    .filter(|value| value != stored)
            };
        let first_name = text(
            "firstName",
            &changes.first_name,
            &target.first_name,
            validation::optional_text,
        );
        let last_name = text(
            "lastName",
            &changes.last_name,
            &target.last_name,
            validation::optional_text,
        );
        let phone = text("phone", &changes.phone, &target.phone, validation::phone);
        let email_changes = email.as_ref().is_some_and(|e| *e != target.email);
        // A new email that is invalid would be a change too: its missing `currentPassword` is
        // reported with it, not in a second round once the address is fixed.
        let bad_email_sent =
            email.is_none() && changes.email.as_deref().is_some_and(|e| e != target.email);
        let needs_current = caller.user.id == target.id
            && (changes.password.is_some() || email_changes || bad_email_sent);
        // Only where it is needed: elsewhere a form's current password box, filled in or
        // left blank, is no part of the edit.
        if needs_current {
            match validation::filled(&changes.current_password) {
                Some(current) => {
                    fields.check("currentPassword", validation::given_password(current));
                }
                None => fields.add(
                    "currentPassword",
                    FieldCode::Required,
                    "is required to change your password or email",
                ),
            }
        }
        fields.into_result()?;
        Ok(JudgedEdit {
            username,
            email,
            email_changes,
            password,
            first_name,
            last_name,
            phone,
            disabled: changes.disabled.filter(|d| *d != target.disabled),
            needs_current,
        })
    }

    /// What a judged edit needs besides the caller's reach: the current password for one's
    /// own password or email (another's takes step-up verification, asked once the new names
    /// are found free). Given where it is not needed, it is not checked (nor counted).
    async fn authorize_edit(
        &self,
        caller: &Caller<'_>,
        target: &User,
        changes: &UserChanges,
        edit: &JudgedEdit,
    ) -> AppResult<()> {
        // A standard user cannot list users; renaming oneself answers, name by name, which
        // usernames are taken, so it is counted like a credential attempt.
        let probes_names =
            edit.username.is_some() && rules::check_see_others(caller.user.role).is_err();
        if (edit.needs_current || probes_names) && changes.password.is_none() {
            // A new password was counted when it was judged.
            self.limit_ip(caller.ip)?;
        }
        if edit.needs_current {
            let current = validation::filled(&changes.current_password).unwrap_or_default();
            let ok = self
                .check_password(caller.session()?, current, target.password_hash.clone())
                .await?;
            if !ok {
                return Err(AppError::field(
                    "currentPassword",
                    FieldCode::Incorrect,
                    "is incorrect",
                ));
            }
        }
        Ok(())
    }

    /// Writes an edit of `target` judged as `changed`, deciding it again on the rows as
    /// locked, with what the change ends (sessions, API tokens, throttling) and its audit entry.
    async fn write_edit(
        &self,
        caller: &Caller<'_>,
        target: User,
        changes: &UserChanges,
        edit: JudgedEdit,
        password_hash: Option<String>,
        changed: Vec<&'static str>,
    ) -> AppResult<User> {
        let username_key = edit.username_key();
        let written_key = username_key
            .clone()
            .unwrap_or_else(|| target.username_key.clone());
        let written_email = edit
            .email
            .clone()
            .filter(|_| edit.email_changes)
            .unwrap_or_else(|| target.email.clone());
        let mut active = target.clone().into_active_model();
        if let (Some(username), Some(key)) = (edit.username, username_key) {
            active.username = Set(username);
            active.username_key = Set(key);
        }
        // Another spelling of the stored address is no change: written, it would undo an
        // address changed meanwhile without the verification a change takes.
        if let Some(email) = edit.email.filter(|_| edit.email_changes) {
            active.email = Set(email);
        }
        if let Some(hash) = password_hash {
            active.password_hash = Set(hash);
        }
        if let Some(v) = edit.first_name {
            active.first_name = Set(v);
        }
        if let Some(v) = edit.last_name {
            active.last_name = Set(v);
        }
        if let Some(v) = edit.phone {
            active.phone = Set(v);
        }
        if let Some(disabled) = edit.disabled {
            active.disabled = Set(disabled);
        }
        active.updated_at = Set(db::now());

        let tx = self.db().begin_write().await?;
        // Decided again on the rows as they are now, locked until the write commits: a role
        // changed since the check above must not let an edit through.
        let current = self
            .recheck(&tx, caller, target.id, |actor, target| {
                rules::check_edit(actor, target, changes.disabled == Some(true))
            })
            .await?;
        // Decided again on the row as it is now: what an edit that committed meanwhile already
        // made so is no change of this one (not written or audited twice), and what it changed
        // away from a value this one sends back is this one's change after all.
        let mut changed: Vec<&'static str> = changed
            .into_iter()
            .filter(|field| still_changes(field, &active, &current))
            .collect();
        let mut resent = |field,
                          sent: &Option<Option<String>>,
                          check: Check,
                          new: &mut sea_orm::ActiveValue<Option<String>>,
                          judged: &Option<String>,
                          now: &Option<String>| {
            let Some(value) = sent.as_ref().filter(|_| !is_set(new)) else {
                return;
            };
            // Sent back exactly as it was stored when the edit was judged, it is restored as it
            // was (valid then, if not by today's rule); otherwise it is what checking it made.
            let value = if value == judged {
                value.clone()
            } else {
                check(value.as_deref()).unwrap_or_else(|_| value.clone())
            };
            if value != *now {
                *new = Set(value);
                changed.push(field);
            }
        };
        let name = validation::optional_text;
        resent(
            "firstName",
            &changes.first_name,
            name,
            &mut active.first_name,
            &target.first_name,
            &current.first_name,
        );
        resent(
            "lastName",
            &changes.last_name,
            name,
            &mut active.last_name,
            &target.last_name,
            &current.last_name,
        );
        resent(
            "phone",
            &changes.phone,
            validation::phone,
            &mut active.phone,
            &target.phone,
            &current.phone,
        );
        let mut disabled = edit.disabled;
        if let Some(sent) = changes
            .disabled
            .filter(|d| !is_set(&active.disabled) && *d != current.disabled)
        {
            active.disabled = Set(sent);
            disabled = Some(sent);
            changed.push("disabled");
        }
        if changed.is_empty() {
            tx.rollback().await?;
            return Ok(current);
        }
        changed.sort_by_key(|field| EDITABLE.iter().position(|f| f == field));
        let disabled = disabled.filter(|_| changed.contains(&"disabled"));
        let revoke = changed.contains(&"password") || disabled == Some(true);
        let updated = match active.update(&tx).await {
            Ok(updated) => updated,
            Err(err) => {
                tx.rollback().await?;
                return Err(self
                    .unique_error(err, &written_key, &written_email, target.id)
                    .await);
            }
        };
        if revoke {
            sessions::revoke_all_for_user(&tx, target.id).await?;
        }
        if changed.contains(&"password") || disabled == Some(false) {
            // The account's failed logins were tried against a password that no longer
            // stands, or while no login could succeed: a user locked out who is given a new
            // password, or enabled again, logs in at once.
            let subject = super::Subject::User(target.id);
            crate::db::throttle::clear(&tx, &subject.key()).await?;
        }
        if disabled == Some(true) {
            // Disabling ends every credential, and the tokens this user issued for others:
            // enabling again revives none of them.
            api_tokens::delete_for_user(&tx, target.id).await?;
            api_tokens::delete_issued_across(&tx, target.id).await?;
        }
        audit::record(
            &tx,
            caller
                .audit(Action::UserUpdated)
                .target(updated.id, updated.role)
                .fields(changed),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deleting a user, oneself included, is a sensitive action: it needs step-up verification.
    pub async fn delete_user(
        &self,
        caller: &Caller<'_>,
        id: Uuid,
        verification: Option<&Verification>,
    ) -> AppResult<Uuid> {
        caller.session()?;
        let actor = caller.user;
        self.writable()?;
        rules::check_reach(actor, id, "You may not delete this user")?;
        let target = user_queries::by_id(self.db().conn(), id)
            .await?
            .ok_or(AppError::NotFound("No such user"))?;
        rules::check_delete(actor, &target)?;
        // Oneself included: a deletion cannot be undone, and a stolen access token must not
        // be enough for it.
        self.step_up(caller, verification).await?;
        let tx = self.db().begin_write().await?;
        // The audit entry records the target's role as it is deleted.
        let target = self.recheck(&tx, caller, id, rules::check_delete).await?;
        // The user's own tokens go with the row; those they issued for others go here.
        api_tokens::delete_issued_across(&tx, id).await?;
        Users::delete_by_id(id).exec(&tx).await?;
        audit::record(
            &tx,
            caller
                .audit(Action::UserDeleted)
                .target(target.id, target.role),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Inside write transaction `tx`: reads and locks the caller and the target as they are now
    /// and applies `rule` to them, so a request checked just before a concurrent change of
    /// either cannot act on what it checked. Refuses when either is gone, the caller was
    /// disabled or their session ended meanwhile (`logout`, `revokeSession`, `logoutEverywhere`,
    /// a refresh token's detected reuse, role changes, disabling and deleting lock the
    /// session's user first, so one of them committed before this lock is seen); returns the
    /// target as locked. On a refusal the caller just returns: dropping `tx` rolls it back.
    pub(super) async fn recheck(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        caller: &Caller<'_>,
        target_id: Uuid,
        rule: impl FnOnce(&User, &User) -> AppResult<()>,
    ) -> AppResult<User> {
        let actor_id = caller.user.id;
        let mut rows = user_queries::lock(tx, &[actor_id, target_id]).await?;
        let actor = rows
            .iter()
            .find(|user| user.id == actor_id)
            .filter(|actor| !actor.disabled)
            .ok_or(crate::error::INVALID_TOKEN)?;
        if sessions::find_live(tx, caller.session()?, &self.live())
            .await?
            .is_none()
        {
            return Err(crate::error::INVALID_TOKEN);
        }
        let at = rows
            .iter()
            .position(|user| user.id == target_id)
            .ok_or(AppError::NotFound("No such user"))?;
        rule(actor, &rows[at])?;
        Ok(rows.swap_remove(at))
    }

    /// Changes another user's role; `Role::Owner` transfers ownership, demoting the caller to
    /// admin in the same transaction. Every user whose role changes loses their sessions.
    /// A sensitive action: it needs step-up verification. Returns the user, and the caller as
    /// they stand once it is done (an admin after handing ownership over), both as committed.
    pub async fn set_role(
        &self,
        caller: &Caller<'_>,
        id: Uuid,
        role: Role,
        verification: Option<&Verification>,
    ) -> AppResult<(User, User)> {
        caller.session()?;
        let actor = caller.user;
        self.writable()?;
        rules::check_set_role(actor, id)?;
        // Refusals the target decides come before the verification, so none is spent on a
        // change refused anyway; they are decided again below on the row as locked.
        let target = user_queries::by_id(self.db().conn(), id)
            .await?
            .ok_or(AppError::NotFound("No such user"))?;
        if !role_changes(&target, role)? {
            return Ok((target, actor.clone()));
        }
        self.step_up(caller, verification).await?;
        let tx = self.db().begin_write().await?;
        let target = self
            .recheck(&tx, caller, id, |actor, target| {
                rules::check_set_role(actor, target.id)
            })
            .await?;
        // On a refusal, dropping `tx` rolls it back.
        if !role_changes(&target, role)? {
            tx.rollback().await?;
            return Ok((target, actor.clone()));
        }
        let now = db::now();
        if role == Role::Owner {
            // Conditional on the caller still being the owner: of two racing transfers, the
            // second finds no owner row to demote and is refused.
            let demoted = change_role(&tx, actor.id, Role::Admin, Some(Role::Owner), now).await?;
            if !demoted {
                tx.rollback().await?;
                return Err(AppError::Forbidden("Only the owner can change roles"));
            }
        }
        change_role(&tx, id, role, None, now).await?;
        let mut rows = user_queries::by_ids(&tx, &[id, actor.id]).await?;
        let (Some(updated), Some(caller_now)) = (rows.remove(&id), rows.remove(&actor.id)) else {
            return Err(AppError::NotFound("No such user"));
        };
        // Entries last, once nothing is left to wait for: an entry's time is when it is
        // written, and one that waits long for its commit can land behind a reader's cursor.
        if role == Role::Owner {
            audit::record(
                &tx,
                caller
                    .audit(Action::RoleChanged)
                    .target(actor.id, Role::Admin)
                    .fields(["role"]),
            )
            .await?;
        }
        audit::record(
            &tx,
            caller
                .audit(Action::RoleChanged)
                .target(id, role)
                .fields(["role"]),
        )
        .await?;
        tx.commit().await?;
        Ok((updated, caller_now))
    }

    /// Recovery from the command line: `username` becomes the owner, the owner an admin. The
    /// owner, and whom it took over from.
    pub async fn promote_owner(&self, username: &str) -> AppResult<(User, Promotion)> {
        // Ownership moved by the API between the read of the owner and its lock: read again.
        for _ in 0..3 {
            if let Some(promoted) = self.promote_owner_once(username).await? {
                return Ok(promoted);
            }
        }
        Err(AppError::Forbidden(
            "Ownership keeps changing meanwhile; run the command again",
        ))
    }

    /// One try of [`Self::promote_owner`]: `None` when the owner read first was no longer the
    /// owner once locked.
    async fn promote_owner_once(&self, username: &str) -> AppResult<Option<(User, Promotion)>> {
        let tx = self.db().begin_write().await?;
        let Some(found) = by_username(&tx, username).await? else {
            tx.rollback().await?;
            return Err(AppError::NotFound("No such user"));
        };
        let owner = Users::find()
            .filter(Column::Role.eq(Role::Owner))
            .one(&tx)
            .await?;
        // Both rows locked, as the API's transfers lock them, and decided on as they are now.
        let ids: Vec<Uuid> = [Some(found.id), owner.as_ref().map(|o| o.id)]
            .into_iter()
            .flatten()
            .collect();
        let locked = user_queries::lock(&tx, &ids).await?;
        let Some(target) = locked.iter().find(|u| u.id == found.id).cloned() else {
            tx.rollback().await?;
            return Err(AppError::NotFound("No such user"));
        };
        let previous = match owner {
            Some(owner) => match locked.into_iter().find(|u| u.id == owner.id) {
                Some(previous) if previous.role == Role::Owner => Some(previous),
                _ => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            },
            // None when read; one made meanwhile (the first registration, say) must be read.
            None if user_queries::owner_exists(&tx).await? => {
                tx.rollback().await?;
                return Ok(None);
            }
            None => None,
        };
        if target.role == Role::Owner {
            tx.rollback().await?;
            return Ok(Some((target, Promotion::Unchanged)));
        }
        if target.disabled {
            tx.rollback().await?;
            return Err(DISABLED_OWNER);
        }
        let now = db::now();
        let changed = |id| {
            NewEntry::new(Action::RoleChanged, None, None)
                .target(id, Role::Admin)
                .fields(["role"])
        };
        if let Some(previous) = &previous {
            change_role(&tx, previous.id, Role::Admin, Some(Role::Owner), now).await?;
        }
        if let Err(err) = change_role(&tx, target.id, Role::Owner, None, now).await {
            tx.rollback().await?;
            // An owner made by a transaction this one could not yet see (another promotion
            // or the first registration, on PostgreSQL): read again, and transfer from them.
            return match unique_violation(&err) {
                Some(UniqueViolation::Owner) => Ok(None),
                _ => Err(err.into()),
            };
        }
        // Entries last, as in `set_role`.
        if let Some(previous) = &previous {
            audit::record(&tx, changed(previous.id)).await?;
        }
        let mut entry = changed(target.id);
        entry.target = Some((target.id, Role::Owner));
        audit::record(&tx, entry).await?;
        let updated = user_queries::by_id(&tx, target.id)
            .await?
            .ok_or(AppError::NotFound("No such user"))?;
        tx.commit().await?;
        let former = previous.map(|previous| previous.username);
        Ok(Some((updated, Promotion::From(former))))
    }

    /// One user: oneself for anyone signed in; others for admins and the owner. A plain user
    /// asking about someone else is refused before the result is used, so existence does not
    /// leak. `prefetched` is the target when it was read with the viewer.
    pub async fn get_user(
        &self,
        viewer: &User,
        by: UserRef,
        prefetched: Option<Option<User>>,
    ) -> AppResult<Option<User>> {
        let (id, key) = match by {
            UserRef::Id(id) => (Some(id), None),
            UserRef::Username(name) => (None, validation::lookup_key(&name, false)),
            UserRef::Email(email) => (None, validation::lookup_key(&email, true)),
        };
        let is_self = id == Some(viewer.id)
            || key
                .as_ref()
                .is_some_and(|key| *key == viewer.username_key || *key == viewer.email);
        if is_self {
            return Ok(Some(viewer.clone()));
        }
        rules::check_see_others(viewer.role)?;
        if let Some(target) = prefetched {
            return Ok(target);
        }
        let conn = self.db().conn();
        Ok(match (id, key) {
            (Some(id), _) => user_queries::by_id(conn, id).await?,
            (None, Some(key)) => user_queries::by_login(conn, &key).await?,
            (None, None) => None,
        })
    }

    pub async fn list_users(
        &self,
        viewer: &User,
        first: Option<i32>,
        after: Option<Position>,
        filter: &Filter,
    ) -> AppResult<user_queries::Page> {
        rules::check_see_others(viewer.role)?;
        let first = validation::page_size(first)?;
        if let Some(search) = filter.search.as_deref() {
            validation::search(search).map_err(|error| error.on("search"))?;
        }
        Ok(user_queries::page(self.db(), filter, after, first).await?)
    }

    pub async fn count_users(&self, viewer: &User, filter: &Filter) -> AppResult<u64> {
        rules::check_see_others(viewer.role)?;
        if let Some(search) = filter.search.as_deref() {
            validation::search(search).map_err(|error| error.on("search"))?;
        }
        Ok(user_queries::count(self.db().conn(), filter).await?)
    }

    /// Whether the next registration would make its registrant the owner: registrations are
    /// taken and the database holds no account yet.
    pub async fn first_registrant_would_own(&self) -> AppResult<bool> {
        Ok(self.accepts_registrations() && !user_queries::any_exists(self.db().conn()).await?)
    }

    /// Whether the database holds accounts but no owner (accounts made on the command line or
    /// imported): then nobody can change roles until `user promote-owner` makes one.
    pub async fn lacks_owner(&self) -> AppResult<bool> {
        let conn = self.db().conn();
        Ok(user_queries::any_exists(conn).await? && !user_queries::owner_exists(conn).await?)
    }

    /// Users by id, for the DataLoader.
    pub async fn users_by_ids(
        &self,
        ids: &[Uuid],
    ) -> AppResult<std::collections::HashMap<Uuid, User>> {
        Ok(user_queries::by_ids(self.db().conn(), ids).await?)
    }
}

/// A user named from the command line, read as the API's `user(username:)` reads the name
/// (trimmed, any case, any Unicode form).
pub(super) async fn by_username(
    db: &impl sea_orm::ConnectionTrait,
    username: &str,
) -> Result<Option<User>, sea_orm::DbErr> {
    match validation::lookup_key(username, false) {
        Some(key) => user_queries::by_login(db, &key).await,
        None => Ok(None),
    }
}

/// Whether giving `target` `role` changes anything, or why it is refused: ownership does not
/// go to a disabled account.
fn role_changes(target: &User, role: Role) -> AppResult<bool> {
    if target.role == role {
        return Ok(false);
    }
    if role == Role::Owner && target.disabled {
        return Err(DISABLED_OWNER);
    }
    Ok(true)
}

/// Sets `id`'s role, optionally only while it still holds `only_if`, and ends what the old
/// role granted: the user's sessions, and API tokens issued across roles by or for them. One
/// step, so no role change can keep them. Reports whether a row changed.
async fn change_role(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    role: Role,
    only_if: Option<Role>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbErr> {
    let mut update = Users::update_many()
        .col_expr(Column::Role, Expr::value(role))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id));
    if let Some(current) = only_if {
        update = update.filter(Column::Role.eq(current));
    }
    if update.exec(db).await?.rows_affected == 0 {
        return Ok(false);
    }
    sessions::revoke_all_for_user(db, id).await?;
    api_tokens::delete_issued_across(db, id).await?;
    Ok(true)
}

/// An account brought over from another system, its password already hashed (argon2 PHC, or
/// bcrypt).
/// No `Debug`: it holds the hash.
#[derive(Clone)]
pub struct ImportedUser {
    /// `None` when the source left it out: refused as `REQUIRED`.
    pub username: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub role: Role,
    pub created_by: Option<Uuid>,
    /// The row's fields its source gave in a form that does not parse (a role, an id, a value
    /// of the wrong type, a field no user has), each with what is wrong: refused as `FORMAT`
    /// with the row's other errors. An empty name stands for the whole row.
    pub unreadable: Vec<(String, String)>,
}

/// Rows per INSERT: 14 columns each stays under SQLite's and PostgreSQL's parameter limits.
const IMPORT_CHUNK: usize = 1_000;

impl Service {
    /// Bulk import in one transaction, for migrations from other user stores (and seeding
    /// benchmarks). Same validation as `createUser` (errors name the row), but no hashing:
    /// hashes are checked to be argon2 or bcrypt within the cost bounds, not computed. Owners
    /// cannot be imported; there is only ever one, made by register or the CLI.
    ///
    /// Every invalid field of every row is reported at once (`3.email`); once all are valid,
    /// every username or email already in use, by an account or by an earlier row, and every
    /// `createdBy` that is no user, as CONFLICT or BAD_USER_INPUT naming the row.
    pub async fn import_users(&self, users: Vec<ImportedUser>) -> AppResult<Vec<Uuid>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut models = Vec::with_capacity(users.len());
        let mut invalid = std::collections::BTreeMap::new();
        for (index, input) in users.into_iter().enumerate() {
            let mut fields = Fields::new();
            if let Some((_, whole)) = input.unreadable.iter().find(|(field, _)| field.is_empty()) {
                let error = FieldError::new(FieldCode::Format, whole.clone());
                invalid.insert(index.to_string(), error);
                continue;
            }
            for (field, problem) in &input.unreadable {
                fields.add(field, FieldCode::Format, problem.clone());
            }
            let mut given = |name: &str, value: &Option<String>| -> String {
                if value.is_none() {
                    fields.add(name, FieldCode::Required, "is required");
                }
                value.clone().unwrap_or_default()
            };
            let username = given("username", &input.username);
            let email = given("email", &input.email);
            let password_hash = given("passwordHash", &input.password_hash);
            let profile = validation::profile(
                &mut fields,
                &username,
                &email,
                input.first_name.as_deref(),
                input.last_name.as_deref(),
                input.phone.as_deref(),
            );
            if let Some(problem) = crate::auth::password::hash_problem(&password_hash) {
                fields.add(
                    "passwordHash",
                    FieldCode::Format,
                    format!(
                        "{problem} (it must be an argon2 PHC string of at most 256 MiB and 16 \
                         passes, with a salt of 8 to 48 bytes and a hash of 10 to 64 bytes, or a \
                         bcrypt hash ($2a$, $2b$ or $2y$) of cost 4 to 14)"
                    ),
                );
            }
            if input.role == Role::Owner {
                fields.add("role", FieldCode::NotAllowed, "owners cannot be imported");
            }
            if let Err(AppError::BadInput(row)) = fields.into_result().map_err(|e| at_row(index, e))
            {
                invalid.extend(row);
                continue;
            }
            let Some(validation::Profile {
                username,
                email,
                first_name,
                last_name,
                phone,
            }) = profile
            else {
                return Err(AppError::internal("validated field missing"));
            };
            models.push(User {
                id: Uuid::now_v7(),
                username_key: username.to_ascii_lowercase(),
                username,
                email,
                password_hash,
                first_name,
                last_name,
                phone,
                role: input.role,
                disabled: false,
                // Stamped in the transaction, below.
                created_at: Default::default(),
                updated_at: Default::default(),
                last_login_at: None,
                created_by: input.created_by,
            });
        }
        if !invalid.is_empty() {
            return Err(AppError::BadInput(invalid));
        }
        let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
        let tx = self.db().begin_write().await?;
        if let Err(err) = check_importable(&tx, &models).await {
            tx.rollback().await?;
            return Err(err);
        }
        // Stamped in the transaction, as `createUser` stamps its user: distinct, increasing
        // times keep the import's order in listings.
        let start = db::now();
        for (index, model) in models.iter_mut().enumerate() {
            model.created_at = start + chrono::Duration::microseconds(index as i64);
            model.updated_at = model.created_at;
        }
        for chunk in models.chunks(IMPORT_CHUNK) {
            let rows = chunk
                .iter()
                .map(|m| m.clone().into_active_model().reset_all());
            if let Err(err) = Users::insert_many(rows).exec_without_returning(&tx).await {
                tx.rollback().await?;
                if unique_violation(&err).is_none() {
                    return Err(err.into());
                }
                // Taken by another writer since the check (on PostgreSQL, which checked
                // without SQLite's write lock): checked again, the rows are named.
                return Err(match check_importable(self.db().writer(), &models).await {
                    Err(err) => err,
                    Ok(()) => {
                        let error = FieldError::new(
                            FieldCode::Taken,
                            "an imported username or email is already in use",
                        );
                        AppError::Conflict([("username".to_owned(), error)].into())
                    }
                });
            }
        }
        audit::record(&tx, NewEntry::new(Action::UsersImported, None, None)).await?;
        tx.commit().await?;
        // Until autovacuum gets to it (a minute or more), PostgreSQL's planner would judge
        // searches by the table as it was, and walk thousands of new matches for a page.
        if ids.len() >= ANALYZE_AFTER_IMPORTING
            && let Err(err) = self.db().analyze_users().await
        {
            tracing::warn!(error = %crate::error::chain(&err), "analysing the users table after the import");
        }
        Ok(ids)
    }
}

/// How many imported users make the planner's statistics worth renewing at once.
const ANALYZE_AFTER_IMPORTING: usize = 1000;

/// The checks of a bulk import that need the database, inside its transaction `tx`, each
/// naming its rows: creators that are no user (BAD_USER_INPUT), then names already in use
/// (CONFLICT). The creators stay locked until the import commits, so none is deleted first.
async fn check_importable(tx: &impl sea_orm::ConnectionTrait, models: &[User]) -> AppResult<()> {
    use std::collections::{HashMap, HashSet};
    let keys: Vec<String> = models.iter().map(|m| m.username_key.clone()).collect();
    let emails: Vec<String> = models.iter().map(|m| m.email.clone()).collect();
    let mut creators: Vec<Uuid> = models.iter().filter_map(|m| m.created_by).collect();
    creators.sort_unstable();
    creators.dedup();
    let (used_keys, used_emails, users) =
        user_queries::existing(tx, &keys, &emails, &creators).await?;
    let users: HashSet<Uuid> = users.into_iter().collect();
    let mut fields = Fields::new();
    for (index, model) in models.iter().enumerate() {
        if model.created_by.is_some_and(|id| !users.contains(&id)) {
            fields.add(
                &format!("{index}.createdBy"),
                FieldCode::NotFound,
                "is no user",
            );
        }
    }
    fields.into_result()?;
    let (used_keys, used_emails): (HashSet<String>, HashSet<String>) = (
        used_keys.into_iter().collect(),
        used_emails.into_iter().collect(),
    );
    let (mut first_key, mut first_email) = (HashMap::new(), HashMap::new());
    let mut taken = Fields::new();
    for (index, model) in models.iter().enumerate() {
        let earlier_key = *first_key
            .entry(model.username_key.as_str())
            .or_insert(index);
        let earlier_email = *first_email.entry(model.email.as_str()).or_insert(index);
        if used_keys.contains(&model.username_key) {
            taken.add(
                &format!("{index}.username"),
                FieldCode::Taken,
                USERNAME_TAKEN,
            );
        } else if earlier_key != index {
            taken.add(
                &format!("{index}.username"),
                FieldCode::Taken,
                format!("repeats row {earlier_key}'s"),
            );
        }
        if used_emails.contains(&model.email) {
            taken.add(&format!("{index}.email"), FieldCode::Taken, EMAIL_TAKEN);
        } else if earlier_email != index {
            taken.add(
                &format!("{index}.email"),
                FieldCode::Taken,
                format!("repeats row {earlier_email}'s"),
            );
        }
    }
    taken.into_conflict()
}

/// An edit judged against the row it was read from: what it sets, each value valid.
struct JudgedEdit {
    username: Option<String>,
    /// Valid, and possibly the stored address once normalised: `email_changes` says.
    email: Option<String>,
    email_changes: bool,
    password: Option<String>,
    first_name: Option<Option<String>>,
    last_name: Option<Option<String>>,
    phone: Option<Option<String>>,
    disabled: Option<bool>,
    /// Oneself changing one's password or email: the current password must be right.
    needs_current: bool,
}

impl JudgedEdit {
    /// The fields it changes, in `EDITABLE`'s order.
    fn changed(&self) -> Vec<&'static str> {
        EDITABLE
            .into_iter()
            .zip([
                self.username.is_some(),
                self.email_changes,
                self.password.is_some(),
                self.first_name.is_some(),
                self.last_name.is_some(),
                self.phone.is_some(),
                self.disabled.is_some(),
            ])
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }

    fn username_key(&self) -> Option<String> {
        self.username.as_ref().map(|u| u.to_ascii_lowercase())
    }
}

fn is_set<V: Into<sea_orm::Value>>(value: &sea_orm::ActiveValue<V>) -> bool {
    matches!(value, sea_orm::ActiveValue::Set(_))
}

/// Whether `field` of edit `new` still differs from the row as it is `now`. A new password is
/// a change whatever the row holds.
fn still_changes(field: &str, new: &crate::db::entities::user::ActiveModel, now: &User) -> bool {
    use sea_orm::ActiveValue;
    fn differs<V: PartialEq + Into<sea_orm::Value>>(new: &ActiveValue<V>, now: &V) -> bool {
        matches!(new, ActiveValue::Set(value) if value != now)
    }
    match field {
        "username" => differs(&new.username, &now.username),
        "email" => differs(&new.email, &now.email),
        "firstName" => differs(&new.first_name, &now.first_name),
        "lastName" => differs(&new.last_name, &now.last_name),
        "phone" => differs(&new.phone, &now.phone),
        "disabled" => differs(&new.disabled, &now.disabled),
        _ => true,
    }
}

/// Prefixes each field of a row's validation error with the row's index (`3.email`).
fn at_row(index: usize, err: AppError) -> AppError {
    match err {
        AppError::BadInput(fields) => AppError::BadInput(
            fields
                .into_iter()
                .map(|(field, message)| (format!("{index}.{field}"), message))
                .collect(),
        ),
        other => other,
    }
}
