//! The home node's side of relaying: a node behind NAT keeps one outbound connection to each
//! meeting node in its `node.rendezvous` (dialed with its node key from its own UDP socket,
//! the meeting node's key pinned by the config), registers its name there, and re-dials with
//! backoff whenever that connection drops (its address changed, a NAT forgot the mapping, the
//! meeting node restarted).
//!
//! Each stream the meeting node opens on that connection is one relayed client: after a
//! [`RelayOpen`] frame it carries the client's QUIC datagrams. They enter a second quinn
//! endpoint of this node, over a [`VirtualSocket`] that gives each stream a synthetic peer
//! address, and the connections it accepts are served exactly as direct ones.

use crate::server::{HandshakeGuard, Node};
use cmdop_client::tls::{client_config, node_endpoint_config, server_config, transport_config};
use cmdop_client::udp::MainSocket;
use cmdop_client::vsock::VirtualSocket;
use cmdop_client::wire::{FramedRecv, FramedSend};
use cmdop_proto::config::Rendezvous;
use cmdop_proto::{
    close_code, Call, Credential, Hello, HelloReply, Register, RelayOpen, Reply, ALPN,
    PROTOCOL_VERSION,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the registration connection proves it is alive: well inside common NAT mapping
/// timeouts (30 s and up) and inside the 10 s idle timeout every node applies, so a restarted
/// meeting node is noticed (by its stateless reset) within this long.
pub const REGISTRATION_KEEP_ALIVE: Duration = Duration::from_secs(4);

/// Relayed clients at once through one meeting node.
const MAX_RELAYED: u32 = 4096;

/// How long one dial of a meeting node may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest and longest pause between dials of a meeting node that failed.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));

/// How long, and how often, the node punches towards a relayed client: past the client's
/// [`cmdop_client::punch::PUNCH_WINDOW`], a datagram of 16 bytes every 100 ms.
const PUNCH_FOR: Duration = Duration::from_secs(6);
const PUNCH_EVERY: Duration = Duration::from_millis(100);

/// Relayed clients punched towards at once.
const MAX_PUNCHING: usize = 64;

/// How long the meeting node may take to name a relayed client.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's endpoint for relayed clients.
pub struct RelayEndpoint {
    socket: Arc<VirtualSocket>,
    endpoint: quinn::Endpoint,
    /// Word of each relayed stream's end, by peer address, until its connection is accepted.
    ends: Mutex<HashMap<SocketAddr, oneshot::Receiver<()>>>,
    /// Where punches are going now.
    punching: Mutex<HashSet<SocketAddr>>,
    /// Each relayed peer's client address as its meeting node saw it.
    origins: Mutex<HashMap<SocketAddr, SocketAddr>>,
}

impl std::fmt::Debug for RelayEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayEndpoint").finish_non_exhaustive()
    }
}

impl RelayEndpoint {
    /// An endpoint with the node's identity over a virtual socket with no peers yet.
    pub fn new(identity: &cmdop_certs::Identity) -> anyhow::Result<Self> {
        let socket = VirtualSocket::new(cmdop_client::vsock::synthetic_addr(0));
        let endpoint = socket.endpoint(
            node_endpoint_config(identity),
            Some(server_config(identity)?),
        )?;
        Ok(RelayEndpoint {
            socket,
            endpoint,
            ends: Mutex::default(),
            punching: Mutex::default(),
            origins: Mutex::default(),
        })
    }

    fn ends(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, oneshot::Receiver<()>>> {
        // No code panics while holding this lock.
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes `connection` when its relayed stream ends, so its attachments end at once.
    /// When the connection ends first, its relayed stream is finished after its last packets.
    fn close_with_stream(self: &Arc<Self>, connection: &quinn::Connection) {
        let peer = connection.remote_address();
        let Some(mut ended) = self.ends().remove(&peer) else {
            return;
        };
        let connection = connection.clone();
        let relay = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = &mut ended => connection.close(close_code::DONE.into(), b"the relay ended"),
                _ = connection.closed() => {}
            }
            relay.forget(peer);
        });
    }

    /// Finishes the relayed stream of `peer`, whose connection never came to be.
    fn drop_peer(&self, peer: SocketAddr) {
        self.ends().remove(&peer);
        self.forget(peer);
    }

    /// Lets go of the relayed `peer`: its stream and what the meeting node said of it.
    fn forget(&self, peer: SocketAddr) {
        self.socket.remove_peer(peer);
        self.origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    }

    /// Punches towards the client of the relayed connection from `peer` (see
    /// [`cmdop_proto::Punch`]), in the background, unless its address is not one to send to,
    /// or as many punches as allowed are going (or one to the same address). False when `peer`
    /// is no relayed connection.
    pub fn punch_towards_client(
        self: &Arc<Self>,
        socket: &Arc<MainSocket>,
        peer: SocketAddr,
    ) -> bool {
        let origin = self
            .origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied();
        let Some(client) = origin else {
            return false;
        };
        if !punchable(client) {
            tracing::debug!(%client, "no punch towards this address");
        } else if let Some(going) = PunchGuard::enter(self, client) {
            tokio::spawn(punch(socket.clone(), client, going));
        }
        true
    }

    /// Closes every relayed connection.
    pub fn close(&self) {
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"cmdop-node is shutting down");
    }
}

/// Keeps the node registered at every meeting node and serves relayed clients, until
/// `shutdown`.
pub async fn run(node: Arc<Node>, relay: Arc<RelayEndpoint>, shutdown: CancellationToken) {
    let name = node.relay_name.clone();
    let mut tasks = JoinSet::new();
    for meeting in node.rendezvous.clone() {
        let link = Link {
            node: node.clone(),
            relay: relay.clone(),
            meeting,
            name: name.clone(),
            last_error: Mutex::new(None),
        };
        tasks.spawn(link.keep_registered(shutdown.clone()));
    }
    tasks.spawn(accept_relayed(node, relay, shutdown));
    while tasks.join_next().await.is_some() {}
}

/// Accepts the relayed clients' connections and serves them as direct ones.
async fn accept_relayed(node: Arc<Node>, relay: Arc<RelayEndpoint>, shutdown: CancellationToken) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            incoming = relay.endpoint.accept() => incoming,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        // Relayed peers are unauthenticated until their handshake ends, as direct ones.
        if handshakes.load(std::sync::atomic::Ordering::Acquire)
            >= node.registry.config().max_handshakes
        {
            incoming.refuse();
            continue;
        }
        let node = node.clone();
        let token = shutdown.child_token();
        let guard = HandshakeGuard::enter(&handshakes);
        let relay = relay.clone();
        tasks.spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(connection) => {
                    relay.close_with_stream(&connection);
                    node.serve_connection(connection, token, guard).await
                }
                Err(e) => {
                    tracing::info!("relayed handshake failed: {e}");
                    relay.drop_peer(peer);
                }
            }
        });
    }
    tasks.abort_all();
}

/// The registration at one meeting node.
struct Link {
    node: Arc<Node>,
    relay: Arc<RelayEndpoint>,
    meeting: Rendezvous,
    name: String,
    /// The last failure logged, so a meeting node that stays away is logged once.
    last_error: Mutex<Option<String>>,
}

impl Link {
    /// Dials, registers and serves, again and again with backoff, until `shutdown`.
    async fn keep_registered(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF.0;
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.register_and_serve() => outcome,
            };
            self.report(outcome);
            if started.elapsed() > 2 * BACKOFF.1 {
                backoff = BACKOFF.0;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Logs why the registration ended: a new reason as a warning, a repeated one quietly.
    fn report(&self, outcome: Result<String, String>) {
        let message = match outcome {
            Ok(ended) => {
                tracing::info!(meeting = %self.meeting.name, "registration ended: {ended}; dialing again");
                None
            }
            Err(e) => Some(e),
        };
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(message) = &message {
            if last.as_ref() != Some(message) {
                tracing::warn!(meeting = %self.meeting.name, "{message}");
            } else {
                tracing::debug!(meeting = %self.meeting.name, "{message}");
            }
        }
        *last = message;
    }

    /// One registration: dial, hello, register, then accept relayed clients until the
    /// connection ends (Ok with why) or a sentence saying what failed.
    async fn register_and_serve(&self) -> Result<String, String> {
        let connection = self.dial().await?;
        let (_send, _recv) = self.register(&connection).await?;
        tracing::info!(meeting = %self.meeting.name, name = %self.name, "registered for relaying");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        loop {
            let (send, recv) = match connection.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => return Ok(e.to_string()),
            };
            let relay = self.relay.clone();
            tokio::spawn(async move { open_relayed(&relay, send, recv).await });
        }
    }

    /// The QUIC handshake with the meeting node, its key checked against the config.
    async fn dial(&self) -> Result<quinn::Connection, String> {
        let meeting = &self.meeting;
        let addr = resolve(meeting).await?;
        let seen = Arc::new(Mutex::new(None));
        let mut config = client_config(
            &self.node.identity,
            Some(meeting.fingerprint.clone()),
            seen.clone(),
            ALPN,
        )
        .map_err(|e| e.to_string())?;
        let mut transport = transport_config();
        transport.keep_alive_interval(Some(REGISTRATION_KEEP_ALIVE));
        // Each relayed client is a stream the meeting node opens: quinn's default of 100 would
        // turn the 101st away.
        transport.max_concurrent_bidi_streams(MAX_RELAYED.into());
        config.transport_config(Arc::new(transport));
        let connecting = self
            .node
            .endpoint
            .connect_with(config, addr, "cmdop-node")
            .map_err(|e| format!("cannot dial meeting node {} ({addr}): {e}", meeting.name))?;
        let offline = || {
            format!(
                "meeting node {} ({}) is offline: no answer within {} ms",
                meeting.name,
                meeting.addr,
                DIAL_TIMEOUT.as_millis()
            )
        };
        match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(self.dial_error(&seen, e)),
            Err(_) => Err(offline()),
        }
    }

    /// A failed handshake: a key other than the configured one says so.
    fn dial_error(
        &self,
        seen: &cmdop_certs::verify::SeenFingerprint,
        error: quinn::ConnectionError,
    ) -> String {
        let meeting = &self.meeting;
        let presented = seen.lock().ok().and_then(|seen| seen.clone());
        match presented {
            Some(presented) if presented != meeting.fingerprint => format!(
                "meeting node {} ({}) presented key {presented}, not {} from node.rendezvous; fix the fingerprint if its key was replaced",
                meeting.name, meeting.addr, meeting.fingerprint
            ),
            _ => format!("cannot reach meeting node {} ({}): {error}", meeting.name, meeting.addr),
        }
    }

    /// Hello, then [`Register`]: the control stream, kept open as long as the registration.
    async fn register(
        &self,
        connection: &quinn::Connection,
    ) -> Result<(FramedSend, FramedRecv), String> {
        let meeting = &self.meeting.name;
        let failed = |e: &dyn std::fmt::Display| format!("registering at {meeting} failed: {e}");
        let (send, recv) = connection.open_bi().await.map_err(|e| failed(&e))?;
        let mut send = FramedSend::new(send);
        let mut recv = FramedRecv::new(recv, cmdop_proto::frame::DEFAULT_MAX_FRAME);
        let exchange = async {
            let hello = Hello {
                version: PROTOCOL_VERSION,
                credential: self.meeting.token.clone().map(Credential::RelayInvite),
            };
            send.send(&hello).await.map_err(|e| failed(&e))?;
            match recv.recv::<HelloReply>().await.map_err(|e| failed(&e))? {
                Some(HelloReply::Welcome { .. }) => {}
                Some(HelloReply::Refused(refusal)) => return Err(self.refused(refusal)),
                None => return Err(failed(&"the meeting node closed the stream")),
            }
            let request = Register {
                name: self.name.clone(),
            }
            .into_request();
            send.send(&request).await.map_err(|e| failed(&e))?;
            match recv.recv::<Reply>().await.map_err(|e| failed(&e))? {
                Some(reply) => Register::take_reply(reply).map_err(|reply| match *reply {
                    Reply::Error(e) => failed(&e.message),
                    other => failed(&format!("unexpected reply {other:?}")),
                }),
                None => Err(failed(&"the meeting node closed the stream")),
            }
        };
        match tokio::time::timeout(DIAL_TIMEOUT, exchange).await {
            Ok(Ok(())) => Ok((send, recv)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(failed(&"no answer in time")),
        }
    }

    /// The sentence for a meeting node that refused this node's key.
    fn refused(&self, refusal: cmdop_proto::ErrorReply) -> String {
        let meeting = &self.meeting.name;
        let key = self.node.identity.fingerprint();
        match refusal.kind {
            cmdop_proto::ErrorKind::Unauthorized if self.meeting.token.is_some() => refusal.message,
            cmdop_proto::ErrorKind::Unauthorized => format!(
                "{meeting} does not authorize relay node key {key}; on {meeting} run 'cmdop-node authorize --relay {key}'"
            ),
            _ => format!("{meeting} refused this node: {}", refusal.message),
        }
    }
}

/// Resolves a meeting node's address.
async fn resolve(meeting: &Rendezvous) -> Result<SocketAddr, String> {
    let addr = meeting.addr.to_string();
    let cannot = |e: &dyn std::fmt::Display| {
        format!("cannot resolve meeting node {} ({addr}): {e}", meeting.name)
    };
    let mut addrs = tokio::net::lookup_host(addr.as_str())
        .await
        .map_err(|e| cannot(&e))?;
    addrs.next().ok_or_else(|| cannot(&"no addresses"))
}

/// Whether datagrams may be sent to `addr`: a unicast address with a port.
fn punchable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// One punch in progress, to one address; gone when dropped.
struct PunchGuard {
    relay: Arc<RelayEndpoint>,
    to: SocketAddr,
}

impl PunchGuard {
    /// None when a punch to `to` is going already, or [`MAX_PUNCHING`] are.
    fn enter(relay: &Arc<RelayEndpoint>, to: SocketAddr) -> Option<Self> {
        let mut going = relay.punching.lock().unwrap_or_else(|p| p.into_inner());
        if going.len() >= MAX_PUNCHING || !going.insert(to) {
            return None;
        }
        Some(PunchGuard {
            relay: relay.clone(),
            to,
        })
    }
}

impl Drop for PunchGuard {
    fn drop(&mut self) {
        let mut going = self
            .relay
            .punching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        going.remove(&self.to);
    }
}

/// Sends punches to `client` for [`PUNCH_FOR`] from the node's main socket.
async fn punch(socket: Arc<MainSocket>, client: SocketAddr, _going: PunchGuard) {
    let until = Instant::now() + PUNCH_FOR;
    while Instant::now() < until {
        socket.punch(client).await;
        tokio::time::sleep(PUNCH_EVERY).await;
    }
}

/// The refusal of a [`cmdop_proto::Punch`] on a connection that did not come through a meeting
/// node.
pub fn not_relayed(host: &str) -> cmdop_proto::ErrorReply {
    cmdop_proto::ErrorReply {
        kind: cmdop_proto::ErrorKind::BadRequest,
        message: format!(
            "this connection to {host} did not come through a meeting node; there is no NAT to punch through"
        ),
    }
}

/// Reads the [`RelayOpen`] that starts a relayed stream, then hands the stream to the relay
/// endpoint as a new peer.
async fn open_relayed(relay: &RelayEndpoint, send: quinn::SendStream, recv: quinn::RecvStream) {
    let mut recv = FramedRecv::new(recv, 4096);
    let open = match tokio::time::timeout(OPEN_TIMEOUT, recv.recv::<RelayOpen>()).await {
        Ok(Ok(Some(open))) => open,
        _ => {
            tracing::info!("a relayed stream did not start with its client's address; dropped");
            return;
        }
    };
    let (recv, buffered) = recv.into_parts();
    let peer = relay.socket.add_peer(send, recv, buffered);
    if let Ok(client) = open.client_addr.parse() {
        let mut origins = relay.origins.lock().unwrap_or_else(|p| p.into_inner());
        origins.insert(peer.addr, client);
    }
    let mut ends = relay.ends();
    // Forget streams that ended before their connection was accepted.
    ends.retain(|_, ended| matches!(ended.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
    ends.insert(peer.addr, peer.ended);
    drop(ends);
    tracing::info!(client = %open.client, from = %open.client_addr, peer = %peer.addr, "relayed client");
}
