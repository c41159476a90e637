//! `cmdop trigger show`, `history` and `validate`: a trigger's spec and next fires, its runs,
//! and checking a pattern locally.

use super::find::connect_for;
use super::print::{print_history, print_show, run_json, trigger_json};
use crate::context::Context;
use crate::output::{print_json, rfc3339};
use cmdop_proto::schedule::Schedule;
use cmdop_proto::{ShowTrigger, TriggerHistory};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// `cmdop trigger show NAME`.
pub async fn show(
    context: &Context,
    name: &str,
    machine: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (target, mut client) = connect_for(context, name, machine.as_deref()).await?;
    let reply = client
        .call(ShowTrigger {
            name: name.into(),
            fires: 5,
        })
        .await;
    client.close().await;
    let info = reply?;
    if json {
        print_json(&trigger_json(&target.name, &info))?;
    } else {
        print_show(&target.name, &info);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cmdop trigger history NAME`.
pub async fn history(
    context: &Context,
    name: &str,
    machine: Option<String>,
    limit: Option<u32>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (_, mut client) = connect_for(context, name, machine.as_deref()).await?;
    let reply = client
        .call(TriggerHistory {
            name: name.into(),
            limit,
        })
        .await;
    client.close().await;
    let runs = reply?;
    if json {
        let runs: Vec<_> = runs.iter().map(run_json).collect();
        print_json(&serde_json::json!({ "trigger": name, "runs": runs }))?;
    } else if runs.is_empty() {
        println!("trigger '{name}' has no runs yet");
    } else {
        print_history(&runs);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cmdop trigger validate CRON`: parses here and prints the next fire times.
pub fn validate(pattern: &str, tz: Option<&str>, count: usize) -> anyhow::Result<ExitCode> {
    let schedule = Schedule::parse(pattern, tz)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    println!(
        "'{}' in {} is valid; next fires:",
        schedule.pattern(),
        schedule.zone_name()
    );
    let fires = schedule.next_n(now, count);
    if fires.is_empty() {
        println!("  none: the pattern never matches");
    }
    for fire in fires {
        println!("  {}  ({})", schedule.local_time(fire), rfc3339(fire));
    }
    Ok(ExitCode::SUCCESS)
}
