//! Finding a trigger by name: on the host given with `--machine`, or on every known host in
//! parallel, where the name must be unique.

use crate::context::Context;
use crate::resolve::probe_hosts;
use anyhow::{anyhow, bail};
use cmdop_client::dial::{ClientError, NodeClient, Target};
use cmdop_proto::{ListTriggers, TriggerInfo};

/// Each host's triggers, or why it could not be listed, in the order of `targets`.
pub async fn list_triggers(
    context: &Context,
    targets: Vec<Target>,
) -> Vec<(Target, Result<Vec<TriggerInfo>, ClientError>)> {
    let timeout = context.config.client.connect_timeout.0;
    let list = async |mut client: NodeClient| {
        let reply = client.call(ListTriggers).await;
        client.close().await;
        reply
    };
    probe_hosts(context, targets, timeout, list).await
}

/// The hosts a command covers: `machine` if given, else every known host.
pub fn targets(context: &Context, machine: Option<&str>) -> anyhow::Result<Vec<Target>> {
    Ok(match machine {
        Some(name) => vec![context.target(name)?],
        None => context.targets(),
    })
}

/// The host that has the trigger `name`: `machine` when given (the node says if it has no
/// such trigger), else the one host among the reachable ones that has it.
pub async fn find_trigger(
    context: &Context,
    name: &str,
    machine: Option<&str>,
) -> anyhow::Result<Target> {
    if let Some(machine) = machine {
        return context.target(machine);
    }
    let listings = list_triggers(context, context.targets()).await;
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    for (target, result) in listings {
        match result {
            Ok(triggers) if triggers.iter().any(|t| t.spec.name == name) => found.push(target),
            Ok(_) => {}
            Err(ClientError::Offline { timeout, .. })
                if timeout.is_zero() && target.name == crate::context::LOCAL_HOST => {}
            Err(e) => unreachable.push(format!("{}: {e}", target.name)),
        }
    }
    if found.len() > 1 {
        let hosts: Vec<String> = found.into_iter().map(|t| t.name).collect();
        bail!(
            "trigger '{name}' exists on several hosts ({}); choose one with --machine",
            hosts.join(", ")
        );
    }
    found.pop().ok_or_else(|| {
        if unreachable.is_empty() {
            anyhow!(
                "no trigger named '{name}' on any known host (list them with 'cmdop trigger list')"
            )
        } else {
            anyhow!(
                "no trigger named '{name}' on the reachable hosts; unreachable: {}",
                unreachable.join("; ")
            )
        }
    })
}

/// Connects to the host of trigger `name`.
pub async fn connect_for(
    context: &Context,
    name: &str,
    machine: Option<&str>,
) -> anyhow::Result<(Target, NodeClient)> {
    let target = find_trigger(context, name, machine).await?;
    let client = context.connect(&target).await?;
    Ok((target, client))
}
