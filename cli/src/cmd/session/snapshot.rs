//! `cmdop session save` and `restore`: a session's scrollback and metadata to a JSON file
//! and back (processes are not saved).

use crate::context::Context;
use crate::output::{bytes, label};
use crate::resolve::find_session;
use anyhow::anyhow;
use cmdop_client::dial::{with_default_port, Target};
use cmdop_proto::snapshot::Snapshot;
use cmdop_proto::{Restore, Restored, TakeSnapshot};
use std::path::Path;
use std::process::ExitCode;

/// Saves the session `query` names to `path`, with at most `lines` lines of scrollback.
pub async fn save(
    context: &Context,
    query: &str,
    path: &Path,
    lines: Option<u32>,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let lines = lines.unwrap_or(context.config.client.save_lines);
    let snapshot = client
        .call(TakeSnapshot {
            session: found.session.id,
            lines: Some(lines),
        })
        .await?;
    client.close().await;
    cmdop_certs::files::write_atomic(path, snapshot.to_json().as_bytes(), 0o600).map_err(|e| {
        anyhow!(
            "cannot write the snapshot to {}: {e}; check that its directory exists and is writable",
            path.display()
        )
    })?;
    println!(
        "saved session {}{} on {} to {}: {} of scrollback (last {lines} lines at most), cwd {}; processes are not saved",
        found.session.id,
        label(&found.session),
        found.target.name,
        path.display(),
        bytes(snapshot.scrollback.len() as u64),
        snapshot.cwd
    );
    Ok(ExitCode::SUCCESS)
}

/// The host a snapshot came from: the known host whose pinned key is the snapshot's node key.
fn snapshot_host(context: &Context, snapshot: &Snapshot) -> Option<Target> {
    let known = cmdop_certs::KnownNodes::load(&context.home.join("known_nodes")).ok()?;
    context.targets().into_iter().find(|target| {
        known
            .pin(&with_default_port(&target.addr))
            .is_some_and(|pin| pin.as_str() == snapshot.node_fingerprint)
    })
}

/// Creates a session from the snapshot at `path`, on `host` or on the host it was saved on.
pub async fn restore(
    context: &Context,
    path: &Path,
    host: Option<String>,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow!("cannot read the snapshot {shown}: {e}; check the path given to --from")
    })?;
    let snapshot =
        Snapshot::from_json(&bytes).map_err(|e| anyhow!("cannot restore from {shown}: {e}"))?;
    let target = match host {
        Some(host) => context.target(&host)?,
        None => snapshot_host(context, &snapshot).ok_or_else(|| {
            anyhow!(
                "cannot restore from {shown}: it was saved on {} (key {}), which is none of this client's known hosts; choose one with --host",
                snapshot.host,
                snapshot.node_fingerprint
            )
        })?,
    };
    let total = snapshot.scrollback.len() as u64;
    let mut client = context
        .connect(&target)
        .await
        .map_err(|e| e.context("Cannot restore session"))?;
    let reply = client.call(Restore { snapshot, name }).await;
    client.close().await;
    let Restored {
        session: info,
        dropped,
    } = reply.map_err(|e| anyhow!("cannot restore from {shown}: {e}"))?;
    println!(
        "restored session {}{} on {} from {}, in {}; the shell is new (processes do not move)",
        info.id,
        label(&info),
        target.name,
        shown,
        info.cwd
    );
    print_dropped(&target.name, total, dropped);
    Ok(ExitCode::SUCCESS)
}

/// Warns that `host` kept only part of a snapshot's `total` bytes of scrollback.
fn print_dropped(host: &str, total: u64, dropped: u64) {
    if dropped > 0 {
        eprintln!(
            "cmdop: the snapshot's scrollback ({}) is larger than {host}'s ringbuffer: kept the newest {}, dropped the oldest {}",
            bytes(total),
            bytes(total.saturating_sub(dropped)),
            bytes(dropped)
        );
    }
}
