//! The scheduler on a clock the tests control: fires run once each, clock steps of ±1 h,
//! daylight saving, 1,000 simulated fires and their start delay, every overlap and missed
//! policy, timeouts, restarts, disable and enable. No sleeps: `now` is a number.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::trigger::tests_support::{spec, utc};
use std::collections::HashSet;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn scheduler_with(spec: TriggerSpec, now: u64) -> Scheduler {
    let mut scheduler = Scheduler::default();
    let schedule = crate::trigger::spec::check(&spec).unwrap();
    scheduler.add(spec, schedule, now);
    scheduler
}

fn starts(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { run, .. } => Some(*run),
            _ => None,
        })
        .collect()
}

fn ok_end() -> Ended {
    Ended {
        exit: Some(ExitStatus::Code(0)),
        ..Ended::default()
    }
}

fn history(s: &Scheduler, name: &str) -> Vec<RunInfo> {
    s.get(name)
        .unwrap()
        .record
        .history
        .iter()
        .cloned()
        .collect()
}

fn outcomes(s: &Scheduler, name: &str) -> Vec<Outcome> {
    history(s, name).iter().map(|r| r.outcome).collect()
}

/// Polls every `step` from `from` to `to` (inclusive), finishing each run at once; returns
/// the scheduled time of every run started.
fn drive(s: &mut Scheduler, from: u64, to: u64, step: u64) -> Vec<u64> {
    let mut scheduled = Vec::new();
    let mut now = from;
    while now <= to {
        let (actions, _) = s.poll(now);
        for run in starts(&actions) {
            let row = history(s, "t").into_iter().find(|r| r.id == run).unwrap();
            scheduled.push(row.scheduled_ms);
            s.finished("t", run, ok_end(), now);
        }
        now += step;
    }
    scheduled
}

#[test]
fn each_fire_runs_once_however_often_it_is_polled() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut s = scheduler_with(spec("t", "* * * * *"), t0);
    let runs = drive(&mut s, t0, t0 + 5 * MIN, 250);
    let expected: Vec<u64> = (1..=5).map(|m| utc(2025, 1, 1, 12, m)).collect();
    assert_eq!(runs, expected);
    assert!(outcomes(&s, "t").iter().all(|o| *o == Outcome::Ok));
}

#[test]
fn a_clock_step_forward_of_an_hour_records_one_missed_row() {
    let noon = utc(2025, 1, 1, 12, 0);
    let mut s = scheduler_with(spec("t", "*/5 * * * *"), noon - MIN);
    assert_eq!(drive(&mut s, noon, noon, 1), vec![noon]);
    // The wall clock jumps from 12:00 to 13:02.
    let after_jump = noon + HOUR + 2 * MIN;
    assert!(drive(&mut s, after_jump, after_jump, 1).is_empty());
    let rows = history(&s, "t");
    let missed = rows.last().unwrap();
    assert_eq!(missed.outcome, Outcome::Missed);
    assert_eq!(missed.fires, 12, "12:05 … 13:00");
    assert_eq!(missed.scheduled_ms, noon + HOUR);
    // The schedule goes on from there, each fire once.
    let runs = drive(&mut s, after_jump + 1000, noon + HOUR + 11 * MIN, 1000);
    assert_eq!(runs, vec![noon + HOUR + 5 * MIN, noon + HOUR + 10 * MIN]);
}

#[test]
fn a_clock_step_back_of_an_hour_runs_nothing_twice() {
    let noon = utc(2025, 1, 1, 12, 0);
    let mut s = scheduler_with(spec("t", "*/5 * * * *"), noon - MIN);
    let mut runs = drive(&mut s, noon, noon + 7 * MIN, 1000);
    // The wall clock goes back from 12:07 to 11:07 and runs forward again to 12:16.
    runs.extend(drive(&mut s, noon - 53 * MIN, noon + 16 * MIN, 1000));
    assert_eq!(
        runs,
        vec![noon, noon + 5 * MIN, noon + 10 * MIN, noon + 15 * MIN]
    );
    let unique: HashSet<u64> = runs.iter().copied().collect();
    assert_eq!(unique.len(), runs.len());
    assert!(!outcomes(&s, "t").contains(&Outcome::Missed));
}

#[test]
fn daylight_saving_days_in_new_york() {
    let ny = |pattern| TriggerSpec {
        zone: Some("America/New_York".into()),
        ..spec("t", pattern)
    };
    // Spring forward: 02:30 does not exist, it runs at 03:00 EDT.
    let start = utc(2025, 3, 9, 4, 0);
    let mut s = scheduler_with(ny("30 2 * * *"), start);
    assert_eq!(
        drive(&mut s, start, start + 6 * HOUR, 30_000),
        vec![utc(2025, 3, 9, 7, 0)]
    );
    // Fall back: a fixed 01:30 once, a wildcard hour four times, in real-time order.
    let start = utc(2025, 11, 2, 4, 0);
    let mut s = scheduler_with(ny("30 1 * * *"), start);
    assert_eq!(
        drive(&mut s, start, start + 6 * HOUR, 30_000),
        vec![utc(2025, 11, 2, 5, 30)]
    );
    let mut s = scheduler_with(ny("*/30 1 * * *"), start);
    assert_eq!(
        drive(&mut s, start, start + 6 * HOUR, 30_000),
        vec![
            utc(2025, 11, 2, 5, 0),
            utc(2025, 11, 2, 5, 30),
            utc(2025, 11, 2, 6, 0),
            utc(2025, 11, 2, 6, 30)
        ]
    );
}

/// A small deterministic generator (no dependency, same numbers every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn a_thousand_fires_start_within_a_second_at_p99() {
    // The driver sleeps until `next_wakeup` and oversleeps by up to 250 ms (a loaded
    // machine), sometimes by 2 s; runs take 0 to 90 s (so some overlap and are skipped).
    let t0 = utc(2025, 6, 1, 0, 0) + 7_000;
    let mut s = scheduler_with(spec("t", "* * * * *"), t0);
    let mut rng = Lcg(42);
    let (mut now, mut delays, mut running) = (t0, Vec::new(), Vec::<(u64, u64)>::new());
    let mut seen = HashSet::new();
    while rows_written(&s) < 1000 {
        let wake = s.next_wakeup(now);
        assert!(wake <= now + MAX_SLEEP_MS, "sleeps at most a minute");
        let oversleep = if rng.below(100) == 0 {
            2000
        } else {
            rng.below(250)
        };
        now = wake.max(now) + oversleep;
        for (run, _) in running.extract_if(.., |(_, end)| *end <= now) {
            s.finished("t", run, ok_end(), now);
        }
        for run in starts(&s.poll(now).0) {
            let row = s.get("t").unwrap().record.run(run).unwrap().clone();
            assert!(seen.insert(row.scheduled_ms), "a fire ran twice");
            delays.push(row.start_ms.unwrap() - row.scheduled_ms);
            running.push((run, now + rng.below(90_000)));
        }
    }
    delays.sort_unstable();
    let p99 = delays[delays.len() * 99 / 100];
    println!(
        "fires {}, started {}, start delay p50 {} ms, p99 {p99} ms, max {} ms",
        rows_written(&s),
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(p99 < 1000, "p99 start delay {p99} ms");
    assert!(delays.len() > 500, "most fires ran: {}", delays.len());
    assert!(delays.len() < 1000, "some overlapped and were skipped");
}

/// History rows ever written (runs, skips and missed rows).
fn rows_written(s: &Scheduler) -> usize {
    s.get("t").unwrap().record.next_run_id as usize - 1
}

/// A trigger every minute with `concurrency`, its first run started at 12:01 and still going.
fn one_running(concurrency: Concurrency) -> (Scheduler, u64) {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut s = scheduler_with(
        TriggerSpec {
            concurrency,
            ..spec("t", "* * * * *")
        },
        t0,
    );
    let first = utc(2025, 1, 1, 12, 1);
    assert_eq!(starts(&s.poll(first).0), vec![1]);
    (s, first)
}

#[test]
fn overlap_forbid_records_skipped_overlap() {
    let (mut s, first) = one_running(Concurrency::Forbid);
    let (actions, _) = s.poll(first + MIN);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(
        outcomes(&s, "t"),
        [Outcome::Running, Outcome::SkippedOverlap]
    );
    // A manual run is refused the same way.
    let (row, actions) = s.run_now("t", first + MIN + 1).unwrap();
    assert_eq!(row.outcome, Outcome::SkippedOverlap);
    assert!(actions.is_empty());
    s.finished("t", 1, ok_end(), first + MIN + 2);
    assert_eq!(starts(&s.poll(first + 2 * MIN).0), vec![4]);
}

#[test]
fn overlap_allow_runs_both() {
    let (mut s, first) = one_running(Concurrency::Allow);
    assert_eq!(starts(&s.poll(first + MIN).0), vec![2]);
    assert_eq!(s.get("t").unwrap().running(), 2);
}

#[test]
fn overlap_replace_terms_then_kills_after_ten_seconds() {
    let (mut s, first) = one_running(Concurrency::Replace);
    let (actions, _) = s.poll(first + MIN);
    let term = Action::Signal {
        trigger: "t".into(),
        run: 1,
        signal: StopSignal::Term,
    };
    assert_eq!(actions[0], term);
    assert_eq!(starts(&actions), vec![2]);
    // The old run ignores SIGTERM: SIGKILL 10 s later, not before.
    assert_eq!(s.next_wakeup(first + MIN), first + MIN + KILL_GRACE_MS);
    assert!(s.poll(first + MIN + KILL_GRACE_MS - 1).0.is_empty());
    let (actions, _) = s.poll(first + MIN + KILL_GRACE_MS);
    assert_eq!(
        actions,
        vec![Action::Signal {
            trigger: "t".into(),
            run: 1,
            signal: StopSignal::Kill
        }]
    );
    let killed = Ended {
        exit: Some(ExitStatus::Signal(9)),
        ..Ended::default()
    };
    let row = s
        .finished("t", 1, killed, first + MIN + KILL_GRACE_MS)
        .unwrap();
    assert_eq!(row.outcome, Outcome::Replaced);
    assert_eq!(s.get("t").unwrap().record.consecutive_fails, 0);
}

#[test]
fn a_timeout_stops_the_run_and_counts_as_a_failure() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut s = scheduler_with(
        TriggerSpec {
            timeout_ms: Some(30_000),
            ..spec("t", "0 * * * *")
        },
        t0,
    );
    let (row, _) = s.run_now("t", t0).unwrap();
    assert_eq!(s.next_wakeup(t0), t0 + 30_000);
    let (actions, _) = s.poll(t0 + 30_000);
    assert!(matches!(
        actions[..],
        [Action::Signal {
            signal: StopSignal::Term,
            ..
        }]
    ));
    let term = Ended {
        exit: Some(ExitStatus::Signal(15)),
        ..Ended::default()
    };
    let row = s.finished("t", row.id, term, t0 + 30_100).unwrap();
    assert_eq!((row.outcome, row.manual), (Outcome::Timeout, true));
    assert_eq!(s.get("t").unwrap().record.consecutive_fails, 1);
    let fail = Ended {
        exit: Some(ExitStatus::Code(127)),
        ..Ended::default()
    };
    let (row, _) = s.run_now("t", t0 + MIN).unwrap();
    assert_eq!(
        s.finished("t", row.id, fail, t0 + MIN).unwrap().outcome,
        Outcome::Fail
    );
    assert_eq!(s.get("t").unwrap().record.consecutive_fails, 2);
    let (row, _) = s.run_now("t", t0 + 2 * MIN).unwrap();
    s.finished("t", row.id, ok_end(), t0 + 2 * MIN);
    assert_eq!(s.get("t").unwrap().record.consecutive_fails, 0);
}

/// An hourly trigger stored at 12:00:30 with a run going, restored at `restart`.
fn restored(missed: MissedPolicy, deadline: Option<u64>, restart: u64) -> Scheduler {
    let saved_at = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut record = crate::trigger::record::Record::new(
        TriggerSpec {
            missed,
            starting_deadline_ms: deadline,
            ..spec("t", "0 * * * *")
        },
        saved_at - HOUR,
    );
    record.handled_until_ms = utc(2025, 1, 1, 12, 0);
    record.push_started(utc(2025, 1, 1, 12, 0), false, utc(2025, 1, 1, 12, 0));
    let mut s = Scheduler::default();
    s.restore(record, restart).unwrap();
    s
}

#[test]
fn missed_skip_records_one_row_for_the_downtime() {
    let restart = utc(2025, 1, 1, 15, 10);
    let mut s = restored(MissedPolicy::Skip, None, restart);
    let run = history(&s, "t")[0].clone();
    assert_eq!((run.outcome, run.end_ms), (Outcome::Fail, Some(restart)));
    assert!(starts(&s.poll(restart).0).is_empty());
    let rows = history(&s, "t");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].outcome, rows[1].fires), (Outcome::Missed, 3));
    assert_eq!(rows[1].scheduled_ms, utc(2025, 1, 1, 15, 0));
    assert!(s.poll(restart + MIN).0.is_empty(), "still one row");
    assert_eq!(history(&s, "t").len(), 2);
}

#[test]
fn missed_run_once_runs_once_within_the_deadline() {
    let restart = utc(2025, 1, 1, 15, 10);
    let mut s = restored(MissedPolicy::RunOnce, Some(HOUR), restart);
    assert_eq!(starts(&s.poll(restart).0).len(), 1, "one catch-up run");
    let rows = history(&s, "t");
    assert_eq!((rows[1].outcome, rows[1].fires), (Outcome::Missed, 2));
    assert_eq!(rows[1].scheduled_ms, utc(2025, 1, 1, 14, 0));
    assert_eq!(rows[2].outcome, Outcome::Running);
    assert_eq!(rows[2].scheduled_ms, utc(2025, 1, 1, 15, 0));
    assert!(
        s.poll(restart + MIN).0.is_empty(),
        "never a second catch-up"
    );
    // Beyond the deadline: missed, nothing runs.
    let mut s = restored(MissedPolicy::RunOnce, Some(5 * MIN), restart);
    assert!(starts(&s.poll(restart).0).is_empty());
    assert_eq!(history(&s, "t")[1].fires, 3);
}

#[test]
fn disabled_triggers_stay_and_do_not_replay_when_enabled() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut s = scheduler_with(spec("t", "* * * * *"), t0);
    s.set_enabled("t", false, t0);
    assert!(drive(&mut s, t0, t0 + 10 * MIN, 1000).is_empty());
    assert!(s.get("t").unwrap().next_fires(t0, 5).is_empty());
    s.set_enabled("t", true, t0 + 10 * MIN);
    assert!(
        history(&s, "t").is_empty(),
        "no missed rows for the disabled time"
    );
    let runs = drive(&mut s, t0 + 10 * MIN, t0 + 11 * MIN, 1000);
    assert_eq!(runs, vec![utc(2025, 1, 1, 12, 11)]);
}

#[test]
fn history_keeps_the_last_keep_runs_rows() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut s = scheduler_with(
        TriggerSpec {
            keep_runs: 3,
            ..spec("t", "* * * * *")
        },
        t0,
    );
    drive(&mut s, t0, t0 + 10 * MIN, 1000);
    let ids: Vec<u64> = history(&s, "t").iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![8, 9, 10]);
}

#[test]
fn removing_a_trigger_kills_its_runs() {
    let (mut s, _) = one_running(Concurrency::Allow);
    let (_, actions) = s.remove("t").unwrap();
    assert_eq!(
        actions,
        vec![Action::Signal {
            trigger: "t".into(),
            run: 1,
            signal: StopSignal::Kill
        }]
    );
    assert!(s.get("t").is_none());
}

#[test]
fn jitter_delays_each_fire_the_same_way_and_runs_it_once() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let jittered = TriggerSpec {
        jitter_ms: 5 * MIN,
        ..spec("t", "*/10 * * * *")
    };
    let mut s = scheduler_with(jittered.clone(), t0);
    let mut starts_at = Vec::new();
    let mut now = t0;
    while now < t0 + 2 * HOUR {
        now = s.next_wakeup(now).max(now + 1);
        for run in starts(&s.poll(now).0) {
            let row = s.get("t").unwrap().record.run(run).unwrap().clone();
            let offset = jitter_offset("t", row.scheduled_ms, 5 * MIN);
            assert_eq!(
                row.start_ms,
                Some(row.scheduled_ms + offset),
                "starts at its due time"
            );
            starts_at.push((row.scheduled_ms, offset));
            s.finished("t", run, ok_end(), now);
        }
    }
    let scheduled: Vec<u64> = starts_at.iter().map(|(f, _)| *f).collect();
    let expected: Vec<u64> = (1..=12)
        .map(|i| utc(2025, 1, 1, 12, 0) + i * 10 * MIN)
        .collect();
    assert_eq!(scheduled[..11], expected[..11], "each fire once, in order");
    let offsets: HashSet<u64> = starts_at.iter().map(|(_, o)| *o).collect();
    assert!(offsets.len() > 5, "offsets spread: {offsets:?}");
    assert!(offsets.iter().all(|&o| o < 5 * MIN));
    // The same fire gets the same delay (after a restart too); another name another one.
    assert_eq!(jitter_offset("t", expected[0], 5 * MIN), starts_at[0].1);
    assert_ne!(
        (0..10)
            .map(|i| jitter_offset("t", expected[i], 5 * MIN))
            .collect::<Vec<_>>(),
        (0..10)
            .map(|i| jitter_offset("u", expected[i], 5 * MIN))
            .collect::<Vec<_>>()
    );
    assert_eq!(jitter_offset("t", expected[0], 0), 0);
}

#[test]
fn a_mark_far_ahead_of_the_clock_is_reset_with_a_note() {
    // The clock read a year ahead when the trigger last fired, then was corrected.
    let now = utc(2025, 1, 1, 12, 0) + 30_000;
    let wrong = utc(2026, 1, 1, 12, 0);
    let mut record = crate::trigger::record::Record::new(spec("t", "* * * * *"), now - HOUR);
    record.handled_until_ms = wrong;
    let mut s = Scheduler::default();
    s.restore(record, now).unwrap();
    let t = s.get("t").unwrap();
    assert_eq!(t.record.handled_until_ms, now, "reset on restore");
    let row = t.record.history.back().unwrap();
    assert_eq!((row.outcome, row.fires), (Outcome::Missed, 0));
    assert!(row.note.as_deref().unwrap().contains("ahead of the clock"));
    assert_eq!(
        drive(&mut s, now, now + MIN, 1000),
        vec![utc(2025, 1, 1, 12, 1)]
    );

    // While running: the clock jumps two days ahead, a fire runs, the clock comes back.
    let ahead = now + 2 * 24 * HOUR;
    assert_eq!(
        starts(&s.poll(ahead).0).len(),
        1,
        "the latest fire runs once"
    );
    let run = s.get("t").unwrap().record.history.back().unwrap().id;
    s.finished("t", run, ok_end(), ahead);
    let back = now + 2 * MIN + 1000;
    let (_, changed) = s.poll(back);
    assert_eq!(changed, ["t"], "the reset is stored");
    assert_eq!(s.get("t").unwrap().record.handled_until_ms, back);
    let notes = history(&s, "t").iter().filter(|r| r.fires == 0).count();
    assert_eq!(notes, 2);
    // Within a minute of the corrected clock it fires again.
    assert_eq!(
        drive(&mut s, back, back + MIN, 1000),
        vec![utc(2025, 1, 1, 12, 3)]
    );
}

#[test]
fn run_deadlines_follow_elapsed_time_not_wall_clock_steps() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mono0 = 5_000;
    let mut s = scheduler_with(
        TriggerSpec {
            timeout_ms: Some(30 * MIN),
            concurrency: Concurrency::Replace,
            ..spec("t", "0 0 1 1 *")
        },
        t0,
    );
    let (row, _) = s.run_now_at("t", t0, mono0).unwrap();
    assert_eq!(s.next_wakeup_at(t0, mono0), t0 + MAX_SLEEP_MS);
    // NTP steps the wall clock an hour ahead one second later: no timeout.
    let stepped = t0 + HOUR;
    let (actions, _) = s.poll_at(stepped, mono0 + 1000);
    assert!(actions.is_empty(), "{actions:?}");
    // Thirty minutes of elapsed time later, it times out.
    let (actions, _) = s.poll_at(stepped + 30 * MIN, mono0 + 30 * MIN);
    assert_eq!(
        actions,
        [Action::Signal {
            trigger: "t".into(),
            run: row.id,
            signal: StopSignal::Term
        }]
    );
    // The kill grace too: a wall step back does not hold the SIGKILL off.
    let kill_mono = mono0 + 30 * MIN + KILL_GRACE_MS;
    assert_eq!(
        s.next_wakeup_at(t0, mono0 + 30 * MIN),
        t0 + KILL_GRACE_MS,
        "woken after the grace on whatever wall clock"
    );
    let (actions, _) = s.poll_at(t0 - HOUR, kill_mono);
    assert!(matches!(
        actions[..],
        [Action::Signal {
            signal: StopSignal::Kill,
            ..
        }]
    ));
}
