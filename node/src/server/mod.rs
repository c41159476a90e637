//! The node's QUIC server: accepts connections, authenticates clients, and serves the control
//! stream (and attach streams) of each.
//!
//! Per connection:
//! - the TLS handshake proves the client holds its key (any key is accepted at that stage);
//! - the first bidirectional stream is the control stream; its first frame is [`Hello`], checked
//!   for the protocol version and against the authorized clients (or a one-time invite, or a
//!   migration ticket), then against `max_connections_per_client` ([`live`]);
//! - the control stream then carries requests ([`control`]);
//! - later bidirectional streams are attachments ([`attach`]), which run on any framed stream
//!   ([`framed`]): this module adapts QUIC streams to them.
//!
//! Relaying for nodes behind NAT: as a meeting node, this node takes registrations from keys in
//! `relay_nodes` and joins clients' control streams to them ([`relay`]); as a node behind NAT,
//! it registers at the meeting nodes of its `node.rendezvous` and serves the clients they relay
//! on a second endpoint ([`rendezvous`]).
//!
//! A malformed or oversized frame closes that connection only, with a reason the peer can read.

pub mod attach;
pub mod control;
pub mod echo;
pub mod framed;
pub mod live;
mod pump;
pub mod relay;
pub mod rendezvous;
pub mod skip;

use crate::os::PtySpawner;
use crate::server::attach::OnMalformed;
use crate::server::control::Requester;
use crate::server::live::{LiveConnections, LiveGuard};
use crate::session::admission::Peer;
use crate::session::now_ms;
use crate::session::registry::Registry;
use crate::session::Session;
use crate::upgrade::reexec::Reexec;
use crate::upgrade::state::NodeState;
use crate::upgrade::Upgrades;
use anyhow::Context;
use cmdop_certs::{AuthorizedClients, Fingerprint, Identity, Invites};
use cmdop_client::home::{host_name, CLIENT_IDENTITY, NODE_IDENTITY};
use cmdop_client::tls::{node_endpoint_config, peer_fingerprint, server_config};
use cmdop_client::udp::MainSocket;
use cmdop_client::wire::{FramedRecv, FramedSend, RecvError};
use cmdop_proto::config::{Config, Rendezvous};
use cmdop_proto::frame::FrameError;
use cmdop_proto::{
    close_code, Credential, ErrorKind, ErrorReply, Hello, HelloReply, Reply, Request,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    pub(crate) authorized: AuthorizedClients,
    invites: Invites,
    /// Tokens that authorize relay node keys.
    relay_invites: Invites,
    /// One-time tickets that admit another node for one migration ([`crate::migrate`]).
    pub(crate) migration_tickets: Invites,
    /// State directory.
    pub home: PathBuf,
    /// Host name reported to clients.
    pub host: String,
    /// Largest frame accepted.
    pub max_frame: usize,
    pub(crate) endpoint: quinn::Endpoint,
    /// Admitted connections, for per-client limits and for closing a revoked client's.
    pub(crate) live: Arc<LiveConnections>,
    /// Scheduled commands ([`crate::trigger`]).
    pub triggers: Arc<crate::trigger::Triggers>,
    /// A copy of the endpoint's UDP socket, for an upgrade in place to hand down.
    pub(crate) socket: std::net::UdpSocket,
    /// The endpoint's socket, for hole punching.
    pub(crate) main_socket: Arc<MainSocket>,
    /// Upgrades in place ([`crate::upgrade`]).
    pub upgrades: Upgrades,
    /// Node keys that may register here to be relayed to (`relay_nodes`).
    pub(crate) relay_nodes: AuthorizedClients,
    /// The nodes registered here ([`relay`]).
    pub(crate) registered: Arc<relay::Registered>,
    /// The meeting nodes this node registers at (`node.rendezvous`).
    pub(crate) rendezvous: Vec<Rendezvous>,
    /// The name this node registers under (`node.name`, else the host name).
    pub(crate) relay_name: String,
    /// The endpoint for relayed clients, when `node.rendezvous` names meeting nodes.
    relay: Option<Arc<rendezvous::RelayEndpoint>>,
    /// The message version served ([`NodeOptions::protocol_version`]).
    protocol_version: u32,
}

/// Counts a handshake in progress for as long as it lives.
struct HandshakeGuard(Arc<AtomicUsize>);

impl HandshakeGuard {
    /// Counts one more handshake in `counter`.
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        HandshakeGuard(counter.clone())
    }
}

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
    /// How to execute the next binary in an upgrade in place.
    pub reexec: Arc<dyn Reexec>,
    /// The message version served: [`cmdop_proto::PROTOCOL_VERSION`], or another to stand in for an older
    /// binary in tests ([`PROTOCOL_VERSION_ENV`]).
    pub protocol_version: u32,
}

/// A test seam: the message version the node serves instead of [`cmdop_proto::PROTOCOL_VERSION`], so that
/// end-to-end tests can stand a node in for an older binary. It is not handed to the binary
/// an upgrade in place executes.
pub const PROTOCOL_VERSION_ENV: &str = "CMDOP_TEST_PROTOCOL_VERSION";

/// What an admitted connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// An authorized client: every request and attachments.
    Client,
    /// A node holding a migration ticket: one [`cmdop_proto::Request::Restore`], nothing else.
    MigratingNode,
    /// A node key in `relay_nodes`: one [`cmdop_proto::Request::Register`], nothing else.
    RelayNode,
}

fn refuse(kind: ErrorKind, message: String) -> HelloReply {
    HelloReply::Refused(ErrorReply { kind, message })
}

impl Node {
    /// Loads identities and binds the UDP socket.
    pub fn bind(options: NodeOptions, spawner: Arc<dyn PtySpawner>) -> anyhow::Result<Arc<Node>> {
        let socket = std::net::UdpSocket::bind(options.listen).with_context(|| {
            format!(
                "cannot listen on UDP {}; is another cmdop-node running? (choose another with --listen)",
                options.listen
            )
        })?;
        let upgrades = Upgrades::new(options.reexec.clone(), 0, None);
        Node::on_socket(options, spawner, socket, upgrades)
    }

    /// Takes up what an upgrade in place handed down: the UDP socket and every session, around
    /// the same PTYs and programs. `failure` says why the new binary gave the state back, if it
    /// did (this is the old binary again).
    pub fn resume(
        options: NodeOptions,
        spawner: Arc<dyn PtySpawner>,
        mut state: NodeState,
        failure: Option<String>,
    ) -> anyhow::Result<Arc<Node>> {
        let socket = crate::upgrade::reexec::inherited_socket(state.socket_fd)
            .context("the UDP socket handed down by the upgrade is not open")?;
        let upgrades = Upgrades::new(options.reexec.clone(), state.generation, None);
        let node = Node::on_socket(options, spawner.clone(), socket, upgrades)?;
        // Nothing fails from here on: the handed-down descriptors are this binary's now.
        crate::upgrade::reexec::close_inherited(state.socket_fd);
        let mut lost = Vec::new();
        let sessions = std::mem::take(&mut state.sessions);
        let handed_down = sessions.len();
        for session in sessions {
            let id = session.id;
            let handover = crate::os::PtyHandover {
                fd: session.pty_fd,
                pid: session.pid.unwrap_or(0),
            };
            match spawner.adopt(handover) {
                Ok(spawned) => node.registry.adopt(Session::adopt(session, spawned)),
                Err(e) => {
                    tracing::error!(session = %id, "cannot take the session's PTY over: {e}");
                    lost.push(format!("session {id} ({e})"));
                }
            }
        }
        for &pid in &state.reaping {
            tokio::spawn(crate::session::reap(spawner.child(pid), Some(pid)));
        }
        let adopted = (handed_down - lost.len()) as u32;
        let failure = match (failure, lost.is_empty()) {
            (failure, true) => failure,
            (failure, false) => Some(
                failure
                    .into_iter()
                    .chain([format!("lost {}", lost.join(", "))])
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let outcome = crate::upgrade::outcome(&state, adopted, failure);
        match &outcome.error {
            None => {
                tracing::info!(from = %outcome.from_version, to = %outcome.to_version, paused_ms = outcome.paused_ms, sessions = adopted, "upgraded in place")
            }
            Some(e) => tracing::error!(
                paused_ms = outcome.paused_ms,
                sessions = adopted,
                "upgrade in place failed, resumed version {}: {e}",
                outcome.to_version
            ),
        }
        node.upgrades.record(outcome);
        Ok(node)
    }

    /// A node serving on `socket`.
    fn on_socket(
        options: NodeOptions,
        spawner: Arc<dyn PtySpawner>,
        socket: std::net::UdpSocket,
        upgrades: Upgrades,
    ) -> anyhow::Result<Arc<Node>> {
        let identity = Identity::load_or_create(&options.home, NODE_IDENTITY)?;
        let tickets_dir = options.home.join("migration-tickets");
        cmdop_certs::files::ensure_private_dir(&tickets_dir)
            .with_context(|| format!("cannot create {}", tickets_dir.display()))?;
        let local_client = Identity::load_or_create(&options.home, CLIENT_IDENTITY)?
            .fingerprint()
            .clone();
        let server = server_config(&identity)?;
        let kept = socket
            .try_clone()
            .context("cannot keep a copy of the UDP socket")?;
        let main_socket =
            MainSocket::from_std(socket, Arc::default()).context("cannot use the UDP socket")?;
        let endpoint = main_socket
            .endpoint(node_endpoint_config(&identity), Some(server))
            .context("cannot start the QUIC endpoint")?;
        let host = host_name();
        let relay = match options.config.node.rendezvous.is_empty() {
            true => None,
            false => Some(Arc::new(rendezvous::RelayEndpoint::new(&identity)?)),
        };
        let max_frame = usize::try_from(options.config.node.max_frame.0).unwrap_or(usize::MAX);
        let registry = Arc::new(Registry::new(
            spawner,
            host.clone(),
            options.config.node.clone(),
        ));
        let triggers = crate::trigger::Triggers::open(
            &options.home,
            host.clone(),
            Arc::new(crate::trigger::runner::NativeRunner),
            Arc::new(crate::trigger::clock::SystemClock::from_env()),
        );
        Ok(Arc::new(Node {
            triggers,
            registry,
            identity: Arc::new(identity),
            local_client,
            authorized: AuthorizedClients::new(&options.home),
            relay_nodes: AuthorizedClients::relay_nodes(&options.home),
            registered: Arc::default(),
            rendezvous: options.config.node.rendezvous.clone(),
            relay_name: options
                .config
                .node
                .name
                .clone()
                .unwrap_or_else(|| host.clone()),
            relay,
            invites: Invites::new(&options.home),
            relay_invites: Invites::relay(&options.home),
            migration_tickets: Invites::new(&tickets_dir),
            home: options.home,
            host,
            max_frame,
            endpoint,
            live: Arc::default(),
            socket: kept,
            main_socket,
            upgrades,
            protocol_version: options.protocol_version,
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
        tasks.spawn(self.triggers.clone().run(shutdown.child_token()));
        if let Some(relay) = self.relay.clone() {
            tasks.spawn(rendezvous::run(self.clone(), relay, shutdown.child_token()));
        }
        let handshakes = Arc::new(AtomicUsize::new(0));
        let mut refused_handshakes = 0u64;
        let mut last_refusal_log = None;
        let mut upgrades = self.upgrades.take_started();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Returns only if the upgrade failed: serve on.
                Some(plan) = recv_upgrade(&mut upgrades) => crate::upgrade::perform(&self, plan).await,
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
                    let handshake = HandshakeGuard::enter(&handshakes);
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
        if let Some(relay) = &self.relay {
            relay.close();
        }
        self.registry.destroy_all();
        self.triggers.stop_all();
        tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Decides whether `fingerprint` is served, and for what.
    fn admit(&self, fingerprint: &Fingerprint, hello: &Hello) -> (HelloReply, Admission) {
        if hello.version != self.protocol_version {
            let refusal = refuse(
                ErrorKind::VersionMismatch,
                format!(
                    "{} speaks cmdop protocol {} but this client speaks {}; upgrade the older side",
                    self.host, self.protocol_version, hello.version
                ),
            );
            return (refusal, Admission::Client);
        }
        let revoked = self.authorized.is_revoked(fingerprint).unwrap_or(true);
        if let (Some(Credential::MigrationTicket(ticket)), false) = (&hello.credential, revoked) {
            match self.migration_tickets.redeem(ticket, now_ms() / 1000) {
                Ok(()) => {
                    tracing::info!(node = %fingerprint, "node admitted for one migration");
                    let welcome = HelloReply::Welcome {
                        version: self.protocol_version,
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
                Err(cmdop_certs::InviteError::Unknown) => {
                    let refusal = refuse(
                        ErrorKind::Unauthorized,
                        format!(
                            "the migration ticket is unknown or was already used on {}; run 'cmdop session migrate' again",
                            self.host
                        ),
                    );
                    return (refusal, Admission::Client);
                }
            }
        }
        if let Some(Credential::RelayInvite(token)) = &hello.credential {
            if revoked {
                let message = format!(
                    "relay node key {fingerprint} was revoked on {host}; a token cannot bring it back: on {host} run 'cmdop-node authorize --relay {fingerprint}'",
                    host = self.host
                );
                return (refuse(ErrorKind::Unauthorized, message), Admission::Client);
            }
            if !self.relay_nodes.is_authorized(fingerprint).unwrap_or(false) {
                return self.admit_relay_invite(fingerprint, token);
            }
        }
        let reply = self.admit_client(fingerprint, hello);
        if matches!(reply, HelloReply::Refused(_))
            && !revoked
            && self.relay_nodes.is_authorized(fingerprint).unwrap_or(false)
        {
            let welcome = HelloReply::Welcome {
                version: self.protocol_version,
                host: self.host.clone(),
                invited: false,
            };
            return (welcome, Admission::RelayNode);
        }
        (reply, Admission::Client)
    }

    /// Redeems a relay invite: `fingerprint` becomes a relay node key for good.
    fn admit_relay_invite(
        &self,
        fingerprint: &Fingerprint,
        token: &str,
    ) -> (HelloReply, Admission) {
        let refused = |kind, message| (refuse(kind, message), Admission::Client);
        if let Err(e) = self.relay_invites.redeem(token, now_ms() / 1000) {
            let what = match e {
                cmdop_certs::InviteError::Unknown => "is unknown or was already used",
                cmdop_certs::InviteError::Expired => "has expired",
            };
            let message = format!(
                "the relay token in node.rendezvous {what} on {host}; on {host} run 'cmdop-node invite --relay' and put the new token there",
                host = self.host
            );
            return refused(ErrorKind::Unauthorized, message);
        }
        if let Err(e) = self.relay_nodes.authorize(fingerprint, "invited") {
            let message = format!(
                "cannot record the relay authorization on {}: {e}",
                self.host
            );
            return refused(ErrorKind::Internal, message);
        }
        tracing::info!(node = %fingerprint, "relay node authorized by invite");
        let welcome = HelloReply::Welcome {
            version: self.protocol_version,
            host: self.host.clone(),
            invited: true,
        };
        (welcome, Admission::RelayNode)
    }

    /// Decides whether the client `fingerprint` is served (the protocol version was checked).
    fn admit_client(&self, fingerprint: &Fingerprint, hello: &Hello) -> HelloReply {
        let welcome = |invited| HelloReply::Welcome {
            version: self.protocol_version,
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
        if let (Some(Credential::Invite(token)), false) = (&hello.credential, revoked) {
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
        let Some((mut send, mut recv, hello)) = receive_hello(&connection).await else {
            return;
        };
        let (reply, admission) = self.admit(&fingerprint, &hello);
        drop(handshake);
        recv.set_max_frame(self.max_frame);
        let (reply, _live) = self.register(reply, admission, &fingerprint, &connection);
        let _ = send.send(&reply).await;
        if let HelloReply::Refused(refusal) = reply {
            return refuse_connection(&connection, &mut send, refusal).await;
        }
        tracing::debug!("client admitted");
        let attachments = match admission {
            Admission::Client => Some(tokio::spawn(accept_attachments(
                self.clone(),
                connection.clone(),
                fingerprint.clone(),
                shutdown.clone(),
            ))),
            Admission::MigratingNode | Admission::RelayNode => None,
        };
        let requester = Requester {
            fingerprint,
            admission,
        };
        self.serve_control(&connection, &requester, send, recv, &shutdown)
            .await;
        // The control stream is done; attachments may continue on the connection.
        if let Some(attachments) = attachments {
            let _ = attachments.await;
        }
    }

    /// Serves the control stream: requests, registrations (held until the stream ends), and at
    /// most one relay, after which the stream carries the relayed bytes until either side ends.
    async fn serve_control(
        &self,
        connection: &quinn::Connection,
        requester: &Requester,
        mut send: FramedSend,
        mut recv: FramedRecv,
        shutdown: &CancellationToken,
    ) {
        let on_malformed = closer(connection);
        let mut registrations = Vec::new();
        loop {
            let served = control::serve(
                self,
                requester,
                &mut send,
                &mut recv,
                &on_malformed,
                shutdown,
            );
            let reply = match served.await {
                None => return,
                Some(Request::Relay(relay)) => {
                    let client = (connection.remote_address(), &requester.fingerprint);
                    match self.registered.open(&relay.to, client, &self.host).await {
                        Ok(joined) => return relay::join(send, recv, joined, &relay.to).await,
                        Err(e) => Reply::Error(e),
                    }
                }
                Some(Request::Punch(_)) => {
                    let peer = connection.remote_address();
                    let punching = self.relay.as_ref().is_some_and(|relay| {
                        relay.punch_towards_client(&self.main_socket, peer)
                    });
                    match punching {
                        true => Reply::Done,
                        false => Reply::Error(rendezvous::not_relayed(&self.host)),
                    }
                }
                // One registration per connection: a key cannot hoard names.
                Some(Request::Register(_)) if !registrations.is_empty() => {
                    Reply::Error(ErrorReply {
                        kind: ErrorKind::Limit,
                        message: format!(
                            "this connection already holds a registration at {}; one name per connection",
                            self.host
                        ),
                    })
                }
                Some(Request::Register(register)) => {
                    let fingerprint = &requester.fingerprint;
                    match self.register_relay_node(&register.name, fingerprint, connection) {
                        Ok(guard) => {
                            registrations.push(guard);
                            Reply::Done
                        }
                        Err(e) => Reply::Error(e),
                    }
                }
                Some(_) => return,
            };
            if send.send(&reply).await.is_err() {
                return;
            }
        }
    }

    /// Registers a node behind NAT under `name`, if its key is in `relay_nodes`.
    fn register_relay_node(
        &self,
        name: &str,
        fingerprint: &Fingerprint,
        connection: &quinn::Connection,
    ) -> Result<relay::RegisteredGuard, ErrorReply> {
        if !self.relay_nodes.is_authorized(fingerprint).unwrap_or(false) {
            return Err(ErrorReply {
                kind: ErrorKind::Unauthorized,
                message: format!(
                    "{} does not authorize relay node key {fingerprint}; on {} run 'cmdop-node authorize --relay {fingerprint}'",
                    self.host, self.host
                ),
            });
        }
        self.registered
            .register(name, fingerprint, connection, &self.host)
    }

    /// Counts a welcomed client's connection against `max_connections_per_client`: the reply
    /// becomes a refusal when the key holds too many.
    fn register(
        &self,
        reply: HelloReply,
        admission: Admission,
        fingerprint: &Fingerprint,
        connection: &quinn::Connection,
    ) -> (HelloReply, Option<LiveGuard>) {
        if !matches!(
            (&reply, admission),
            (HelloReply::Welcome { .. }, Admission::Client)
        ) {
            return (reply, None);
        }
        let max = self.registry.config().max_connections_per_client;
        match self.live.register(fingerprint, connection, max) {
            Some(guard) => (reply, Some(guard)),
            None => (
                refuse(
                    ErrorKind::Limit,
                    format!(
                        "client {fingerprint} already holds {max} connections to {} (max_connections_per_client in its config.yaml); close some first",
                        self.host
                    ),
                ),
                None,
            ),
        }
    }
}

/// The next upgrade started, if the node takes them.
async fn recv_upgrade(
    upgrades: &mut Option<tokio::sync::mpsc::UnboundedReceiver<cmdop_proto::UpgradePlan>>,
) -> Option<cmdop_proto::UpgradePlan> {
    match upgrades {
        Some(upgrades) => upgrades.recv().await,
        None => std::future::pending().await,
    }
}

/// Accepts the control stream and its [`Hello`], within [`HELLO_TIMEOUT`] each; closes the
/// connection when the peer is too slow or sends garbage.
async fn receive_hello(connection: &quinn::Connection) -> Option<(FramedSend, FramedRecv, Hello)> {
    let (send, recv) = match tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            tracing::debug!("connection ended before a control stream: {e}");
            return None;
        }
        Err(_) => {
            connection.close(
                close_code::PROTOCOL_ERROR.into(),
                b"no control stream opened in time",
            );
            return None;
        }
    };
    let send = FramedSend::new(send);
    // Until admitted, a peer may send only a small Hello.
    let mut recv = FramedRecv::new(recv, HELLO_MAX_FRAME);
    match tokio::time::timeout(HELLO_TIMEOUT, recv.recv::<Hello>()).await {
        Ok(Ok(Some(hello))) => Some((send, recv, hello)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            close_for(connection, &e);
            None
        }
        Err(_) => {
            connection.close(
                close_code::PROTOCOL_ERROR.into(),
                b"no hello received in time",
            );
            None
        }
    }
}

/// Ends a refused connection: the refusal frame (already sent) first, then the close.
async fn refuse_connection(
    connection: &quinn::Connection,
    send: &mut FramedSend,
    refusal: ErrorReply,
) {
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
}

/// Accepts attach streams on an admitted connection until it closes.
async fn accept_attachments(
    node: Arc<Node>,
    connection: quinn::Connection,
    fingerprint: Fingerprint,
    shutdown: CancellationToken,
) {
    let mut attachments = JoinSet::new();
    let on_malformed = closer(&connection);
    loop {
        let streams = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            streams = connection.accept_bi() => streams,
            Some(_) = attachments.join_next(), if !attachments.is_empty() => continue,
        };
        let Ok((send, recv)) = streams else { break };
        let peer = Peer {
            fingerprint: fingerprint.clone(),
            addr: connection.remote_address(),
        };
        attachments.spawn(attach::attach(
            node.registry.clone(),
            peer,
            FramedSend::new(send),
            FramedRecv::new(recv, node.max_frame),
            on_malformed.clone(),
            round_trip(&connection),
            shutdown.clone(),
        ));
    }
    // Attachments end on their own (their streams fail with the connection, or on shutdown).
    attachments.detach_all();
}

/// Closes `connection` when its peer sends an unreadable frame.
fn closer(connection: &quinn::Connection) -> OnMalformed {
    let connection = connection.clone();
    Arc::new(move |e: &FrameError| close_malformed(&connection, e))
}

fn close_malformed(connection: &quinn::Connection, error: &FrameError) {
    tracing::info!("closing connection: {error}");
    connection.close(
        close_code::PROTOCOL_ERROR.into(),
        error.to_string().as_bytes(),
    );
}

/// Closes a connection whose peer sent something unreadable.
pub fn close_for(connection: &quinn::Connection, error: &RecvError) {
    if let RecvError::Frame(e) = error {
        close_malformed(connection, e);
    }
}

/// The connection's current round-trip time, for the output pacer.
fn round_trip(connection: &quinn::Connection) -> attach::RoundTrip {
    let connection = connection.clone();
    Arc::new(move || connection.rtt())
}
