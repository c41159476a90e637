//! `cmdop trigger enable`, `disable` and `remove`.

use super::find::connect_for;
use super::Target;
use crate::context::Context;
use cmdop_proto::{RemoveTrigger, SetTriggerEnabled};
use std::process::ExitCode;

/// Enables or disables a trigger.
pub async fn set_enabled(context: &Context, t: Target, enabled: bool) -> anyhow::Result<ExitCode> {
    let (target, mut client) = connect_for(context, &t.name, t.machine.as_deref()).await?;
    let reply = client
        .call(SetTriggerEnabled {
            name: t.name.clone(),
            enabled,
        })
        .await;
    client.close().await;
    let info = reply?;
    if enabled {
        println!("enabled trigger {} on {}", t.name, target.name);
        super::print::print_fires(&info);
    } else {
        println!(
            "disabled trigger {} on {} (it stays registered; 'cmdop trigger enable {}' resumes it)",
            t.name, target.name, t.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes a trigger and its history.
pub async fn remove(context: &Context, t: Target) -> anyhow::Result<ExitCode> {
    let (target, mut client) = connect_for(context, &t.name, t.machine.as_deref()).await?;
    let reply = client
        .call(RemoveTrigger {
            name: t.name.clone(),
        })
        .await;
    client.close().await;
    let info = reply?;
    let killed = if info.running > 0 {
        format!("; {} run(s) in progress were killed", info.running)
    } else {
        String::new()
    };
    println!("removed trigger {} from {}{killed}", t.name, target.name);
    Ok(ExitCode::SUCCESS)
}
