//! Who may do what to whom: the role rules as pure functions, so the whole matrix is tested in
//! one place. The service layer calls them with the rows it has just read.

use uuid::Uuid;

use crate::db::entities::user::{Model as User, Role};
use crate::error::{AppError, AppResult};

/// Whether `viewer` may see `target`'s email, names, phone and last login.
pub fn can_see_private(viewer: Option<&User>, target: &User) -> bool {
    viewer.is_some_and(|v| v.id == target.id || v.role.is_manager())
}

/// Whether a user with role `actor` manages (edits, disables, deletes) another with `target`:
/// the owner manages everyone else, admins manage standard users.
pub fn manages(actor: Role, target: Role) -> bool {
    matches!(
        (actor, target),
        (Role::Owner, Role::Admin | Role::Standard) | (Role::Admin, Role::Standard)
    )
}

/// Seeing or ending `target`'s sessions, seeing or changing their API tokens and two-factor
/// state, or issuing them a token: oneself, and the users one manages.
pub fn check_credentials(actor: &User, target: &User) -> AppResult<()> {
    if actor.id == target.id || manages(actor.role, target.role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "You may not see or change this user's sessions or credentials",
        ))
    }
}

/// Whether `viewer` may see where an audit entry's actor acted from (the client IP): their own
/// entries, and those of users they managed as they acted; the owner sees every address.
/// `actor` is the actor's id and role as they acted (the role decides, as the target's role
/// then decides who sees the entry). In demo mode nobody does: visitors share the demo
/// accounts, so an account's entries are other visitors'.
pub fn can_see_actor_ip(viewer: &User, actor: Option<(Uuid, Role)>, demo: bool) -> bool {
    !demo
        && (viewer.role == Role::Owner
            || actor.is_some_and(|(id, role)| id == viewer.id || manages(viewer.role, role)))
}

/// Whether a visible session shows its client (address and User-Agent). In demo mode only the
/// caller's current one does: the account's other sessions are other visitors'.
pub fn shows_session_client(demo: bool, current: bool) -> bool {
    !demo || current
}

/// Looking up or listing users other than oneself.
pub fn check_see_others(viewer: Role) -> AppResult<()> {
    if viewer.is_manager() {
        Ok(())
    } else {
        Err(AppError::Forbidden("Only admins can look up other users"))
    }
}

/// `createUser` with `role`. Nobody creates an owner through the API.
pub fn check_create(actor: Role, role: Role) -> AppResult<()> {
    if role == Role::Owner {
        return Err(AppError::Forbidden("Nobody can create an owner"));
    }
    if actor == Role::Owner || (actor == Role::Admin && role == Role::Standard) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "Your role cannot create users with this role",
        ))
    }
}

/// Before user `id` is even looked up for an edit or a deletion: someone who manages nobody may
/// act on themselves only, and is refused without the lookup, so that whether `id` exists does
/// not show.
pub fn check_reach(actor: &User, id: uuid::Uuid, refusal: &'static str) -> AppResult<()> {
    if actor.id == id || actor.role.is_manager() {
        Ok(())
    } else {
        Err(AppError::Forbidden(refusal))
    }
}

/// `updateUser` of `target`; `disabling` when the edit sets `disabled: true`.
pub fn check_edit(actor: &User, target: &User, disabling: bool) -> AppResult<()> {
    let is_self = actor.id == target.id;
    if !is_self && !manages(actor.role, target.role) {
        return Err(AppError::Forbidden("You may not edit this user"));
    }
    if disabling {
        if is_self {
            return Err(AppError::Forbidden("You cannot disable your own account"));
        }
        if target.role == Role::Owner {
            return Err(AppError::Forbidden("The owner cannot be disabled"));
        }
    }
    Ok(())
}

/// `deleteUser` of `target`: anyone may delete themselves except the owner, who must hand
/// ownership over first.
pub fn check_delete(actor: &User, target: &User) -> AppResult<()> {
    if actor.id == target.id {
        if target.role == Role::Owner {
            return Err(AppError::Forbidden(
                "The owner must transfer ownership before deleting their account",
            ));
        }
        Ok(())
    } else if manages(actor.role, target.role) {
        Ok(())
    } else {
        Err(AppError::Forbidden("You may not delete this user"))
    }
}

/// `setRole` on user `target_id`: the owner only, on others only (nobody changes their own
/// role, so nobody raises it).
pub fn check_set_role(actor: &User, target_id: uuid::Uuid) -> AppResult<()> {
    if actor.role != Role::Owner {
        return Err(AppError::Forbidden("Only the owner can change roles"));
    }
    if actor.id == target_id {
        return Err(AppError::Forbidden("You cannot change your own role"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Standard];

    fn user(role: Role) -> User {
        let now = chrono::Utc::now();
        User {
            id: uuid::Uuid::new_v4(),
            username: "someone".into(),
            username_key: "someone".into(),
            email: "someone@example.com".into(),
            password_hash: String::new(),
            first_name: None,
            last_name: None,
            phone: None,
            role,
            disabled: false,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            created_by: None,
        }
    }

    /// For every pair of roles `(actor, other)`: whether the actor manages a user with the
    /// other role, and whether the actor may create one.
    const MATRIX: [((Role, Role), bool, bool); 9] = {
        use Role::*;
        [
            ((Owner, Owner), false, false),
            ((Owner, Admin), true, true),
            ((Owner, Standard), true, true),
            ((Admin, Owner), false, false),
            ((Admin, Admin), false, false),
            ((Admin, Standard), true, true),
            ((Standard, Owner), false, false),
            ((Standard, Admin), false, false),
            ((Standard, Standard), false, false),
        ]
    };

    #[test]
    fn everyone_sees_and_ends_their_own_sessions_and_credentials() {
        for role in ROLES {
            let me = user(role);
            assert!(check_credentials(&me, &me).is_ok(), "{role:?}");
        }
    }

    #[test]
    fn who_manages_whom() {
        for ((actor, target), manages_it, _) in MATRIX {
            assert_eq!(manages(actor, target), manages_it, "{actor:?} → {target:?}");
            let (a, t) = (user(actor), user(target));
            let edit = check_edit(&a, &t, false);
            assert_eq!(edit.is_ok(), manages_it, "edit {actor:?} → {target:?}");
            let delete = check_delete(&a, &t);
            assert_eq!(delete.is_ok(), manages_it, "delete {actor:?} → {target:?}");
            // Sessions, API tokens and two-factor state follow managing too.
            let credentials = check_credentials(&a, &t);
            assert_eq!(
                credentials.is_ok(),
                manages_it,
                "credentials {actor:?} → {target:?}"
            );
            // Disabling another follows managing; the owner is never disabled.
            let disable = check_edit(&a, &t, true);
            let may_disable = manages_it && target != Role::Owner;
            assert_eq!(
                disable.is_ok(),
                may_disable,
                "disable {actor:?} → {target:?}"
            );
        }
    }

    #[test]
    fn who_sees_an_audit_actors_address() {
        for ((viewer, actor), manages_it, _) in MATRIX {
            let (v, a) = (user(viewer), user(actor));
            assert_eq!(
                can_see_actor_ip(&v, Some((a.id, a.role)), false),
                manages_it || viewer == Role::Owner,
                "{viewer:?} sees {actor:?}'s address"
            );
            assert!(
                can_see_actor_ip(&v, Some((v.id, v.role)), false),
                "{viewer:?} sees own address"
            );
            assert_eq!(can_see_actor_ip(&v, None, false), viewer == Role::Owner);
            for actor in [Some((a.id, a.role)), Some((v.id, v.role)), None] {
                assert!(!can_see_actor_ip(&v, actor, true), "demo mode shows none");
            }
        }
    }

    #[test]
    fn demo_visitors_see_only_their_own_sessions_client() {
        assert!(shows_session_client(false, false));
        assert!(shows_session_client(false, true));
        assert!(shows_session_client(true, true));
        assert!(!shows_session_client(true, false));
    }

    #[test]
    fn who_creates_which_role() {
        for ((actor, role), _, allowed) in MATRIX {
            let outcome = check_create(actor, role);
            assert_eq!(outcome.is_ok(), allowed, "{actor:?} creates {role:?}");
            if let Err(err) = outcome {
                assert_eq!(err.code(), "FORBIDDEN");
            }
        }
    }

    #[test]
    fn what_everyone_may_do_to_themselves() {
        for role in ROLES {
            let me = user(role);
            assert!(check_edit(&me, &me, false).is_ok(), "{role:?} edits self");
            assert!(
                check_edit(&me, &me, true).is_err(),
                "{role:?} disables self"
            );
            assert_eq!(
                check_delete(&me, &me).is_ok(),
                role != Role::Owner,
                "{role:?} deletes self"
            );
            assert!(
                check_set_role(&me, me.id).is_err(),
                "{role:?} sets own role"
            );
            assert!(
                can_see_private(Some(&me), &me),
                "{role:?} sees own private fields"
            );
            assert!(check_reach(&me, me.id, "").is_ok(), "{role:?} reaches self");
        }
    }

    #[test]
    fn who_sees_and_changes_roles_of_others() {
        for viewer in ROLES {
            let v = user(viewer);
            for target in ROLES {
                let t = user(target);
                assert_eq!(
                    can_see_private(Some(&v), &t),
                    viewer.is_manager(),
                    "{viewer:?} sees {target:?}"
                );
                assert_eq!(
                    check_set_role(&v, t.id).is_ok(),
                    viewer == Role::Owner,
                    "{viewer:?} sets {target:?}"
                );
            }
            assert_eq!(
                check_see_others(viewer).is_ok(),
                viewer.is_manager(),
                "{viewer:?} looks up others"
            );
            let reach = check_reach(&v, uuid::Uuid::new_v4(), "refused");
            assert_eq!(
                reach.is_ok(),
                viewer.is_manager(),
                "{viewer:?} reaches another id"
            );
            assert!(!can_see_private(None, &v), "anonymous sees {viewer:?}");
        }
    }
}
