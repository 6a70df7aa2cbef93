//! The signed-in user of one request, loaded at most once per request.

use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::auth::tokens;
use crate::db::entities::user::Model as User;
use crate::error::{AUTHENTICATION_REQUIRED, AppError, AppResult};
use crate::service::{Credential, Service, Signed};

/// What the HTTP layer knows about the caller: the bearer token (an access token or an API
/// token), if any. The user behind it is loaded lazily (public operations never touch the database for it) and then cached for
/// the rest of the request.
pub struct RequestAuth {
    token: Option<String>,
    /// The outcome of checking the token: a user, or why it was refused. Database failures
    /// are not cached, so a later field may retry.
    viewer: OnceCell<Result<Signed, &'static str>>,
}

impl RequestAuth {
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            viewer: OnceCell::new(),
        }
    }

    /// The user this request signed in as, if anything asked (for the request log).
    pub fn signed_in(&self) -> Option<Uuid> {
        match self.viewer.get() {
            Some(Ok(signed)) => Some(signed.user.id),
            _ => None,
        }
    }

    /// The session of the request's access token, once [`Self::viewer`] has accepted it.
    pub fn session_id(&self) -> Option<Uuid> {
        match self.viewer.get() {
            Some(Ok(Signed {
                credential: Credential::Session(id),
                ..
            })) => Some(*id),
            _ => None,
        }
    }

    /// The signed-in, enabled user with a live session or an unexpired API token, or
    /// UNAUTHENTICATED.
    pub async fn viewer(&self, service: &Service) -> AppResult<&User> {
        Ok(&self.signed(service).await?.user)
    }

    /// [`Self::viewer`] with the credential it signed in with.
    pub async fn signed(&self, service: &Service) -> AppResult<&Signed> {
        let Some(token) = self.token.as_deref() else {
            return Err(AUTHENTICATION_REQUIRED);
        };
        let outcome = self
            .viewer
            .get_or_try_init(|| async {
                match service.authenticate(token).await {
                    Ok(signed) => Ok(Ok(signed)),
                    Err(AppError::Unauthenticated(message)) => Ok(Err(message)),
                    Err(other) => Err(other),
                }
            })
            .await?;
        outcome
            .as_ref()
            .map_err(|message| AppError::Unauthenticated(message))
    }

    /// Refuses, once an earlier field has signed the request in, a caller no longer signed in
    /// as then: a mutation field after one that deleted or disabled the caller, ended their
    /// session or changed their role (which ends sessions) must neither act nor answer for
    /// them, not even to say `false` or check a password.
    pub async fn still_signed_in(&self, service: &Service) -> AppResult<()> {
        let (Some(token), Some(Ok(before))) = (self.token.as_deref(), self.viewer.get()) else {
            return Ok(());
        };
        let now = service.authenticate(token).await?;
        if now.user.id == before.user.id && now.user.role == before.user.role {
            Ok(())
        } else {
            Err(crate::error::INVALID_TOKEN)
        }
    }

    /// The viewer and, read in the same query when the viewer is not loaded yet, user `other`
    /// (`Some(lookup)`); `None` when `other` still needs a lookup of its own. Speed only:
    /// `user(id:)` then costs one query, as `me` does (see benches/RESULTS.md).
    pub async fn viewer_and(
        &self,
        service: &Service,
        other: Uuid,
    ) -> AppResult<(&User, Option<Option<User>>)> {
        let Some(token) = self.token.as_deref() else {
            return Err(AUTHENTICATION_REQUIRED);
        };
        if self.viewer.initialized() || tokens::is_api_token(token) {
            return Ok((self.viewer(service).await?, None));
        }
        let (outcome, other) = match service.authenticate_with(token, other).await {
            Ok((viewer, other)) => (Ok(viewer), Some(other)),
            Err(AppError::Unauthenticated(message)) => (Err(message), None),
            Err(err) => return Err(err),
        };
        // A concurrent field may have filled the cell first; either outcome is the same.
        let _ = self.viewer.set(outcome);
        Ok((self.viewer(service).await?, other))
    }
}
