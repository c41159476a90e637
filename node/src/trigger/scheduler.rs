//! The scheduler's state machine, sans-IO: every input carries `now` (Unix ms), outputs are
//! [`Action`]s for the driver (start a run, signal one) and the next time to wake up.
//!
//! - `poll(now)` handles the fires due by `now`, the timeouts and the overdue kills;
//!   `poll_at(now, mono)` is the same with a monotonic reading for the run deadlines
//!   (timeouts and the kill grace follow elapsed time, so a wall-clock step of an hour does not
//!   time every run out at once; fires follow the wall clock);
//! - `finished(…)` records how a run ended;
//! - `next_wakeup(now)` is the earliest of the next fire, the next deadline, and `now + 60 s`,
//!   so a wall-clock step or a suspend is noticed within a minute.
//!
//! A fire is due at its time plus the trigger's jitter for it ([`jitter_offset`]: the same for
//! the same fire, so a restart does not move it). A trigger remembers `handled_until`: every fire at or before it was handled (run, missed or
//! skipped), and it never moves back, so a (trigger, fire time) pair never runs twice whatever
//! the clock does. Fires found more than [`LATE_LIMIT`] late (the node was down or suspended,
//! or the clock jumped ahead) are missed: one `missed` row stands for them all, and with
//! `run-once` the latest runs if it is within the starting deadline.

use crate::trigger::record::{Record, RecordError};
use cmdop_proto::schedule::Schedule;
use cmdop_proto::{Concurrency, ExitStatus, MissedPolicy, Outcome, RunInfo, TriggerSpec};
use std::collections::BTreeMap;

/// A fire found later than this counts as missed.
pub const LATE_LIMIT_MS: u64 = 60_000;

/// The scheduler wakes at least this often.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// Between SIGTERM and SIGKILL when a run is stopped.
pub const KILL_GRACE_MS: u64 = 10_000;

/// A `handled_until` further than this ahead of the clock is not believed: the clock was
/// wrong once (or sped up for tests) and must not silence the trigger until it catches up.
pub const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Most fires one missed row counts one by one.
const COUNT_CAP: u32 = 100_000;

/// A signal for a run's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Please stop.
    Term,
    /// Stop now.
    Kill,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start run `run` of trigger `trigger`.
    Start {
        /// The trigger.
        trigger: String,
        /// The run.
        run: u64,
    },
    /// Signal a run's process group.
    Signal {
        /// The trigger.
        trigger: String,
        /// The run.
        run: u64,
        /// The signal.
        signal: StopSignal,
    },
}

/// Why a running run is being stopped, and when it gets SIGKILL (monotonic ms).
#[derive(Debug, Clone, Copy)]
struct Stopping {
    outcome: Outcome,
    kill_at_ms: u64,
    killed: bool,
}

/// A run in progress.
#[derive(Debug, Clone)]
struct Running {
    id: u64,
    /// Monotonic ms.
    timeout_at_ms: Option<u64>,
    stopping: Option<Stopping>,
}

/// One trigger: its record (what is stored) and what only lives in memory.
#[derive(Debug)]
pub struct Trigger {
    /// What is stored.
    pub record: Record,
    schedule: Schedule,
    running: Vec<Running>,
}

impl Trigger {
    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The next `count` fire times (none when disabled).
    pub fn next_fires(&self, now: u64, count: usize) -> Vec<u64> {
        if !self.record.enabled {
            return Vec::new();
        }
        self.schedule
            .next_n(self.record.handled_until_ms.max(now), count)
    }
}

/// Every trigger of a node.
#[derive(Debug, Default)]
pub struct Scheduler {
    triggers: BTreeMap<String, Trigger>,
}

impl Scheduler {
    /// Adds a checked trigger, handled until `now` (no fire before its creation runs).
    pub fn add(&mut self, spec: TriggerSpec, schedule: Schedule, now: u64) -> &Trigger {
        let record = Record::new(spec, now);
        self.insert(record, schedule)
    }

    /// Adds a trigger read back from storage. Runs that were going when the node stopped are
    /// recorded as failed; fires missed while it was down are handled by the next `poll`.
    pub fn restore(&mut self, mut record: Record, now: u64) -> Result<&Trigger, RecordError> {
        let schedule = record.schedule()?;
        record.close_interrupted(now);
        reset_if_ahead(&mut record, now);
        Ok(self.insert(record, schedule))
    }

    fn insert(&mut self, record: Record, schedule: Schedule) -> &Trigger {
        let name = record.spec.name.clone();
        self.triggers.entry(name).or_insert(Trigger {
            record,
            schedule,
            running: Vec::new(),
        })
    }

    /// A trigger by name.
    pub fn get(&self, name: &str) -> Option<&Trigger> {
        self.triggers.get(name)
    }

    /// Every trigger, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Trigger> {
        self.triggers.values()
    }

    /// Removes a trigger; its runs are killed.
    pub fn remove(&mut self, name: &str) -> Option<(Trigger, Vec<Action>)> {
        let trigger = self.triggers.remove(name)?;
        let kills = trigger
            .running
            .iter()
            .map(|r| signal(name, r.id, StopSignal::Kill))
            .collect();
        Some((trigger, kills))
    }

    /// Enables or disables a trigger. Enabling does not replay the fires of the disabled time.
    pub fn set_enabled(&mut self, name: &str, enabled: bool, now: u64) -> Option<&Trigger> {
        let trigger = self.triggers.get_mut(name)?;
        if enabled && !trigger.record.enabled {
            trigger.record.handled_until_ms = trigger.record.handled_until_ms.max(now);
        }
        trigger.record.enabled = enabled;
        Some(trigger)
    }

    /// Handles everything due by `now`; returns what to do and the triggers whose record
    /// changed (to be stored).
    pub fn poll(&mut self, now: u64) -> (Vec<Action>, Vec<String>) {
        self.poll_at(now, now)
    }

    /// [`Self::poll`] with `mono`, a monotonic reading in ms, for the run deadlines.
    pub fn poll_at(&mut self, now: u64, mono: u64) -> (Vec<Action>, Vec<String>) {
        let mut actions = Vec::new();
        let mut changed = Vec::new();
        for (name, trigger) in &mut self.triggers {
            let before = actions.len();
            let reset = reset_if_ahead(&mut trigger.record, now);
            let fired = trigger.enabled_fires(now, mono, &mut actions) || reset;
            trigger.deadlines(mono, &mut actions);
            if fired || actions.len() > before {
                changed.push(name.clone());
            }
        }
        (actions, changed)
    }

    /// Runs a trigger now (its concurrency policy applies). Returns the row (running, or
    /// skipped-overlap) and what to do.
    pub fn run_now(&mut self, name: &str, now: u64) -> Option<(RunInfo, Vec<Action>)> {
        self.run_now_at(name, now, now)
    }

    /// [`Self::run_now`] with a monotonic reading for the run's deadlines.
    pub fn run_now_at(
        &mut self,
        name: &str,
        now: u64,
        mono: u64,
    ) -> Option<(RunInfo, Vec<Action>)> {
        let trigger = self.triggers.get_mut(name)?;
        let mut actions = Vec::new();
        let row = trigger.fire(now, now, mono, true, &mut actions);
        Some((row, actions))
    }

    /// Records the end of a run. Returns the row, or `None` for an unknown run.
    pub fn finished(&mut self, name: &str, run: u64, end: Ended, now: u64) -> Option<RunInfo> {
        let trigger = self.triggers.get_mut(name)?;
        let index = trigger.running.iter().position(|r| r.id == run)?;
        let running = trigger.running.remove(index);
        let outcome = match (running.stopping, end.exit) {
            (Some(stopping), _) => stopping.outcome,
            (None, Some(ExitStatus::Code(0))) => Outcome::Ok,
            (None, _) => Outcome::Fail,
        };
        trigger.record.finish(run, outcome, end, now)
    }

    /// When the driver must call `poll` again at the latest.
    pub fn next_wakeup(&self, now: u64) -> u64 {
        self.next_wakeup_at(now, now)
    }

    /// [`Self::next_wakeup`] (a wall-clock time) with the monotonic reading `mono` taken with
    /// `now`, for the run deadlines.
    pub fn next_wakeup_at(&self, now: u64, mono: u64) -> u64 {
        let mut wake = now + MAX_SLEEP_MS;
        for trigger in self.triggers.values() {
            if trigger.record.enabled {
                let after = trigger.record.handled_until_ms;
                if let Some(next) = trigger.schedule.next_after(after) {
                    wake = wake.min(trigger.due(next).max(now));
                }
            }
            for running in &trigger.running {
                let deadline = match running.stopping {
                    Some(s) if !s.killed => Some(s.kill_at_ms),
                    Some(_) => None,
                    None => running.timeout_at_ms,
                };
                if let Some(deadline) = deadline {
                    wake = wake.min(now + deadline.saturating_sub(mono));
                }
            }
        }
        wake
    }
}

/// How a process ended, as the driver saw it.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// Its exit status (none when it could not start).
    pub exit: Option<ExitStatus>,
    /// Output bytes produced.
    pub bytes_total: u64,
    /// Output bytes kept.
    pub bytes_kept: u64,
    /// Why it could not start.
    pub note: Option<String>,
}

/// How long after its time fire `scheduled` of trigger `name` starts: in `[0, jitter_ms)`,
/// spread by a hash of both, so it is the same for the same fire across restarts.
pub fn jitter_offset(name: &str, scheduled: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    // FNV-1a of the name, then splitmix64: stable across Rust versions, unlike std's hasher.
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut x = fnv ^ scheduled;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % jitter_ms
}

/// Brings a `handled_until` more than [`MAX_AHEAD_MS`] ahead of `now` back to `now`, with a
/// warning and a note in the history. Returns whether it did.
fn reset_if_ahead(record: &mut Record, now: u64) -> bool {
    let handled = record.handled_until_ms;
    if handled <= now.saturating_add(MAX_AHEAD_MS) {
        return false;
    }
    let ahead_h = (handled - now) / 3_600_000;
    tracing::warn!(
        trigger = %record.spec.name,
        handled_until_ms = handled,
        now_ms = now,
        "the trigger's fires were marked handled {ahead_h} h ahead of the clock (the clock was wrong once); it goes on from now"
    );
    record.handled_until_ms = now;
    record.push_note(
        now,
        format!("its fires were marked handled until {handled} (Unix ms), {ahead_h} h ahead of the clock, which had been wrong; it goes on from now"),
    );
    true
}

fn signal(trigger: &str, run: u64, signal: StopSignal) -> Action {
    Action::Signal {
        trigger: trigger.to_string(),
        run,
        signal,
    }
}

impl Trigger {
    /// Handles the fires due by `now`; returns whether any was.
    fn enabled_fires(&mut self, now: u64, mono: u64, actions: &mut Vec<Action>) -> bool {
        if !self.record.enabled {
            return false;
        }
        let after = self.record.handled_until_ms;
        let (count, Some(latest)) = self.due_fires(now) else {
            return false;
        };
        self.record.handled_until_ms = latest;
        let late = now.saturating_sub(self.due(latest));
        let catch_up = match self.record.spec.missed {
            MissedPolicy::Skip => false,
            MissedPolicy::RunOnce => {
                late <= self.record.spec.starting_deadline_ms.unwrap_or(u64::MAX)
            }
        };
        let runs_latest = late <= LATE_LIMIT_MS || catch_up;
        let missed = count - u32::from(runs_latest);
        if missed > 0 {
            let last_missed = if runs_latest {
                self.schedule.last_at_or_before(latest - 1).unwrap_or(after)
            } else {
                latest
            };
            self.record.push_missed(last_missed, missed, now);
        }
        if runs_latest {
            self.fire(latest, now, mono, false, actions);
        }
        true
    }

    /// When fire `scheduled` is due: its time plus the trigger's jitter for it.
    fn due(&self, scheduled: u64) -> u64 {
        let spec = &self.record.spec;
        scheduled + jitter_offset(&spec.name, scheduled, spec.jitter_ms)
    }

    /// The fires after `handled_until` that are due by `now`: how many (counting at most
    /// [`COUNT_CAP`]) and the latest. They are walked in the order of their fire times, so a
    /// fire whose jitter puts it after `now` holds back the ones after it.
    fn due_fires(&self, now: u64) -> (u32, Option<u64>) {
        let (mut count, mut latest) = (0, None);
        let mut at = self.record.handled_until_ms;
        while let Some(next) = self.schedule.next_after(at) {
            if self.due(next) > now {
                break;
            }
            (count, latest, at) = (count + 1, Some(next), next);
            if count >= COUNT_CAP {
                // Too many to walk (a long downtime): on to the last fire surely due.
                let surely = now.saturating_sub(self.record.spec.jitter_ms);
                let last = self.schedule.last_at_or_before(surely);
                return (count, last.filter(|&l| l > at).or(latest));
            }
        }
        (count, latest)
    }

    /// A fire (scheduled or manual) under the concurrency policy; returns its row.
    fn fire(
        &mut self,
        scheduled: u64,
        now: u64,
        mono: u64,
        manual: bool,
        actions: &mut Vec<Action>,
    ) -> RunInfo {
        let name = self.record.spec.name.clone();
        let live: Vec<u64> = (self.running.iter())
            .filter(|r| r.stopping.is_none())
            .map(|r| r.id)
            .collect();
        match self.record.spec.concurrency {
            Concurrency::Forbid if !live.is_empty() => {
                return self.record.push_skipped(scheduled, manual, now);
            }
            Concurrency::Replace => {
                for running in self.running.iter_mut().filter(|r| live.contains(&r.id)) {
                    running.stopping = Some(Stopping {
                        outcome: Outcome::Replaced,
                        kill_at_ms: mono + KILL_GRACE_MS,
                        killed: false,
                    });
                    actions.push(signal(&name, running.id, StopSignal::Term));
                }
            }
            _ => {}
        }
        let row = self.record.push_started(scheduled, manual, now);
        self.running.push(Running {
            id: row.id,
            timeout_at_ms: self.record.spec.timeout_ms.map(|t| mono + t),
            stopping: None,
        });
        actions.push(Action::Start {
            trigger: name,
            run: row.id,
        });
        row
    }

    /// Timeouts (SIGTERM) and overdue stops (SIGKILL), at the monotonic reading `now`.
    fn deadlines(&mut self, now: u64, actions: &mut Vec<Action>) {
        let name = &self.record.spec.name;
        for running in &mut self.running {
            match &mut running.stopping {
                None if running.timeout_at_ms.is_some_and(|t| t <= now) => {
                    running.stopping = Some(Stopping {
                        outcome: Outcome::Timeout,
                        kill_at_ms: now + KILL_GRACE_MS,
                        killed: false,
                    });
                    actions.push(signal(name, running.id, StopSignal::Term));
                }
                Some(stopping) if !stopping.killed && stopping.kill_at_ms <= now => {
                    stopping.killed = true;
                    actions.push(signal(name, running.id, StopSignal::Kill));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
