//! Trigger messages: scheduled commands a node runs with no client attached.
//!
//! A [`TriggerSpec`] is what `cmdop trigger add` sends; the node answers with [`TriggerInfo`]
//! (spec, state, next fire times, last run). Each run leaves a [`RunInfo`] row in the trigger's
//! history (missed and skipped fires too) and, for runs that started, the output it kept.
//! The requests are [`crate::Call`]s like the session requests; the names here are part of the
//! protocol (see [`crate::control`]).

use serde::{Deserialize, Serialize};

/// What to do with fires that passed while the node was down (or the clock jumped ahead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissedPolicy {
    /// Record one `missed` row, run nothing.
    #[default]
    Skip,
    /// Run once at start if the latest missed fire is within the starting deadline.
    RunOnce,
}

/// What to do when a fire comes while a run of the same trigger is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Concurrency {
    /// Record `skipped-overlap` and leave the running one.
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Stop the running one (SIGTERM, SIGKILL after 10 s) and start anew.
    Replace,
}

/// A trigger as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    /// Unique on the node; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// A 5-field cron pattern.
    pub schedule: String,
    /// IANA zone of the schedule; the node's local zone when absent.
    pub zone: Option<String>,
    /// The command, run by `sh -c`.
    pub shell: String,
    /// Missed fires.
    pub missed: MissedPolicy,
    /// With [`MissedPolicy::RunOnce`]: how late a catch-up run may still start (ms).
    pub starting_deadline_ms: Option<u64>,
    /// Overlapping runs.
    pub concurrency: Concurrency,
    /// A run still going after this long is stopped and recorded as `timeout` (ms).
    pub timeout_ms: Option<u64>,
    /// Each fire starts up to this much after its time (ms), the same delay for the same fire.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Runs kept in history.
    pub keep_runs: u32,
    /// Output bytes kept per run (the last ones).
    pub keep_output: u64,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory (the node user's home when absent).
    pub cwd: Option<String>,
}

/// How a run ended, or why a fire did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Still going.
    Running,
    /// Exited with code 0.
    Ok,
    /// Exited with another code or a signal, or could not start.
    Fail,
    /// Stopped by the timeout.
    Timeout,
    /// Not run: the node was down (or the clock jumped past it).
    Missed,
    /// Not run: another run was going and the policy is `forbid`.
    SkippedOverlap,
    /// Stopped because a newer run replaced it.
    Replaced,
}

impl Outcome {
    /// The name shown to people and in JSON: `ok`, `skipped-overlap`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Timeout => "timeout",
            Outcome::Missed => "missed",
            Outcome::SkippedOverlap => "skipped-overlap",
            Outcome::Replaced => "replaced",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl ExitStatus {
    /// A shell-style exit code: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }
}

/// One row of a trigger's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unique within the trigger, increasing.
    pub id: u64,
    /// The fire time it stands for (the request time for a manual run), Unix ms.
    pub scheduled_ms: u64,
    /// When the process started, Unix ms.
    pub start_ms: Option<u64>,
    /// When it ended (or the row was recorded, for missed and skipped fires), Unix ms.
    pub end_ms: Option<u64>,
    /// How the process ended.
    pub exit: Option<ExitStatus>,
    /// The outcome.
    pub outcome: Outcome,
    /// Output bytes produced.
    pub bytes_total: u64,
    /// Output bytes kept (the last ones).
    pub bytes_kept: u64,
    /// Started by `cmdop trigger run`, not by the schedule.
    pub manual: bool,
    /// For a missed row: how many fires it stands for.
    pub fires: u32,
    /// Why it failed to start, or other notes.
    pub note: Option<String>,
}

/// A trigger's spec and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// The spec.
    pub spec: TriggerSpec,
    /// The zone in effect (the node's local one when the spec has none).
    pub zone: String,
    /// Whether the schedule is active.
    pub enabled: bool,
    /// Created, Unix ms.
    pub created_ms: u64,
    /// The next fire times (Unix ms), as many as asked (empty when disabled).
    pub next_fires: Vec<u64>,
    /// The most recent history row.
    pub last_run: Option<RunInfo>,
    /// Runs in a row that ended `fail` or `timeout`.
    pub consecutive_fails: u32,
    /// Runs going now.
    pub running: u32,
}

/// Create a trigger. Nothing is created when the spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddTrigger {
    /// The trigger.
    pub spec: TriggerSpec,
}

/// Every trigger on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTriggers;

/// One trigger with its next `fires` fire times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowTrigger {
    /// The trigger's name.
    pub name: String,
    /// How many fire times to return.
    pub fires: u32,
}

/// Enable or disable a trigger (a disabled one stays registered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTriggerEnabled {
    /// The trigger's name.
    pub name: String,
    /// Enable (true) or disable (false).
    pub enabled: bool,
}

/// Run a trigger now, whatever its schedule (its concurrency policy still applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    /// The trigger's name.
    pub name: String,
}

/// A trigger's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerHistory {
    /// The trigger's name.
    pub name: String,
    /// At most this many rows.
    pub limit: Option<u32>,
}

/// A run's output from an offset: what `logs` prints and `logs --follow` polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerLogs {
    /// The trigger's name.
    pub name: String,
    /// The run; the last one that started when absent.
    pub run: Option<u64>,
    /// The first output byte wanted (offset since the run began).
    pub from: u64,
}

/// A run's output, the reply to [`TriggerLogs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerLog {
    /// The run, as it stands now.
    pub run: RunInfo,
    /// The offset of the first byte of `data`.
    pub from: u64,
    /// Bytes asked for that are no longer kept.
    pub skipped: u64,
    /// The output from `from` on, as kept.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Remove a trigger and its history (a running run is stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveTrigger {
    /// The trigger's name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Call, Reply, Request};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        message: T,
    ) {
        let mut bytes = Vec::new();
        ciborium::into_writer(&message, &mut bytes).unwrap();
        let back: T = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, message);
    }

    fn spec() -> TriggerSpec {
        TriggerSpec {
            name: "nightly-backup".into(),
            schedule: "0 3 * * *".into(),
            zone: Some("Europe/Berlin".into()),
            shell: "tar czf /tmp/b.tgz /etc".into(),
            missed: MissedPolicy::RunOnce,
            starting_deadline_ms: Some(3_600_000),
            concurrency: Concurrency::Replace,
            timeout_ms: Some(1_800_000),
            jitter_ms: 300_000,
            keep_runs: 20,
            keep_output: 65_536,
            env: vec![("K".into(), "V".into())],
            cwd: Some("/tmp".into()),
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            id: 7,
            scheduled_ms: 1,
            start_ms: Some(2),
            end_ms: Some(3),
            exit: Some(ExitStatus::Signal(9)),
            outcome: Outcome::Timeout,
            bytes_total: 10,
            bytes_kept: 5,
            manual: false,
            fires: 1,
            note: None,
        }
    }

    #[test]
    fn trigger_messages_round_trip() {
        let info = TriggerInfo {
            spec: spec(),
            zone: "Europe/Berlin".into(),
            enabled: true,
            created_ms: 5,
            next_fires: vec![6, 7],
            last_run: Some(run()),
            consecutive_fails: 2,
            running: 1,
        };
        round_trip(Request::AddTrigger(AddTrigger { spec: spec() }));
        round_trip(Request::TriggerLogs(TriggerLogs {
            name: "x".into(),
            run: Some(3),
            from: 9,
        }));
        round_trip(Reply::Trigger(Box::new(info.clone())));
        round_trip(Reply::Triggers(vec![info]));
        round_trip(Reply::TriggerRuns(vec![run()]));
        round_trip(Reply::TriggerLog(TriggerLog {
            run: run(),
            from: 5,
            skipped: 0,
            data: b"out\n".to_vec(),
        }));
    }

    #[test]
    fn a_trigger_call_takes_only_its_own_reply() {
        assert_eq!(
            RunTrigger::take_reply(Reply::TriggerRun(run())).unwrap(),
            run()
        );
        assert!(RunTrigger::take_reply(Reply::Done).is_err());
        assert_eq!(ExitStatus::Signal(15).shell_code(), 143);
        assert_eq!(Outcome::SkippedOverlap.as_str(), "skipped-overlap");
    }
}
