//! Dialing a node: resolve its address, check its key against the pins, say hello, and hand
//! back a [`NodeClient`] for requests.
//!
//! Errors are sentences for the user ([`ClientError`]): an offline node, a changed key (both
//! fingerprints and how to reset the pin), or the node's own refusal.
//!
//! A target with a `via` is a node behind NAT: the dialer connects to the meeting node as an
//! ordinary client, asks it to [`Relay`] the control stream to the registered node, and runs a
//! second QUIC connection end to end over that stream ([`crate::vsock`]); the node's own key is
//! pinned under `NAME@MEETING`, apart from the meeting node's.

pub use crate::error::{describe_close, ClientError};
pub use crate::node_client::NodeClient;

use crate::error::{recv_error, send_error};
use crate::tls::client_config;
use crate::udp::{MainSocket, PunchLog};
use crate::vsock::VirtualSocket;
use crate::wire::{FramedRecv, FramedSend, RecvError};
use cmdop_certs::verify::SeenFingerprint;
use cmdop_certs::{Fingerprint, Identity, KnownNodes, PinCheck};
use cmdop_proto::{
    close_code, Credential, ErrorKind, Hello, HelloReply, Relay, ALPN, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any local address, any port.
const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// A node to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name the user knows it by.
    pub name: String,
    /// `host:port` as configured (also the key of its pin); `NAME@MEETING` for a node reached
    /// through a meeting node.
    pub addr: String,
    /// The meeting node that relays to it, for a node behind NAT.
    pub via: Option<Box<Target>>,
}

impl Target {
    /// A node dialed at `addr`.
    pub fn direct(name: &str, addr: &str) -> Self {
        Target {
            name: name.to_string(),
            addr: addr.to_string(),
            via: None,
        }
    }

    /// How it is reached, for listings: its address, or `via MEETING`.
    pub fn route(&self) -> String {
        match &self.via {
            Some(via) => format!("via {}", via.name),
            None => self.addr.clone(),
        }
    }

    /// The node registered as `name` at the meeting node `via`.
    pub fn relayed(name: &str, via: Target) -> Self {
        Target {
            name: name.to_string(),
            addr: format!("{name}@{}", via.name),
            via: Some(Box::new(via)),
        }
    }
}

/// Dials nodes with this client's identity.
pub struct Dialer {
    endpoint: quinn::Endpoint,
    /// Where punches from nodes came from, across rebinds.
    punches: Arc<PunchLog>,
    /// The NAT box every socket of this dialer sends through, if any.
    nat_box: Option<SocketAddr>,
    identity: Arc<Identity>,
    known_nodes: PathBuf,
    pins: Mutex<()>,
    /// How long to wait for a node.
    pub timeout: Duration,
    /// Whether relayed connections offer a direct path to try ([`NodeClient::punch_to`]).
    pub hole_punching: bool,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("identity", &self.identity)
            .finish()
    }
}

/// Appends the default port when `addr` has none (text that is no address stays as it is).
pub fn with_default_port(addr: &str) -> String {
    addr.parse::<cmdop_proto::config::HostPort>()
        .map_or_else(|_| addr.to_string(), |addr| addr.to_string())
}

/// One dial in progress: the target, its pin, and the key the node presented, which the
/// error sentences need.
struct Attempt<'a> {
    target: &'a Target,
    /// `target.addr` with its port: the key of the pin.
    pin_key: String,
    pin: Option<Fingerprint>,
    seen: SeenFingerprint,
    timeout: Duration,
}

impl Attempt<'_> {
    fn offline(&self) -> ClientError {
        ClientError::Offline {
            name: self.target.name.clone(),
            addr: self.target.addr.clone(),
            timeout: self.timeout,
        }
    }

    fn key_changed(&self, pinned: Fingerprint, presented: Fingerprint) -> ClientError {
        ClientError::KeyChanged {
            name: self.target.name.clone(),
            addr: self.target.addr.clone(),
            pinned,
            presented,
        }
    }

    fn presented(&self) -> Option<Fingerprint> {
        self.seen.lock().ok().and_then(|seen| seen.clone())
    }

    /// A failed handshake or stream: a key other than the pinned one says so first.
    fn connection_error(&self, error: quinn::ConnectionError) -> ClientError {
        if let (Some(pinned), Some(presented)) = (self.pin.clone(), self.presented()) {
            if pinned != presented {
                return self.key_changed(pinned, presented);
            }
        }
        describe_close(&self.target.name, error)
    }
}

/// Where a dial goes: the endpoint (the dialer's, or one over a relayed stream), the node's
/// address on it, and when the dial began.
pub(crate) struct Way<'a> {
    pub endpoint: &'a quinn::Endpoint,
    pub addr: SocketAddr,
    pub started: Instant,
    /// The round trip to assume before the first is measured (quinn's default when None).
    pub initial_rtt: Option<Duration>,
}

/// What the node said to our hello.
struct Greeted {
    send: FramedSend,
    recv: FramedRecv,
    host: String,
}

impl Dialer {
    /// A dialer bound to an ephemeral UDP port (behind the NAT box named by
    /// [`crate::udp::NAT_BOX_ENV`], if set).
    pub fn new(
        identity: Arc<Identity>,
        known_nodes: PathBuf,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let nat_box = crate::udp::nat_box_from_env()
            .map_err(|e| ClientError::setup_from("cannot open a UDP socket", e))?;
        Self::behind(identity, known_nodes, timeout, nat_box)
    }

    /// A dialer bound to an ephemeral UDP port that sends through `nat_box` if given (tests put
    /// clients behind simulated NATs this way).
    pub fn behind(
        identity: Arc<Identity>,
        known_nodes: PathBuf,
        timeout: Duration,
        nat_box: Option<SocketAddr>,
    ) -> Result<Self, ClientError> {
        let punches = Arc::new(PunchLog::default());
        let endpoint = main_socket(nat_box, &punches)
            .and_then(|socket| socket.endpoint(quinn::EndpointConfig::default(), None))
            .map_err(|e| ClientError::setup_from("cannot open a UDP socket", e))?;
        Ok(Dialer {
            endpoint,
            punches,
            nat_box,
            identity,
            known_nodes,
            pins: Mutex::new(()),
            timeout,
            hole_punching: true,
        })
    }

    /// The local endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Moves to a fresh UDP socket, as after a network change; connections migrate with it.
    pub fn rebind(&self) -> std::io::Result<()> {
        let socket = main_socket(self.nat_box, &self.punches)?;
        self.endpoint.rebind_abstract(socket)
    }

    /// Where punches from nodes came from.
    pub fn punches(&self) -> &Arc<PunchLog> {
        &self.punches
    }

    /// Resolves a target's address.
    pub async fn resolve(&self, target: &Target) -> Result<SocketAddr, ClientError> {
        let addr = with_default_port(&target.addr);
        let resolve_err = |source: std::io::Error| ClientError::Resolve {
            name: target.name.clone(),
            addr: target.addr.clone(),
            source,
        };
        let mut addrs = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(resolve_err)?;
        addrs.next().ok_or_else(|| {
            resolve_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no addresses",
            ))
        })
    }

    /// Dials `target`, checks its key, and says hello (with an invite token or a migration
    /// ticket if given).
    pub async fn connect(
        &self,
        target: &Target,
        credential: Option<Credential>,
    ) -> Result<NodeClient, ClientError> {
        self.connect_with_alpn(target, credential, ALPN, PROTOCOL_VERSION)
            .await
    }

    /// As [`Dialer::connect`], speaking a given ALPN and protocol version (tests use this to
    /// play an incompatible client).
    pub async fn connect_with_alpn(
        &self,
        target: &Target,
        credential: Option<Credential>,
        alpn: &[u8],
        version: u32,
    ) -> Result<NodeClient, ClientError> {
        if let Some(via) = &target.via {
            return self
                .connect_relayed(target, via, credential, alpn, version)
                .await;
        }
        let started = Instant::now();
        let addr = self.resolve(target).await?;
        let way = Way {
            endpoint: &self.endpoint,
            addr,
            started,
            initial_rtt: None,
        };
        self.connect_on(way, target, credential, alpn, version)
            .await
    }

    /// Dials `target` through the meeting node `via`: a relayed stream there, then the node's
    /// own QUIC connection over it.
    async fn connect_relayed(
        &self,
        target: &Target,
        via: &Target,
        credential: Option<Credential>,
        alpn: &[u8],
        version: u32,
    ) -> Result<NodeClient, ClientError> {
        let started = Instant::now();
        let mut meeting = Box::pin(self.connect(via, None)).await?;
        let relay = Relay {
            to: target.name.clone(),
        };
        let relaying = match meeting.call(relay).await {
            Ok(relaying) => relaying,
            Err(ClientError::Rejected(e)) if e.kind == ErrorKind::NotFound => {
                return Err(ClientError::Unregistered {
                    name: target.name.clone(),
                    via: via.name.clone(),
                })
            }
            Err(e) => return Err(e),
        };
        let socket = VirtualSocket::new(crate::vsock::synthetic_addr(0));
        let meeting_connection = meeting.connection.clone();
        let (send, recv) = meeting.into_streams();
        let (recv, buffered) = recv.into_parts();
        let peer = socket.add_peer(send.into_inner(), recv, buffered);
        // Whatever ends this dial early (an error, a timeout dropping it) ends the relay too.
        let parts = RelayParts {
            socket: socket.clone(),
            peer: peer.addr,
            meeting: meeting_connection,
        };
        let endpoint = socket
            .endpoint(quinn::EndpointConfig::default(), None)
            .map_err(|e| ClientError::setup_from("cannot open a relayed socket", e))?;
        let way = Way {
            endpoint: &endpoint,
            addr: peer.addr,
            started,
            initial_rtt: None,
        };
        let mut client = self
            .connect_on(way, target, credential, alpn, version)
            .await?;
        tokio::spawn(close_when_relay_ends(endpoint.clone(), peer.ended, parts));
        if self.hole_punching {
            client.punch_to = relaying.node_addr.parse().ok();
        }
        Ok(client)
    }

    /// Dials `target` on `way`: handshake, pin check, hello, and the pin of a new key.
    pub(crate) async fn connect_on(
        &self,
        way: Way<'_>,
        target: &Target,
        credential: Option<Credential>,
        alpn: &[u8],
        version: u32,
    ) -> Result<NodeClient, ClientError> {
        let pin_key = with_default_port(&target.addr);
        let known = self.load_pins()?;
        let attempt = Attempt {
            target,
            pin: known.pin(&pin_key).cloned(),
            pin_key,
            seen: Arc::new(Mutex::new(None)),
            timeout: self.timeout,
        };
        let (connection, presented) = self.handshake(&attempt, &way, alpn).await?;
        let newly_pinned = match known.check(&attempt.pin_key, &presented) {
            PinCheck::Match => false,
            PinCheck::Changed { pinned } => {
                return Err(close_key_changed(&attempt, &connection, pinned, presented))
            }
            PinCheck::Unknown => true,
        };
        let remaining = self
            .timeout
            .saturating_sub(way.started.elapsed())
            .max(Duration::from_millis(500));
        let hello = say_hello(&attempt, &connection, credential, version);
        let greeted = match tokio::time::timeout(remaining, hello).await {
            Err(_) => return Err(attempt.offline()),
            Ok(result) => result?,
        };
        if newly_pinned {
            self.pin_new_key(&attempt, &connection, &presented)?;
        }
        Ok(NodeClient {
            connection,
            send: greeted.send,
            recv: greeted.recv,
            host: greeted.host,
            fingerprint: presented,
            target: target.clone(),
            punch_to: None,
        })
    }

    fn load_pins(&self) -> Result<KnownNodes, ClientError> {
        KnownNodes::load(&self.known_nodes).map_err(|e| {
            let context = format!("cannot read {}", self.known_nodes.display());
            ClientError::setup_from(&context, e)
        })
    }

    /// The QUIC and TLS handshake, within the dial timeout: the connection and the key the
    /// node presented.
    async fn handshake(
        &self,
        attempt: &Attempt<'_>,
        way: &Way<'_>,
        alpn: &[u8],
    ) -> Result<(quinn::Connection, Fingerprint), ClientError> {
        let mut config = client_config(
            &self.identity,
            attempt.pin.clone(),
            attempt.seen.clone(),
            alpn,
        )
        .map_err(|e| ClientError::Setup {
            message: e.to_string(),
            source: Some(e.into()),
        })?;
        if let Some(rtt) = way.initial_rtt {
            let mut transport = crate::tls::transport_config();
            transport.initial_rtt(rtt);
            config.transport_config(Arc::new(transport));
        }
        let connecting = way
            .endpoint
            .connect_with(config, way.addr, "cmdop-node")
            .map_err(|e| ClientError::connection(&attempt.target.name, e))?;
        let connection = match tokio::time::timeout(self.timeout, connecting).await {
            Err(_) => return Err(attempt.offline()),
            Ok(Err(e)) => return Err(attempt.connection_error(e)),
            Ok(Ok(connection)) => connection,
        };
        let presented = attempt
            .presented()
            .ok_or_else(|| ClientError::setup("the node presented no key"))?;
        Ok((connection, presented))
    }

    /// Pins the key of a node seen for the first time. Pin writes of parallel dials from this
    /// process are serialized, and the pins are read again: another dial may have pinned this
    /// address meanwhile.
    fn pin_new_key(
        &self,
        attempt: &Attempt<'_>,
        connection: &quinn::Connection,
        presented: &Fingerprint,
    ) -> Result<(), ClientError> {
        let _lock = self.pins.lock();
        let mut known = KnownNodes::load(&self.known_nodes).map_err(|e| ClientError::Setup {
            message: e.to_string(),
            source: Some(e.into()),
        })?;
        match known.check(&attempt.pin_key, presented) {
            PinCheck::Match => Ok(()),
            PinCheck::Changed { pinned } => Err(close_key_changed(
                attempt,
                connection,
                pinned,
                presented.clone(),
            )),
            PinCheck::Unknown => known
                .insert(&attempt.pin_key, presented.clone())
                .map_err(|e| {
                    let context = format!("cannot write {}", self.known_nodes.display());
                    ClientError::setup_from(&context, e)
                }),
        }
    }
}

/// Closes a relayed connection as soon as its relayed stream ends (the meeting node or the
/// node's registration went away), so a live terminal reconnects at once instead of after the
/// idle timeout.
async fn close_when_relay_ends(
    endpoint: quinn::Endpoint,
    mut ended: tokio::sync::oneshot::Receiver<()>,
    parts: RelayParts,
) {
    // The endpoint, not the connection: holding a connection would keep it open after every
    // user of it let it go. The endpoint serves this one connection and is idle once it closed.
    tokio::select! {
        _ = &mut ended => {
            endpoint.close(close_code::DONE.into(), b"the relay ended");
            return;
        }
        () = endpoint.wait_idle() => {}
    }
    // The inner connection is over and its last packets left: the relayed stream finishes and
    // the connection to the meeting node closes.
    parts.socket.remove_peer(parts.peer);
    let _ = tokio::time::timeout(RELAY_LINGER, ended).await;
}

/// How long a finished relayed connection's last packets get before the relay is closed.
const RELAY_LINGER: Duration = Duration::from_secs(1);

/// The outer parts of a relayed connection: its peer on the virtual socket and the connection
/// to the meeting node. Dropped, they end (the relayed stream finishes, the meeting connection
/// closes), so nothing of a relay outlives its connection or an abandoned dial.
struct RelayParts {
    socket: Arc<VirtualSocket>,
    peer: std::net::SocketAddr,
    meeting: quinn::Connection,
}

impl Drop for RelayParts {
    fn drop(&mut self) {
        self.socket.remove_peer(self.peer);
        self.meeting
            .close(close_code::DONE.into(), b"the relayed connection ended");
    }
}

/// A fresh socket on an ephemeral port, through `nat_box` if given.
fn main_socket(
    nat_box: Option<SocketAddr>,
    punches: &Arc<PunchLog>,
) -> std::io::Result<Arc<MainSocket>> {
    MainSocket::wrap(
        std::net::UdpSocket::bind(ANY_PORT)?,
        nat_box,
        punches.clone(),
    )
}

/// Closes a connection whose key differs from the pin, and says so.
fn close_key_changed(
    attempt: &Attempt<'_>,
    connection: &quinn::Connection,
    pinned: Fingerprint,
    presented: Fingerprint,
) -> ClientError {
    connection.close(close_code::DONE.into(), b"node key changed");
    attempt.key_changed(pinned, presented)
}

/// Opens the control stream, sends the hello, and reads the node's welcome or refusal.
async fn say_hello(
    attempt: &Attempt<'_>,
    connection: &quinn::Connection,
    credential: Option<Credential>,
    version: u32,
) -> Result<Greeted, ClientError> {
    let name = &attempt.target.name;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| attempt.connection_error(e))?;
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, cmdop_proto::frame::DEFAULT_MAX_FRAME);
    send.send(&Hello {
        version,
        credential,
    })
    .await
    .map_err(|e| send_error(name, connection, e))?;
    let reply = recv
        .recv::<HelloReply>()
        .await
        .map_err(|e| recv_error(name, connection, e))?;
    match reply {
        Some(HelloReply::Welcome { host, .. }) => Ok(Greeted { send, recv, host }),
        Some(HelloReply::Refused(refusal)) => Err(match refusal.kind {
            ErrorKind::VersionMismatch => ClientError::VersionMismatch(refusal.message),
            _ => ClientError::Refused(refusal.message),
        }),
        None => Err(recv_error(name, connection, RecvError::Truncated)),
    }
}
