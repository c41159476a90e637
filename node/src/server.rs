//! The node's QUIC server: accepts connections, authenticates clients, and serves the control
//! stream (and attach streams) of each.
//!
//! Per connection:
//! - the TLS handshake proves the client holds its key (any key is accepted at that stage);
//! - the first bidirectional stream is the control stream; its first frame is [`Hello`], checked
//!   for the protocol version and against the authorized clients (or a one-time invite);
//! - later bidirectional streams are attachments ([`crate::attach`]).
//!
//! A malformed or oversized frame closes that connection only, with a reason the peer can read.

use crate::config::Config;
use crate::home::{host_name, CLIENT_IDENTITY, NODE_IDENTITY};
use crate::proto::{
    close_code, ErrorKind, ErrorReply, Hello, HelloReply, Reply, Request, PROTOCOL_VERSION,
};
use crate::pty::PtySpawner;
use crate::registry::Registry;
use crate::session::now_ms;
use crate::tls::{node_endpoint_config, peer_fingerprint, server_config};
use crate::wire::{FramedRecv, FramedSend, RecvError};
use anyhow::Context;
use cmdop_certs::{AuthorizedClients, Fingerprint, Identity, Invites};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Largest frame a peer may send before it is admitted.
const HELLO_MAX_FRAME: usize = 16 * 1024;

/// How long a new connection may take to say [`Hello`].
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a running node shares between its connections.
pub struct Node {
    /// The sessions.
    pub registry: Arc<Registry>,
    /// The node's identity.
    pub identity: Arc<Identity>,
    /// The client identity in the node's own `$CMDOP_HOME`, authorized implicitly.
    pub local_client: Fingerprint,
    authorized: AuthorizedClients,
    invites: Invites,
    /// One-time tickets that admit another node for one migration ([`crate::migrate`]).
    pub(crate) migration_tickets: Invites,
    /// State directory.
    pub home: PathBuf,
    /// Host name reported to clients.
    pub host: String,
    /// Largest frame accepted.
    pub max_frame: usize,
    endpoint: quinn::Endpoint,
    /// Admitted connections, for per-client limits and for closing a revoked client's.
    live: Mutex<HashMap<u64, (Fingerprint, quinn::Connection)>>,
    next_connection: AtomicU64,
}

/// Removes an admitted connection from [`Node::live`] when its task ends.
struct LiveGuard<'a> {
    node: &'a Node,
    id: u64,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.node.live_connections().remove(&self.id);
    }
}

/// Counts a handshake in progress for as long as it lives.
struct HandshakeGuard(Arc<AtomicUsize>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("host", &self.host).finish()
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// State directory.
    pub home: PathBuf,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The loaded config.
    pub config: Config,
}

/// What an admitted connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// An authorized client: every request and attachments.
    Client,
    /// A node holding a migration ticket: one [`Request::Restore`], nothing else.
    MigratingNode,
}

fn refuse(kind: ErrorKind, message: String) -> HelloReply {
    HelloReply::Refused(ErrorReply { kind, message })
}

impl Node {
    /// Loads identities and binds the UDP socket.
    pub fn bind(options: NodeOptions, spawner: Arc<dyn PtySpawner>) -> anyhow::Result<Arc<Node>> {
        let identity = Identity::load_or_create(&options.home, NODE_IDENTITY)?;
        let tickets_dir = options.home.join("migration-tickets");
        cmdop_certs::files::ensure_private_dir(&tickets_dir)
            .with_context(|| format!("cannot create {}", tickets_dir.display()))?;
        let local_client = Identity::load_or_create(&options.home, CLIENT_IDENTITY)?
            .fingerprint()
            .clone();
        let server = server_config(&identity)?;
        let socket = std::net::UdpSocket::bind(options.listen).with_context(|| {
            format!(
                "cannot listen on UDP {}; is another cmdop-node running? (choose another with --listen)",
                options.listen
            )
        })?;
        let endpoint = quinn::Endpoint::new(
            node_endpoint_config(&identity),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("cannot start the QUIC endpoint")?;
        let host = host_name();
        let max_frame = usize::try_from(options.config.node.max_frame.0).unwrap_or(usize::MAX);
        let registry = Arc::new(Registry::new(
            spawner,
            host.clone(),
            options.config.node.clone(),
        ));
        Ok(Arc::new(Node {
            registry,
            identity: Arc::new(identity),
            local_client,
            authorized: AuthorizedClients::new(&options.home),
            invites: Invites::new(&options.home),
            migration_tickets: Invites::new(&tickets_dir),
            home: options.home,
            host,
            max_frame,
            endpoint,
            live: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        }))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `shutdown` fires, then closes every connection (close frames sent) and hangs
    /// up every session.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        tasks.spawn(self.registry.clone().run_reaper(shutdown.child_token()));
        tasks.spawn(
            self.registry
                .clone()
                .run_child_watcher(shutdown.child_token()),
        );
        let handshakes = Arc::new(AtomicUsize::new(0));
        let mut refused_handshakes = 0u64;
        let mut last_refusal_log = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    // Unauthenticated peers cost state until their handshake ends: cap them, so a
                    // flood of half-open handshakes cannot grow the node without bound.
                    if handshakes.load(Ordering::Acquire) >= self.registry.config().max_handshakes {
                        incoming.refuse();
                        refused_handshakes += 1;
                        // One line a second at most, however hard the flood.
                        if last_refusal_log.is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(1)) {
                            tracing::info!(refused = refused_handshakes, "refusing handshakes: max_handshakes in progress");
                            refused_handshakes = 0;
                            last_refusal_log = Some(std::time::Instant::now());
                        }
                        continue;
                    }
                    handshakes.fetch_add(1, Ordering::AcqRel);
                    let handshake = HandshakeGuard(handshakes.clone());
                    let node = self.clone();
                    let token = shutdown.child_token();
                    tasks.spawn(async move {
                        let remote = incoming.remote_address();
                        match incoming.await {
                            // The peer stays "unauthenticated" (counted against max_handshakes)
                            // until its Hello is admitted.
                            Ok(connection) => node.serve_connection(connection, token, handshake).await,
                            // Half-open handshakes time out by the thousand in a flood: keep those quiet.
                            Err(quinn::ConnectionError::TimedOut) => tracing::debug!(%remote, "handshake timed out"),
                            Err(e) => tracing::info!(%remote, "handshake failed: {e}"),
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("shutting down");
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"cmdop-node is shutting down");
        self.registry.destroy_all();
        tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Decides whether `fingerprint` is served, and for what.
    fn admit(&self, fingerprint: &Fingerprint, hello: &Hello) -> (HelloReply, Admission) {
        if hello.version != PROTOCOL_VERSION {
            let refusal = refuse(
                ErrorKind::VersionMismatch,
                format!(
                    "{} speaks cmdop protocol {PROTOCOL_VERSION} but this client speaks {}; upgrade the older side",
                    self.host, hello.version
                ),
            );
            return (refusal, Admission::Client);
        }
        let revoked = self.authorized.is_revoked(fingerprint).unwrap_or(true);
        if let (Some(ticket), false) = (&hello.invite, revoked) {
            match self.migration_tickets.redeem(ticket, now_ms() / 1000) {
                Ok(()) => {
                    tracing::info!(node = %fingerprint, "node admitted for one migration");
                    let welcome = HelloReply::Welcome {
                        version: PROTOCOL_VERSION,
                        host: self.host.clone(),
                        invited: false,
                    };
                    return (welcome, Admission::MigratingNode);
                }
                Err(cmdop_certs::InviteError::Expired) => {
                    let refusal = refuse(
                        ErrorKind::Unauthorized,
                        format!(
                            "the migration ticket from {} has expired; run 'cmdop session migrate' again",
                            self.host
                        ),
                    );
                    return (refusal, Admission::Client);
                }
                // Not a migration ticket: perhaps an invite token.
                Err(cmdop_certs::InviteError::Unknown) => {}
            }
        }
        (self.admit_client(fingerprint, hello), Admission::Client)
    }

    /// Decides whether the client `fingerprint` is served (the protocol version was checked).
    fn admit_client(&self, fingerprint: &Fingerprint, hello: &Hello) -> HelloReply {
        let welcome = |invited| HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            host: self.host.clone(),
            invited,
        };
        let revoked = self.authorized.is_revoked(fingerprint).unwrap_or(true);
        if !revoked
            && (*fingerprint == self.local_client
                || self.authorized.is_authorized(fingerprint).unwrap_or(false))
        {
            return welcome(false);
        }
        if let (Some(token), false) = (&hello.invite, revoked) {
            let now = now_ms() / 1000;
            return match self.invites.redeem(token, now) {
                Ok(()) => match self.authorized.authorize(fingerprint, "invited") {
                    Ok(_) => {
                        tracing::info!(%fingerprint, "client authorized by invite");
                        welcome(true)
                    }
                    Err(e) => refuse(
                        ErrorKind::Internal,
                        format!("cannot record the authorization on {}: {e}", self.host),
                    ),
                },
                Err(e) => refuse(ErrorKind::Unauthorized, e.to_string()),
            };
        }
        refuse(
            ErrorKind::Unauthorized,
            format!(
                "{} does not authorize client key {fingerprint}; on {} run 'cmdop-node authorize {fingerprint}', or ask for an invite token",
                self.host, self.host
            ),
        )
    }

    async fn serve_connection(
        self: Arc<Self>,
        connection: quinn::Connection,
        shutdown: CancellationToken,
        handshake: HandshakeGuard,
    ) {
        let remote = connection.remote_address();
        let Some(fingerprint) = peer_fingerprint(&connection) else {
            connection.close(
                close_code::UNAUTHORIZED.into(),
                b"a client certificate is required",
            );
            return;
        };
        let span = tracing::info_span!("conn", %remote, client = %fingerprint);
        self.serve_authenticated(connection, fingerprint, shutdown, handshake)
            .instrument(span)
            .await;
    }

    /// Serves a connection whose client certificate is `fingerprint`: Hello, admission, then
    /// requests and attachments.
    async fn serve_authenticated(
        self: Arc<Self>,
        connection: quinn::Connection,
        fingerprint: Fingerprint,
        shutdown: CancellationToken,
        handshake: HandshakeGuard,
    ) {
        let (send, recv) = match tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                tracing::debug!("connection ended before a control stream: {e}");
                return;
            }
            Err(_) => {
                connection.close(
                    close_code::PROTOCOL_ERROR.into(),
                    b"no control stream opened in time",
                );
                return;
            }
        };
        let mut send = FramedSend::new(send);
        // Until admitted, a peer may send only a small Hello.
        let mut recv = FramedRecv::new(recv, HELLO_MAX_FRAME);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, recv.recv::<Hello>()).await {
            Ok(Ok(Some(hello))) => hello,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return close_for(&connection, &e),
            Err(_) => {
                connection.close(
                    close_code::PROTOCOL_ERROR.into(),
                    b"no hello received in time",
                );
                return;
            }
        };
        let (mut reply, admission) = self.admit(&fingerprint, &hello);
        drop(handshake);
        recv.set_max_frame(self.max_frame);
        let mut _live = None;
        if let (HelloReply::Welcome { .. }, Admission::Client) = (&reply, admission) {
            let max = self.registry.config().max_connections_per_client;
            let mut live = self.live_connections();
            if live.values().filter(|(fp, _)| *fp == fingerprint).count() >= max {
                reply = refuse(
                    ErrorKind::Limit,
                    format!(
                        "client {fingerprint} already holds {max} connections to {} (max_connections_per_client in its config.yaml); close some first",
                        self.host
                    ),
                );
            } else {
                let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
                live.insert(id, (fingerprint.clone(), connection.clone()));
                _live = Some(LiveGuard { node: &self, id });
            }
        }
        let _ = send.send(&reply).await;
        if let HelloReply::Refused(refusal) = reply {
            tracing::info!("refused: {}", refusal.message);
            let code = match refusal.kind {
                ErrorKind::VersionMismatch => close_code::VERSION_MISMATCH,
                ErrorKind::Limit => close_code::LIMIT,
                _ => close_code::UNAUTHORIZED,
            };
            send.finish();
            // Give the refusal frame a moment to be delivered before the close frame.
            let _ = tokio::time::timeout(Duration::from_millis(200), send.stream().stopped()).await;
            connection.close(code.into(), refusal.message.as_bytes());
            return;
        }
        tracing::debug!("client admitted");
        let attachments = match admission {
            Admission::Client => Some(tokio::spawn(crate::attach::accept_attachments(
                self.clone(),
                connection.clone(),
                fingerprint.clone(),
                shutdown.clone(),
            ))),
            Admission::MigratingNode => None,
        };
        let mut restores_left = 1;
        loop {
            let request = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                request = recv.recv::<Request>() => request,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(e) => {
                    close_for(&connection, &e);
                    break;
                }
            };
            let reply = match (admission, &request) {
                (
                    Admission::Client,
                    Request::Revoke {
                        fingerprint: revoked,
                    },
                ) => self.close_revoked(&fingerprint, revoked),
                (Admission::Client, _) => self.handle(request).await,
                (Admission::MigratingNode, Request::Restore { .. }) if restores_left > 0 => {
                    restores_left -= 1;
                    self.handle(request).await
                }
                (Admission::MigratingNode, _) => Reply::Error(ErrorReply {
                    kind: ErrorKind::Unauthorized,
                    message: format!(
                        "a migration ticket allows one restore on {} and nothing else",
                        self.host
                    ),
                }),
            };
            if send.send(&reply).await.is_err() {
                break;
            }
        }
        // The control stream is done; attachments may continue on the connection.
        if let Some(attachments) = attachments {
            let _ = attachments.await;
        }
    }

    fn live_connections(&self) -> MutexGuard<'_, HashMap<u64, (Fingerprint, quinn::Connection)>> {
        // No code panics while holding this lock.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every live connection of a revoked key, if `requester` is the node's own client.
    fn close_revoked(&self, requester: &Fingerprint, revoked: &str) -> Reply {
        let refused = |message: String| {
            Reply::Error(ErrorReply {
                kind: ErrorKind::Unauthorized,
                message,
            })
        };
        if *requester != self.local_client {
            return refused(format!(
                "only the client identity in {}'s own CMDOP_HOME may revoke keys",
                self.host
            ));
        }
        let Ok(revoked) = revoked.parse::<Fingerprint>() else {
            return Reply::Error(ErrorReply {
                kind: ErrorKind::BadRequest,
                message: format!("'{revoked}' is not a fingerprint"),
            });
        };
        if !self.authorized.is_revoked(&revoked).unwrap_or(false) {
            return refused(format!(
                "{revoked} is not revoked on {}; run 'cmdop-node revoke {revoked}' there",
                self.host
            ));
        }
        let mut closed = 0;
        for (fingerprint, connection) in self.live_connections().values() {
            if *fingerprint == revoked {
                connection.close(
                    close_code::UNAUTHORIZED.into(),
                    b"this client key was revoked on the node",
                );
                closed += 1;
            }
        }
        tracing::info!(%revoked, closed, "closed the connections of a revoked key");
        Reply::Revoked { closed }
    }

    /// Sets or clears a session's attached mark (metadata-only attach); counts as activity.
    fn mark_attached(&self, session: uuid::Uuid, attached: bool) -> Result<Reply, ErrorReply> {
        let session = self.registry.get(session)?;
        {
            let mut core = session.lock();
            core.marked_attached = attached;
            core.last_active_ms = now_ms();
        }
        self.registry.touch();
        Ok(Reply::Session(session.info()))
    }

    /// Answers one control request.
    pub async fn handle(&self, request: Request) -> Reply {
        let registry = &self.registry;
        let result = match request {
            Request::Create(create) => registry
                .create(create, &[])
                .map(|s| Reply::Session(s.info())),
            Request::List => Ok(Reply::Sessions(registry.list())),
            Request::Show { session, tail } => registry.get(session).map(|s| {
                let tail = tail
                    .map(|n| s.lock().ring.last_lines(n as usize).data)
                    .unwrap_or_default();
                Reply::Shown {
                    session: s.info(),
                    tail,
                }
            }),
            Request::Attach { session } => self.mark_attached(session, true),
            Request::Detach { session } => self.mark_attached(session, false),
            Request::Destroy { session } => registry
                .destroy(session)
                .map(|_| Reply::Destroyed(vec![session])),
            Request::DestroyIdle { idle_ms } => Ok(Reply::Destroyed(
                registry.destroy_idle(Duration::from_millis(idle_ms), now_ms()),
            )),
            // Answered in `serve_connection`, which knows who asks.
            Request::Revoke { .. } => Err(ErrorReply {
                kind: ErrorKind::Unauthorized,
                message: "revocations are only taken from the node's own client identity".into(),
            }),
            Request::Send { session, data } => match registry.get(session) {
                Ok(s) => match s.write_input(data).await {
                    Ok(()) => Ok(Reply::Done),
                    Err(e) => Err(ErrorReply {
                        kind: ErrorKind::BadRequest,
                        message: format!("cannot send to session {session}: {e}"),
                    }),
                },
                Err(e) => Err(e),
            },
            Request::Snapshot { session, lines } => registry
                .get(session)
                .map(|s| Reply::Snapshot(crate::migrate::snapshot_of(self, &s, lines))),
            Request::Restore { snapshot, name } => crate::migrate::restore(self, snapshot, name)
                .map(|(session, dropped)| Reply::Restored { session, dropped }),
            Request::MigrationTicket => crate::migrate::issue_ticket(self),
            Request::Migrate {
                session,
                to_name,
                to_addr,
                to_fingerprint,
                ticket,
                name,
            } => {
                let request = crate::migrate::MigrateRequest {
                    session,
                    to_name,
                    to_addr,
                    to_fingerprint,
                    ticket,
                    name,
                };
                crate::migrate::migrate(self, request).await
            }
        };
        result.unwrap_or_else(Reply::Error)
    }
}

/// Closes a connection whose peer sent something unreadable.
pub fn close_for(connection: &quinn::Connection, error: &RecvError) {
    if let RecvError::Frame(e) = error {
        tracing::info!("closing connection: {e}");
        connection.close(close_code::PROTOCOL_ERROR.into(), e.to_string().as_bytes());
    }
}
