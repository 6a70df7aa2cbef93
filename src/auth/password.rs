//! argon2id password hashing on a small dedicated thread pool.
//!
//! Each hash holds 19 MiB and about 40 ms of a core. A fixed number of hashing threads bounds
//! memory (threads × 19 MiB) and keeps the work off the async executor; a login flood queues
//! here. The threads run at a lower priority and step aside whenever other threads wait for
//! a core ([`super::give_way`]), so a flood of logins gets the idle cycles without holding up
//! the rest.
//!
//! Each thread keeps its 19 MiB working memory while jobs keep coming and gives it back to
//! the system after [`KEEP_MEMORY_FOR`] without one: a flood, or logins a few at a time, pay
//! for fresh pages once per thread, not once per login (on a virtual machine, faulting in a
//! fresh 19 MiB costs three quarters of the hash itself), and an idle server holds none of it.
//! A new job wakes the thread that went idle last, so logins that come a few at a time keep
//! landing on threads whose memory is still warm, however many threads there are, and the
//! others soon free theirs.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use super::give_way::{self, Breather};
use crate::error::{AppError, AppResult};

tokio::task_local! {
    /// Set once the request running in this task has asked for a hash.
    static REQUEST_HASHED: Cell<bool>;
}

/// Runs one request's work and, when it asked for no hash, tells the hashing threads that
/// other requests are being served, so that they make way for them promptly
/// ([`give_way::other_work_done`]).
pub async fn serve_request<T>(work: impl Future<Output = T>) -> T {
    let (output, hashed) = tracking_hashes(work).await;
    if !hashed {
        give_way::other_work_done();
    }
    output
}

/// Runs `work` and tells whether it asked for a hash.
async fn tracking_hashes<T>(work: impl Future<Output = T>) -> (T, bool) {
    REQUEST_HASHED
        .scope(Cell::new(false), async {
            let output = work.await;
            (output, REQUEST_HASHED.with(Cell::get))
        })
        .await
}

/// A hashing thread's reusable working memory: empty until its first job.
type Scratch = Vec<Block>;
type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// How long an idle hashing thread keeps its working memory: longer than the gaps between
/// the logins of a server that is busy at all, short enough that an idle one soon holds none.
const KEEP_MEMORY_FOR: Duration = Duration::from_secs(2);

/// Jobs waiting for a hashing thread.
struct Queue {
    state: Mutex<QueueState>,
    /// One per thread, so that a job wakes the thread of our choosing ([`QueueState::idle`]).
    wake: Vec<Condvar>,
    /// How long an idle thread keeps its working memory ([`KEEP_MEMORY_FOR`]).
    keep_memory_for: Duration,
    /// Times a thread gave its working memory back.
    released: AtomicUsize,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job, by index; a job wakes the last one. Threads holding memory
    /// join at the back and those without at the front, so a job goes to the thread that
    /// went idle most recently, whose memory is warm, and the others stay idle long enough
    /// to free theirs.
    idle: VecDeque<usize>,
    /// Set when the last [`Passwords`] handle is gone: the threads finish the queue and exit.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Jobs run outside the lock, so a panic cannot leave the queue half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes the queue when the last [`Passwords`] clone is dropped.
struct Pool {
    queue: Arc<Queue>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        for wake in &self.queue.wake {
            wake.notify_one();
        }
    }
}

/// The hash of a random password nobody knows, with the same parameters as real hashes.
/// Verified against when the user does not exist, so an unknown login costs the same as a
/// wrong password and accounts cannot be enumerated by timing.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$eMY6eq+TzVX8Glq3Mhkcjw$jG4BfI64pUAWaqdwxgQfxfELyzBj6DuLxFRC+hlQ4iI";

#[derive(Clone)]
pub struct Passwords {
    pool: Arc<Pool>,
}

impl Passwords {
    /// Starts `threads` hashing threads; they exit when the last handle is dropped.
    pub fn new(threads: usize) -> AppResult<Self> {
        Self::start(threads, KEEP_MEMORY_FOR)
    }

    fn start(threads: usize, keep_memory_for: Duration) -> AppResult<Self> {
        let threads = threads.max(1);
        // Created first, so that the threads already started exit if a later one fails.
        let pool = Arc::new(Pool {
            queue: Arc::new(Queue {
                state: Mutex::default(),
                wake: (0..threads).map(|_| Condvar::new()).collect(),
                keep_memory_for,
                released: AtomicUsize::new(0),
            }),
        });
        for index in 0..threads {
            let queue = pool.queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || worker(&queue, index))
                .map_err(|err| AppError::internal(format!("spawning hash thread: {err}")))?;
        }
        Ok(Self { pool })
    }

    /// Default: one hashing thread per core, the most that can make progress at once.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        self.run(move |scratch| hash_blocking(&password, scratch))
            .await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no user
    /// (always `false` then).
    pub async fn verify(&self, password: String, hash: Option<String>) -> AppResult<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = self
            .run(move |scratch| verify_blocking(&password, &hash, scratch))
            .await?;
        Ok(known && ok)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> AppResult<T> {
        let _ = REQUEST_HASHED.try_with(|hashed| hashed.set(true));
        let (done, result) = oneshot::channel();
        let queue = &self.pool.queue;
        {
            let mut state = queue.lock();
            state.jobs.push_back(Box::new(move |scratch: &mut Scratch| {
                let _ = done.send(work(scratch));
            }));
            if let Some(thread) = state.idle.pop_back() {
                queue.wake[thread].notify_one();
            }
        }
        // A job that panicked dropped `done` on its way out.
        result
            .await
            .map_err(|_| AppError::internal("password hashing job was dropped"))
    }
}

fn worker(queue: &Queue, index: usize) {
    let breather = Breather::for_this_thread();
    let mut scratch = Scratch::new();
    loop {
        match next(queue, index, !scratch.is_empty()) {
            Next::Job(job) => {
                // A panicking job fails its own request only; the thread carries on for the
                // rest, with fresh memory in case the panic left it half-written.
                let run =
                    breather.run(|| panic::catch_unwind(AssertUnwindSafe(|| job(&mut scratch))));
                if run.is_err() {
                    scratch = Scratch::new();
                }
            }
            // Outside the lock: unmapping 19 MiB takes a while.
            Next::Idle => {
                scratch = Scratch::new();
                queue.released.fetch_add(1, Ordering::Relaxed);
            }
            Next::Closed => return,
        }
    }
}

enum Next {
    Job(Job),
    /// No job came for a while ([`KEEP_MEMORY_FOR`]): time to give the working memory back.
    Idle,
    Closed,
}

/// Waits for the next job; a thread `holding_memory` waits at most [`KEEP_MEMORY_FOR`].
fn next(queue: &Queue, index: usize, holding_memory: bool) -> Next {
    // One deadline for the whole wait: a wake-up whose job another thread took must not
    // restart it.
    let deadline = Instant::now() + queue.keep_memory_for;
    let wake = &queue.wake[index];
    let mut state = queue.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            state.idle.retain(|&idle| idle != index);
            return Next::Job(job);
        }
        if state.closed {
            return Next::Closed;
        }
        // Not there when a job woke this thread and another thread took the job.
        if !state.idle.contains(&index) {
            if holding_memory {
                state.idle.push_back(index);
            } else {
                state.idle.push_front(index);
            }
        }
        if holding_memory {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.idle.retain(|&idle| idle != index);
                return Next::Idle;
            }
            state = wake
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        } else {
            state = wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// argon2id with the crate defaults, which are OWASP's (m=19456 KiB, t=2, p=1).
fn hash_blocking(password: &str, scratch: &mut Scratch) -> AppResult<String> {
    let salt = argon2::password_hash::try_generate_salt()
        .map_err(|err| AppError::internal(format!("salt: {err}")))?;
    let params = Params::DEFAULT;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password,
        &salt,
        &mut out,
        scratch,
    )
    .map_err(|err| AppError::internal(format!("argon2: {err}")))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|err| AppError::internal(format!("argon2 params: {err}")))?,
        salt: Some(Salt::new(&salt).map_err(|err| AppError::internal(format!("salt: {err}")))?),
        hash: Some(Output::new(&out).map_err(|err| AppError::internal(format!("argon2: {err}")))?),
    };
    Ok(phc.to_string())
}

/// Recomputes the hash with the parameters stored in `hash` (so hashes made with other
/// parameters keep working) and compares in constant time. A malformed hash never matches.
fn verify_blocking(password: &str, hash: &str, scratch: &mut Scratch) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if compute(
        algorithm, version, params, password, salt, &mut out, scratch,
    )
    .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// One argon2 computation in the thread's working memory, grown to the size `params` needs.
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> argon2::Result<()> {
    let blocks = params.block_count();
    if scratch.len() < blocks {
        *scratch = vec![Block::new(); blocks];
    }
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        out,
        &mut scratch[..blocks],
    )
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

    #[tokio::test]
    async fn a_thread_keeps_its_memory_between_hashes_and_frees_it_when_idle() {
        let keep = Duration::from_secs(1);
        let passwords = Passwords::start(1, keep).expect("pool");
        let released = || passwords.pool.queue.released.load(Ordering::Relaxed);
        for _ in 0..3 {
            passwords.hash("correct horse".into()).await.expect("hash");
        }
        assert_eq!(
            released(),
            0,
            "freed between hashes that came one after another"
        );
        tokio::time::sleep(keep * 3).await;
        assert_eq!(released(), 1, "still held after idling");
        passwords.hash("correct horse".into()).await.expect("hash");
        tokio::time::sleep(keep * 3).await;
        assert_eq!(released(), 2);
    }

    #[tokio::test]
    async fn every_idle_thread_frees_its_memory() {
        let keep = Duration::from_secs(1);
        let passwords = Passwords::start(2, keep).expect("pool");
        // Both jobs must be running at once to pass the barrier, so each thread takes one.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let job = || {
            let barrier = barrier.clone();
            passwords.run(move |scratch| {
                barrier.wait();
                scratch.push(Block::new());
            })
        };
        let (first, second) = tokio::join!(job(), job());
        first.and(second).expect("jobs");
        tokio::time::sleep(keep * 3).await;
        assert_eq!(passwords.pool.queue.released.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn jobs_go_to_the_thread_that_went_idle_last() {
        // Jobs further apart than `keep` ÷ threads: handed out in turn, each would reach a
        // thread that had freed its memory.
        let keep = Duration::from_millis(600);
        let gap = Duration::from_millis(200);
        let passwords = Passwords::start(4, keep).expect("pool");
        let mut ran_on = Vec::new();
        for _ in 0..8 {
            let thread = passwords
                .run(|scratch| {
                    if scratch.is_empty() {
                        scratch.push(Block::new());
                    }
                    std::thread::current().name().map(str::to_owned)
                })
                .await
                .expect("job");
            ran_on.push(thread);
            tokio::time::sleep(gap).await;
        }
        ran_on.dedup();
        assert_eq!(ran_on.len(), 1, "jobs ran on {ran_on:?}");
        let released = || passwords.pool.queue.released.load(Ordering::Relaxed);
        assert_eq!(released(), 0, "a thread freed its memory between jobs");
        tokio::time::sleep(keep * 3).await;
        assert_eq!(
            released(),
            1,
            "the busy thread still held its memory after idling"
        );
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_thread_carries_on() {
        let passwords = Passwords::new(1).expect("pool");
        let failed = passwords
            .run(|_| -> () { panic!("a job that panics") })
            .await;
        assert!(failed.is_err());
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_request_that_verifies_a_password_counts_as_hashing() {
        let passwords = Passwords::new(1).expect("pool");
        // `tracking_hashes`, not `serve_request`: that records other requests process-wide,
        // which the stepping-aside test must not see.
        let ((), hashed) = tracking_hashes(async {
            let _ = passwords.verify("anything".into(), None).await;
        })
        .await;
        assert!(hashed);
        let ((), hashed) = tracking_hashes(async {}).await;
        assert!(!hashed);
    }

    #[tokio::test]
    async fn accepts_hashes_made_by_the_stock_hasher_and_other_parameters() {
        use argon2::password_hash::PasswordHasher;

        let passwords = Passwords::new(1).expect("pool");
        let stock = Argon2::default()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        // Smaller parameters than ours: the working memory is reused at another size.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"battery staple")
        .expect("hash")
        .to_string();
        for _ in 0..2 {
            assert!(
                passwords
                    .verify("correct horse".into(), Some(stock.clone()))
                    .await
                    .expect("verify")
            );
            assert!(
                passwords
                    .verify("battery staple".into(), Some(small.clone()))
                    .await
                    .expect("verify")
            );
            assert!(
                !passwords
                    .verify("battery staple".into(), Some(stock.clone()))
                    .await
                    .expect("verify")
            );
        }
        assert!(
            !passwords
                .verify("x".into(), Some("$argon2id$garbage".into()))
                .await
                .expect("verify")
        );
    }
}
