//! argon2id password hashing on a few dedicated threads.
//!
//! Each hash holds 19 MiB and tens of milliseconds of a core. A fixed number of threads
//! (`ROLLCALL_HASH_CONCURRENCY`) fed by a bounded channel bounds that memory and keeps the work
//! off the async workers. When the channel is full a request is refused at once with
//! RATE_LIMITED rather than queued for longer than anyone waits, and a job whose request has
//! been answered or abandoned meanwhile is skipped, not computed. The threads run under
//! `SCHED_IDLE`, so the kernel lets request handling preempt a running hash: during a login
//! flood other requests still come first.
//!
//! A verification runs in its thread's working memory, kept while more jobs wait, because a
//! fresh block costs page faults on every verify (benches/RESULTS.md). When the queue is empty
//! the block is dropped, so an idle server holds none of it.

use std::panic::{self, AssertUnwindSafe};

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

/// Jobs waiting per hashing thread (about a second of work) before new ones are refused.
const QUEUE_PER_THREAD: usize = 32;

const BUSY: AppError = AppError::RateLimited {
    message: "The server is busy checking passwords; try again shortly",
    retry_after_seconds: 1,
};

/// The hash of a random password nobody knows, with the same parameters as real hashes.
/// Verified against when the user does not exist, so an unknown login costs the same as a
/// wrong password and accounts cannot be enumerated by timing.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$eMY6eq+TzVX8Glq3Mhkcjw$jG4BfI64pUAWaqdwxgQfxfELyzBj6DuLxFRC+hlQ4iI";

/// A hashing thread's working memory for argon2.
type Memory = Vec<Block>;
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Handle on the hashing threads; they exit once every clone is dropped.
#[derive(Clone)]
pub struct Passwords {
    jobs: flume::Sender<Job>,
    metrics: Metrics,
}

impl Passwords {
    /// Starts `threads` hashing threads.
    pub fn new(threads: usize) -> AppResult<Self> {
        Self::with_metrics(threads, Metrics::default())
    }

    /// [`Self::new`], counting refusals and waits in `metrics`.
    pub fn with_metrics(threads: usize, metrics: Metrics) -> AppResult<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = flume::bounded::<Job>(threads * QUEUE_PER_THREAD);
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_priority();
                    let mut memory = Memory::new();
                    for job in queue.iter() {
                        // A job that panics fails its own request only (its reply channel is
                        // dropped); the thread carries on with the next, in fresh memory.
                        let run = panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
                        if run.is_err() || queue.is_empty() {
                            memory = Memory::new();
                        }
                    }
                })
                .map_err(|err| AppError::internal_from("spawning a hashing thread", err))?;
        }
        Ok(Self { jobs, metrics })
    }

    /// RATE_LIMITED while the queue is full, so callers can refuse before doing other work.
    pub fn check_room(&self) -> AppResult<()> {
        if self.jobs.is_full() {
            self.metrics.throttled("busy");
            Err(BUSY)
        } else {
            Ok(())
        }
    }

    /// Jobs waiting for a hashing thread.
    pub fn queue_len(&self) -> usize {
        self.jobs.len()
    }

    /// The most jobs that may wait: past it, a new one is refused as busy.
    pub fn queue_capacity(&self) -> usize {
        self.jobs.capacity().unwrap_or(usize::MAX)
    }

    /// Default: one hashing thread per core, the most that can make progress at once.
    pub fn default_concurrency() -> usize {
        // As many as the setting allows at most.
        std::thread::available_parallelism().map_or(2, |n| n.get().min(256))
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        self.run(move |_| {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|err| AppError::internal_from("argon2 hash", err))
        })
        .await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no user
    /// (always `false` then). A malformed hash never matches.
    pub async fn verify(&self, password: String, hash: Option<String>) -> AppResult<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = self
            .run(move |memory| verify_in(password.as_bytes(), &hash, memory))
            .await?;
        Ok(known && ok)
    }

    /// Runs other CPU-heavy work on a client's input (the password strength estimate) on the
    /// same threads: off the async workers, at their priority, bounded by the same queue.
    pub async fn compute<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> AppResult<T> {
        self.run(move |_| work()).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> AppResult<T> {
        let (done, result) = oneshot::channel();
        let queued = std::time::Instant::now();
        let wait = self.metrics.hash_wait.clone();
        let job: Job = Box::new(move |memory| {
            wait.observe(queued.elapsed().as_secs_f64());
            // The request was answered or abandoned while this waited: nobody wants the result.
            if !done.is_closed() {
                let _ = done.send(work(memory));
            }
        });
        self.jobs.try_send(job).map_err(|err| match err {
            flume::TrySendError::Full(_) => {
                self.metrics.throttled("busy");
                BUSY
            }
            flume::TrySendError::Disconnected(_) => {
                AppError::internal("the hashing threads have stopped")
            }
        })?;
        result
            .await
            .map_err(|_| AppError::internal("a password hashing job failed"))
    }
}

/// The most memory (KiB) and passes a stored hash may ask for: an imported hash is checked on
/// every login attempt, by anyone, so its cost must stay bounded. Generous on purpose (about
/// a hundred times this server's own cost at most), so hashes from other stores import.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_PASSES: u32 = 16;

/// The most a bcrypt hash may cost (2^cost rounds): cost 14 takes about a second, and stores
/// keep theirs at 10 to 12.
const MAX_BCRYPT_COST: u32 = 14;

/// Whether `hash` is a hash this server can check, at a bounded cost: an argon2 PHC string,
/// or a bcrypt hash as other stores keep them.
pub fn is_usable_hash(hash: &str) -> bool {
    hash_problem(hash).is_none()
}

/// Why `hash` is not one [`is_usable_hash`] takes, so an operator importing thousands of
/// them learns which fix they need; `None` when it is one.
pub fn hash_problem(hash: &str) -> Option<&'static str> {
    use argon2::password_hash::phc::Error;
    if hash.trim() != hash {
        return Some("has spaces or line breaks around it");
    }
    if BCRYPT_PREFIXES
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return match bcrypt_form(hash) {
            Err(problem) => Some(problem),
            Ok(cost) if !(4..=MAX_BCRYPT_COST).contains(&cost) => {
                Some("is a bcrypt hash of a cost outside 4 to 14")
            }
            Ok(_) => None,
        };
    }
    if !hash.starts_with("$argon2") {
        return Some("is neither an argon2 PHC string nor a bcrypt hash");
    }
    match PasswordHash::new(hash) {
        Ok(phc) => parts(&phc).err(),
        Err(Error::SaltTooShort | Error::SaltTooLong) => {
            Some("has a salt of a length argon2 does not take: 8 to 48 bytes")
        }
        Err(Error::OutputSize { .. }) => {
            Some("has a hash of a length argon2 does not take: 10 to 64 bytes")
        }
        Err(Error::Base64(_)) => {
            Some("has a salt or hash that is not base64 without padding (`=`)")
        }
        Err(_) => Some(
            "is not a PHC string: `$argon2id$v=19$m=…,t=…,p=…$`, then the salt, `$` and the \
             hash, in base64 without padding",
        ),
    }
}

const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];

/// The cost of a bcrypt hash within the bound (see [`bcrypt_form`]).
fn bcrypt_cost(hash: &str) -> Option<u32> {
    bcrypt_form(hash)
        .ok()
        .filter(|cost| (4..=MAX_BCRYPT_COST).contains(cost))
}

/// The cost of a hash of bcrypt's form, whatever it is: `$2a$`, `$2b$` or `$2y$`, a
/// two-digit cost, 22 characters of salt and 31 of hash in bcrypt's base64; else what is
/// wrong with it.
fn bcrypt_form(hash: &str) -> Result<u32, &'static str> {
    const ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const NOT_WHOLE: &str = "is not a whole bcrypt hash: its prefix, a two-digit cost, `$`, then \
                             53 characters of bcrypt's base64";
    let rest = BCRYPT_PREFIXES
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))
        .ok_or(NOT_WHOLE)?;
    let (cost, encoded) = rest.split_once('$').ok_or(NOT_WHOLE)?;
    let digits: Vec<usize> = encoded
        .bytes()
        .map(|c| ALPHABET.iter().position(|&a| a == c))
        .collect::<Option<_>>()
        .ok_or(NOT_WHOLE)?;
    if cost.len() != 2 || digits.len() != 53 {
        return Err(NOT_WHOLE);
    }
    // 16 bytes of salt, then 23 of hash: the last character of each carries 2 and 4 bits,
    // the rest of it zero, or the hash never verifies.
    if !digits[21].is_multiple_of(16) || !digits[52].is_multiple_of(4) {
        return Err(
            "has bits set that bcrypt leaves empty in the last character of its salt or hash: \
             it was changed",
        );
    }
    cost.parse().map_err(|_| NOT_WHOLE)
}

/// Whether `hash` was made otherwise than this server makes hashes now (another algorithm,
/// version or cost, as imported hashes may be): a login that passes it stores a new one, so
/// the account's logins cost what this server's do.
pub fn needs_rehash(hash: &str) -> bool {
    let current = (Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
    if bcrypt_cost(hash).is_some() {
        return true;
    }
    let Ok(phc) = PasswordHash::new(hash) else {
        return true;
    };
    let lengths = (
        phc.salt.map(|salt| salt.len()),
        phc.hash.map(|out| out.len()),
    );
    parts(&phc).ok().is_none_or(|(algorithm, version, params)| {
        (algorithm, version) != (current.0, current.1)
            || (params.m_cost(), params.t_cost(), params.p_cost())
                != (current.2.m_cost(), current.2.t_cost(), current.2.p_cost())
            || lengths != (Some(OWN_SALT_LEN), Some(Params::DEFAULT_OUTPUT_LEN))
    })
}

/// The salt length (bytes) of this server's hashes: the crate's recommended one.
const OWN_SALT_LEN: usize = 16;

/// A PHC string's algorithm, version and parameters, when argon2 and within the bounds above;
/// else what is wrong with it.
fn parts(phc: &PasswordHash) -> Result<(Algorithm, Version, Params), &'static str> {
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err("has no salt or no hash");
    }
    let algorithm = Algorithm::try_from(phc.algorithm.as_str())
        .map_err(|_| "names no argon2 variant: argon2id, argon2i or argon2d")?;
    // Without `v=` a string is of version 1.0 (0x10), as the reference implementation and
    // the PHC format read it; the crate would assume 1.3, and an imported hash of 1.0 never
    // matched. (Verification tries 1.3 too.)
    let version = phc
        .version
        .map_or(Ok(Version::V0x10), Version::try_from)
        .map_err(|_| "is of an argon2 version other than 16 (1.0) and 19 (1.3)")?;
    let params = Params::try_from(phc).map_err(|_| {
        "has parameters or lengths argon2 does not take: m, t and p, a salt of 8 to 48 bytes \
         and a hash of 10 to 64"
    })?;
    if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_PASSES {
        return Err("asks for more than 256 MiB or 16 passes");
    }
    Ok((algorithm, version, params))
}

/// argon2's verification (the parameters, salt and expected output from the PHC string, a
/// constant-time comparison) computed in `memory`, grown to what the parameters need; or an
/// imported bcrypt hash's, which reads only a password's first 72 bytes, as every bcrypt
/// does (the first login stores an argon2 hash of the whole password). A malformed hash, or
/// one past the cost bounds, never matches.
fn verify_in(password: &[u8], hash: &str, memory: &mut Memory) -> bool {
    if bcrypt_cost(hash).is_some() {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok((algorithm, version, params)) = parts(&phc) else {
        // Only a stored hash that is not the server's own gets here: say why it never matches.
        tracing::warn!(
            "a stored password hash is not argon2 within the cost bounds; it never matches"
        );
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let mut matches = |version: Version| {
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
            .is_ok()
            // `Output`'s equality is constant-time.
            && Output::new(&out).is_ok_and(|computed| computed == *expected)
    };
    // A string without `v=` may still be of 1.3, from a writer that left it out: an imported
    // one that verified under 1.3 before must go on doing so (its first login stores a new
    // one). Only such strings cost a second computation, and only on a wrong password.
    matches(version) || (phc.version.is_none() && matches(Version::V0x13))
}

/// `SCHED_IDLE`: the kernel preempts this thread as soon as a normal one wants its core.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter block.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "hashing thread keeps normal priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordVerifier;

    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let passwords = Passwords::new(1).expect("pool");
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let verify =
            |password: &str, hash: Option<String>| passwords.verify(password.to_owned(), hash);
        assert!(
            verify("correct horse", Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(!verify("wrong horse", Some(hash)).await.expect("verify"));
        assert!(!verify("anything", None).await.expect("verify"));
        assert!(
            !verify("x", Some("$argon2id$garbage".into()))
                .await
                .expect("verify")
        );
    }

    /// A malformed dummy hash would make unknown-user logins instant, and nothing else would
    /// notice.
    #[test]
    fn usable_hashes_are_argon2_within_the_bounds() {
        let hash = |version: &str, m: u32, t: u32| {
            format!(
                "$argon2id${version}m={m},t={t},p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
            )
        };
        assert!(is_usable_hash(DUMMY_HASH));
        assert!(is_usable_hash(&hash("v=19$", MAX_MEMORY_KIB, MAX_PASSES)));
        assert!(is_usable_hash(&hash("", 19_456, 2)), "no version: 1.0");
        assert!(!is_usable_hash(&hash("v=19$", MAX_MEMORY_KIB + 1, 2)));
        assert!(!is_usable_hash(&hash("v=19$", 19_456, MAX_PASSES + 1)));
        assert!(!is_usable_hash(&hash("v=18$", 19_456, 2)));
        assert!(!is_usable_hash("$argon2id$v=19$m=19456,t=2,p=1"));
    }

    /// An operator importing thousands of hashes learns which fix each needs.
    #[test]
    fn unusable_hashes_say_why() {
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let argon2 = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(hash_problem(bcrypt), None);
        assert_eq!(hash_problem(argon2), None);
        let problems = [
            (format!(" {bcrypt}"), "spaces"),
            (format!("{argon2}\n"), "spaces"),
            (
                bcrypt[..bcrypt.len() - 1].to_owned(),
                "not a whole bcrypt hash",
            ),
            (bcrypt.replacen("$12$", "$15$", 1), "cost outside 4 to 14"),
            (bcrypt.replacen("$2b$", "$2x$", 1), "neither"),
            ("pbkdf2_sha256$600000$salt$hash".to_owned(), "neither"),
            (String::new(), "neither"),
            (format!("{argon2}="), "without padding"),
            (
                argon2.replacen("c2FsdHNhbHRzYWx0c2FsdA", "c2FsdHNhbA", 1),
                "salt of a length",
            ),
            (
                argon2.replacen(
                    "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                    "aGFzaGhhc2g",
                    1,
                ),
                "hash of a length",
            ),
            (bcrypt.replacen("OPST9", "ZPST9", 1), "bits set"),
            (
                argon2.replacen("argon2id", "argon2x", 1),
                "no argon2 variant",
            ),
            (argon2.replacen("v=19", "v=20", 1), "version"),
            (argon2.replacen("m=1024", "m=262145", 1), "256 MiB"),
            (argon2.replacen("t=1,", "t=17,", 1), "16 passes"),
            (argon2.replacen("m=1024", "m=7", 1), "parameters or lengths"),
            (
                "$argon2id$v=19$m=19456,t=2,p=1".to_owned(),
                "no salt or no hash",
            ),
        ];
        for (hash, words) in problems {
            let problem = hash_problem(&hash).unwrap_or_default();
            assert!(problem.contains(words), "{hash:?}: {problem:?}");
        }
    }

    /// bcrypt as other stores write it, within its cost bound; its first 72 bytes are what it
    /// checks, as every bcrypt; a login that passes stores an argon2 hash.
    #[test]
    fn bcrypt_hashes_within_the_bound_verify() {
        let known = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        for usable in [
            known,
            &known.replacen("$2b$", "$2a$", 1),
            &known.replacen("$2b$", "$2y$", 1),
        ] {
            assert!(is_usable_hash(usable), "{usable}");
            assert!(needs_rehash(usable), "{usable}");
        }
        for unusable in [
            known.replacen("$12$", "$15$", 1),
            // The salt's last character carries 2 bits, the hash's 4: other bits set there
            // make a hash that never verifies.
            known.replacen("OPST9", "ZPST9", 1),
            format!("{}V", &known[..known.len() - 1]),
            known.replacen("$12$", "$03$", 1),
            known.replacen("$2b$", "$2x$", 1),
            known.replacen("$12$", "$12$$", 1),
            known.replacen('R', "!", 1),
            known[..known.len() - 1].to_owned(),
        ] {
            assert!(!is_usable_hash(&unusable), "{unusable}");
        }
        let long = "x".repeat(80);
        let hash = bcrypt::hash(&long, 4).expect("bcrypt");
        assert!(is_usable_hash(&hash), "{hash}");
        let mut memory = Vec::new();
        assert!(verify_in(long.as_bytes(), &hash, &mut memory));
        assert!(verify_in(&long.as_bytes()[..72], &hash, &mut memory));
        assert!(!verify_in(&long.as_bytes()[..71], &hash, &mut memory));
        assert!(!verify_in(
            b"wrong",
            &hash.replacen("$04$", "$16$", 1),
            &mut memory
        ));
    }

    /// A hash of argon2 1.0 as older libraries wrote it, without `v=`, verifies; so does one
    /// of 1.3 that says so. Their salt and output lengths differ from the server's, so both
    /// are made again at the first login.
    #[test]
    fn a_hash_without_its_version_is_of_version_one_zero() {
        use argon2::password_hash::PasswordHasher;
        let salt = [7u8; 24];
        let params = Params::new(64, 1, 1, Some(40)).expect("params");
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x10, params.clone())
            .hash_password_with_salt(b"legacy secret", &salt)
            .expect("hash")
            .to_string();
        let unversioned = old.replacen("v=16$", "", 1);
        assert_ne!(unversioned, old);
        let newer = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"legacy secret", &salt)
            .expect("hash")
            .to_string();
        // And one of 1.3 whose writer left `v=` out.
        let newer_unversioned = newer.replacen("v=19$", "", 1);
        assert_ne!(newer_unversioned, newer);
        let mut memory = Vec::new();
        for hash in [&unversioned, &old, &newer, &newer_unversioned] {
            assert!(verify_in(b"legacy secret", hash, &mut memory), "{hash}");
            assert!(!verify_in(b"another", hash, &mut memory), "{hash}");
            assert!(needs_rehash(hash), "{hash}");
        }
        // The server's own: nothing to do.
        let own = Argon2::default()
            .hash_password(b"x")
            .expect("hash")
            .to_string();
        assert!(!needs_rehash(&own), "{own}");
    }

    #[test]
    fn hashes_made_otherwise_are_made_again() {
        let hash = |algorithm: &str, m: u32, t: u32| {
            format!(
                "${algorithm}$v=19$m={m},t={t},p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
            )
        };
        assert!(!needs_rehash(DUMMY_HASH));
        assert!(!needs_rehash(&hash("argon2id", 19_456, 2)));
        assert!(needs_rehash(&hash("argon2id", 8, 1)));
        assert!(needs_rehash(&hash("argon2id", 65_536, 3)));
        assert!(needs_rehash(&hash("argon2i", 19_456, 2)));
        assert!(needs_rehash("not a hash"));
        // A shorter salt, a longer output: made again too.
        assert!(needs_rehash(
            &hash("argon2id", 19_456, 2).replace("c2FsdHNhbHRzYWx0c2FsdA", "c2FsdHNhbHRzYWx0")
        ));
    }

    #[test]
    fn the_dummy_hash_has_the_real_parameters() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("dummy hash parses");
        assert_eq!(
            Algorithm::try_from(dummy.algorithm.as_str()).ok(),
            Some(Algorithm::Argon2id)
        );
        assert_eq!(dummy.version, Some(Version::V0x13.into()));
        let (params, real) = (Params::try_from(&dummy).expect("params"), Params::DEFAULT);
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (real.m_cost(), real.t_cost(), real.p_cost())
        );
        assert_eq!(
            dummy.hash.map(|h| h.len()),
            Some(Params::DEFAULT_OUTPUT_LEN)
        );
        // And verifying against it does the whole computation without error.
        assert_eq!(
            Argon2::default().verify_password(b"guess", DUMMY_HASH),
            Err(argon2::password_hash::Error::PasswordInvalid)
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

    // The test thread blocks on the first job starting, so the job's task runs on a worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_refuses_at_once_and_abandoned_jobs_are_skipped() {
        use futures::FutureExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let passwords = Passwords::new(1).expect("pool");
        // Hold the only thread until the queue has been filled.
        let (started, is_running) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let passwords = passwords.clone();
            async move {
                passwords
                    .run(move |_| {
                        let _ = started.send(());
                        let _ = gate.recv();
                    })
                    .await
            }
        });
        is_running.recv().expect("the blocking job starts");
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        for _ in 0..QUEUE_PER_THREAD {
            let ran = ran.clone();
            // Polled once: queued, then dropped, as a request whose client went away.
            let queued = passwords
                .run(move |_| ran.fetch_add(1, Ordering::SeqCst))
                .now_or_never();
            assert!(queued.is_none(), "queued, not finished");
        }
        let refused = passwords.run(|_| ()).now_or_never();
        assert!(
            matches!(refused, Some(Err(AppError::RateLimited { .. }))),
            "a full queue refuses at once: {refused:?}"
        );
        assert!(matches!(
            passwords.check_room(),
            Err(AppError::RateLimited { .. })
        ));
        release.send(()).expect("release");
        blocker.await.expect("join").expect("the blocking job ran");
        // The abandoned jobs are skipped; once they are, new work runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match passwords.run(|_| ()).await {
                Ok(()) => break,
                Err(AppError::RateLimited { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(err) => panic!("runs after the queue drained: {err:?}"),
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn accepts_hashes_made_with_other_parameters() {
        let passwords = Passwords::new(1).expect("pool");
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"battery staple")
        .expect("hash")
        .to_string();
        assert!(
            passwords
                .verify("battery staple".into(), Some(small.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("correct horse".into(), Some(small))
                .await
                .expect("verify")
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_idle_priority() {
        let passwords = Passwords::new(1).expect("pool");
        let policy = passwords
            .run(|_| unsafe { libc::sched_getscheduler(0) })
            .await
            .expect("job");
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
