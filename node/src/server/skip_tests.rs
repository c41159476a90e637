//! The pacer against a simulated link: a bottleneck of a given rate and one-way delay, a client
//! that reports each frame as soon as it arrives, and a clock the test moves in 1 ms steps.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A link and a client at its far end.
struct Link {
    /// Bytes per second through the bottleneck.
    rate: f64,
    /// One-way delay.
    delay: Duration,
    /// When the bottleneck is next free.
    free_at: Instant,
    /// Reports on their way back: (arrives at the node, offset).
    reports: VecDeque<(Instant, u64)>,
    /// Bytes queued but not yet delivered, for the worst case seen.
    queued: VecDeque<(Instant, u64)>,
}

impl Link {
    fn new(rate: f64, delay: Duration, now: Instant) -> Self {
        Link {
            rate,
            delay,
            free_at: now,
            reports: VecDeque::new(),
            queued: VecDeque::new(),
        }
    }

    /// Puts a frame on the link; the client reports `end` when it arrives.
    fn send(&mut self, now: Instant, end: u64, bytes: u64) {
        let start = self.free_at.max(now);
        self.free_at = start + Duration::from_secs_f64(bytes as f64 / self.rate);
        let arrival = self.free_at + self.delay;
        self.reports.push_back((arrival + self.delay, end));
        self.queued.push_back((arrival, bytes));
    }

    /// Bytes sent and not yet arrived at the client at `now`.
    fn in_network(&mut self, now: Instant) -> u64 {
        self.queued.retain(|(at, _)| *at > now);
        self.queued.iter().map(|(_, b)| b).sum()
    }

    /// Hands the reports that reached the node by `now` to the pacer.
    fn deliver(&mut self, pacer: &mut OutputPacer, now: Instant) {
        while self.reports.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, offset)) = self.reports.pop_front() else {
                break;
            };
            pacer.reported(offset, self.delay * 2, now);
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
struct Run {
    skips: Vec<(Duration, u64)>,
    sent_bytes: u64,
    most_in_network: u64,
    cursor: u64,
}

/// Runs the pump for `duration`: the program has printed `printed(t)` bytes by time t.
fn pump(link: &mut Link, duration: Duration, printed: impl Fn(Duration) -> u64) -> Run {
    let start = link.free_at;
    let mut pacer = OutputPacer::new(0, start);
    let mut run = Run::default();
    let rtt = link.delay * 2;
    let mut t = Duration::ZERO;
    while t < duration {
        let now = start + t;
        link.deliver(&mut pacer, now);
        let end = printed(t);
        loop {
            match pacer.next(run.cursor, end, rtt) {
                Verdict::Wait => break,
                Verdict::Send(n) => {
                    let n = n.min(64 * 1024);
                    run.cursor += n;
                    run.sent_bytes += n;
                    pacer.sent(run.cursor, n, run.cursor < end);
                    link.send(now, run.cursor, n);
                }
                Verdict::Skip => {
                    run.skips.push((t, end - run.cursor));
                    run.cursor = end;
                    pacer.skipped(end, 3000);
                    link.send(now, end, 3000);
                }
            }
        }
        run.most_in_network = run.most_in_network.max(link.in_network(now));
        t += MS;
    }
    run
}

/// 1 Mbit/s and 100 ms round trip, the slow link of the benchmark.
fn slow_link() -> Link {
    Link::new(125_000.0, Duration::from_millis(50), Instant::now())
}

#[test]
fn a_flood_on_a_slow_link_is_skipped_within_about_a_second_and_queues_little() {
    let mut link = slow_link();
    // `seq` prints about 20 MB/s.
    let run = pump(&mut link, Duration::from_secs(5), |t| {
        (t.as_secs_f64() * 20e6) as u64
    });
    let (first, skipped) = run.skips[0];
    assert!(
        first < Duration::from_millis(1500),
        "first skip at {first:?}"
    );
    assert!(skipped > 1_000_000, "skipped only {skipped}");
    // Little ever waits in the network: about a round trip of the link's rate.
    // Little ever waits in the network: the first window, then about a round trip of the
    // link's rate, never the megabytes a flood prints.
    assert!(
        run.most_in_network <= INITIAL_WINDOW,
        "{} bytes queued",
        run.most_in_network
    );
    // The flood goes on: the client gets a fresh screen every so often, like a frame rate.
    assert!(run.skips.len() >= 3, "{:?}", run.skips);
    // And the link stays in use.
    assert!(run.sent_bytes > 300_000, "{}", run.sent_bytes);
}

#[test]
fn a_burst_the_link_drains_in_under_a_second_is_sent_whole() {
    let mut link = slow_link();
    // 110 KB at once, nobody typing: every byte goes through, no skip.
    let run = pump(&mut link, Duration::from_secs(3), |_| 110_000);
    assert!(run.skips.is_empty(), "{:?}", run.skips);
    assert_eq!(run.sent_bytes, 110_000);
}

#[test]
fn a_burst_after_quiet_typing_is_not_mistaken_for_a_slow_link() {
    let mut link = slow_link();
    // Ten seconds of echoes (a byte every 150 ms), then 110 KB at once.
    let run = pump(&mut link, Duration::from_secs(13), |t| {
        let echoes = (t.as_millis().min(10_000) / 150) as u64;
        echoes
            + if t >= Duration::from_secs(10) {
                110_000
            } else {
                0
            }
    });
    assert!(run.skips.is_empty(), "{:?}", run.skips);
    assert_eq!(run.sent_bytes, 110_000 + 10_000 / 150);
}

#[test]
fn a_fast_link_opens_the_window_wide() {
    // Loopback: a gigabyte a second, 0.1 ms round trip.
    let mut link = Link::new(1e9, Duration::from_micros(50), Instant::now());
    let run = pump(&mut link, Duration::from_millis(500), |t| {
        (t.as_secs_f64() * 200e6) as u64
    });
    assert!(run.skips.is_empty(), "{:?}", run.skips);
    // Everything printed more than a millisecond ago went out.
    assert!(run.sent_bytes >= 99_000_000 - 400_000, "{}", run.sent_bytes);
}

/// A pacer that has measured the link at `rate` bytes per second.
fn measured(rate: f64, now: Instant) -> OutputPacer {
    let mut pacer = OutputPacer::new(0, now);
    pacer.samples.push_back(Sample {
        at: now,
        bytes_per_sec: rate,
    });
    pacer
}

#[test]
fn typing_with_output_queued_asks_for_the_screen_but_not_twice_in_flight() {
    let now = Instant::now();
    let rtt = Duration::from_millis(100);
    assert!(
        !OutputPacer::new(0, now).typed(0, 1_000_000, rtt),
        "no rate known yet: optimistic"
    );
    let mut pacer = measured(125_000.0, now);
    // 40 KB queued is more than a round trip of output at 125 KB/s: a keystroke skips.
    assert!(pacer.typed(0, 40_000, rtt));
    // A keystroke with little queued does not.
    assert!(!pacer.typed(0, 2_000, rtt));
    // After a skip, no second one until the screen is drawn.
    pacer.skipped(40_000, 3_000);
    assert!(!pacer.typed(40_000, 400_000, rtt));
    assert_eq!(
        pacer.next(40_000, 400_000, rtt),
        Verdict::Send(pacer.window(rtt) - 3_000)
    );
    pacer.reported(40_000, rtt, now + Duration::from_millis(150));
    assert!(pacer.typed(40_000, 400_000, rtt));
}

#[test]
fn the_rate_is_learned_from_reports_while_the_window_is_full() {
    let now = Instant::now();
    let rtt = Duration::from_millis(100);
    let mut pacer = OutputPacer::new(0, now);
    let mut sent = 0;
    for step in 1..=20u64 {
        // Fill the window, as a flood does.
        while let Verdict::Send(n) = pacer.next(sent, u64::MAX / 2, rtt) {
            let n = n.min(2_500);
            sent += n;
            pacer.sent(sent, n, true);
        }
        // The client drew 12.5 KB in each 100 ms.
        pacer.reported(step * 12_500, rtt, now + rtt * step as u32);
    }
    let rate = pacer.rate().expect("measured");
    assert!((120_000.0..130_000.0).contains(&rate), "{rate}");
    // About a round trip of that rate, plus slack.
    assert_eq!(pacer.window(rtt), 15_625);
}

#[test]
fn reports_while_idle_do_not_lower_the_rate_and_old_ones_are_forgotten() {
    let now = Instant::now();
    let rtt = Duration::from_millis(100);
    let mut pacer = measured(125_000.0, now);
    // An echo a second, never window-limited.
    for second in 1..=3u64 {
        pacer.sent(second, 1, false);
        pacer.reported(second, rtt, now + Duration::from_secs(second));
    }
    assert_eq!(pacer.rate(), Some(125_000.0));
    pacer.sent(5, 1, false);
    pacer.reported(5, rtt, now + Duration::from_secs(6));
    assert_eq!(pacer.rate(), None, "forgotten after {RATE_MEMORY:?}");
}

#[test]
fn the_path_round_trip_is_the_smallest_recent_estimate() {
    let now = Instant::now();
    let mut rtt = MinRtt::new();
    assert_eq!(
        rtt.update(Duration::from_millis(100), now),
        Duration::from_millis(100)
    );
    // Queues fill: the smoothed estimate grows, the path's round trip does not.
    assert_eq!(
        rtt.update(Duration::from_millis(600), now + Duration::from_secs(1)),
        Duration::from_millis(100)
    );
    assert_eq!(
        rtt.update(Duration::from_millis(90), now + Duration::from_secs(2)),
        Duration::from_millis(90)
    );
    // A path that really got longer is believed after a while.
    assert_eq!(
        rtt.update(Duration::from_millis(300), now + Duration::from_secs(13)),
        Duration::from_millis(300)
    );
}
