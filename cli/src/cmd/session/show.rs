//! `cmdop session show`, `attach` and `detach`: one session's metadata (and scrollback), its
//! attached mark, and its live terminal.

use crate::context::Context;
use crate::output::{label, print_json, print_metadata, print_tail, session_json};
use crate::resolve::find_session;
use crate::terminal::AttachOptions;
use cmdop_proto::{MarkAttached, Show};
use std::process::ExitCode;

/// Prints the metadata of the session `query` names and, with `tail`, its last lines.
pub async fn show(
    context: &Context,
    query: &str,
    tail: Option<u32>,
    host: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let session = found.session.id;
    let shown = client.call(Show { session, tail }).await?;
    client.close().await;
    let (info, scrollback) = (shown.session, shown.tail);
    if json {
        let mut value = session_json(&found.target.name, &info);
        if tail.is_some() {
            let text = String::from_utf8_lossy(&scrollback).into_owned();
            value["tail"] = serde_json::Value::String(text);
        }
        print_json(&value)?;
    } else {
        print_metadata(&found.target.name, &info);
        if let Some(lines) = tail {
            print_tail(lines, &scrollback)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// With `interactive`, opens the live terminal of the session `query` names; without, marks it
/// attached and prints its metadata.
pub async fn attach(
    context: &Context,
    query: &str,
    host: Option<String>,
    interactive: Option<AttachOptions>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    if let Some(options) = interactive {
        return crate::terminal::run(context, client, found.session, options).await;
    }
    let session = found.session.id;
    let attached = true;
    let info = client.call(MarkAttached { session, attached }).await?;
    client.close().await;
    print_metadata(&found.target.name, &info);
    Ok(ExitCode::SUCCESS)
}

/// Clears the attached mark of the session `query` names.
pub async fn detach(
    context: &Context,
    query: &str,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let session = found.session.id;
    let attached = false;
    let info = client.call(MarkAttached { session, attached }).await?;
    client.close().await;
    println!(
        "detached session {}{} on {}",
        info.id,
        label(&info),
        found.target.name
    );
    Ok(ExitCode::SUCCESS)
}
