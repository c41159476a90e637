//! Snapshots, restores and node-to-node migration, on the node.
//!
//! Migration of session S from node A (source) to node B (target), driven by a client
//! authorized on both:
//! - the client asks B for a **migration ticket** ([`cmdop_proto::IssueTicket`]): a one-time
//!   token, valid for [`TICKET_VALIDITY`], kept apart from invite tokens so it never authorizes
//!   a key for good;
//! - the client sends A [`Migrate`] with B's address, the ticket, and B's fingerprint
//!   as the client pinned it;
//! - A dials B with **its own node key**, pinning the fingerprint the client sent (a different
//!   key fails the handshake check), and presents the ticket in its `Hello`. B admits the
//!   connection for one [`Restore`] and nothing else (no attachments, no other
//!   requests);
//! - A sends S's snapshot (the whole ringbuffer); B creates the session and replies;
//! - only then does A tell S's interactive client where the session went and destroy S.
//!
//! Any failure before B's reply leaves S untouched on A. Processes never move: B runs a new
//! shell in S's working directory.
//!
//! Each function takes only what it uses (the registry, the node's identity, the tickets store,
//! the state directory), not the whole server.

use crate::session::registry::Registry;
use crate::session::{now_ms, Session};
use cmdop_certs::{Fingerprint, Identity, Invites, KnownNodes};
use cmdop_client::dial::{with_default_port, ClientError, Dialer, NodeClient, Target};
use cmdop_proto::snapshot::{fit_scrollback, restored_marker, Snapshot};
use cmdop_proto::{
    CreateSession, Credential, DetachReason, ErrorKind, ErrorReply, Migrate, MovedTo, Restore,
    Restored, Ticket,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// A snapshot of `session` on node `host` (whose key is `node_fingerprint`): its metadata and
/// its last `lines` lines (all it holds when None).
pub fn snapshot_of(
    session: &Session,
    host: &str,
    node_fingerprint: &Fingerprint,
    lines: Option<u32>,
) -> Snapshot {
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
        host: host.to_string(),
        node_fingerprint: node_fingerprint.to_string(),
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
pub async fn restore(
    registry: &Registry,
    snapshot: Snapshot,
    name: Option<String>,
) -> Result<Restored, ErrorReply> {
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
    let capacity = usize::try_from(registry.config().ringbuffer.0).unwrap_or(usize::MAX);
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
    let session = registry
        .create(create, &preload)
        .await
        .map_err(|e| match (e.kind, wanted) {
            (ErrorKind::NameTaken, Some(wanted)) => error(
                ErrorKind::NameTaken,
                format!(
                    "a session named '{wanted}' already exists on {}; restore it under another name with --name",
                    registry.host()
                ),
            ),
            _ => e,
        })?;
    if dropped > 0 {
        tracing::info!(session = %session.id, dropped, "restored with the oldest scrollback dropped");
    }
    tracing::info!(session = %session.id, from = %snapshot.host, "session restored");
    Ok(Restored {
        session: session.info(),
        dropped: dropped as u64,
    })
}

/// Issues a migration ticket on the target `host`, recorded in `tickets`.
pub fn issue_ticket(tickets: &Invites, host: &str) -> Result<Ticket, ErrorReply> {
    let now = now_ms();
    let expires_ms = now + TICKET_VALIDITY.as_millis() as u64;
    let token = tickets.issue(now / 1000, expires_ms / 1000).map_err(|e| {
        error(
            ErrorKind::Internal,
            format!("cannot record a migration ticket on {host}: {e}"),
        )
    })?;
    Ok(Ticket { token, expires_ms })
}

/// A throwaway `known_nodes` file holding one pin, removed when dropped.
struct PinFile(PathBuf);

impl Drop for PinFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Moves a session of `registry` to another node (run on the source, which dials with its
/// `identity`; a throwaway pin file goes in `home`).
pub async fn migrate(
    registry: &Registry,
    identity: &Arc<Identity>,
    home: &Path,
    request: Migrate,
) -> Result<Restored, ErrorReply> {
    let started = std::time::Instant::now();
    let session = registry.get(request.session)?;
    let host = registry.host();
    let to = &request.to_name;
    let untouched = format!("session {} stays on {host}", request.session);
    if &request.to_fingerprint == identity.fingerprint() {
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
    let (dialer, mut client) = dial_target(identity, home, host, &request)
        .await
        .map_err(|(kind, what)| error(kind, format!("cannot migrate: {what}; {untouched}")))?;

    let snapshot = snapshot_of(&session, host, identity.fingerprint(), None);
    let bytes = snapshot.scrollback.len();
    let reply = tokio::time::timeout(
        RESTORE_TIMEOUT,
        client.call(Restore {
            snapshot,
            name: request.name.clone(),
        }),
    )
    .await;
    let reply = match reply {
        Err(_) => Err(format!(
            "{to} did not confirm the restore within {} s (check 'cmdop session list --host {to}' for a copy)",
            RESTORE_TIMEOUT.as_secs()
        )),
        Ok(Err(ClientError::Rejected(e))) => {
            return Err(error(
                e.kind,
                format!("cannot migrate: {to} refused the session: {e}; {untouched}"),
            ))
        }
        Ok(Err(e)) => Err(format!("the connection to {to} failed during the restore: {e}")),
        Ok(Ok(restored)) => Ok(restored),
    };
    client.close().await;
    // Let the close frame go out without holding up the reply.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), dialer.endpoint().wait_idle()).await;
    });
    let restored = reply.map_err(internal)?;
    let moved = &restored.session;
    let there = moved.name.clone().unwrap_or_else(|| moved.id.to_string());
    hand_over(registry, &session, to, there);
    tracing::info!(
        session = %session.id,
        to = %to,
        new = %restored.session.id,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "session migrated"
    );
    Ok(restored)
}

/// Dials the target of `request` with the node's own key, pinned to the fingerprint the client
/// vouched for, presenting the migration ticket. Fails with the kind and what went wrong.
async fn dial_target(
    identity: &Arc<Identity>,
    home: &Path,
    host: &str,
    request: &Migrate,
) -> Result<(Dialer, NodeClient), (ErrorKind, String)> {
    let internal = |what: String| (ErrorKind::Internal, what);
    let to = &request.to_name;
    let addr = &request.to_addr;
    let expected = &request.to_fingerprint;
    let pins = PinFile(home.join(format!(".migrate-{}.known_nodes", Uuid::now_v7())));
    KnownNodes::load(&pins.0)
        .and_then(|mut known| known.insert(&with_default_port(addr), expected.clone()))
        .map_err(|e| internal(format!("cannot write {}: {e}", pins.0.display())))?;
    let dialer = Dialer::new(identity.clone(), pins.0.clone(), DIAL_TIMEOUT)
        .map_err(|e| internal(e.to_string()))?;
    let target = Target {
        name: to.clone(),
        addr: addr.clone(),
        via: None,
    };
    let credential = Credential::MigrationTicket(request.ticket.clone());
    let client = dialer
        .connect(&target, Some(credential))
        .await
        .map_err(|e| match e {
            ClientError::Offline { .. } => internal(format!(
                "{host} got no answer from {to} at {addr} within {} s (is cmdop-node running there, and reachable from {host}?)",
                DIAL_TIMEOUT.as_secs()
            )),
            ClientError::KeyChanged { presented, .. } => (
                ErrorKind::Unauthorized,
                format!(
                    "the node at {addr} presented key {presented}, not the key {expected} this client pinned for {to} (if its key was replaced on purpose, run 'cmdop host reset-pin {to}' and connect to it once)"
                ),
            ),
            ClientError::Refused(reason) | ClientError::VersionMismatch(reason) => {
                (ErrorKind::Unauthorized, format!("{to} refused {host}: {reason}"))
            }
            other => internal(format!("{host} cannot reach {to}: {other}")),
        })?;
    Ok((dialer, client))
}

/// A client carried the session to another node ([`MovedTo`]): hand it over as a migration
/// would.
pub fn moved_to(registry: &Registry, moved: MovedTo) -> Result<(), ErrorReply> {
    let session = registry.get(moved.session)?;
    tracing::info!(session = %session.id, to = %moved.to, there = %moved.session_there, "session carried to another node");
    hand_over(registry, &session, &moved.to, moved.session_there);
    Ok(())
}

/// The target holds the session now: tells the interactive client where it went, then lets go
/// of it here.
fn hand_over(registry: &Registry, session: &Session, to: &str, session_there: String) {
    let reason = DetachReason::Moved {
        to: to.to_string(),
        session: session_there,
    };
    let kick = session.lock().holder.as_mut().and_then(|h| h.kick.take());
    if let Some(kick) = kick {
        let _ = kick.send(reason);
    }
    // The attachment's pump prefers the kick over the destruction when both are pending.
    let _ = registry.destroy(session.id);
}
