//! The signing keys: rotation, the JWKS, and reloading what other instances changed, on a
//! timer and when a request meets a kid this instance does not hold.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::startup::Purpose;
use super::{AuditAction, Inner, Service};
use crate::auth::{TokenKeys, tokens};
use crate::db::audit::NewEntry;
use crate::db::{Db, signing_keys};
use crate::error::{AppError, AppResult, chain};

/// The least time between two on-demand key reloads, so tokens with made-up kids cannot make
/// an instance query the database more than once a second.
const ON_DEMAND_RELOAD_GAP: Duration = Duration::from_secs(1);

/// The longest a key reload may take; a request waiting for one then goes on with the keys
/// held, rather than hang on a stalled database.
const KEY_RELOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a request with an unknown kid waits for the keys, queue and gap included.
const ON_DEMAND_WAIT: Duration = Duration::from_secs(3);

/// When keys were last reloaded.
#[derive(Default)]
pub(super) struct KeyReloads {
    /// The last reload tried, read through or not: the gap between reloads counts from it.
    tried: Option<Instant>,
    /// When the last reload that read the keys through began: it saw every key committed
    /// before then.
    read: Option<Instant>,
}

impl Service {
    /// Makes a new signing key current and retires the current one, which keeps verifying
    /// the tokens it signed until they have expired; with `revoke`, deletes every earlier key
    /// instead, for one that may have leaked. Returns the new key's kid. Other instances pick
    /// the change up when they next reload their keys.
    pub async fn rotate_signing_key(&self, revoke: bool) -> AppResult<String> {
        if !self.0.tokens.uses_stored_keys() {
            return Err(AppError::Forbidden(
                "ROLLCALL_JWT_SECRET is set: tokens are signed with it, not with stored keys",
            ));
        }
        let now = chrono::Utc::now();
        let key = tokens::new_signing_key(now)?;
        let kid = key.kid.clone();
        let action = if revoke {
            AuditAction::SigningKeysRevoked
        } else {
            AuditAction::SigningKeyRotated
        };
        let entry = NewEntry::new(action, None, None);
        signing_keys::rotate(&self.0.db, key, now, entry, revoke).await?;
        let mut reloads = self.0.key_reloads.lock().await;
        let began = Instant::now();
        load_keys(&self.0).await?;
        reloads.tried = Some(began);
        reloads.read = Some(began);
        Ok(kid)
    }

    /// The public keys that verify access tokens now, as a JWK set (empty with a secret).
    /// Read from the database again first when no reload was tried for a second and none is
    /// running: a verifier that meets a new kid fetches the set from whichever instance its
    /// request reaches, which may not have reloaded since another rotated the key. It waits
    /// for that at most [`KEY_RELOAD_TIMEOUT`]; a reload that fails leaves the set as it was.
    pub async fn jwks(&self) -> serde_json::Value {
        if self.0.tokens.uses_stored_keys()
            && let Ok(mut reloads) = self.0.key_reloads.try_lock()
            && reloads
                .tried
                .is_none_or(|tried| tried.elapsed() >= ON_DEMAND_RELOAD_GAP)
        {
            reload(&self.0, &mut reloads).await;
        }
        self.0.tokens.jwks()
    }

    /// Reloads the signing keys for `token`, whose kid this instance does not hold (a key
    /// another instance has just rotated in, or a forgery): unless a reload that began after it
    /// asked has read the keys through, or the reload it waited behind brought the kid, it
    /// waits for one, at most once a second and for at most [`ON_DEMAND_WAIT`] in all.
    pub(super) async fn reload_keys_on_demand(&self, token: &str) {
        if !self.0.tokens.uses_stored_keys() {
            return;
        }
        let asked = Instant::now();
        let waited = tokio::time::timeout(ON_DEMAND_WAIT, async {
            loop {
                // The wait for the gap is spent without the lock: the background reload and a
                // rotation do not queue behind tokens with unknown kids.
                let rest = {
                    let mut reloads = self.0.key_reloads.lock().await;
                    if reloads.read.is_some_and(|began| began >= asked)
                        || !self.0.tokens.signed_by_unknown_key(token)
                    {
                        return;
                    }
                    let since = reloads.tried.map(|tried| tried.elapsed());
                    match since.and_then(|since| ON_DEMAND_RELOAD_GAP.checked_sub(since)) {
                        Some(rest) => rest,
                        None => {
                            reload(&self.0, &mut reloads).await;
                            return;
                        }
                    }
                };
                tokio::time::sleep(rest).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(?ON_DEMAND_WAIT, "gave up waiting for the signing keys");
        }
    }

    /// How often the signing keys are reloaded from the database.
    pub fn key_reload_every(&self) -> Duration {
        self.0.tokens.reload_every()
    }

    /// What signs new access tokens: the secret (by a fingerprint) or the current key's kid.
    pub fn token_signer(&self) -> String {
        self.0.tokens.signer()
    }

    /// The kid new access tokens are signed with; `None` with a secret.
    pub fn current_kid(&self) -> Option<String> {
        self.0.tokens.current_kid()
    }
}

/// Reloads the signing keys for as long as the service lives, so a key rotated by another
/// instance or by `rollcall keys rotate` is used here within [`TokenKeys::reload_every`].
pub(super) async fn reload_keys(service: Weak<Inner>) {
    let Some(every) = service.upgrade().map(|inner| inner.tokens.reload_every()) else {
        return;
    };
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(inner) = service.upgrade() else {
            return;
        };
        let expired = reload(&inner, &mut *inner.key_reloads.lock().await).await;
        // After the keys are in use and the lock is free: a slow delete holds up nothing.
        match signing_keys::delete(inner.db.writer(), expired, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted signing keys past their last token"),
            Err(err) => tracing::warn!(error = %chain(&err), "deleting old signing keys"),
        }
    }
}

/// [`load_keys`] under `reloads` (the caller holds its lock), given up after
/// [`KEY_RELOAD_TIMEOUT`]; a failure is logged and the keys held stay. Returns the kids of the
/// keys past their last token.
async fn reload(inner: &Inner, reloads: &mut KeyReloads) -> Vec<String> {
    let began = Instant::now();
    reloads.tried = Some(began);
    match tokio::time::timeout(KEY_RELOAD_TIMEOUT, load_keys(inner)).await {
        Ok(Ok(expired)) => {
            reloads.read = Some(began);
            expired
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %chain(&err), "reloading the signing keys");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(?KEY_RELOAD_TIMEOUT, "reloading the signing keys timed out");
            Vec::new()
        }
    }
}

/// Records on the current key of `stored` how long the tokens `keys` sign with it may live
/// until two more reloads have passed, each up to [`KEY_RELOAD_TIMEOUT`] late; done before
/// signing with it, at start-up, and at a reload that finds less recorded than the next one
/// needs (so about every other reload writes).
pub(super) async fn record_horizon(
    db: &Db,
    keys: &TokenKeys,
    stored: &[crate::db::entities::signing_key::Model],
) -> AppResult<()> {
    let Some(current) = tokens::current_key(stored) else {
        return Ok(());
    };
    let now = chrono::Utc::now();
    if current
        .signs_until
        .is_some_and(|recorded| recorded >= keys.signs_until(now, 1, KEY_RELOAD_TIMEOUT))
    {
        return Ok(());
    }
    let until = keys.signs_until(now, 2, KEY_RELOAD_TIMEOUT);
    signing_keys::extend_horizon(db.writer(), &current.kid, until).await?;
    Ok(())
}

/// Puts the signing keys that still verify tokens in use; returns the kids of the others.
async fn load_keys(inner: &Inner) -> AppResult<Vec<String>> {
    let mut keys = signing_keys::all(inner.db.conn()).await?;
    let now = chrono::Utc::now();
    let (expired, live): (Vec<_>, Vec<_>) = keys.drain(..).partition(|key| {
        inner
            .tokens
            .verifies_until(key)
            .is_some_and(|until| until <= now)
    });
    // A failed write leaves the keys to be read all the same: an instance that missed a
    // rotation would refuse the new key's tokens. What was recorded at the last write still
    // covers the next reload.
    if inner.purpose == Purpose::Serve
        && let Err(err) = record_horizon(&inner.db, &inner.tokens, &live).await
    {
        tracing::warn!(error = %chain(&err), "recording how long this instance's tokens live");
    }
    let signed_with = inner.tokens.current_kid();
    inner.tokens.reload(&live)?;
    // The start-up line names the first key; a rotation's reaching this instance shows here,
    // so an operator can tell when every instance has it (before `keys rotate --revoke`, say).
    let signs_with = inner.tokens.current_kid();
    if inner.purpose == Purpose::Serve
        && signed_with.is_some()
        && signs_with != signed_with
        && let Some(kid) = signs_with
    {
        tracing::info!(
            verifying = live.len(),
            "now signing with the stored key {kid}"
        );
    }
    Ok(expired.into_iter().map(|key| key.kid).collect())
}
