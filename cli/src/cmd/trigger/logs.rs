//! `cmdop trigger logs` and `run`: a run's output on stdout (raw, as the command printed it),
//! what became of the run on stderr; `--follow` and `run --wait` poll the node until the run
//! ends, asking each time from the first byte not yet printed. The node answers at most 1 MiB
//! at a time, so every reader asks again until a reply brings nothing new.

use super::find::connect_for;
use crate::context::Context;
use crate::output::{bytes, rfc3339};
use anyhow::bail;
use cmdop_client::dial::NodeClient;
use cmdop_proto::{ExitStatus, Outcome, RunInfo, RunTrigger, TriggerLogs};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How often a follower asks for more output.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// `cmdop trigger logs NAME [--run ID] [--follow]`.
pub async fn logs(
    context: &Context,
    name: &str,
    machine: Option<String>,
    run: Option<u64>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let (_, mut client) = connect_for(context, name, machine.as_deref()).await?;
    let result = print_output(&mut client, name, run, follow).await;
    client.close().await;
    eprintln!("{}", summary(&result?));
    Ok(ExitCode::SUCCESS)
}

/// `cmdop trigger run NAME [--wait]`.
pub async fn run(
    context: &Context,
    name: &str,
    machine: Option<String>,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let (target, mut client) = connect_for(context, name, machine.as_deref()).await?;
    let row = match client.call(RunTrigger { name: name.into() }).await {
        Ok(row) => row,
        Err(e) => {
            client.close().await;
            return Err(e.into());
        }
    };
    if row.outcome == Outcome::SkippedOverlap {
        client.close().await;
        bail!("trigger '{name}' on {} is still running and its concurrency is 'forbid', so this run was skipped (recorded in its history)", target.name);
    }
    if !wait {
        client.close().await;
        println!(
            "started run {} of trigger {name} on {} (see 'cmdop trigger logs {name} --run {}')",
            row.id, target.name, row.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    let result = print_output(&mut client, name, Some(row.id), true).await;
    client.close().await;
    let end = result?;
    eprintln!("{}", summary(&end));
    Ok(ExitCode::from(wait_exit_code(&end)))
}

/// `run --wait`'s exit code: the run's, and never 0 unless its outcome is `ok` (a run stopped
/// by its timeout or replaced may well exit 0).
fn wait_exit_code(end: &RunInfo) -> u8 {
    let code = (end.exit.map_or(1, ExitStatus::shell_code) & 0xff) as u8;
    match (end.outcome, code) {
        (Outcome::Ok, code) => code,
        (_, 0) => 1,
        (_, code) => code,
    }
}

/// Prints a run's output from the start; with `follow`, until the run ends. Returns the run.
async fn print_output(
    client: &mut NodeClient,
    name: &str,
    run: Option<u64>,
    follow: bool,
) -> anyhow::Result<RunInfo> {
    let (mut run, mut from, mut told_skipped) = (run, 0, false);
    loop {
        let log = client
            .call(TriggerLogs {
                name: name.into(),
                run,
                from,
            })
            .await?;
        if log.skipped > 0 && !told_skipped {
            eprintln!("[the first {} of output were not kept]", bytes(log.skipped));
            told_skipped = true;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&log.data)?;
        out.flush()?;
        run = Some(log.run.id);
        from = log.from + log.data.len() as u64;
        if !log.data.is_empty() {
            // More may be there already: ask at once.
            continue;
        }
        if !follow || log.run.outcome != Outcome::Running {
            return Ok(log.run);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `run 3 (scheduled 2025-01-01T03:00:00Z): ok, exit 0, 12 bytes`.
fn summary(run: &RunInfo) -> String {
    let exit = match run.exit {
        Some(ExitStatus::Code(code)) => format!(", exit {code}"),
        Some(ExitStatus::Signal(signal)) => format!(", killed by signal {signal}"),
        None => String::new(),
    };
    let kept = if run.bytes_kept < run.bytes_total {
        format!(" ({} kept)", bytes(run.bytes_kept))
    } else {
        String::new()
    };
    let note = run
        .note
        .as_ref()
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    format!(
        "run {} ({} {}): {}{exit}, {} of output{kept}{note}",
        run.id,
        if run.manual { "started" } else { "scheduled" },
        rfc3339(run.scheduled_ms),
        run.outcome.as_str(),
        bytes(run.bytes_total),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(outcome: Outcome, exit: Option<ExitStatus>) -> RunInfo {
        RunInfo {
            id: 1,
            scheduled_ms: 0,
            start_ms: Some(0),
            end_ms: Some(1),
            exit,
            outcome,
            bytes_total: 0,
            bytes_kept: 0,
            manual: true,
            fires: 1,
            note: None,
        }
    }

    #[test]
    fn wait_exits_non_zero_unless_the_run_was_ok() {
        let code = |outcome, exit| wait_exit_code(&ended(outcome, exit));
        assert_eq!(code(Outcome::Ok, Some(ExitStatus::Code(0))), 0);
        assert_eq!(code(Outcome::Fail, Some(ExitStatus::Code(3))), 3);
        assert_eq!(code(Outcome::Timeout, Some(ExitStatus::Code(0))), 1);
        assert_eq!(code(Outcome::Replaced, Some(ExitStatus::Code(0))), 1);
        assert_eq!(code(Outcome::Timeout, Some(ExitStatus::Signal(15))), 143);
        assert_eq!(
            code(Outcome::Fail, Some(ExitStatus::Code(256))),
            1,
            "256 is 0 mod 256"
        );
        assert_eq!(code(Outcome::Fail, None), 1);
    }
}
