//! The control stream of an admitted connection: requests in, replies out, one at a time.
//!
//! An authorized client may make every request; a node admitted with a migration ticket may
//! make one [`Request::Restore`] and nothing else; a relay node key may only
//! [`Request::Register`]. Registering and relaying need the connection and its streams, so
//! [`serve`] hands those requests back to its caller. [`handle`] answers a request; revocations are
//! answered here, where the requester is known.

use crate::server::attach::OnMalformed;
use crate::server::framed::{FrameSink, FrameSource, RecvError};
use crate::server::{Admission, Node};
use crate::session::registry::Registry;
use crate::session::{now_ms, Session};
use cmdop_certs::Fingerprint;
use cmdop_proto::{
    Destroy, DestroyIdle, ErrorKind, ErrorReply, MarkAttached, Reply, Request, Restore, ScreenText,
    SendInput, Show, Shown, TakeSnapshot,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who is asking, and with what right.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The peer's key.
    pub fingerprint: Fingerprint,
    /// What its connection was admitted for.
    pub admission: Admission,
}

/// Answers requests until the peer ends the stream, sends garbage, or `shutdown` fires (None),
/// or until an allowed [`Request::Register`], [`Request::Relay`] or [`Request::Punch`], which is
/// returned unanswered for the caller.
pub async fn serve<S: FrameSink, R: FrameSource>(
    node: &Node,
    requester: &Requester,
    send: &mut S,
    recv: &mut R,
    on_malformed: &OnMalformed,
    shutdown: &CancellationToken,
) -> Option<Request> {
    let mut restores_left = 1;
    loop {
        let request = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            request = recv.recv::<Request>() => request,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) | Err(RecvError::Stream(_)) => return None,
            Err(RecvError::Frame(e)) => {
                on_malformed(&e);
                return None;
            }
        };
        let mut upgrade = None;
        let reply = match (requester.admission, &request) {
            (Admission::Client | Admission::RelayNode, Request::Register(_))
            | (Admission::Client, Request::Relay(_) | Request::Punch(_)) => return Some(request),
            (Admission::RelayNode, _) => Reply::Error(ErrorReply {
                kind: ErrorKind::Unauthorized,
                message: format!(
                    "a relay node key may only register on {}; authorize it as a client to do more",
                    node.host
                ),
            }),
            (Admission::Client, Request::Revoke(revoke)) => {
                close_revoked(node, &requester.fingerprint, &revoke.fingerprint)
            }
            (Admission::Client, Request::Upgrade(upgrade_request)) => {
                let wait = Duration::from_millis(upgrade_request.wait_for_runs_ms);
                match prepare_upgrade(node, &requester.fingerprint, wait).await {
                    Ok(prepared) => {
                        let reply = Reply::Upgrading(prepared.plan.clone());
                        upgrade = Some(prepared);
                        reply
                    }
                    Err(e) => Reply::Error(e),
                }
            }
            (Admission::Client, _) => handle(node, request).await,
            (Admission::MigratingNode, Request::Restore(_)) if restores_left > 0 => {
                restores_left -= 1;
                handle(node, request).await
            }
            (Admission::MigratingNode, _) => Reply::Error(ErrorReply {
                kind: ErrorKind::Unauthorized,
                message: format!(
                    "a migration ticket allows one restore on {} and nothing else",
                    node.host
                ),
            }),
        };
        if send.send(&reply).await.is_err() {
            return None;
        }
        // The plan is on its way to the client before the upgrade closes its connection.
        if let Some(prepared) = upgrade {
            crate::upgrade::start(node, prepared);
        }
    }
}

/// Prepares an upgrade in place, if `requester` is the node's own client.
async fn prepare_upgrade<'a>(
    node: &'a Node,
    requester: &Fingerprint,
    wait_for_runs: Duration,
) -> Result<crate::upgrade::Prepared<'a>, ErrorReply> {
    if *requester != node.local_client {
        return Err(ErrorReply {
            kind: ErrorKind::Unauthorized,
            message: format!(
                "only the client identity in {}'s own CMDOP_HOME may upgrade the node; run 'cmdop-node upgrade' there",
                node.host
            ),
        });
    }
    crate::upgrade::prepare(node, wait_for_runs).await
}

/// Answers one control request.
pub async fn handle(node: &Node, request: Request) -> Reply {
    let registry = &node.registry;
    let result = match request {
        Request::CreateSession(create) => registry
            .create(create, &[])
            .await
            .map(|s| Reply::Session(s.info())),
        Request::ListSessions(_) => Ok(Reply::Sessions(registry.list())),
        Request::Show(show) => match registry.get(show.session) {
            // Catching the screen up may parse a megabyte: not on the runtime's threads.
            Ok(s) => tokio::task::spawn_blocking(move || shown(&s, show))
                .await
                .map(Reply::Shown)
                .map_err(|e| ErrorReply {
                    kind: ErrorKind::Internal,
                    message: format!("cannot read the session's screen: {e}"),
                }),
            Err(e) => Err(e),
        },
        Request::MarkAttached(MarkAttached { session, attached }) => {
            mark_attached(registry, session, attached)
        }
        Request::Destroy(Destroy { session }) => registry
            .destroy(session)
            .map(|_| Reply::Destroyed(vec![session])),
        Request::DestroyIdle(DestroyIdle { idle_ms }) => Ok(Reply::Destroyed(
            registry.destroy_idle(Duration::from_millis(idle_ms), now_ms()),
        )),
        Request::LastUpgrade(_) => Ok(Reply::LastUpgrade(node.upgrades.last())),
        // Answered in `serve`, which knows who asks.
        Request::Revoke(_) | Request::Upgrade(_) => Err(ErrorReply {
            kind: ErrorKind::Unauthorized,
            message: "revocations and upgrades are only taken from the node's own client identity"
                .into(),
        }),
        // Answered by the connection's own loop, which holds its streams.
        Request::Register(_) | Request::Relay(_) | Request::Punch(_) => Err(ErrorReply {
            kind: ErrorKind::BadRequest,
            message:
                "registering, relaying and punching are only taken on a connection's control stream"
                    .into(),
        }),
        Request::SendInput(SendInput { session, data }) => {
            send_input(registry, session, data).await
        }
        Request::TakeSnapshot(TakeSnapshot { session, lines }) => registry.get(session).map(|s| {
            Reply::Snapshot(crate::migrate::snapshot_of(
                &s,
                &node.host,
                node.identity.fingerprint(),
                lines,
            ))
        }),
        Request::Restore(Restore { snapshot, name }) => {
            crate::migrate::restore(registry, snapshot, name)
                .await
                .map(Reply::Restored)
        }
        Request::IssueTicket(_) => {
            crate::migrate::issue_ticket(&node.migration_tickets, &node.host).map(Reply::Ticket)
        }
        request @ (Request::AddTrigger(_)
        | Request::ListTriggers(_)
        | Request::ShowTrigger(_)
        | Request::SetTriggerEnabled(_)
        | Request::RunTrigger(_)
        | Request::TriggerHistory(_)
        | Request::TriggerLogs(_)
        | Request::RemoveTrigger(_)) => node.triggers.handle(request).await,
        Request::Migrate(request) => {
            crate::migrate::migrate(registry, &node.identity, &node.home, request)
                .await
                .map(Reply::Migrated)
        }
        Request::MovedTo(moved) => crate::migrate::moved_to(registry, moved).map(|()| Reply::Done),
    };
    result.unwrap_or_else(Reply::Error)
}

/// Types `data` into a session, as `cmdop session send` does.
async fn send_input(
    registry: &Registry,
    session: uuid::Uuid,
    data: Vec<u8>,
) -> Result<Reply, ErrorReply> {
    let s = registry.get(session)?;
    match s.write_input(data).await {
        Ok(()) => Ok(Reply::Done),
        Err(e) => Err(ErrorReply {
            kind: ErrorKind::BadRequest,
            message: format!("cannot send to session {session}: {e}"),
        }),
    }
}

/// Sets or clears a session's attached mark (metadata-only attach); counts as activity.
fn mark_attached(
    registry: &Registry,
    session: uuid::Uuid,
    attached: bool,
) -> Result<Reply, ErrorReply> {
    let session = registry.get(session)?;
    {
        let mut core = session.lock();
        core.marked_attached = attached;
        core.last_active_ms = now_ms();
    }
    registry.touch();
    Ok(Reply::Session(session.info()))
}

/// Closes every live connection of a revoked key, if `requester` is the node's own client.
fn close_revoked(node: &Node, requester: &Fingerprint, revoked: &Fingerprint) -> Reply {
    let refused = |message: String| {
        Reply::Error(ErrorReply {
            kind: ErrorKind::Unauthorized,
            message,
        })
    };
    if *requester != node.local_client {
        return refused(format!(
            "only the client identity in {}'s own CMDOP_HOME may revoke keys",
            node.host
        ));
    }
    if !node.authorized.is_revoked(revoked).unwrap_or(false) {
        return refused(format!(
            "{revoked} is not revoked on {}; run 'cmdop-node revoke {revoked}' there",
            node.host
        ));
    }
    let closed = node.live.close_all_of(revoked) + node.registered.close_all_of(revoked);
    tracing::info!(%revoked, closed, "closed the connections of a revoked key");
    Reply::Revoked(closed)
}

/// A session's metadata, the scrollback lines and the screen asked for.
fn shown(session: &Session, show: Show) -> Shown {
    let tail = show
        .tail
        .map(|n| session.lock().ring.last_lines(n as usize).data)
        .unwrap_or_default();
    let screen = show.screen.then(|| {
        session.with_screen(|screen| ScreenText {
            rows: screen.rows_text(),
            ansi_rows: screen.rows_ansi(),
            cursor: screen.cursor(),
            alternate: screen.alternate_screen(),
        })
    });
    Shown {
        session: session.info(),
        tail,
        screen,
    }
}
