//! `cmdop trigger list` and `health`: every host's triggers, queried in parallel; unreachable
//! hosts are reported, not fatal, unless one was asked for with `--machine`.

use super::find::{list_triggers, targets};
use super::print::{print_health, print_list, trigger_json};
use crate::context::{Context, LOCAL_HOST};
use crate::output::print_json;
use anyhow::bail;
use cmdop_client::dial::ClientError;
use cmdop_proto::TriggerInfo;
use std::process::ExitCode;

/// Every trigger found, by host, and the hosts that could not be asked.
struct Listing {
    triggers: Vec<(String, TriggerInfo)>,
    unreachable: Vec<(String, String)>,
}

async fn collect(context: &Context, machine: Option<&str>) -> anyhow::Result<Listing> {
    let mut listing = Listing {
        triggers: Vec::new(),
        unreachable: Vec::new(),
    };
    for (target, result) in list_triggers(context, targets(context, machine)?).await {
        match result {
            Ok(triggers) => listing
                .triggers
                .extend(triggers.into_iter().map(|t| (target.name.clone(), t))),
            // No local node running: nothing local to list.
            Err(ClientError::Offline { timeout, .. })
                if timeout.is_zero() && machine.is_none() && target.name == LOCAL_HOST => {}
            Err(e) => listing.unreachable.push((target.name, e.to_string())),
        }
    }
    if let (Some(machine), Some((_, error))) = (machine, listing.unreachable.first()) {
        bail!("cannot list triggers on {machine}: {error}");
    }
    Ok(listing)
}

fn report_unreachable(listing: &Listing) {
    for (host, error) in &listing.unreachable {
        eprintln!("cmdop: {host} unreachable: {error}");
    }
}

/// `cmdop trigger list`.
pub async fn list(
    context: &Context,
    machine: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let listing = collect(context, machine.as_deref()).await?;
    if json {
        let triggers: Vec<_> = (listing.triggers.iter())
            .map(|(host, t)| trigger_json(host, t))
            .collect();
        let unreachable: Vec<_> = (listing.unreachable.iter())
            .map(|(host, error)| serde_json::json!({"host": host, "error": error}))
            .collect();
        print_json(&serde_json::json!({"triggers": triggers, "unreachable": unreachable}))?;
        return Ok(ExitCode::SUCCESS);
    }
    if listing.triggers.is_empty() {
        println!("no triggers (add one with 'cmdop trigger add --name NAME --schedule CRON --machine HOST --shell CMD')");
    } else {
        print_list(&listing.triggers);
    }
    report_unreachable(&listing);
    Ok(ExitCode::SUCCESS)
}

/// `cmdop trigger health [NAME]`.
pub async fn health(
    context: &Context,
    name: Option<String>,
    machine: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut listing = collect(context, machine.as_deref()).await?;
    if let Some(name) = &name {
        listing.triggers.retain(|(_, t)| &t.spec.name == name);
        if listing.triggers.is_empty() {
            report_unreachable(&listing);
            bail!("no trigger named '{name}' (list them with 'cmdop trigger list')");
        }
    }
    if listing.triggers.is_empty() {
        println!("no triggers");
    } else {
        print_health(&listing.triggers);
    }
    report_unreachable(&listing);
    Ok(ExitCode::SUCCESS)
}
