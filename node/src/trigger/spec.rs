//! Checking a [`TriggerSpec`] before anything is created: the name, the schedule (the field at
//! fault is named), the zone, the command, the limits, the environment and the directory.
//! Each refusal is one sentence with what to change.

use cmdop_proto::schedule::Schedule;
use cmdop_proto::{ErrorKind, ErrorReply, TriggerSpec};

/// Longest trigger name (it is also a file name).
const MAX_NAME: usize = 64;

/// Most history rows a trigger may keep.
pub const MAX_KEEP_RUNS: u32 = 1000;

/// Longest jitter.
pub const MAX_JITTER_MS: u64 = 24 * 3600 * 1000;

/// Most output bytes a run may keep.
pub const MAX_KEEP_OUTPUT: u64 = 16 * 1024 * 1024;

/// Most output bytes a trigger may keep over its history (keep-runs x keep-output): all of it
/// is held in the node's memory and on its disk.
pub const MAX_KEPT_PER_TRIGGER: u64 = 256 * 1024 * 1024;

fn bad(message: String) -> ErrorReply {
    ErrorReply {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// Checks `spec` and returns its parsed schedule.
pub fn check(spec: &TriggerSpec) -> Result<Schedule, ErrorReply> {
    check_name(&spec.name)?;
    let schedule = Schedule::parse(&spec.schedule, spec.zone.as_deref())
        .map_err(|e| bad(format!("cannot add trigger '{}': {e}", spec.name)))?;
    if spec.shell.trim().is_empty() {
        return Err(bad(format!(
            "cannot add trigger '{}': the command is empty (give one with --shell)",
            spec.name
        )));
    }
    if !(1..=MAX_KEEP_RUNS).contains(&spec.keep_runs) {
        return Err(bad(format!(
            "cannot add trigger '{}': --keep-runs must be between 1 and {MAX_KEEP_RUNS}",
            spec.name
        )));
    }
    if spec.keep_output > MAX_KEEP_OUTPUT {
        return Err(bad(format!(
            "cannot add trigger '{}': --keep-output may be at most 16MiB",
            spec.name
        )));
    }
    let kept = u64::from(spec.keep_runs).saturating_mul(spec.keep_output);
    if kept > MAX_KEPT_PER_TRIGGER {
        return Err(bad(format!(
            "cannot add trigger '{}': --keep-runs {} x --keep-output {} bytes is {} MiB, more than the 256 MiB a trigger may keep (lower one of them)",
            spec.name,
            spec.keep_runs,
            spec.keep_output,
            kept.div_ceil(1024 * 1024)
        )));
    }
    if spec.timeout_ms == Some(0) {
        return Err(bad(format!(
            "cannot add trigger '{}': --timeout must be longer than zero",
            spec.name
        )));
    }
    if spec.jitter_ms > MAX_JITTER_MS {
        return Err(bad(format!(
            "cannot add trigger '{}': --jitter may be at most 24h",
            spec.name
        )));
    }
    check_env_and_cwd(spec)?;
    Ok(schedule)
}

/// A name is a file name too: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), ErrorReply> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(bad(format!(
            "'{name}' is not a valid trigger name (1 to {MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.')"
        )));
    }
    Ok(())
}

fn check_env_and_cwd(spec: &TriggerSpec) -> Result<(), ErrorReply> {
    for (key, _) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(bad(format!(
                "cannot add trigger '{}': '{key}' is not a valid environment variable name (use --env KEY=VALUE)",
                spec.name
            )));
        }
    }
    if let Some(cwd) = &spec.cwd {
        if !cwd.starts_with('/') {
            return Err(bad(format!(
                "cannot add trigger '{}': --cwd '{cwd}' must be an absolute path",
                spec.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::trigger::tests_support::spec;

    #[test]
    fn good_specs_pass_and_bad_ones_name_the_problem() {
        assert!(check(&spec("ok", "0 3 * * *")).is_ok());
        let cases = [
            (spec("x", "61 * * * *"), "minute '61'"),
            (spec("../etc", "* * * * *"), "not a valid trigger name"),
            (spec(".hidden", "* * * * *"), "not a valid trigger name"),
            (
                TriggerSpec {
                    zone: Some("Nowhere/City".into()),
                    ..spec("x", "* * * * *")
                },
                "unknown time zone 'Nowhere/City'",
            ),
            (
                TriggerSpec {
                    shell: " ".into(),
                    ..spec("x", "* * * * *")
                },
                "command is empty",
            ),
            (
                TriggerSpec {
                    keep_runs: 0,
                    ..spec("x", "* * * * *")
                },
                "--keep-runs",
            ),
            (
                TriggerSpec {
                    keep_runs: 1000,
                    keep_output: 16 * 1024 * 1024,
                    ..spec("x", "* * * * *")
                },
                "more than the 256 MiB a trigger may keep",
            ),
            (
                TriggerSpec {
                    env: vec![("A=B".into(), "c".into())],
                    ..spec("x", "* * * * *")
                },
                "environment variable",
            ),
            (
                TriggerSpec {
                    cwd: Some("relative".into()),
                    ..spec("x", "* * * * *")
                },
                "absolute path",
            ),
        ];
        for (spec, expected) in cases {
            let error = check(&spec).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest);
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }
}
