//! Access tokens (HS256 JWTs) and opaque refresh tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

const ISSUER: &str = "rollcall";
const AUDIENCE: &str = "rollcall";
/// Shortest signing key accepted: HS256 needs at least its output size.
pub const MIN_SECRET_BYTES: usize = 32;

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

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration) -> AppResult<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AppError::internal("signing key shorter than 32 bytes"));
        }
        // Only HS256 is accepted; jku/jwk headers are never consulted because the key is fixed.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // Without this list a token lacking `aud` would still pass.
        validation.set_required_spec_claims(&["sub", "iat", "exp", "iss", "aud"]);
        validation.leeway = 0;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
        })
    }

    /// Issues an access token and returns it with its expiry.
    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> AppResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.access_ttl)
            .map_err(|_| AppError::internal("access ttl out of range"))?;
        let expires = now + ttl;
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now.timestamp(),
            exp: expires.timestamp(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| AppError::internal_from("signing an access token", err))?;
        let expires = DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires);
        Ok((token, expires))
    }

    /// Checks signature and claims. Revocation is not decided here: the session check on
    /// every request does that.
    pub fn verify(&self, token: &str) -> AppResult<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| AppError::Unauthenticated("Invalid or expired token"))
    }
}

/// A new random signing key (256 bits), base64url encoded.
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

/// A new refresh token: 256 random bits the client keeps, and the SHA-256 we store.
pub fn new_refresh_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(random_bytes());
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    bytes
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

    #[test]
    fn round_trip() {
        let keys = keys();
        let (token, _) = keys.issue(Uuid::nil(), Uuid::max()).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!(claims.sid, Uuid::max());
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(keys.verify(&tampered).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let mut c = claims();
        c["exp"] = json!(Utc::now().timestamp() - 1);
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
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(&[1u8; 31], Duration::from_secs(60)).is_err());
    }
}
