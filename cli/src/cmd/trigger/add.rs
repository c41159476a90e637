//! `cmdop trigger add`: checks the schedule and zone here first (so a typo is named before
//! anything is sent), then asks the node, which checks again and creates nothing on refusal.

use super::{parse_env, Missed, Overlap};
use crate::context::Context;
use cmdop_proto::schedule::Schedule;
use cmdop_proto::units::{ByteSize, HumanDuration};
use cmdop_proto::{AddTrigger, Concurrency, MissedPolicy, TriggerSpec};
use std::process::ExitCode;

/// The arguments of `cmdop trigger add`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A name, unique on the host (letters, digits, '.', '_', '-').
    #[arg(long)]
    name: String,
    /// A 5-field cron pattern: minute hour day-of-month month day-of-week, e.g. "0 3 * * *".
    #[arg(long, value_name = "CRON")]
    schedule: String,
    /// The host whose node runs it.
    #[arg(long, value_name = "HOST")]
    machine: String,
    /// The command, run with 'sh -c' as the node's user.
    #[arg(long, value_name = "CMD")]
    shell: String,
    /// IANA time zone of the schedule, e.g. Europe/Berlin [default: the node's local zone].
    #[arg(long, value_name = "TZ")]
    tz: Option<String>,
    /// Fires that passed while the node was down: record one 'missed' row, or run once at start.
    #[arg(long, value_enum, default_value = "skip")]
    missed: Missed,
    /// With --missed run-once: how late the catch-up run may still start [default: no limit].
    #[arg(long, value_name = "DURATION")]
    starting_deadline: Option<HumanDuration>,
    /// A fire while the previous run is still going.
    #[arg(long, value_enum, default_value = "forbid")]
    concurrency: Overlap,
    /// Stop a run still going after this long (SIGTERM to its process group, SIGKILL 10 s later).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<HumanDuration>,
    /// Start each fire up to this much later (spread over a fleet; the same delay for the same fire).
    #[arg(long, value_name = "DURATION")]
    jitter: Option<HumanDuration>,
    /// Runs kept in history (missed and skipped fires count as runs).
    #[arg(long, value_name = "N", default_value_t = 20)]
    keep_runs: u32,
    /// Output kept per run (the last bytes; the total is still counted), e.g. 64KiB, 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "64KiB")]
    keep_output: ByteSize,
    /// An environment variable for the command (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory (absolute) [default: the node user's home].
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
}

fn millis(duration: Option<HumanDuration>) -> Option<u64> {
    duration.map(|d| d.0.as_millis() as u64)
}

/// Adds the trigger and prints its next fire times.
pub async fn add(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let target = context.target(&args.machine)?;
    if let Some(tz) = &args.tz {
        Schedule::parse(&args.schedule, Some(tz))
            .map_err(|e| anyhow::anyhow!("cannot add trigger '{}': {e}", args.name))?;
    }
    let spec = TriggerSpec {
        name: args.name,
        schedule: args.schedule,
        zone: args.tz,
        shell: args.shell,
        missed: match args.missed {
            Missed::Skip => MissedPolicy::Skip,
            Missed::RunOnce => MissedPolicy::RunOnce,
        },
        starting_deadline_ms: millis(args.starting_deadline),
        concurrency: match args.concurrency {
            Overlap::Forbid => Concurrency::Forbid,
            Overlap::Allow => Concurrency::Allow,
            Overlap::Replace => Concurrency::Replace,
        },
        timeout_ms: millis(args.timeout),
        jitter_ms: millis(args.jitter).unwrap_or(0),
        keep_runs: args.keep_runs,
        keep_output: args.keep_output.0,
        env: args.env,
        cwd: args.cwd,
    };
    let mut client = context
        .connect(&target)
        .await
        .map_err(|e| e.context("Cannot add trigger"))?;
    let reply = client.call(AddTrigger { spec }).await;
    client.close().await;
    let info = reply?;
    println!(
        "added trigger {} on {} ({} in {})",
        info.spec.name, target.name, info.spec.schedule, info.zone
    );
    super::print::print_fires(&info);
    Ok(ExitCode::SUCCESS)
}
