//! `cmdop session create`, `send` and `destroy`: making sessions, typing into them, and ending
//! them (one, or every idle one).

use super::{no_local_node, targets};
use crate::context::Context;
use crate::output::label;
use crate::resolve::find_session;
use anyhow::anyhow;
use cmdop_client::dial::ClientError;
use cmdop_proto::units::HumanDuration;
use cmdop_proto::{CreateSession, Destroy, DestroyIdle, SendInput};
use std::process::ExitCode;

/// Creates a session on `host` without attaching to it.
pub async fn create(
    context: &Context,
    host: &str,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let target = context.target(host)?;
    let mut client = context
        .connect(&target)
        .await
        .map_err(|e| e.context("Cannot create session"))?;
    let create = CreateSession {
        name,
        size: crate::terminal::window_size().unwrap_or_default(),
        ..CreateSession::default()
    };
    let session = client.call(create).await?;
    client.close().await;
    println!(
        "created session {}{} on {}",
        session.id,
        label(&session),
        target.name
    );
    Ok(ExitCode::SUCCESS)
}

/// Types `text` (with escapes) into the session `query` names.
pub async fn send(
    context: &Context,
    query: &str,
    text: &str,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let data = crate::escapes::unescape(text).map_err(|e| anyhow!("cannot send: {e}"))?;
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let session = found.session.id;
    client.call(SendInput { session, data }).await?;
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Destroys the session `query` names.
pub async fn destroy(
    context: &Context,
    query: &str,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let session = found.session.id;
    client.call(Destroy { session }).await?;
    client.close().await;
    println!(
        "destroyed session {}{} on {}",
        found.session.id,
        label(&found.session),
        found.target.name
    );
    Ok(ExitCode::SUCCESS)
}

/// Destroys every session unattached and idle for longer than `idle`, on `host` or on every
/// known host; unreachable hosts are reported and skipped.
pub async fn destroy_idle(
    context: &Context,
    idle: HumanDuration,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let idle_ms = u64::try_from(idle.0.as_millis()).unwrap_or(u64::MAX);
    let timeout = context.config.client.connect_timeout.0;
    let mut destroyed = 0;
    for target in targets(context, host.as_deref())? {
        let mut client = match context.probe(&target, timeout).await {
            Ok(client) => client,
            Err(e) if no_local_node(&e, &target.name, host.is_some()) => continue,
            Err(e) => {
                eprintln!("cmdop: {} unreachable: {e}", target.name);
                continue;
            }
        };
        match client.call(DestroyIdle { idle_ms }).await {
            Ok(ids) => {
                for id in &ids {
                    println!("destroyed session {id} on {}", target.name);
                }
                destroyed += ids.len();
            }
            Err(ClientError::Rejected(e)) => eprintln!("cmdop: {}: {e}", target.name),
            Err(e) => return Err(e.into()),
        }
        client.close().await;
    }
    if destroyed == 0 {
        println!("no session has been idle for more than {idle}");
    }
    Ok(ExitCode::SUCCESS)
}
