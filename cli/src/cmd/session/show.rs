//! `cmdop session show`, `attach` and `detach`: one session's metadata (and scrollback), its
//! attached mark, and its live terminal.

use crate::context::Context;
use crate::output::{label, print_json, print_metadata, print_tail, session_json};
use crate::resolve::find_session;
use crate::terminal::AttachOptions;
use cmdop_proto::{MarkAttached, ScreenText, Show};
use std::io::Write;
use std::process::ExitCode;

/// What `show` prints.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// The last N lines of scrollback.
    pub tail: Option<u32>,
    /// The screen instead of the metadata.
    pub screen: bool,
    /// The screen with its colours.
    pub ansi: bool,
    /// As JSON.
    pub json: bool,
}

/// Prints the metadata of the session `query` names and, with `tail`, its last lines; or
/// with `screen`, what is on its screen now.
pub async fn show(
    context: &Context,
    query: &str,
    view: View,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let session = found.session.id;
    let View {
        tail,
        screen,
        ansi,
        json,
    } = view;
    let shown = client.call(Show {
        session,
        tail,
        screen,
    });
    let shown = shown.await?;
    client.close().await;
    if let Some(screen) = &shown.screen {
        print_screen(screen, ansi, json)?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// Prints a session's screen: its rows (with colours when `ansi`), or JSON.
fn print_screen(screen: &ScreenText, ansi: bool, json: bool) -> anyhow::Result<()> {
    if json {
        let (col, row, visible) = screen.cursor;
        let value = serde_json::json!({
            "rows": screen.rows,
            "cursor": { "col": col, "row": row, "visible": visible },
            "alternate_screen": screen.alternate,
        });
        return print_json(&value);
    }
    let rows = if ansi {
        &screen.ansi_rows
    } else {
        &screen.rows
    };
    let mut out = std::io::stdout().lock();
    for row in rows {
        writeln!(out, "{row}")?;
    }
    if ansi {
        // Leave the terminal's pen as it was.
        write!(out, "\x1b[0m")?;
    }
    out.flush()?;
    Ok(())
}
