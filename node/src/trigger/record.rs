//! What is stored of a trigger: its spec, whether it is enabled, how far its fires were
//! handled, and its bounded history. Pure data and the bookkeeping of history rows; the
//! scheduler decides, this records.

use crate::trigger::scheduler::Ended;
use cmdop_proto::schedule::{Schedule, ScheduleError};
use cmdop_proto::{Outcome, RunInfo, TriggerSpec};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Why a stored record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Its schedule or zone no longer parses (e.g. a zone removed from the database).
    #[error("trigger '{name}': {source}")]
    Schedule {
        /// The trigger.
        name: String,
        /// Why.
        source: Box<ScheduleError>,
    },
}

/// A trigger as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The spec as added.
    pub spec: TriggerSpec,
    /// Whether the schedule is active.
    pub enabled: bool,
    /// Created, Unix ms.
    pub created_ms: u64,
    /// Every fire at or before this was handled; it never moves back.
    pub handled_until_ms: u64,
    /// The id of the next history row.
    pub next_run_id: u64,
    /// Runs in a row that ended `fail` or `timeout`.
    pub consecutive_fails: u32,
    /// History, oldest first, at most `keep_runs` finished rows (plus running ones).
    pub history: VecDeque<RunInfo>,
}

impl Record {
    /// A new, enabled trigger created at `now`.
    pub fn new(spec: TriggerSpec, now: u64) -> Record {
        Record {
            spec,
            enabled: true,
            created_ms: now,
            handled_until_ms: now,
            next_run_id: 1,
            consecutive_fails: 0,
            history: VecDeque::new(),
        }
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> Result<Schedule, RecordError> {
        Schedule::parse(&self.spec.schedule, self.spec.zone.as_deref()).map_err(|source| {
            RecordError::Schedule {
                name: self.spec.name.clone(),
                source: Box::new(source),
            }
        })
    }

    /// Rows still `running` from before a restart become failures.
    pub fn close_interrupted(&mut self, now: u64) {
        for row in self.history.iter_mut() {
            if row.outcome == Outcome::Running {
                row.outcome = Outcome::Fail;
                row.end_ms = Some(now);
                row.note = Some("the node stopped during the run".into());
                self.consecutive_fails += 1;
            }
        }
    }

    fn new_row(&mut self, scheduled: u64, outcome: Outcome, manual: bool, now: u64) -> RunInfo {
        let id = self.next_run_id;
        self.next_run_id += 1;
        let done = outcome != Outcome::Running;
        RunInfo {
            id,
            scheduled_ms: scheduled,
            start_ms: (!done).then_some(now),
            end_ms: done.then_some(now),
            exit: None,
            outcome,
            bytes_total: 0,
            bytes_kept: 0,
            manual,
            fires: 1,
            note: None,
        }
    }

    fn push(&mut self, row: RunInfo) -> RunInfo {
        self.history.push_back(row.clone());
        self.trim();
        row
    }

    /// Records a run started now.
    pub fn push_started(&mut self, scheduled: u64, manual: bool, now: u64) -> RunInfo {
        let row = self.new_row(scheduled, Outcome::Running, manual, now);
        self.push(row)
    }

    /// Records a fire skipped because a run was going.
    pub fn push_skipped(&mut self, scheduled: u64, manual: bool, now: u64) -> RunInfo {
        let mut row = self.new_row(scheduled, Outcome::SkippedOverlap, manual, now);
        row.note = Some("a previous run was still going (concurrency forbid)".into());
        self.push(row)
    }

    /// Records `fires` missed fires, the last at `scheduled`, in one row.
    pub fn push_missed(&mut self, scheduled: u64, fires: u32, now: u64) -> RunInfo {
        let mut row = self.new_row(scheduled, Outcome::Missed, false, now);
        row.fires = fires;
        row.note = Some(format!(
            "{fires} fire(s) passed while the node was down, suspended, or its clock jumped ahead"
        ));
        self.push(row)
    }

    /// Records a note about the trigger (not a fire): a `missed` row standing for no fire.
    pub fn push_note(&mut self, now: u64, note: String) -> RunInfo {
        let mut row = self.new_row(now, Outcome::Missed, false, now);
        row.fires = 0;
        row.note = Some(note);
        self.push(row)
    }

    /// Records the end of run `run`.
    pub fn finish(&mut self, run: u64, outcome: Outcome, end: Ended, now: u64) -> Option<RunInfo> {
        let row = self.history.iter_mut().find(|r| r.id == run)?;
        row.outcome = outcome;
        row.end_ms = Some(now);
        row.exit = end.exit;
        row.bytes_total = end.bytes_total;
        row.bytes_kept = end.bytes_kept;
        row.note = end.note;
        let row = row.clone();
        match outcome {
            Outcome::Ok => self.consecutive_fails = 0,
            Outcome::Fail | Outcome::Timeout => self.consecutive_fails += 1,
            _ => {}
        }
        self.trim();
        Some(row)
    }

    /// Drops the oldest finished rows beyond `keep_runs`.
    fn trim(&mut self) {
        let keep = self.spec.keep_runs as usize;
        while self.history.len() > keep {
            let Some(index) = self
                .history
                .iter()
                .position(|r| r.outcome != Outcome::Running)
            else {
                return;
            };
            self.history.remove(index);
        }
    }

    /// A row by id.
    pub fn run(&self, id: u64) -> Option<&RunInfo> {
        self.history.iter().find(|r| r.id == id)
    }

    /// The newest row that started a process.
    pub fn last_started(&self) -> Option<&RunInfo> {
        self.history.iter().rev().find(|r| r.start_ms.is_some())
    }
}
