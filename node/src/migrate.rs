//! Snapshots, restores and node-to-node migration, on the node.
//!
//! Migration of session S from node A (source) to node B (target), driven by a client
//! authorized on both:
//! - the client asks B for a **migration ticket** ([`Request::MigrationTicket`]): a one-time
//!   token, valid for [`TICKET_VALIDITY`], kept apart from invite tokens so it never authorizes
//!   a key for good;
//! - the client sends A [`Request::Migrate`] with B's address, the ticket, and B's fingerprint
//!   as the client pinned it;
//! - A dials B with **its own node key**, pinning the fingerprint the client sent (a different
//!   key fails the handshake check), and presents the ticket in its `Hello`. B admits the
//!   connection for one [`Request::Restore`] and nothing else (no attachments, no other
//!   requests);
//! - A sends S's snapshot (the whole ringbuffer); B creates the session and replies;
//! - only then does A tell S's interactive client where the session went and destroy S.
//!
//! Any failure before B's reply leaves S untouched on A. Processes never move: B runs a new
//! shell in S's working directory.

use crate::client::{with_default_port, ClientError, Dialer, Target};
use crate::proto::{CreateSession, ErrorKind, ErrorReply, Reply, Request, SessionInfo};
use crate::server::Node;
use crate::session::{now_ms, Session};
use crate::snapshot::{fit_scrollback, restored_marker, Snapshot};
use cmdop_certs::{Fingerprint, KnownNodes};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// How long a migration ticket stays valid.
pub const TICKET_VALIDITY: Duration = Duration::from_secs(60);

/// How long the source waits for the target's handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the source waits for the target to confirm the restore.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

fn error(kind: ErrorKind, message: String) -> ErrorReply {
    ErrorReply { kind, message }
}

/// A snapshot of `session`: its metadata and its last `lines` lines (all it holds when None).
pub fn snapshot_of(node: &Node, session: &Session, lines: Option<u32>) -> Snapshot {
    let info = session.info();
    let core = session.lock();
    let scrollback = match lines {
        Some(lines) => core.ring.last_lines(lines as usize).data,
        None => core
            .ring
            .read_from(core.ring.start(), usize::MAX)
            .map(|chunk| chunk.data)
            .unwrap_or_default(),
    };
    Snapshot {
        name: core.name.clone(),
        host: node.host.clone(),
        node_fingerprint: node.identity.fingerprint().to_string(),
        shell: session.shell.clone(),
        cwd: info.cwd,
        env: session.env.clone(),
        size: core.size,
        created_ms: session.created_ms,
        saved_at_ms: now_ms(),
        scrollback,
    }
}

/// Creates a session from `snapshot`: scrollback (the newest part that fits), the marker line,
/// then a new shell in the saved directory with the saved size and environment.
pub fn restore(
    node: &Node,
    snapshot: Snapshot,
    name: Option<String>,
) -> Result<(SessionInfo, u64), ErrorReply> {
    if snapshot.size.rows == 0 || snapshot.size.cols == 0 {
        return Err(error(
            ErrorKind::BadRequest,
            format!(
                "cannot restore a {}x{} window; the snapshot's rows and cols must be at least 1",
                snapshot.size.cols, snapshot.size.rows
            ),
        ));
    }
    let marker = restored_marker(&snapshot.host, snapshot.saved_at_ms);
    let capacity = usize::try_from(node.registry.config().ringbuffer.0).unwrap_or(usize::MAX);
    let (kept, dropped) =
        fit_scrollback(&snapshot.scrollback, capacity.saturating_sub(marker.len()));
    let mut preload = Vec::with_capacity(kept.len() + marker.len());
    preload.extend_from_slice(kept);
    preload.extend_from_slice(&marker);
    let mut env = snapshot.env;
    // The registry sets TERM itself; carry the saved one over through `term`.
    let term = env
        .iter()
        .rev()
        .find(|(k, _)| k == "TERM")
        .map(|(_, v)| v.clone());
    env.retain(|(k, _)| k != "TERM");
    let create = CreateSession {
        name: name.or(snapshot.name),
        size: snapshot.size,
        term,
        cwd: Some(snapshot.cwd),
        env,
    };
    let wanted = create.name.clone();
    let session = node
        .registry
        .create(create, &preload)
        .map_err(|e| match (e.kind, wanted) {
            (ErrorKind::NameTaken, Some(wanted)) => error(
                ErrorKind::NameTaken,
                format!(
                    "a session named '{wanted}' already exists on {}; restore it under another name with --name",
                    node.host
                ),
            ),
            _ => e,
        })?;
    if dropped > 0 {
        tracing::info!(session = %session.id, dropped, "restored with the oldest scrollback dropped");
    }
    tracing::info!(session = %session.id, from = %snapshot.host, "session restored");
    Ok((session.info(), dropped as u64))
}

/// Issues a migration ticket on the target.
pub fn issue_ticket(node: &Node) -> Result<Reply, ErrorReply> {
    let now = now_ms();
    let expires_ms = now + TICKET_VALIDITY.as_millis() as u64;
    let token = node
        .migration_tickets
        .issue(now / 1000, expires_ms / 1000)
        .map_err(|e| {
            error(
                ErrorKind::Internal,
                format!("cannot record a migration ticket on {}: {e}", node.host),
            )
        })?;
    Ok(Reply::Ticket { token, expires_ms })
}

/// What the client asked the source node to do.
#[derive(Debug)]
pub struct MigrateRequest {
    /// The session on this node.
    pub session: Uuid,
    /// The target's name, for messages.
    pub to_name: String,
    /// The target's address.
    pub to_addr: String,
    /// The target's fingerprint as the client pinned it.
    pub to_fingerprint: String,
    /// The target's ticket.
    pub ticket: String,
    /// A new name on the target.
    pub name: Option<String>,
}

/// A throwaway `known_nodes` file holding one pin, removed when dropped.
struct PinFile(PathBuf);

impl Drop for PinFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Moves a session to another node (run on the source).
pub async fn migrate(node: &Node, request: MigrateRequest) -> Result<Reply, ErrorReply> {
    let started = std::time::Instant::now();
    let session = node.registry.get(request.session)?;
    let host = &node.host;
    let to = &request.to_name;
    let untouched = format!("session {} stays on {host}", request.session);
    let expected: Fingerprint = request.to_fingerprint.parse().map_err(|_| {
        error(
            ErrorKind::BadRequest,
            format!(
                "cannot migrate: '{}' is not a key fingerprint; {untouched}",
                request.to_fingerprint
            ),
        )
    })?;
    if &expected == node.identity.fingerprint() {
        return Err(error(
            ErrorKind::BadRequest,
            format!("cannot migrate: {to} is this node ({host}); pick another host"),
        ));
    }
    let internal = |what: String| {
        error(
            ErrorKind::Internal,
            format!("cannot migrate: {what}; {untouched}"),
        )
    };

    // The dialer pins the target to the fingerprint the client vouched for.
    let pins = PinFile(
        node.home
            .join(format!(".migrate-{}.known_nodes", Uuid::now_v7())),
    );
    let pin_key = with_default_port(&request.to_addr);
    KnownNodes::load(&pins.0)
        .and_then(|mut known| known.insert(&pin_key, expected.clone()))
        .map_err(|e| internal(format!("cannot write {}: {e}", pins.0.display())))?;
    let dialer = Dialer::new(node.identity.clone(), pins.0.clone(), DIAL_TIMEOUT)
        .map_err(|e| internal(e.to_string()))?;
    let target = Target {
        name: to.clone(),
        addr: request.to_addr.clone(),
    };
    let addr = &request.to_addr;
    let mut client = dialer
        .connect(&target, Some(request.ticket.clone()))
        .await
        .map_err(|e| {
            let (kind, what) = match e {
                ClientError::Offline { .. } => (
                    ErrorKind::Internal,
                    format!(
                        "{host} got no answer from {to} at {addr} within {} s (is cmdop-node running there, and reachable from {host}?)",
                        DIAL_TIMEOUT.as_secs()
                    ),
                ),
                ClientError::KeyChanged { presented, .. } => (
                    ErrorKind::Unauthorized,
                    format!(
                        "the node at {addr} presented key {presented}, not the key {expected} this client pinned for {to} (if its key was replaced on purpose, run 'cmdop host reset-pin {to}' and connect to it once)"
                    ),
                ),
                ClientError::Refused(reason) => {
                    (ErrorKind::Unauthorized, format!("{to} refused {host}: {reason}"))
                }
                other => (ErrorKind::Internal, format!("{host} cannot reach {to}: {other}")),
            };
            error(kind, format!("cannot migrate: {what}; {untouched}"))
        })?;
    drop(pins);

    let snapshot = snapshot_of(node, &session, None);
    let bytes = snapshot.scrollback.len();
    let reply = tokio::time::timeout(
        RESTORE_TIMEOUT,
        client.request(&Request::Restore {
            snapshot,
            name: request.name,
        }),
    )
    .await;
    let reply = match reply {
        Err(_) => Err(format!(
            "{to} did not confirm the restore within {} s (check 'cmdop session list --host {to}' for a copy)",
            RESTORE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("the connection to {to} failed during the restore: {e}")),
        Ok(Ok(Reply::Restored { session, dropped })) => Ok((session, dropped)),
        Ok(Ok(Reply::Error(e))) => {
            return Err(error(
                e.kind,
                format!("cannot migrate: {to} refused the session: {e}; {untouched}"),
            ))
        }
        Ok(Ok(other)) => Err(format!("{to} sent an unexpected reply: {other:?}")),
    };
    client.close().await;
    // Let the close frame go out without holding up the reply.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), dialer.endpoint().wait_idle()).await;
    });
    let (moved, dropped) = reply.map_err(internal)?;

    // The target holds the session now: tell the interactive client, then let go here.
    let reattach = moved.name.clone().unwrap_or_else(|| moved.id.to_string());
    let reason =
        format!("session moved to {to}; reattach with: cmdop connect {to} --session {reattach}");
    let kick = session.lock().holder.as_mut().and_then(|h| h.kick.take());
    if let Some(kick) = kick {
        let _ = kick.send(reason);
    }
    // The attachment's pump prefers the kick over the destruction when both are pending.
    let _ = node.registry.destroy(session.id);
    tracing::info!(
        session = %session.id,
        to = %to,
        new = %moved.id,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "session migrated"
    );
    Ok(Reply::Migrated {
        session: moved,
        dropped,
    })
}
