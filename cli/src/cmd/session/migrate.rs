//! `cmdop session migrate`: moving a session's scrollback and metadata to another host
//! (processes do not move). The source node dials the target itself, with a one-time ticket
//! this client fetches from the target; a target reached through a meeting node cannot be
//! dialed by the source, so this client carries the snapshot there itself and then tells the
//! source where the session went.

use crate::context::Context;
use crate::output::{bytes, error_text, label};
use crate::resolve::find_session;
use crate::resolve::Found;
use anyhow::{anyhow, bail};
use cmdop_client::dial::{with_default_port, Target};
use cmdop_proto::{IssueTicket, Migrate, MovedTo, Restore, Restored, TakeSnapshot};
use std::process::ExitCode;

/// Moves the session `query` names to the host `to`, named `name` there if given.
pub async fn migrate(
    context: &Context,
    query: &str,
    to: &str,
    name: Option<String>,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let destination = context.target(to)?;
    let found = find_session(context, query, host.as_deref()).await?;
    let source = &found.target;
    let same = |a: &str, b: &str| with_default_port(a) == with_default_port(b);
    if source.name == destination.name || same(&source.addr, &destination.addr) {
        bail!(
            "session {}{} is already on {}; pick another host with --to",
            found.session.id,
            label(&found.session),
            destination.name
        );
    }
    let Restored {
        session: info,
        dropped,
    } = match destination.via {
        Some(_) => carry(context, &found, &destination, name).await?,
        None => by_source(context, &found, &destination, name).await?,
    };
    println!(
        "moved session {}{} from {} to {} as {}, in {}; scrollback, name, cwd, environment and size moved, processes did not (a new shell runs there)",
        found.session.id,
        label(&found.session),
        source.name,
        destination.name,
        info.id,
        info.cwd
    );
    if dropped > 0 {
        eprintln!(
            "cmdop: {}'s ringbuffer is smaller than the session's scrollback: kept the newest part, dropped the oldest {}",
            destination.name,
            bytes(dropped)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The source node dials the target with a ticket this client fetched from it, and sends the
/// session over.
async fn by_source(
    context: &Context,
    found: &Found,
    destination: &Target,
    name: Option<String>,
) -> anyhow::Result<Restored> {
    let source = &found.target;
    // The ticket comes from the target over a connection whose key this client has checked
    // against its pin; that key is what the source must find when it dials.
    let mut target_client = context
        .connect(destination)
        .await
        .map_err(|e| stays(e, source))?;
    let fingerprint = target_client.fingerprint.clone();
    let ticket = target_client.call(IssueTicket).await.map_err(|e| {
        anyhow!(
            "cannot get a migration ticket from {}: {e}; the session stays on {}",
            destination.name,
            source.name
        )
    })?;
    target_client.close().await;
    let mut client = context.connect(source).await?;
    let reply = client
        .call(Migrate {
            session: found.session.id,
            to_name: destination.name.clone(),
            to_addr: destination.addr.clone(),
            to_fingerprint: fingerprint,
            ticket: ticket.token,
            name,
        })
        .await;
    client.close().await;
    Ok(reply?)
}

/// This client takes the session's snapshot from the source, restores it on the target, and
/// then has the source hand the session over (its interactive client is told where it went).
async fn carry(
    context: &Context,
    found: &Found,
    destination: &Target,
    name: Option<String>,
) -> anyhow::Result<Restored> {
    let source = &found.target;
    let session = found.session.id;
    let mut source_client = context.connect(source).await?;
    let snapshot = source_client
        .call(TakeSnapshot {
            session,
            lines: None,
        })
        .await
        .map_err(|e| stays(e, source))?;
    let mut target_client = context
        .connect(destination)
        .await
        .map_err(|e| stays(e, source))?;
    let restored = target_client
        .call(Restore { snapshot, name })
        .await
        .map_err(|e| stays(e, source));
    target_client.close().await;
    let restored = restored?;
    let moved = &restored.session;
    let moved_to = MovedTo {
        session,
        to: destination.name.clone(),
        session_there: moved.name.clone().unwrap_or_else(|| moved.id.to_string()),
    };
    let handed = source_client.call(moved_to).await;
    source_client.close().await;
    handed.map_err(|e| {
        anyhow!(
            "the session was copied to {} as {}, but {} did not let go of it ({}); destroy it there with 'cmdop session destroy {session} --host {}'",
            destination.name,
            moved.id,
            source.name,
            error_text(&e.into()),
            source.name
        )
    })?;
    Ok(restored)
}

/// The sentence for a failure that left the session where it was.
fn stays(error: impl Into<anyhow::Error>, source: &Target) -> anyhow::Error {
    anyhow!(
        "Cannot migrate session: {}; the session stays on {}",
        error_text(&error.into()),
        source.name
    )
}
