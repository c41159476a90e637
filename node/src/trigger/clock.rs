//! The scheduler's clock: wall-clock time in Unix milliseconds and a way to sleep until a time
//! on it. The system clock is the real one; tests drive a fake one.
//!
//! `CMDOP_TEST_TRIGGER_TIME_SCALE=N` makes the node's trigger clock run N times faster than the
//! wall clock from the node's start on, so end-to-end tests can watch an every-minute trigger
//! fire every second of real time with the public 5-field schedule. It is for tests only: it
//! is honoured only in debug builds (the end-to-end tests run those), a release build ignores
//! it with a warning, and a debug node logs a warning when it is set. (The times it stores run
//! ahead of the wall clock; the scheduler brings back any mark more than 24 h ahead.)

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable that speeds the trigger clock up, for tests.
pub const TIME_SCALE_ENV: &str = "CMDOP_TEST_TRIGGER_TIME_SCALE";

/// A sleep on a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync + 'static {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// A monotonic reading in milliseconds (from an arbitrary origin): it only moves forward,
    /// at the pace of elapsed time, whatever is done to the wall clock. For run deadlines.
    fn mono_ms(&self) -> u64;
    /// Resolves once the clock reads `at_ms` or later (it may resolve earlier when the wall
    /// clock is stepped; the scheduler checks again).
    fn sleep_until(&self, at_ms: u64) -> Sleep;
}

/// The system's wall clock, optionally sped up (see the module doc).
#[derive(Debug, Clone)]
pub struct SystemClock {
    scale: u64,
    anchor_ms: u64,
    anchor: std::time::Instant,
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SystemClock {
    /// The wall clock as it is.
    pub fn real() -> SystemClock {
        SystemClock {
            scale: 1,
            anchor_ms: system_ms(),
            anchor: std::time::Instant::now(),
        }
    }

    /// The wall clock, sped up by [`TIME_SCALE_ENV`] when it is set to a number above 1 in a
    /// debug build.
    pub fn from_env() -> SystemClock {
        if !cfg!(debug_assertions) {
            if std::env::var_os(TIME_SCALE_ENV).is_some() {
                tracing::warn!("{TIME_SCALE_ENV} is set but ignored: it is honoured only by debug builds, for tests");
            }
            return SystemClock::real();
        }
        let scale = std::env::var(TIME_SCALE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 1);
        match scale {
            Some(scale) => {
                tracing::warn!(scale, "{TIME_SCALE_ENV} is set: the trigger clock runs {scale} times faster than the wall clock (for tests only)");
                SystemClock {
                    scale,
                    ..SystemClock::real()
                }
            }
            None => SystemClock::real(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let real = system_ms();
        self.anchor_ms + real.saturating_sub(self.anchor_ms) * self.scale
    }

    fn mono_ms(&self) -> u64 {
        // From one second on, so that no deadline is ever at 0.
        (1000 + self.anchor.elapsed().as_millis() as u64).saturating_mul(self.scale)
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let wait = at_ms.saturating_sub(self.now_ms()).div_ceil(self.scale);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

#[cfg(test)]
pub mod fake {
    //! A clock the test sets.

    use super::{Clock, Sleep};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::sync::watch;

    /// A clock that only moves when the test moves it.
    #[derive(Debug, Clone)]
    pub struct FakeClock {
        now: Arc<AtomicU64>,
        mono: Arc<AtomicU64>,
        changed: watch::Sender<u64>,
    }

    impl FakeClock {
        /// A clock reading `now`.
        pub fn new(now: u64) -> FakeClock {
            FakeClock {
                now: Arc::new(AtomicU64::new(now)),
                mono: Arc::new(AtomicU64::new(1000)),
                changed: watch::Sender::new(now),
            }
        }

        /// Lets time pass until `now` (the monotonic reading moves as far; setting it back
        /// is a wall-clock step) and wakes the sleepers.
        pub fn set(&self, now: u64) {
            let before = self.now.swap(now, Ordering::SeqCst);
            self.mono
                .fetch_add(now.saturating_sub(before), Ordering::SeqCst);
            self.changed.send_replace(now);
        }

        /// Steps the wall clock to `now` with no time passing (an NTP step), and wakes the
        /// sleepers.
        pub fn step(&self, now: u64) {
            self.now.store(now, Ordering::SeqCst);
            self.changed.send_replace(now);
        }
    }

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.now.load(Ordering::SeqCst)
        }

        fn mono_ms(&self) -> u64 {
            self.mono.load(Ordering::SeqCst)
        }

        fn sleep_until(&self, at_ms: u64) -> Sleep {
            let mut changed = self.changed.subscribe();
            Box::pin(async move {
                // Any change wakes the sleeper, as a wall-clock step would.
                let _ = changed.wait_for(|&now| now >= at_ms).await;
            })
        }
    }
}
