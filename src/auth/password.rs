//! argon2id password hashing on a small dedicated thread pool.
//!
//! Each hash holds 19 MiB and about 40 ms of a core. A fixed number of hashing threads bounds
//! memory (threads × 19 MiB) and keeps the work off the async executor; a login flood queues
//! here. The threads run at a lower scheduling priority, so under a flood they take the CPU
//! only when request handling does not need it: logins use every idle cycle while cheap
//! requests keep their latency.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::oneshot;

use crate::error::{AppError, AppResult};

type Job = Box<dyn FnOnce() + Send>;

/// The hash of a random password nobody knows, with the same parameters as real hashes.
/// Verified against when the user does not exist, so an unknown login costs the same as a
/// wrong password and accounts cannot be enumerated by timing.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$eMY6eq+TzVX8Glq3Mhkcjw$jG4BfI64pUAWaqdwxgQfxfELyzBj6DuLxFRC+hlQ4iI";

/// Nice value of hashing threads: low enough that request handling wins the CPU.
const HASH_THREAD_NICE: i32 = 10;

#[derive(Clone)]
pub struct Passwords {
    jobs: Sender<Job>,
}

impl Passwords {
    /// Starts `threads` hashing threads; they exit when the last handle is dropped.
    pub fn new(threads: usize) -> AppResult<Self> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || worker(&queue))
                .map_err(|err| AppError::internal(format!("spawning hash thread: {err}")))?;
        }
        Ok(Self { jobs })
    }

    /// Default: one hashing thread per core, the most that can make progress at once.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no user
    /// (always `false` then).
    pub async fn verify(&self, password: String, hash: Option<String>) -> AppResult<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = self
            .run(move || {
                Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        Ok(known && ok)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> AppResult<T> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| AppError::internal("password hashing threads are gone"))?;
        result
            .await
            .map_err(|_| AppError::internal("password hashing job was dropped"))
    }
}

fn worker(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; on Linux, PRIO_PROCESS with
    // who = 0 applies to the calling thread alone.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) };
    if result != 0 {
        tracing::debug!("could not lower the hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {
    let _ = HASH_THREAD_NICE;
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
        let passwords = Passwords::new(1).expect("pool");
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
