//! Idle expiry, pure: which sessions are due at a given time, and how long the reaper may sleep.
//! The clock is a parameter, so tests move it instead of waiting.
//!
//! A session expires once it has been unattached (no live attachment and no attached mark) and
//! without input, output or attachment change for the idle TTL.

use crate::session::SessionCore;
use std::time::Duration;
use uuid::Uuid;

/// What expiry needs to know of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idleness {
    /// The session.
    pub id: Uuid,
    /// Last input, output or attachment change (Unix ms).
    pub last_active_ms: u64,
    /// Attached sessions never expire.
    pub attached: bool,
}

impl Idleness {
    /// When the session expires under `ttl`, or None while attached.
    pub fn expires_at_ms(&self, ttl: Duration) -> Option<u64> {
        (!self.attached).then(|| {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            self.last_active_ms.saturating_add(ttl_ms)
        })
    }
}

/// The idleness of a session's state.
pub fn idleness(id: Uuid, core: &SessionCore) -> Idleness {
    Idleness {
        id,
        last_active_ms: core.last_active_ms,
        attached: core.attached(),
    }
}

/// When a session in state `core` expires under `ttl`, or None while attached.
pub fn expires_at_ms(core: &SessionCore, ttl: Duration) -> Option<u64> {
    Idleness {
        id: Uuid::nil(),
        last_active_ms: core.last_active_ms,
        attached: core.attached(),
    }
    .expires_at_ms(ttl)
}

/// The sessions expired at `now_ms` under `ttl`.
pub fn expired(sessions: &[Idleness], ttl: Duration, now_ms: u64) -> Vec<Uuid> {
    sessions
        .iter()
        .filter(|s| s.expires_at_ms(ttl).is_some_and(|at| at <= now_ms))
        .map(|s| s.id)
        .collect()
}

/// How long the reaper may sleep at `now_ms`: until the earliest expiry (at least 10 ms), or,
/// with every session attached, one TTL (at least a second). Activity only moves deadlines
/// later, so waking at a stale deadline merely checks again.
pub fn next_wake(sessions: &[Idleness], ttl: Duration, now_ms: u64) -> Duration {
    match sessions.iter().filter_map(|s| s.expires_at_ms(ttl)).min() {
        Some(at) => Duration::from_millis(at.saturating_sub(now_ms).max(10)),
        None => ttl.max(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u128, last_active_ms: u64, attached: bool) -> Idleness {
        Idleness {
            id: Uuid::from_u128(n),
            last_active_ms,
            attached,
        }
    }

    #[test]
    fn expires_after_the_ttl_unless_attached() {
        let ttl = Duration::from_secs(60);
        let sessions = [
            session(1, 1_000, false),
            session(2, 5_000, false),
            session(3, 0, true),
        ];
        assert_eq!(expired(&sessions, ttl, 60_999), Vec::<Uuid>::new());
        assert_eq!(expired(&sessions, ttl, 61_000), vec![Uuid::from_u128(1)]);
        assert_eq!(
            expired(&sessions, ttl, 65_000),
            vec![Uuid::from_u128(1), Uuid::from_u128(2)]
        );
        // Attached, however old: never.
        assert_eq!(expired(&sessions[2..], ttl, u64::MAX), Vec::<Uuid>::new());
    }

    #[test]
    fn the_reaper_sleeps_until_the_earliest_deadline() {
        let ttl = Duration::from_secs(60);
        let sessions = [session(1, 10_000, false), session(2, 2_000, false)];
        assert_eq!(
            next_wake(&sessions, ttl, 30_000),
            Duration::from_millis(32_000)
        );
        // Overdue: check again soon, not in a busy loop.
        assert_eq!(next_wake(&sessions, ttl, 90_000), Duration::from_millis(10));
        assert_eq!(next_wake(&[session(3, 0, true)], ttl, 0), ttl);
        assert_eq!(
            next_wake(&[], Duration::from_millis(5), 0),
            Duration::from_secs(1)
        );
        // A TTL too large for milliseconds does not wrap.
        assert_eq!(
            session(4, 7, false).expires_at_ms(Duration::MAX),
            Some(u64::MAX)
        );
    }
}
