//! argon2id password hashing on the blocking thread pool.
//!
//! Each hash holds 19 MiB and about 40 ms of a core, so a semaphore bounds how many run at
//! once: a login flood queues here instead of exhausting memory or the async workers.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::{AppError, AppResult};

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so an unknown login costs the same as
    /// a wrong password and accounts cannot be enumerated by timing.
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub async fn new(concurrency: usize) -> AppResult<Self> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let dummy = tokio::task::spawn_blocking(|| {
            let mut random = [0u8; 24];
            rand::fill(&mut random);
            hash_blocking(&hex::encode(random))
        })
        .await??;
        Ok(Self {
            permits,
            dummy_hash: dummy.into(),
        })
    }

    /// Default bound: one hash per core, the most that can make progress at once.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        let _permit = self.acquire().await?;
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no user
    /// (always `false` then).
    pub async fn verify(&self, password: String, hash: Option<String>) -> AppResult<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let _permit = self.acquire().await?;
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await?;
        Ok(known && ok)
    }

    async fn acquire(&self) -> AppResult<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| AppError::internal("password hashing pool closed"))
    }
}

/// argon2id with the crate defaults, which are OWASP's (m=19456 KiB, t=2, p=1).
fn hash_blocking(password: &str) -> AppResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| AppError::internal(format!("argon2: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let passwords = Passwords::new(1).await.expect("pool");
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("anything".into(), None)
                .await
                .expect("verify")
        );
    }
}
