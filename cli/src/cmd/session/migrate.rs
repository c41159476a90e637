//! `cmdop session migrate`: moving a session's scrollback and metadata to another host
//! (processes do not move). The source node dials the target itself, with a one-time ticket
//! this client fetches from the target.

use crate::context::Context;
use crate::output::{bytes, error_text, label};
use crate::resolve::find_session;
use anyhow::{anyhow, bail};
use cmdop_client::dial::with_default_port;
use cmdop_proto::{IssueTicket, Migrate, Restored};
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
    if let Some(via) = &destination.via {
        bail!(
            "cannot migrate to {to}: it is reached through {}, and the source node cannot dial a relayed node yet; migrate from {to} to a node with an address instead",
            via.name
        );
    }
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
    // The ticket comes from the target over a connection whose key this client has checked
    // against its pin; that key is what the source must find when it dials.
    let mut target_client = context.connect(&destination).await.map_err(|e| {
        anyhow!(
            "Cannot migrate session: {}; the session stays on {}",
            error_text(&e),
            source.name
        )
    })?;
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
    let Restored {
        session: info,
        dropped,
    } = reply?;
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
