//! Keeps password hashing from holding up other work on the machine.
//!
//! Hashing threads run at a lower priority (nice 10), but priority alone is not enough: the
//! kernel's scheduler can leave a woken thread (a request worker, or the PostgreSQL backend
//! serving it) waiting behind a running hash until the next timer tick, up to 4 ms, when that
//! thread has just used more than its share of the core. Not even SCHED_IDLE avoids that. A
//! hash is one 20–40 ms call that cannot be paused from outside, so while one runs, a timer
//! interrupts its thread. If more threads are runnable than there are cores and hashes
//! running, the thread sleeps for [`BREATH`], which takes it off the core and lets whatever
//! waits run first.
//!
//! Hashing steps aside only while other requests are being served: a request that did not
//! hash finished within the last [`PROTECT_FOR`] ([`other_work_done`]). Then the timer comes
//! back after [`FASTEST`] whenever the thread stepped aside, and otherwise backs off towards
//! [`SLOWEST`]. Without other requests the thread never steps aside, and its timer stays at
//! [`SLOWEST`] only to notice when they start: a flood of nothing but logins has no one to
//! make way for, anyone else's wait behind a hash is still bounded by the kernel's tick, and
//! every interrupt costs the hash tens of microseconds on a virtual machine (at the fastest
//! cadence, about a tenth of a two-core machine's hashing rate).
//!
//! SCHED_IDLE would hold other requests' latency a little lower still, but a flood of logins
//! then loses several percent of its rate to being preempted by its own requests' work.

use std::sync::atomic::AtomicUsize;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Hashing threads inside a hash; each of them counts as runnable system-wide.
static HASHING: AtomicUsize = AtomicUsize::new(0);

/// When a request that did not hash last finished, in nanoseconds of the monotonic clock;
/// zero if none has.
#[cfg(target_os = "linux")]
static OTHER_WORK_AT: AtomicU64 = AtomicU64::new(0);

/// How long after such a request hashing keeps stepping aside at the fast cadence: long
/// enough that a steady trickle of other requests keeps it, short enough that a login flood
/// soon has the cores to itself.
#[cfg(target_os = "linux")]
const PROTECT_FOR: Duration = Duration::from_secs(1);

/// The timer's period while other threads keep turning up: the longest one waits behind a hash.
#[cfg(target_os = "linux")]
const FASTEST: Duration = Duration::from_micros(500);

/// The timer's period on a machine with nothing else to run.
#[cfg(target_os = "linux")]
const SLOWEST: Duration = Duration::from_millis(8);

/// Nice value of hashing threads.
#[cfg(target_os = "linux")]
const HASH_THREAD_NICE: libc::c_int = 10;

/// Long enough for a woken request to get through its step (a worker and the database
/// backend serving it, one after the other) before the hash takes the core back. Beside a
/// login flood, a 26 µs breath left `me`'s p99 at 6–17× its idle p99, 75 µs at 2.5–2.7×.
#[cfg(target_os = "linux")]
const BREATH: Duration = Duration::from_micros(75);

/// Timer slack of hashing threads, in nanoseconds. The kernel may end a sleep that much late
/// (50 µs by default, or whatever a service manager sets), so without it a breath would last
/// anything from [`BREATH`] to [`BREATH`] plus that slack: longer than needed, at logins'
/// cost.
#[cfg(target_os = "linux")]
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Records that a request finished without hashing: other requests are being served, and
/// hashes should make way for them promptly.
pub fn other_work_done() {
    #[cfg(target_os = "linux")]
    {
        let now = now_nanos();
        // Written at most once a millisecond, so busy request threads do not fight over the
        // cache line.
        if now.saturating_sub(OTHER_WORK_AT.load(Ordering::Relaxed)) > 1_000_000 {
            OTHER_WORK_AT.store(now, Ordering::Relaxed);
        }
    }
}

/// Whether a request that did not hash finished within the last [`PROTECT_FOR`].
/// Async-signal-safe.
#[cfg(target_os = "linux")]
fn other_work_recent() -> bool {
    let at = OTHER_WORK_AT.load(Ordering::Relaxed);
    at != 0 && now_nanos().saturating_sub(at) < PROTECT_FOR.as_nanos() as u64
}

/// The monotonic clock in nanoseconds. Async-signal-safe: the timer's handler reads it.
#[cfg(target_os = "linux")]
fn now_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `now`, a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// The timer's next period: the fastest right after stepping aside, otherwise twice as long,
/// up to the slowest.
#[cfg(target_os = "linux")]
fn next_period(period: Duration, stepped_aside: bool) -> Duration {
    if stepped_aside {
        FASTEST
    } else {
        (period * 2).clamp(FASTEST, SLOWEST)
    }
}

#[cfg(target_os = "linux")]
pub(super) use linux::Breather;

#[cfg(not(target_os = "linux"))]
pub(super) use other::Breather;

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::Cell;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::sync::OnceLock;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{
        BREATH, FASTEST, HASH_THREAD_NICE, HASHING, SLOWEST, TIMER_SLACK_NS, next_period,
        other_work_recent,
    };

    thread_local! {
        /// This hashing thread's timer and its current period, for the signal handler.
        static TIMER: Cell<Option<(libc::timer_t, Duration)>> = const { Cell::new(None) };
    }

    /// A hashing thread's interrupt timer. Without one (the system refused it) the thread
    /// hashes at low priority without stepping aside.
    pub struct Breather {
        timer: Option<libc::timer_t>,
    }

    impl Breather {
        /// Lowers the calling thread's priority and gives it a timer that interrupts it alone.
        pub fn for_this_thread() -> Self {
            lower_priority();
            exact_sleeps();
            // Everything the signal handler reads is initialised here, before the timer
            // exists: initialising a OnceLock is not async-signal-safe.
            cores();
            let timer = load_file().and(signal()).and_then(thread_timer);
            if timer.is_none() {
                tracing::debug!("hashing will not step aside for other threads: no timer");
            }
            Self { timer }
        }

        /// Runs `work` with the timer armed.
        pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
            HASHING.fetch_add(1, Ordering::Relaxed);
            if let Some(timer) = self.timer {
                let protecting = other_work_recent();
                set_period(timer, if protecting { FASTEST } else { SLOWEST });
            }
            let result = work();
            if let Some(timer) = self.timer {
                set_period(timer, Duration::ZERO);
            }
            HASHING.fetch_sub(1, Ordering::Relaxed);
            result
        }
    }

    impl Drop for Breather {
        fn drop(&mut self) {
            if let Some(timer) = self.timer {
                TIMER.set(None);
                // SAFETY: `timer` came from timer_create and is not used after this.
                unsafe { libc::timer_delete(timer) };
            }
        }
    }

    /// Arms the timer to fire every `period` (zero disarms it). Async-signal-safe.
    fn set_period(timer: libc::timer_t, period: Duration) {
        TIMER.set(Some((timer, period)));
        let interval = timespec(period);
        let spec = libc::itimerspec {
            it_interval: interval,
            it_value: interval,
        };
        // SAFETY: `timer` came from timer_create and is deleted only when its Breather drops;
        // `spec` is a valid itimerspec and the old value is not asked for.
        unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
    }

    fn timespec(duration: Duration) -> libc::timespec {
        libc::timespec {
            tv_sec: duration.as_secs() as libc::time_t,
            tv_nsec: duration.subsec_nanos() as libc::c_long,
        }
    }

    /// Low enough that request handling wins the core whenever it asks.
    fn lower_priority() {
        // SAFETY: setpriority only reads its integer arguments; on Linux, PRIO_PROCESS with
        // who = 0 applies to the calling thread alone.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) } != 0 {
            tracing::debug!("could not lower the hashing thread's priority");
        }
    }

    /// Makes this thread's sleeps last what they ask for.
    fn exact_sleeps() {
        // SAFETY: PR_SET_TIMERSLACK only reads its integer argument and applies to the calling
        // thread alone.
        if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS) } != 0 {
            tracing::debug!("could not set the hashing thread's timer slack");
        }
    }

    /// The machine's online cores, counted once: the runnable count in `/proc/loadavg` is the
    /// machine's too, even where this process may use fewer.
    pub(super) fn cores() -> usize {
        static CORES: OnceLock<usize> = OnceLock::new();
        // SAFETY: sysconf only reads its integer argument.
        *CORES.get_or_init(|| {
            usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
                .map_or(1, |n| n.max(1))
        })
    }

    /// `/proc/loadavg`, kept open: its fourth field counts the runnable threads right now.
    fn load_file() -> Option<&'static File> {
        static FILE: OnceLock<Option<File>> = OnceLock::new();
        FILE.get_or_init(|| File::open("/proc/loadavg").ok())
            .as_ref()
    }

    /// The real-time signal the timers raise, with its handler installed once per process.
    fn signal() -> Option<libc::c_int> {
        static SIGNAL: OnceLock<Option<libc::c_int>> = OnceLock::new();
        *SIGNAL.get_or_init(|| {
            let signal = libc::SIGRTMIN() + 2;
            if signal > libc::SIGRTMAX() {
                return None;
            }
            // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C" fn(c_int)`
            // that only does async-signal-safe things.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_tick as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                (libc::sigaction(signal, &action, std::ptr::null_mut()) == 0).then_some(signal)
            }
        })
    }

    fn thread_timer(signal: libc::c_int) -> Option<libc::timer_t> {
        // SAFETY: a zeroed sigevent is valid; gettid has no preconditions; timer_create writes
        // the new timer's id into `timer` only on success.
        unsafe {
            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_THREAD_ID;
            event.sigev_signo = signal;
            event.sigev_notify_thread_id = libc::gettid();
            let mut timer: libc::timer_t = std::ptr::null_mut();
            (libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) == 0)
                .then_some(timer)
        }
    }

    /// Signal handler: thread-local and atomic reads, pread, clock_gettime, timer_settime and
    /// nanosleep, all async-signal-safe.
    extern "C" fn on_tick(_: libc::c_int) {
        let (Some(file), Some((timer, period))) = (load_file(), TIMER.get()) else {
            return;
        };
        if period.is_zero() {
            return;
        }
        // SAFETY: errno is thread-local; it is saved and restored so the interrupted code never
        // sees the calls below. `buf` outlives the pread that fills it.
        unsafe {
            let errno = libc::__errno_location();
            let saved = *errno;
            // Other requests are the reason to step aside, so the load is read only then.
            let step_aside = other_work_recent() && {
                let mut buf = [0u8; 128];
                let read = libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
                let runnable = usize::try_from(read)
                    .ok()
                    .and_then(|len| runnable_threads(&buf[..len.min(buf.len())]));
                // Someone waits for a core only when there are more runnable threads than
                // cores, and it is not a hash only when there are more than hashes.
                let busy = HASHING.load(Ordering::Relaxed).max(cores());
                runnable.is_some_and(|n| n > busy)
            };
            if step_aside {
                libc::nanosleep(&timespec(BREATH), std::ptr::null_mut());
            }
            let next = next_period(period, step_aside);
            if next != period {
                set_period(timer, next);
            }
            *errno = saved;
        }
    }

    /// The runnable count in `/proc/loadavg` ("0.50 0.40 0.30 3/151 2741" gives 3).
    pub(super) fn runnable_threads(loadavg: &[u8]) -> Option<usize> {
        let field = loadavg.split(|&b| b == b' ').nth(3)?;
        let running = field.split(|&b| b == b'/').next()?;
        if running.is_empty() {
            return None;
        }
        running.iter().try_fold(0usize, |n, &digit| {
            digit.is_ascii_digit().then(|| {
                n.saturating_mul(10)
                    .saturating_add(usize::from(digit - b'0'))
            })
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::linux::{cores, runnable_threads};
    use super::{Breather, FASTEST, SLOWEST, next_period, other_work_done};

    /// Sleeps the thread has chosen to take, from the kernel's count for this thread.
    fn voluntary_switches() -> u64 {
        std::fs::read_to_string("/proc/thread-self/status")
            .expect("status")
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    /// Voluntary switches of a thread that spins through a 300 ms "hash" (CPU work with no
    /// system calls of its own) beside more busy threads than the machine has cores.
    fn breaths_in_a_crowded_hash() -> u64 {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..cores() + 2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                });
            }
            let hashing = s.spawn(|| {
                let breather = Breather::for_this_thread();
                let before = voluntary_switches();
                breather.run(|| {
                    let until = Instant::now() + Duration::from_millis(300);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                });
                voluntary_switches() - before
            });
            let breaths = hashing.join().expect("hashing thread");
            stop.store(true, Ordering::Relaxed);
            breaths
        })
    }

    // One test, in this order: nothing else in this process records other requests, so the
    // first half runs with none seen.
    #[test]
    fn a_busy_hash_steps_aside_only_while_other_requests_are_served() {
        let alone = breaths_in_a_crowded_hash();
        assert!(
            alone <= 2,
            "stepped aside {alone} times with no other requests"
        );
        other_work_done();
        let serving = breaths_in_a_crowded_hash();
        assert!(serving >= 3, "stepped aside {serving} times while serving");
    }

    #[test]
    fn the_timer_comes_back_fast_only_after_stepping_aside() {
        assert_eq!(next_period(SLOWEST, true), FASTEST);
        assert_eq!(next_period(FASTEST, true), FASTEST);
        assert_eq!(next_period(FASTEST, false), FASTEST * 2);
        assert_eq!(next_period(SLOWEST, false), SLOWEST);
    }

    #[test]
    fn reads_the_runnable_count_from_loadavg() {
        assert_eq!(runnable_threads(b"0.50 0.40 0.30 3/151 2741\n"), Some(3));
        assert_eq!(runnable_threads(b"1.00 1.00 1.00 12/400 9"), Some(12));
        assert_eq!(runnable_threads(b"garbage"), None);
        assert_eq!(runnable_threads(b"1 2 3 x/4 5"), None);
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    /// Elsewhere hashing threads keep the default priority and never step aside.
    pub struct Breather;

    impl Breather {
        pub fn for_this_thread() -> Self {
            Self
        }

        pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
            work()
        }
    }
}
