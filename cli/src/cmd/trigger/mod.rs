//! `cmdop trigger …`: scheduled commands on a node. This module holds the arguments; each group
//! of commands has its own file: [`add`], [`list`] (list, health), [`show`] (show, history,
//! validate), [`logs`] (logs, run) and [`manage`] (enable, disable, remove). [`find`] resolves
//! a trigger name across hosts and [`print`] formats tables and the stable JSON.

mod add;
mod find;
mod list;
mod logs;
mod manage;
mod print;
mod show;

use crate::context::Context;
use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;

/// The `cmdop trigger` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a trigger: a command a host's node runs on a cron schedule, with no client attached.
    ///
    /// The schedule is the standard 5-field cron form (minute hour day-of-month month
    /// day-of-week) with the Vixie/ISC daylight-saving rules, in --tz (default: the node's
    /// local zone). Runs use the node's user, `sh -c`, stdout and stderr merged. Each run is
    /// kept in history with its exit code and the last --keep-output bytes of its output.
    #[command(
        after_help = "Example:\n  cmdop trigger add --name nightly-backup --schedule \"0 3 * * *\" --machine vps-audi \\\n      --shell \"tar czf /var/backups/etc.tgz /etc\" --tz Europe/Berlin --timeout 30m"
    )]
    Add(add::Args),
    /// List triggers on every known host (queried in parallel), or on one.
    List {
        /// Only this host.
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
        /// Machine-readable output (format documented in README.md).
        #[arg(long)]
        json: bool,
    },
    /// Show a trigger's spec and its next 5 fire times (in its zone and in UTC).
    Show {
        /// The trigger's name.
        name: String,
        /// The host (needed only when several hosts have a trigger of that name).
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Enable a trigger: it fires again from its next fire time (the disabled time is not replayed).
    Enable(Target),
    /// Disable a trigger: it stays registered with its history, and stops firing.
    Disable(Target),
    /// Run a trigger now, whatever its schedule (its concurrency policy still applies).
    Run {
        /// The trigger's name.
        name: String,
        /// Print the run's output as it comes and exit with the run's exit code.
        #[arg(long)]
        wait: bool,
        /// The host (needed only when several hosts have a trigger of that name).
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
    },
    /// Health of triggers: NAME STATUS LAST RUN OUTCOME NEXT FIRE FAILS (consecutive).
    Health {
        /// Only this trigger.
        name: Option<String>,
        /// Only this host.
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
    },
    /// A trigger's runs, newest first, including missed and skipped fires.
    History {
        /// The trigger's name.
        name: String,
        /// At most N rows.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// The host (needed only when several hosts have a trigger of that name).
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's output (the last run by default); the exit code and byte counts go to stderr.
    Logs {
        /// The trigger's name.
        name: String,
        /// This run (an id from 'cmdop trigger history').
        #[arg(long, value_name = "ID", conflicts_with = "last")]
        run: Option<u64>,
        /// The last run that started (the default).
        #[arg(long)]
        last: bool,
        /// Keep printing output until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// The host (needed only when several hosts have a trigger of that name).
        #[arg(long, value_name = "HOST")]
        machine: Option<String>,
    },
    /// Remove a trigger and its history (a run in progress is killed).
    Remove(Target),
    /// Check a cron pattern and print its next fire times (nothing is sent to any node).
    Validate {
        /// The pattern, e.g. "0 3 * * *".
        schedule: String,
        /// IANA time zone [default: this machine's].
        #[arg(long, value_name = "TZ")]
        tz: Option<String>,
        /// How many fire times to print.
        #[arg(long, value_name = "N", default_value_t = 5)]
        count: usize,
    },
}

/// A trigger named on the command line.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The trigger's name.
    pub name: String,
    /// The host (needed only when several hosts have a trigger of that name).
    #[arg(long, value_name = "HOST")]
    pub machine: Option<String>,
}

/// `--missed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Missed {
    /// Record one 'missed' row for fires that passed while the node was down.
    Skip,
    /// Run once at start, if the latest missed fire is within --starting-deadline.
    RunOnce,
}

/// `--concurrency`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Overlap {
    /// Skip a fire while a run is going (recorded as 'skipped-overlap').
    Forbid,
    /// Run both.
    Allow,
    /// Stop the running one (SIGTERM, SIGKILL after 10 s) and start anew.
    Replace,
}

/// Parses `KEY=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

/// Runs a `cmdop trigger` subcommand.
pub async fn run(command: Command, context: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add(args) => add::add(context, args).await,
        Command::List { machine, json } => list::list(context, machine, json).await,
        Command::Show {
            name,
            machine,
            json,
        } => show::show(context, &name, machine, json).await,
        Command::Enable(t) => manage::set_enabled(context, t, true).await,
        Command::Disable(t) => manage::set_enabled(context, t, false).await,
        Command::Run {
            name,
            wait,
            machine,
        } => logs::run(context, &name, machine, wait).await,
        Command::Health { name, machine } => list::health(context, name, machine).await,
        Command::History {
            name,
            limit,
            machine,
            json,
        } => show::history(context, &name, machine, limit, json).await,
        Command::Logs {
            name,
            run,
            follow,
            machine,
            ..
        } => logs::logs(context, &name, machine, run, follow).await,
        Command::Remove(t) => manage::remove(context, t).await,
        Command::Validate {
            schedule,
            tz,
            count,
        } => show::validate(&schedule, tz.as_deref(), count),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("trigger").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn add_takes_the_issue_s_flags() {
        let command = parse(&[
            "add",
            "--name",
            "nightly-backup",
            "--schedule",
            "0 3 * * *",
            "--machine",
            "vps-audi",
            "--shell",
            "backup.sh",
            "--tz",
            "Europe/Berlin",
            "--missed",
            "run-once",
            "--starting-deadline",
            "1h",
            "--concurrency",
            "replace",
            "--timeout",
            "30m",
            "--keep-runs",
            "5",
            "--keep-output",
            "1MiB",
            "--env",
            "A=b=c",
            "--env",
            "B=",
            "--cwd",
            "/srv",
        ])
        .unwrap();
        let text = format!("{command:?}");
        for part in [
            "RunOnce",
            "Replace",
            "1048576",
            "\"A\", \"b=c\"",
            "\"B\", \"\"",
            "/srv",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let base = [
            "add",
            "--name",
            "n",
            "--schedule",
            "* * * * *",
            "--shell",
            "true",
        ];
        // --machine is required.
        assert!(parse(&base).is_err());
        let with = |extra: &[&str]| {
            let mut args: Vec<&str> = base.to_vec();
            args.extend(["--machine", "h"]);
            args.extend_from_slice(extra);
            parse(&args)
        };
        assert!(with(&[]).is_ok());
        assert!(with(&["--concurrency", "sometimes"]).is_err());
        assert!(with(&["--env", "NOVALUE"]).is_err());
        assert!(with(&["--timeout", "soon"]).is_err());
        assert!(parse(&["logs", "x", "--run", "3", "--last"]).is_err());
    }
}
