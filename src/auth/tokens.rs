//! Access tokens (JWTs signed with Ed25519, or HS256 with a configured secret) and opaque
//! refresh tokens.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::entities::signing_key;
use crate::error::{AppError, AppResult, INVALID_TOKEN};

const ISSUER: &str = "rollcall";
const AUDIENCE: &str = "rollcall";
/// Shortest signing key accepted: HS256 needs at least its output size.
pub const MIN_SECRET_BYTES: usize = 32;
/// How often an instance reloads the signing keys from the database at most.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// Access tokens remembered as verified: a client sends its token with every request, and an
/// Ed25519 verification costs more than the rest of a small query's work.
const VERIFIED_TOKENS: usize = 4_096;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    /// The session (token family) this token belongs to; revoking it ends the token at once.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// The keys that sign and verify access tokens. Cheap to clone; clones share the key set, which
/// [`TokenKeys::reload`] replaces.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    held: Arc<RwLock<Arc<Held>>>,
    validation: Validation,
    access_ttl: Duration,
}

/// The keys held now and the tokens they verified. A reload replaces both together, so a
/// verification still running when the keys change is remembered only with the keys it used,
/// never with their successors.
struct Held {
    keys: KeySet,
    /// Tokens whose signature and claims checked out, by their whole text; a hit skips only
    /// the signature check, never the expiry or the end of the key's window.
    verified: quick_cache::sync::Cache<String, Verified>,
}

#[derive(Clone)]
struct Verified {
    claims: AccessClaims,
    /// When the key that signed the token stops verifying; `None` while it is current.
    key_until: Option<DateTime<Utc>>,
}

impl Held {
    fn new(keys: KeySet) -> Arc<Self> {
        Arc::new(Self {
            keys,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        })
    }
}

enum KeySet {
    Secret {
        encoding: EncodingKey,
        decoding: DecodingKey,
        /// The start of the labelled secret's SHA-256 ([`FINGERPRINT_LABEL`]), for the log:
        /// instances that print different ones refuse each other's tokens.
        fingerprint: String,
    },
    Ed25519 {
        current_kid: String,
        current: EncodingKey,
        public: HashMap<String, PublicKey>,
    },
}

/// A key that verifies tokens, with the end of its verification window once it is retired.
struct PublicKey {
    x: String,
    decoding: DecodingKey,
    until: Option<DateTime<Utc>>,
}

impl TokenKeys {
    /// HS256 with a shared secret.
    pub fn new(secret: &[u8], access_ttl: Duration) -> AppResult<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AppError::internal("signing key shorter than 32 bytes"));
        }
        let keys = KeySet::Secret {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            fingerprint: super::sha256_hex([FINGERPRINT_LABEL, secret].concat())[..8].to_owned(),
        };
        Ok(Self::with(Algorithm::HS256, keys, access_ttl))
    }

    /// EdDSA with the keys stored in the database: the newest key not retired signs, and
    /// every key verifies the tokens it signed until [`TokenKeys::verifies_until`].
    pub fn ed25519(stored: &[signing_key::Model], access_ttl: Duration) -> AppResult<Self> {
        let keys = ed25519_set(stored, access_ttl)?;
        Ok(Self::with(Algorithm::EdDSA, keys, access_ttl))
    }

    fn with(algorithm: Algorithm, keys: KeySet, access_ttl: Duration) -> Self {
        // Only the configured algorithm is accepted, and only with keys of our own: jku/jwk
        // headers are never consulted.
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // Without this list a token lacking `aud` would still pass.
        // (`iat` is required by `AccessClaims` itself.)
        validation.set_required_spec_claims(&["sub", "exp", "iss", "aud"]);
        validation.leeway = 0;
        // We issue no `nbf`; one in a token must have passed.
        validation.validate_nbf = true;
        Self {
            algorithm,
            held: Arc::new(RwLock::new(Held::new(keys))),
            validation,
            access_ttl,
        }
    }

    /// Whether tokens are signed with keys from the database (EdDSA) rather than a secret.
    pub fn uses_stored_keys(&self) -> bool {
        self.algorithm == Algorithm::EdDSA
    }

    /// How often the stored keys are reloaded: every 30 s, or every half access token
    /// lifetime when that is shorter (at least every second).
    pub fn reload_every(&self) -> Duration {
        reload_every(self.access_ttl)
    }

    /// When `key` stops verifying: never while it is current; once retired, when the last
    /// token it signed has expired (see [`horizon`]).
    pub fn verifies_until(&self, key: &signing_key::Model) -> Option<DateTime<Utc>> {
        horizon(key, self.access_ttl)
    }

    /// The latest expiry of a token this instance signs with its current key until `reloads`
    /// more key reloads have passed (`reload_every`, plus `slack` for each one's lateness):
    /// recorded on the key (`signs_until`), so instances with a shorter `ROLLCALL_ACCESS_TTL`
    /// keep the key until this instance's tokens have expired too.
    pub fn signs_until(&self, now: DateTime<Utc>, reloads: u32, slack: Duration) -> DateTime<Utc> {
        crate::db::later(
            now,
            self.access_ttl + (self.reload_every() + slack) * reloads,
        )
    }

    /// Replaces the stored keys with `stored`, unless they are the keys held already. With a
    /// shared secret there is nothing to do.
    pub fn reload(&self, stored: &[signing_key::Model]) -> AppResult<()> {
        if !self.uses_stored_keys() {
            return Ok(());
        }
        let keys = ed25519_set(stored, self.access_ttl)?;
        let mut held = self
            .held
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Reloads come often (on every unknown kid, at most once a second); the remembered
        // verifications stay while nothing changed. Otherwise they go with the old keys: a key
        // that stopped verifying must not live on in them.
        if same_keys(&held.keys, &keys) {
            return Ok(());
        }
        *held = Held::new(keys);
        Ok(())
    }

    fn current(&self) -> Arc<Held> {
        self.held
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The kid that signs new tokens; `None` with a shared secret.
    pub fn current_kid(&self) -> Option<String> {
        match &self.current().keys {
            KeySet::Secret { .. } => None,
            KeySet::Ed25519 { current_kid, .. } => Some(current_kid.clone()),
        }
    }

    /// What signs new tokens, for the start-up line: instances on one database that name
    /// different ones refuse each other's tokens.
    pub fn signer(&self) -> String {
        match &self.current().keys {
            KeySet::Secret { fingerprint, .. } => {
                format!("ROLLCALL_JWT_SECRET, SHA-256 {fingerprint}…")
            }
            KeySet::Ed25519 { current_kid, .. } => format!("the stored key {current_kid}"),
        }
    }

    /// The public keys that verify tokens now, as a JWK set; empty with a shared secret.
    pub fn jwks(&self) -> Value {
        let now = Utc::now();
        let mut keys = Vec::new();
        if let KeySet::Ed25519 { public, .. } = &self.current().keys {
            let mut live: Vec<(&String, &PublicKey)> = public
                .iter()
                .filter(|(_, key)| key.until.is_none_or(|until| until > now))
                .collect();
            live.sort_by(|a, b| a.0.cmp(b.0));
            keys = live
                .into_iter()
                .map(|(kid, key)| {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": key.x, "kid": kid,
                           "use": "sig", "alg": "EdDSA"})
                })
                .collect();
        }
        json!({ "keys": keys })
    }

    /// Issues an access token for a session that ends at `session_ends` and returns it with
    /// its expiry: the TTL from now, or the session's end when sooner, so the expiry a client
    /// is told is when the token stops working.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        session_ends: DateTime<Utc>,
    ) -> AppResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.access_ttl)
            .map_err(|_| AppError::internal("access ttl out of range"))?;
        let exp = access_expiry(now, ttl, session_ends)
            .ok_or(AppError::Unauthenticated("The session has ended"))?;
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now.timestamp(),
            exp,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let held = self.current();
        let mut header = Header::new(self.algorithm);
        let encoding = match &held.keys {
            KeySet::Secret { encoding, .. } => encoding,
            KeySet::Ed25519 {
                current_kid,
                current,
                ..
            } => {
                header.kid = Some(current_kid.clone());
                current
            }
        };
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|err| AppError::internal_from("signing an access token", err))?;
        let expires = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now + ttl);
        Ok((token, expires))
    }

    /// Checks signature and claims. Revocation is not decided here: the session check on
    /// every request does that.
    pub fn verify(&self, token: &str) -> AppResult<AccessClaims> {
        self.verify_with(&self.current(), token)
    }

    /// [`Self::verify`] with the keys `held`, remembering the verification with them.
    fn verify_with(&self, held: &Held, token: &str) -> AppResult<AccessClaims> {
        if let Some(hit) = held.verified.get(token) {
            let key_retired = hit.key_until.is_some_and(|until| until <= Utc::now());
            return if expired(hit.claims.exp) {
                Err(refused("expired"))
            } else if key_retired {
                Err(refused("its key was retired"))
            } else {
                Ok(hit.claims)
            };
        }
        let verified = self.verify_signed(&held.keys, token)?;
        held.verified.insert(token.to_owned(), verified.clone());
        Ok(verified.claims)
    }

    /// Whether `token` names a kid this instance does not hold: a key rotated in by another
    /// instance (or `rollcall keys rotate`) that this one has not reloaded yet, or a forgery.
    pub fn signed_by_unknown_key(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return false;
        };
        match (&self.current().keys, header.kid) {
            (KeySet::Ed25519 { public, .. }, Some(kid)) => !public.contains_key(&kid),
            _ => false,
        }
    }

    /// [`Self::verify`] with `keys`, without the memory of earlier verifications.
    fn verify_signed(&self, keys: &KeySet, token: &str) -> AppResult<Verified> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("not a JWT"))?;
        // A token naming extensions it must be understood with is invalid to a recipient that
        // understands none (RFC 7515, 4.1.11), and jsonwebtoken does not look. Only a holder
        // of the signing key makes one (another service sharing an HS256 secret, say); its
        // restriction must not be silently dropped.
        if header.crit.is_some() {
            return Err(refused("it names critical extensions"));
        }
        let (decoding, key_until) = match keys {
            KeySet::Secret { decoding, .. } => (decoding, None),
            KeySet::Ed25519 { public, .. } => {
                let kid = header
                    .kid
                    .as_ref()
                    .ok_or_else(|| refused("it names no kid (signed with a shared secret?)"))?;
                // Not said here: the keys are reloaded and the token checked again, and the
                // caller says so if the kid is still unknown then.
                let key = public.get(kid).ok_or(INVALID_TOKEN)?;
                if key.until.is_some_and(|until| until <= Utc::now()) {
                    return Err(refused("its key was retired"));
                }
                (&key.decoding, key.until)
            }
        };
        let claims = jsonwebtoken::decode::<AccessClaims>(token, decoding, &self.validation)
            .map(|data| data.claims)
            // Another algorithm or signature: most often an instance on the same database with
            // another ROLLCALL_JWT_SECRET, or with one where this has none.
            .map_err(refused)?;
        // Only what a server issues: issued no later than now (with room for the clocks of
        // other instances) and living no longer than a day, or the access TTL when longer (a
        // day's room, so tokens issued before a change of the TTL, or by an instance not yet
        // restarted with it, still pass). A token minted otherwise, with a leaked key say,
        // does not outlive the key's removal by years.
        let issued_by_now = claims.iat <= Utc::now().timestamp() + CLOCK_SKEW_SECONDS;
        let lifetime = claims.exp.saturating_sub(claims.iat);
        // Whole seconds, rounded up as `exp` may be for a fractional lifetime, and a second
        // more: `iat` is rounded down and `exp` up.
        let ttl = self.access_ttl.as_secs() + u64::from(self.access_ttl.subsec_nanos() > 0);
        let longest = i64::try_from(ttl)
            .unwrap_or(i64::MAX)
            .max(DAY_SECONDS)
            .saturating_add(1);
        if !issued_by_now {
            return Err(refused("issued in the future"));
        }
        if lifetime > longest {
            return Err(refused(
                "it lives longer than this instance's access TTL allows",
            ));
        }
        if expired(claims.exp) {
            return Err(refused("expired"));
        }
        Ok(Verified { claims, key_until })
    }
}

/// Put before the secret for its fingerprint, so that what is logged is no part of the HMAC key
/// (which is the secret's own SHA-256 when the secret is over 64 bytes).
pub const FINGERPRINT_LABEL: &[u8] = b"rollcall fingerprint:";

/// [`INVALID_TOKEN`], as every refusal is answered; why, at DEBUG, for an operator finding out
/// why instances refuse each other's tokens.
pub(crate) fn refused(reason: impl std::fmt::Display) -> AppError {
    tracing::debug!(%reason, "access token refused");
    INVALID_TOKEN
}

/// How far ahead of this instance's clock another instance's may be.
const CLOCK_SKEW_SECONDS: i64 = 60;

/// A token is valid only before its `exp` (RFC 7519), which is when `expiresAt` told the
/// client it ends; jsonwebtoken still accepts it through that whole second.
fn expired(exp: i64) -> bool {
    exp <= Utc::now().timestamp()
}

const DAY_SECONDS: i64 = 86_400;

/// Whether two key sets sign with the same key and verify with the same keys, windows and all.
fn same_keys(a: &KeySet, b: &KeySet) -> bool {
    match (a, b) {
        (
            KeySet::Ed25519 {
                current_kid: a_kid,
                public: a_public,
                ..
            },
            KeySet::Ed25519 {
                current_kid: b_kid,
                public: b_public,
                ..
            },
        ) => {
            a_kid == b_kid
                && a_public.len() == b_public.len()
                && a_public.iter().all(|(kid, key)| {
                    b_public
                        .get(kid)
                        .is_some_and(|other| other.x == key.x && other.until == key.until)
                })
        }
        _ => false,
    }
}

fn reload_every(access_ttl: Duration) -> Duration {
    (access_ttl / 2).clamp(Duration::from_secs(1), RELOAD_AT_MOST_EVERY)
}

/// When a retired key stops verifying: once the last token it signed has expired. An
/// instance that has not reloaded yet may sign with it for up to [`reload_every`] after its
/// retirement, so that long is added to this instance's token lifetime; instances with a
/// longer lifetime recorded theirs on the key (`signs_until`). `None` for the current key.
fn horizon(key: &signing_key::Model, access_ttl: Duration) -> Option<DateTime<Utc>> {
    let retired_at = key.retired_at?;
    let own = crate::db::later(retired_at, access_ttl + reload_every(access_ttl));
    Some(key.signs_until.map_or(own, |recorded| recorded.max(own)))
}

/// The key that signs: the newest one not retired.
pub fn current_key(stored: &[signing_key::Model]) -> Option<&signing_key::Model> {
    stored
        .iter()
        .filter(|key| key.retired_at.is_none())
        .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
}

/// The Ed25519 key set from the stored keys; fails when no key is current or one is damaged.
fn ed25519_set(stored: &[signing_key::Model], access_ttl: Duration) -> AppResult<KeySet> {
    let current =
        current_key(stored).ok_or_else(|| AppError::internal("no current signing key"))?;
    let mut public = HashMap::new();
    for key in stored {
        const DAMAGED: &str = "a stored signing key is damaged";
        let bytes = URL_SAFE_NO_PAD
            .decode(&key.public_key)
            .map_err(|err| AppError::internal_from(DAMAGED, err))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| AppError::internal("a stored signing key is not 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|err| AppError::internal_from(DAMAGED, err))?;
        let decoding = DecodingKey::from_ed_components(&key.public_key)
            .map_err(|err| AppError::internal_from(DAMAGED, err))?;
        let until = horizon(key, access_ttl);
        public.insert(
            key.kid.clone(),
            PublicKey {
                x: key.public_key.clone(),
                decoding,
                until,
            },
        );
    }
    const DAMAGED: &str = "the current signing key is damaged";
    let der = STANDARD
        .decode(&current.private_key)
        .map_err(|err| AppError::internal_from(DAMAGED, err))?;
    let signing = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
        .map_err(|err| AppError::internal_from(DAMAGED, err))?;
    if URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()) != current.public_key {
        return Err(AppError::internal(
            "the current signing key does not match its public key",
        ));
    }
    Ok(KeySet::Ed25519 {
        current_kid: current.kid.clone(),
        current: EncodingKey::from_ed_der(&der),
        public,
    })
}

/// A new Ed25519 key pair, created at `now`; its kid is its RFC 7638 JWK thumbprint.
pub fn new_signing_key(now: DateTime<Utc>) -> AppResult<signing_key::Model> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&random_bytes());
    let der = signing
        .to_pkcs8_der()
        .map_err(|err| AppError::internal_from("encoding a signing key", err))?;
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let thumbprint = Sha256::digest(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
    Ok(signing_key::Model {
        kid: URL_SAFE_NO_PAD.encode(thumbprint),
        private_key: STANDARD.encode(der.as_bytes()),
        public_key: x,
        created_at: now,
        retired_at: None,
        signs_until: None,
    })
}

/// A new refresh token: 256 random bits the client keeps, and the SHA-256 we store.
pub fn new_refresh_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(random_bytes());
    let hash = hash_token(&token);
    (token, hash)
}

/// What every API token starts with, so a leaked one is recognisable (secret scanners, logs).
pub const API_TOKEN_PREFIX: &str = "rc_";

/// A new API token: the prefix and 256 random bits, and the SHA-256 we store.
pub fn new_api_token() -> (String, String) {
    let token = format!(
        "{API_TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes())
    );
    let hash = hash_token(&token);
    (token, hash)
}

/// Whether a bearer token is an API token rather than a JWT (which never starts so).
pub fn is_api_token(token: &str) -> bool {
    token.starts_with(API_TOKEN_PREFIX)
}

/// The stored SHA-256 of a refresh or API token: they are random enough that a fast hash is
/// safe.
pub fn hash_token(token: &str) -> String {
    super::sha256_hex(token)
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    bytes
}

/// When an access token issued at `now` expires, in whole seconds: the TTL rounded up, so a
/// token lives at least that long whatever fraction of a second it was issued in; the
/// session's end rounded down, which it must not outlive. `None` when that is no later than
/// `now`: a session ending within this second has no token left to give (it is refused from
/// `exp` on), and a refresh then learns that it must log in again.
fn access_expiry(
    now: DateTime<Utc>,
    ttl: chrono::Duration,
    session_ends: DateTime<Utc>,
) -> Option<i64> {
    let by_ttl = now + ttl;
    let exp = (by_ttl.timestamp() + i64::from(by_ttl.timestamp_subsec_nanos() > 0))
        .min(session_ends.timestamp());
    (exp > now.timestamp()).then_some(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], Duration::from_secs(60)).expect("keys")
    }

    fn sign(claims: serde_json::Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .expect("encode")
    }

    fn claims() -> serde_json::Value {
        let now = Utc::now().timestamp();
        json!({"sub": Uuid::nil(), "sid": Uuid::nil(), "iat": now, "exp": now + 60,
               "iss": ISSUER, "aud": AUDIENCE})
    }

    /// A retired key verifies until the later of this instance's window (its token lifetime
    /// plus a reload after the retirement) and what other instances recorded on it.
    #[test]
    fn a_retired_key_verifies_for_the_longest_recorded_lifetime() {
        let ttl = Duration::from_secs(60);
        let at = |secs: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        let mut key = new_signing_key(at(0)).unwrap();
        assert_eq!(horizon(&key, ttl), None, "the current key never stops");
        key.retired_at = Some(at(100));
        assert_eq!(horizon(&key, ttl), Some(at(100 + 60 + 30)));
        key.signs_until = Some(at(150));
        assert_eq!(
            horizon(&key, ttl),
            Some(at(190)),
            "an earlier record changes nothing"
        );
        key.signs_until = Some(at(3_700));
        assert_eq!(horizon(&key, ttl), Some(at(3_700)));
    }

    #[test]
    fn round_trip() {
        let keys = keys();
        let (token, _) = keys.issue(Uuid::nil(), Uuid::max(), far()).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!(claims.sid, Uuid::max());
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(keys.verify(&tampered).is_err());
    }

    /// An end for sessions no token outlives.
    fn far() -> DateTime<Utc> {
        DateTime::<Utc>::MAX_UTC
    }

    /// `exp` is rounded up: a token lives at least its TTL, under a second too, and one of a
    /// day, the longest lifetime taken from another instance, still verifies.
    #[test]
    fn issued_tokens_live_at_least_their_ttl() {
        for ttl in [Duration::from_millis(500), Duration::from_secs(86_400)] {
            let keys = TokenKeys::new(&[7u8; 32], ttl).expect("keys");
            let before = Utc::now();
            let (token, expires) = keys.issue(Uuid::nil(), Uuid::max(), far()).expect("issue");
            assert!(expires >= before + ttl, "{ttl:?}: {expires} {before}");
            assert!(keys.verify(&token).is_ok(), "{ttl:?}");
        }
    }

    /// A session ending sooner than the TTL ends its token with it, to the second before; one
    /// ending about when the TTL does too, rounding included.
    #[test]
    fn tokens_end_with_their_session() {
        let keys = TokenKeys::new(&[7u8; 32], Duration::from_secs(900)).expect("keys");
        for offset in (-1_200..=1_200).step_by(10) {
            let ends = Utc::now()
                + chrono::Duration::seconds(900)
                + chrono::Duration::milliseconds(offset);
            let (_, expires) = keys.issue(Uuid::nil(), Uuid::max(), ends).expect("issue");
            assert!(expires <= ends, "{offset} ms: {expires} after {ends}");
        }
        let ends = Utc::now() + chrono::Duration::seconds(60);
        let (token, expires) = keys.issue(Uuid::nil(), Uuid::max(), ends).expect("issue");
        assert!(
            expires <= ends && expires > ends - chrono::Duration::seconds(1),
            "{expires} {ends}"
        );
        assert!(keys.verify(&token).is_ok());
    }

    /// A session ending within the current second has no token left to give: one would be
    /// expired as it is issued.
    #[test]
    fn a_session_ending_this_second_gets_no_token() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("a time")
                .with_timezone(&Utc)
        };
        let now = at("2026-01-01T00:00:09.600Z");
        let ttl = chrono::Duration::seconds(60);
        assert_eq!(
            access_expiry(now, ttl, at("2026-01-01T00:00:09.900Z")),
            None
        );
        assert_eq!(
            access_expiry(now, ttl, at("2026-01-01T00:00:09.000Z")),
            None
        );
        assert_eq!(
            access_expiry(now, ttl, at("2026-01-01T00:00:10.100Z")),
            Some(at("2026-01-01T00:00:10Z").timestamp())
        );
        assert_eq!(
            access_expiry(now, ttl, at("2026-01-01T01:00:00Z")),
            Some(at("2026-01-01T00:01:10Z").timestamp())
        );
    }

    #[test]
    fn tokens_not_yet_valid_or_living_too_long_are_refused() {
        let keys = keys();
        let now = Utc::now().timestamp();
        let mut later = claims();
        later["nbf"] = json!(now + 3_600);
        let mut future = claims();
        future["iat"] = json!(now + 3_600);
        future["exp"] = json!(now + 3_660);
        let mut long = claims();
        // A day, and the second `iat` and `exp` may each be rounded by, is the most.
        long["exp"] = json!(now + 86_402);
        for (what, c) in [("nbf", later), ("iat", future), ("lifetime", long)] {
            assert!(keys.verify(&sign(c, Algorithm::HS256)).is_err(), "{what}");
        }
        let mut passed = claims();
        passed["nbf"] = json!(now - 10);
        assert!(keys.verify(&sign(passed, Algorithm::HS256)).is_ok());
        // Longer than this instance's TTL (a minute), as another's may be: still a day's room.
        let mut other_ttl = claims();
        other_ttl["exp"] = json!(now + 3_600);
        assert!(keys.verify(&sign(other_ttl, Algorithm::HS256)).is_ok());
    }

    /// Signed with the right key, and refused for the `crit` in its header alone.
    #[test]
    fn a_token_with_critical_extensions_is_refused() {
        let keys = keys();
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        let signed = |header: serde_json::Value| {
            let message = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header.to_string()));
            let key = EncodingKey::from_secret(&[7u8; 32]);
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
                .expect("sign");
            format!("{message}.{signature}")
        };
        let plain = signed(json!({"alg": "HS256", "typ": "JWT"}));
        assert!(keys.verify(&plain).is_ok());
        for crit in [json!(["exp"]), json!(["x-must-understand"]), json!([])] {
            let token = signed(
                json!({"alg": "HS256", "typ": "JWT", "crit": crit, "x-must-understand": true}),
            );
            assert!(keys.verify(&token).is_err(), "{crit}");
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let mut c = claims();
        c["exp"] = json!(Utc::now().timestamp() - 1);
        assert!(keys.verify(&sign(c, Algorithm::HS256)).is_err());
        // Its last second too: `exp` is when it ends, not the last second it works.
        let mut c = claims();
        c["exp"] = json!(Utc::now().timestamp());
        assert!(keys.verify(&sign(c, Algorithm::HS256)).is_err());
    }

    #[test]
    fn refuses_every_missing_claim_and_other_algorithms() {
        let keys = keys();
        assert!(keys.verify(&sign(claims(), Algorithm::HS256)).is_ok());
        for claim in ["sub", "sid", "iat", "exp", "iss", "aud"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(claim);
            assert!(keys.verify(&sign(c, Algorithm::HS256)).is_err(), "{claim}");
        }
        assert!(keys.verify(&sign(claims(), Algorithm::HS384)).is_err());
        let mut wrong_aud = claims();
        wrong_aud["aud"] = json!("someone-else");
        assert!(keys.verify(&sign(wrong_aud, Algorithm::HS256)).is_err());
        // alg "none": header and payload with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert!(keys.verify(&none).is_err());
    }

    #[test]
    fn remembered_tokens_still_expire_and_reloads_forget_them() {
        let keys = keys();
        let token = sign(claims(), Algorithm::HS256);
        keys.verify(&token).expect("verify");
        let held = keys.current();
        assert_eq!(held.verified.len(), 1);
        // Remembered, then past its expiry (as it would be a while later).
        let mut past = held.verified.get(&token).expect("remembered");
        past.claims.exp = Utc::now().timestamp() - 1;
        held.verified.insert(token.clone(), past);
        assert!(keys.verify(&token).is_err(), "expired, though remembered");
        // A token remembered under one key set is checked again under the next.
        let key = new_signing_key(Utc::now()).expect("key");
        let ed = ed_keys(std::slice::from_ref(&key));
        let (token, _) = ed.issue(Uuid::nil(), Uuid::nil(), far()).expect("issue");
        assert!(ed.verify(&token).is_ok());
        // Reloading the same keys keeps what was remembered; retiring one forgets it.
        ed.reload(std::slice::from_ref(&key)).expect("reload");
        assert_eq!(ed.current().verified.len(), 1, "same keys, same memory");
        let mut retired = key.clone();
        retired.retired_at = Some(Utc::now());
        let next = new_signing_key(Utc::now()).expect("key");
        ed.reload(&[retired, next]).expect("reload");
        assert_eq!(ed.current().verified.len(), 0, "a key's window changed");
        assert!(
            ed.verify(&token).is_ok(),
            "still within the retired key's window"
        );
        // Remembered, then past the end of its key's window.
        let held = ed.current();
        let mut late = held.verified.get(&token).expect("remembered");
        assert!(late.key_until.is_some(), "signed by a retired key");
        late.key_until = Some(Utc::now() - chrono::Duration::seconds(1));
        held.verified.insert(token.clone(), late.clone());
        assert!(ed.verify(&token).is_err(), "its key's window has ended");
        late.key_until = None;
        held.verified.insert(token.clone(), late);
        // A verification that began before a reload and ends after it is remembered with the
        // keys it used, not with their successors.
        let before = ed.current();
        let other = new_signing_key(Utc::now()).expect("key");
        ed.reload(std::slice::from_ref(&other)).expect("reload");
        assert!(
            ed.verify_with(&before, &token).is_ok(),
            "began before the reload"
        );
        assert!(ed.verify(&token).is_err(), "its key is gone");
        assert_eq!(ed.current().verified.len(), 0);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(&[1u8; 31], Duration::from_secs(60)).is_err());
    }

    fn ed_keys(stored: &[signing_key::Model]) -> TokenKeys {
        TokenKeys::ed25519(stored, Duration::from_secs(60)).expect("ed25519 keys")
    }

    fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).expect("header").kid
    }

    #[test]
    fn ed25519_tokens_carry_the_current_kid_and_verify() {
        let key = new_signing_key(Utc::now()).expect("key");
        let keys = ed_keys(std::slice::from_ref(&key));
        let (token, _) = keys.issue(Uuid::nil(), Uuid::max(), far()).expect("issue");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        assert_eq!(keys.verify(&token).expect("verify").sid, Uuid::max());
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], json!(key.kid));
        assert_eq!(jwks["keys"][0]["x"], json!(key.public_key));
        // As another service would: with the published x only.
        let decoding = DecodingKey::from_ed_components(&key.public_key).expect("x");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        assert!(jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &validation).is_ok());
    }

    #[test]
    fn no_algorithm_confusion_and_no_unknown_kids() {
        let key = new_signing_key(Utc::now()).expect("key");
        let ed = ed_keys(std::slice::from_ref(&key));
        let hs = keys();
        // HS256 signed with the public key (the classic confusion), or with any secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        for secret in [key.public_key.as_bytes(), &[7u8; 32][..]] {
            let forged =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
                    .expect("encode");
            assert!(ed.verify(&forged).is_err());
        }
        let (hs_token, _) = hs.issue(Uuid::nil(), Uuid::nil(), far()).expect("issue");
        assert!(ed.verify(&hs_token).is_err());
        let (ed_token, _) = ed.issue(Uuid::nil(), Uuid::nil(), far()).expect("issue");
        assert!(hs.verify(&ed_token).is_err());
        assert_eq!(hs.jwks(), json!({"keys": []}));
        // A token signed by a key this server does not know, under its kid or another.
        let stranger = new_signing_key(Utc::now()).expect("key");
        let (foreign, _) = ed_keys(std::slice::from_ref(&stranger))
            .issue(Uuid::nil(), Uuid::nil(), far())
            .expect("issue");
        assert!(ed.verify(&foreign).is_err());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let der = STANDARD.decode(&stranger.private_key).expect("der");
        let impostor = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ed_der(&der))
            .expect("sign");
        assert!(ed.verify(&impostor).is_err());
    }

    #[test]
    fn retired_keys_verify_until_their_window_ends() {
        let now = Utc::now();
        let mut old = new_signing_key(now - chrono::Duration::seconds(10)).expect("key");
        let new = new_signing_key(now).expect("key");
        let signed_by_old = ed_keys(std::slice::from_ref(&old))
            .issue(Uuid::nil(), Uuid::nil(), far())
            .expect("issue")
            .0;
        old.retired_at = Some(now);
        let keys = ed_keys(&[old.clone(), new.clone()]);
        assert_eq!(keys.current_kid(), Some(new.kid.clone()));
        assert_eq!(
            kid_of(
                &keys
                    .issue(Uuid::nil(), Uuid::nil(), far())
                    .expect("issue")
                    .0
            ),
            Some(new.kid.clone())
        );
        assert!(keys.verify(&signed_by_old).is_ok());
        assert_eq!(keys.jwks()["keys"].as_array().map(Vec::len), Some(2));
        // Past its window (60 s + 30 s reload allowance) the old key neither verifies nor is
        // published.
        old.retired_at = Some(now - chrono::Duration::seconds(91));
        keys.reload(&[old.clone(), new.clone()]).expect("reload");
        assert!(keys.verify(&signed_by_old).is_err());
        assert_eq!(keys.jwks()["keys"].as_array().map(Vec::len), Some(1));
        assert_eq!(keys.jwks()["keys"][0]["kid"], json!(new.kid));
    }

    #[test]
    fn stored_keys_must_be_whole() {
        let mut key = new_signing_key(Utc::now()).expect("key");
        assert!(!format!("{key:?}").contains(&key.private_key));
        key.public_key = URL_SAFE_NO_PAD.encode([1u8; 31]);
        assert!(TokenKeys::ed25519(std::slice::from_ref(&key), Duration::from_secs(60)).is_err());
        let other = new_signing_key(Utc::now()).expect("key");
        key.public_key = other.public_key;
        assert!(TokenKeys::ed25519(&[key.clone()], Duration::from_secs(60)).is_err());
        key.retired_at = Some(Utc::now());
        key.public_key = new_signing_key(Utc::now()).expect("key").public_key;
        assert!(
            TokenKeys::ed25519(&[key], Duration::from_secs(60)).is_err(),
            "no current key"
        );
    }
}
