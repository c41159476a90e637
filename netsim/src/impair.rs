//! The per-packet decision logic, free of I/O.
//!
//! Everything that decides the fate of a datagram lives here so it can be
//! tested with plain values: [`Impairments`] describes a direction's link,
//! [`Link`] models its bandwidth (a serialization queue with a tail drop), and
//! [`plan`] draws from a seeded RNG to say whether a packet is lost, whether it
//! is duplicated, and when each copy leaves.
//!
//! Every call to [`plan`] consumes exactly four draws from the RNG whatever the
//! settings, so a given seed and packet sequence always yields the same
//! decisions, and raising the loss from 0.1 to 0.2 with the same seed loses a
//! superset of the packets rather than an unrelated set.

use std::time::{Duration, Instant};

use rand::{Rng, RngExt};

/// Default size of the bandwidth queue, in bytes (64 KiB).
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// How one direction of the relay impairs traffic.
///
/// The [`Default`] value does not impair anything.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairments {
    /// Probability (0..=1) that a packet is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a packet is sent twice.
    pub duplicate: f64,
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` for every packet; since
    /// each packet draws its own, packets get reordered.
    pub jitter: Duration,
    /// Bandwidth limit in bytes per second; `None` means unlimited.
    /// `Some(0)` is treated as 1 byte per second.
    pub rate_bytes_per_sec: Option<u64>,
    /// Bytes that may wait in the bandwidth queue before packets are
    /// tail-dropped. Only meaningful with a rate limit. A packet arriving at
    /// an empty queue is always accepted, even if it is larger than this.
    pub queue_bytes: usize,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bytes_per_sec: None,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

impl Impairments {
    /// True if these settings change traffic in any way. When false the relay
    /// forwards packets directly, without touching the RNG or a timer.
    pub fn is_active(&self) -> bool {
        self.loss > 0.0
            || self.duplicate > 0.0
            || !self.delay.is_zero()
            || !self.jitter.is_zero()
            || self.rate_bytes_per_sec.is_some()
    }

    /// The same settings with probabilities clamped to 0..=1 (NaN becomes 0).
    pub fn sanitized(mut self) -> Self {
        self.loss = clamp_probability(self.loss);
        self.duplicate = clamp_probability(self.duplicate);
        self
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// When one copy of a packet leaves the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// Send the copy at this instant (possibly already past: send now).
    At(Instant),
    /// The bandwidth queue was full: drop the copy.
    QueueFull,
}

/// The fate of one received packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Dropped by random loss.
    Lost,
    /// Forwarded, possibly twice.
    Send {
        /// The original copy.
        first: Departure,
        /// The duplicate, if the packet was duplicated.
        duplicate: Option<Departure>,
    },
}

/// A bandwidth-limited link: a FIFO serialization queue.
///
/// Each accepted packet occupies the link for `len / rate` seconds after the
/// previous one finishes. The backlog (time the link is already busy, times
/// the rate) is the queue; a packet that would grow it past the queue size is
/// dropped, as a router's tail drop would.
#[derive(Clone, Debug, Default)]
pub struct Link {
    next_free: Option<Instant>,
}

impl Link {
    /// A link with nothing queued.
    pub fn new() -> Self {
        Link::default()
    }

    /// Admit a packet of `len` bytes arriving at `now` and return when it has
    /// been fully serialized. Without a rate it leaves immediately.
    pub fn admit(
        &mut self,
        now: Instant,
        len: usize,
        rate_bytes_per_sec: Option<u64>,
        queue_bytes: usize,
    ) -> Departure {
        let Some(rate) = rate_bytes_per_sec else {
            self.next_free = None;
            return Departure::At(now);
        };
        let rate = u128::from(rate.max(1));
        let start = match self.next_free {
            Some(t) if t > now => t,
            _ => now,
        };
        let backlog_nanos = start.saturating_duration_since(now).as_nanos();
        let backlog_bytes = backlog_nanos.saturating_mul(rate) / 1_000_000_000;
        let len128 = len as u128;
        if backlog_bytes > 0 && backlog_bytes.saturating_add(len128) > queue_bytes as u128 {
            return Departure::QueueFull;
        }
        let tx_nanos = len128.saturating_mul(1_000_000_000) / rate;
        let tx = Duration::from_nanos(u64::try_from(tx_nanos).unwrap_or(u64::MAX));
        let done = start.checked_add(tx).unwrap_or(start);
        self.next_free = Some(done);
        Departure::At(done)
    }
}

/// Decide the fate of one packet of `len` bytes arriving at `now`.
///
/// Consumes exactly four draws from `rng` (loss, duplicate, and one jitter
/// draw per copy), whatever the settings. Departure times include the
/// serialization delay of `link`, then `delay` plus a uniform `0..jitter`.
pub fn plan<R: Rng + ?Sized>(
    imp: &Impairments,
    link: &mut Link,
    rng: &mut R,
    now: Instant,
    len: usize,
) -> Plan {
    let loss_draw: f64 = rng.random();
    let dup_draw: f64 = rng.random();
    let jitter_draws: [f64; 2] = [rng.random(), rng.random()];

    if loss_draw < imp.loss {
        return Plan::Lost;
    }
    let mut depart =
        |jitter_draw: f64| match link.admit(now, len, imp.rate_bytes_per_sec, imp.queue_bytes) {
            Departure::QueueFull => Departure::QueueFull,
            Departure::At(t) => {
                let jitter = Duration::try_from_secs_f64(imp.jitter.as_secs_f64() * jitter_draw)
                    .unwrap_or(imp.jitter);
                let extra = imp.delay.saturating_add(jitter);
                Departure::At(t.checked_add(extra).unwrap_or(t))
            }
        };
    let first = depart(jitter_draws[0]);
    let duplicate = (dup_draw < imp.duplicate).then(|| depart(jitter_draws[1]));
    Plan::Send { first, duplicate }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn lost_pattern(imp: &Impairments, seed: u64, n: usize) -> Vec<bool> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut link = Link::new();
        let now = Instant::now();
        (0..n)
            .map(|_| plan(imp, &mut link, &mut rng, now, 100) == Plan::Lost)
            .collect()
    }

    #[test]
    fn default_is_inactive_and_sends_now() {
        let imp = Impairments::default();
        assert!(!imp.is_active());
        let mut rng = StdRng::seed_from_u64(1);
        let mut link = Link::new();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                plan(&imp, &mut link, &mut rng, now, 1200),
                Plan::Send {
                    first: Departure::At(now),
                    duplicate: None
                }
            );
        }
    }

    #[test]
    fn any_setting_makes_it_active() {
        let d = Impairments::default;
        assert!(Impairments { loss: 0.1, ..d() }.is_active());
        assert!(Impairments {
            duplicate: 0.1,
            ..d()
        }
        .is_active());
        assert!(Impairments {
            delay: Duration::from_millis(1),
            ..d()
        }
        .is_active());
        assert!(Impairments {
            jitter: Duration::from_millis(1),
            ..d()
        }
        .is_active());
        assert!(Impairments {
            rate_bytes_per_sec: Some(1000),
            ..d()
        }
        .is_active());
        assert!(!Impairments {
            queue_bytes: 5,
            ..d()
        }
        .is_active());
    }

    #[test]
    fn sanitized_clamps_probabilities() {
        let imp = Impairments {
            loss: 7.0,
            duplicate: f64::NAN,
            ..Impairments::default()
        }
        .sanitized();
        assert_eq!(imp.loss, 1.0);
        assert_eq!(imp.duplicate, 0.0);
        let imp = Impairments {
            loss: -1.0,
            ..Impairments::default()
        }
        .sanitized();
        assert_eq!(imp.loss, 0.0);
    }

    #[test]
    fn same_seed_same_pattern_other_seed_differs() {
        let imp = Impairments {
            loss: 0.5,
            ..Impairments::default()
        };
        let a = lost_pattern(&imp, 42, 500);
        let b = lost_pattern(&imp, 42, 500);
        let c = lost_pattern(&imp, 43, 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn loss_one_drops_all_zero_drops_none() {
        let all = Impairments {
            loss: 1.0,
            ..Impairments::default()
        };
        assert!(lost_pattern(&all, 3, 1000).iter().all(|&l| l));
        let none = Impairments {
            duplicate: 0.5,
            ..Impairments::default()
        };
        assert!(lost_pattern(&none, 3, 1000).iter().all(|&l| !l));
    }

    #[test]
    fn loss_rate_within_band() {
        let imp = Impairments {
            loss: 0.3,
            ..Impairments::default()
        };
        for seed in 0..5 {
            let lost = lost_pattern(&imp, seed, 2000)
                .iter()
                .filter(|&&l| l)
                .count();
            assert!((500..=700).contains(&lost), "seed {seed}: lost {lost}");
        }
    }

    #[test]
    fn more_loss_loses_a_superset() {
        let low = Impairments {
            loss: 0.1,
            ..Impairments::default()
        };
        let high = Impairments {
            loss: 0.2,
            jitter: Duration::from_millis(5),
            ..Impairments::default()
        };
        let a = lost_pattern(&low, 9, 1000);
        let b = lost_pattern(&high, 9, 1000);
        assert!(a.iter().zip(&b).all(|(&lo, &hi)| !lo || hi));
        assert!(b.iter().filter(|&&l| l).count() > a.iter().filter(|&&l| l).count());
    }

    #[test]
    fn duplicate_probability() {
        let imp = Impairments {
            duplicate: 0.25,
            ..Impairments::default()
        };
        let mut rng = StdRng::seed_from_u64(5);
        let mut link = Link::new();
        let now = Instant::now();
        let dups = (0..2000)
            .filter(|_| {
                matches!(
                    plan(&imp, &mut link, &mut rng, now, 10),
                    Plan::Send {
                        duplicate: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert!((400..=600).contains(&dups), "dups {dups}");
    }

    #[test]
    fn delay_and_jitter_bounds_and_reordering() {
        let imp = Impairments {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(40),
            ..Impairments::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        let mut link = Link::new();
        let t0 = Instant::now();
        let mut departures = Vec::new();
        for i in 0..200u64 {
            // Packets arrive 1 ms apart.
            let now = t0 + Duration::from_millis(i);
            match plan(&imp, &mut link, &mut rng, now, 100) {
                Plan::Send {
                    first: Departure::At(t),
                    duplicate: None,
                } => {
                    assert!(t >= now + Duration::from_millis(20));
                    assert!(t < now + Duration::from_millis(60));
                    departures.push(t);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let inversions = departures.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 10, "inversions {inversions}");
    }

    #[test]
    fn link_serializes_at_rate() {
        let mut link = Link::new();
        let now = Instant::now();
        // 1000 B/s: a 100-byte packet takes 100 ms.
        let d1 = link.admit(now, 100, Some(1000), 1000);
        let d2 = link.admit(now, 100, Some(1000), 1000);
        assert_eq!(d1, Departure::At(now + Duration::from_millis(100)));
        assert_eq!(d2, Departure::At(now + Duration::from_millis(200)));
        // Once the link is idle again, a packet starts at its own arrival.
        let later = now + Duration::from_secs(5);
        assert_eq!(
            link.admit(later, 10, Some(1000), 1000),
            Departure::At(later + Duration::from_millis(10))
        );
    }

    #[test]
    fn link_tail_drops_when_queue_full() {
        let mut link = Link::new();
        let now = Instant::now();
        let mut accepted = 0;
        let mut dropped = 0;
        for _ in 0..50 {
            match link.admit(now, 100, Some(1000), 1000) {
                Departure::At(_) => accepted += 1,
                Departure::QueueFull => dropped += 1,
            }
        }
        // The first packet goes straight onto the wire; then 1000 bytes of
        // backlog fit (the check counts the newcomer too).
        assert_eq!(accepted, 10);
        assert_eq!(dropped, 40);
        // After the backlog drains, packets are accepted again.
        let later = now + Duration::from_secs(2);
        assert!(matches!(
            link.admit(later, 100, Some(1000), 1000),
            Departure::At(_)
        ));
    }

    #[test]
    fn oversized_packet_on_idle_link_is_accepted() {
        let mut link = Link::new();
        let now = Instant::now();
        assert!(matches!(
            link.admit(now, 5000, Some(1000), 100),
            Departure::At(_)
        ));
        assert_eq!(link.admit(now, 1, Some(1000), 100), Departure::QueueFull);
    }

    #[test]
    fn zero_rate_and_huge_values_do_not_panic() {
        let mut link = Link::new();
        let now = Instant::now();
        assert!(matches!(
            link.admit(now, 65_535, Some(0), usize::MAX),
            Departure::At(_)
        ));
        let imp = Impairments {
            delay: Duration::MAX,
            jitter: Duration::MAX,
            rate_bytes_per_sec: Some(u64::MAX),
            ..Impairments::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        let _ = plan(&imp, &mut link, &mut rng, now, 65_535);
    }

    #[test]
    fn no_rate_resets_link() {
        let mut link = Link::new();
        let now = Instant::now();
        link.admit(now, 1000, Some(10), 10_000);
        assert_eq!(link.admit(now, 1000, None, 0), Departure::At(now));
        assert_eq!(
            link.admit(now, 10, Some(10), 10_000),
            Departure::At(now + Duration::from_secs(1))
        );
    }
}
