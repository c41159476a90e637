//! How triggers are printed: tables for people, and the stable JSON (documented in README.md).
//! Times are RFC 3339 in UTC in JSON; fire times for people are shown in the trigger's zone
//! and in UTC.

use crate::output::{ago, bytes, print_table, rfc3339};
use cmdop_proto::schedule::Schedule;
use cmdop_proto::{Concurrency, ExitStatus, MissedPolicy, RunInfo, TriggerInfo};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `in 42s`, `in 5m`, `in 3h`, `in 2d`.
fn from_now(unix_ms: u64) -> String {
    let secs = unix_ms.saturating_sub(now_ms()) / 1000;
    match secs {
        0..=59 => format!("in {secs}s"),
        60..=3599 => format!("in {}m", secs / 60),
        3600..=86_399 => format!("in {}h", secs / 3600),
        _ => format!("in {}d", secs / 86_400),
    }
}

/// `enabled`, `disabled` or `running`.
pub fn status(info: &TriggerInfo) -> &'static str {
    match (info.running > 0, info.enabled) {
        (true, _) => "running",
        (false, true) => "enabled",
        (false, false) => "disabled",
    }
}

fn next_fire(info: &TriggerInfo) -> String {
    info.next_fires
        .first()
        .map_or_else(|| "-".into(), |&f| from_now(f))
}

fn exit_text(exit: Option<ExitStatus>) -> String {
    match exit {
        Some(ExitStatus::Code(code)) => code.to_string(),
        Some(ExitStatus::Signal(signal)) => format!("signal {signal}"),
        None => "-".into(),
    }
}

/// The next fire times, in the trigger's zone and in UTC, one a line.
pub fn print_fires(info: &TriggerInfo) {
    if info.next_fires.is_empty() {
        println!(
            "next fires: none ({})",
            if info.enabled {
                "the pattern never matches again"
            } else {
                "disabled"
            }
        );
        return;
    }
    println!("next fires:");
    let schedule = Schedule::parse(&info.spec.schedule, Some(&info.zone)).ok();
    for &fire in &info.next_fires {
        let local = schedule
            .as_ref()
            .map_or_else(String::new, |s| s.local_time(fire));
        println!("  {local}  ({})", rfc3339(fire));
    }
}

/// `cmdop trigger list`.
pub fn print_list(triggers: &[(String, TriggerInfo)]) {
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|(host, t)| {
            vec![
                host.clone(),
                t.spec.name.clone(),
                t.spec.schedule.clone(),
                t.zone.clone(),
                status(t).into(),
                next_fire(t),
                t.spec.shell.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "HOST",
            "NAME",
            "SCHEDULE",
            "ZONE",
            "STATUS",
            "NEXT FIRE",
            "COMMAND",
        ],
        &rows,
    );
}

/// `cmdop trigger health`.
pub fn print_health(triggers: &[(String, TriggerInfo)]) {
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|(host, t)| {
            let last = t.last_run.as_ref();
            let when = last.map_or_else(
                || "never".into(),
                |r| ago(r.start_ms.or(r.end_ms).unwrap_or(r.scheduled_ms)),
            );
            let outcome = last.map_or("-", |r| r.outcome.as_str());
            vec![
                host.clone(),
                t.spec.name.clone(),
                status(t).into(),
                when,
                outcome.into(),
                next_fire(t),
                t.consecutive_fails.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "HOST",
            "NAME",
            "STATUS",
            "LAST RUN",
            "OUTCOME",
            "NEXT FIRE",
            "FAILS",
        ],
        &rows,
    );
}

/// `cmdop trigger history`.
pub fn print_history(runs: &[RunInfo]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let duration = match (r.start_ms, r.end_ms) {
                (Some(s), Some(e)) => format!("{:.1}s", e.saturating_sub(s) as f64 / 1000.0),
                (Some(_), None) => "…".into(),
                _ => "-".into(),
            };
            let output = if r.start_ms.is_none() {
                "-".into()
            } else if r.bytes_kept < r.bytes_total {
                format!("{} ({} kept)", bytes(r.bytes_total), bytes(r.bytes_kept))
            } else {
                bytes(r.bytes_total)
            };
            let kind = if r.manual { "manual" } else { "schedule" };
            vec![
                r.id.to_string(),
                rfc3339(r.scheduled_ms),
                kind.into(),
                r.outcome.as_str().into(),
                exit_text(r.exit),
                duration,
                output,
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "SCHEDULED",
            "BY",
            "OUTCOME",
            "EXIT",
            "TOOK",
            "OUTPUT",
            "NOTE",
        ],
        &rows,
    );
}

/// `cmdop trigger show`.
pub fn print_show(host: &str, t: &TriggerInfo) {
    let spec = &t.spec;
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".into(),
            |ms| {
                cmdop_proto::units::HumanDuration(std::time::Duration::from_millis(ms)).to_string()
            },
        )
    };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let rows = [
        ("name", spec.name.clone()),
        ("host", host.to_string()),
        ("schedule", spec.schedule.clone()),
        ("zone", t.zone.clone()),
        ("command", spec.shell.clone()),
        ("status", status(t).into()),
        ("missed", missed_text(spec.missed).into()),
        ("deadline", ms(spec.starting_deadline_ms)),
        ("concurrency", concurrency_text(spec.concurrency).into()),
        ("timeout", ms(spec.timeout_ms)),
        ("jitter", ms(Some(spec.jitter_ms).filter(|&j| j > 0))),
        (
            "keep",
            format!("{} runs x {}", spec.keep_runs, bytes(spec.keep_output)),
        ),
        (
            "env",
            if env.is_empty() {
                "-".into()
            } else {
                env.join(" ")
            },
        ),
        ("cwd", spec.cwd.clone().unwrap_or_else(|| "(home)".into())),
        ("created", rfc3339(t.created_ms)),
        ("fails", t.consecutive_fails.to_string()),
    ];
    for (key, value) in rows {
        println!("{:<12} {value}", format!("{key}:"));
    }
    print_fires(t);
}

fn missed_text(missed: MissedPolicy) -> &'static str {
    match missed {
        MissedPolicy::Skip => "skip",
        MissedPolicy::RunOnce => "run-once",
    }
}

fn concurrency_text(concurrency: Concurrency) -> &'static str {
    match concurrency {
        Concurrency::Forbid => "forbid",
        Concurrency::Allow => "allow",
        Concurrency::Replace => "replace",
    }
}

/// The stable JSON form of a run.
pub fn run_json(r: &RunInfo) -> serde_json::Value {
    let (exit_code, signal) = match r.exit {
        Some(ExitStatus::Code(c)) => (Some(c), None),
        Some(ExitStatus::Signal(s)) => (None, Some(s)),
        None => (None, None),
    };
    json!({
        "id": r.id,
        "scheduled": rfc3339(r.scheduled_ms),
        "start": r.start_ms.map(rfc3339),
        "end": r.end_ms.map(rfc3339),
        "outcome": r.outcome.as_str(),
        "exit_code": exit_code,
        "signal": signal,
        "bytes_total": r.bytes_total,
        "bytes_kept": r.bytes_kept,
        "manual": r.manual,
        "fires": r.fires,
        "note": r.note,
    })
}

/// The stable JSON form of a trigger.
pub fn trigger_json(host: &str, t: &TriggerInfo) -> serde_json::Value {
    let spec = &t.spec;
    let env: serde_json::Map<String, serde_json::Value> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "host": host,
        "name": spec.name,
        "schedule": spec.schedule,
        "zone": t.zone,
        "command": spec.shell,
        "enabled": t.enabled,
        "status": status(t),
        "missed": missed_text(spec.missed),
        "starting_deadline_ms": spec.starting_deadline_ms,
        "concurrency": concurrency_text(spec.concurrency),
        "timeout_ms": spec.timeout_ms,
        "jitter_ms": spec.jitter_ms,
        "keep_runs": spec.keep_runs,
        "keep_output": spec.keep_output,
        "env": env,
        "cwd": spec.cwd,
        "created": rfc3339(t.created_ms),
        "next_fires": t.next_fires.iter().map(|&f| rfc3339(f)).collect::<Vec<_>>(),
        "last_run": t.last_run.as_ref().map(run_json),
        "consecutive_fails": t.consecutive_fails,
        "running": t.running,
    })
}
