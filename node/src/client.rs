//! The client side of a connection: dial a node, check its key against the pins, say hello,
//! and make requests on the control stream.
//!
//! Errors are sentences for the user: an offline node, a changed key (both fingerprints and how
//! to reset the pin), or the node's own refusal.

use crate::proto::{
    close_code, Hello, HelloReply, Reply, Request, ALPN, DEFAULT_PORT, PROTOCOL_VERSION,
};
use crate::tls::client_config;
use crate::wire::{FramedRecv, FramedSend, RecvError, SendError};
use cmdop_certs::verify::SeenFingerprint;
use cmdop_certs::{Fingerprint, Identity, KnownNodes, PinCheck};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A node to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name the user knows it by.
    pub name: String,
    /// `host:port` as configured (also the key of its pin).
    pub addr: String,
}

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not resolve.
    #[error("cannot resolve {addr} for host {name}: {reason} (check it with 'cmdop host list')")]
    Resolve {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// Resolver's words.
        reason: String,
    },
    /// No answer in time.
    #[error("{name} ({addr}) is offline: no answer within {} ms (is cmdop-node running there? check with 'cmdop connect --list')", .timeout.as_millis())]
    Offline {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The node's key differs from the pin.
    #[error("NODE KEY CHANGED for {name} ({addr}): pinned {pinned}, but the node presented {presented}; someone may be impersonating it, or its key was replaced. If you expected this, reset the pin with 'cmdop host reset-pin {name}'")]
    KeyChanged {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The fingerprint presented.
        presented: Fingerprint,
    },
    /// The node refused us (not authorized, version mismatch, limit).
    #[error("{0}")]
    Refused(String),
    /// The connection failed or closed.
    #[error("connection to {name} failed: {reason}")]
    Connection {
        /// Host name.
        name: String,
        /// What happened.
        reason: String,
    },
    /// Local set-up failed.
    #[error("{0}")]
    Setup(String),
}

/// Dials nodes with this client's identity.
pub struct Dialer {
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    known_nodes: PathBuf,
    pins: Mutex<()>,
    /// How long to wait for a node.
    pub timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("identity", &self.identity)
            .finish()
    }
}

/// An admitted connection with its control stream.
#[derive(Debug)]
pub struct NodeClient {
    /// The QUIC connection (attach streams are opened on it).
    pub connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    /// The node's host name.
    pub host: String,
    /// The node's key.
    pub fingerprint: Fingerprint,
    /// The target dialed.
    pub target: Target,
}

/// Appends the default port when `addr` has none.
pub fn with_default_port(addr: &str) -> String {
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        addr.to_string()
    } else if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]:{DEFAULT_PORT}")
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    }
}

impl Dialer {
    /// A dialer bound to an ephemeral UDP port.
    pub fn new(
        identity: Arc<Identity>,
        known_nodes: PathBuf,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| ClientError::Setup(format!("cannot open a UDP socket: {e}")))?;
        Ok(Dialer {
            endpoint,
            identity,
            known_nodes,
            pins: Mutex::new(()),
            timeout,
        })
    }

    /// The local endpoint (for rebinding after a network change).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Resolves a target's address.
    pub async fn resolve(&self, target: &Target) -> Result<SocketAddr, ClientError> {
        let addr = with_default_port(&target.addr);
        let resolve_err = |reason: String| ClientError::Resolve {
            name: target.name.clone(),
            addr: target.addr.clone(),
            reason,
        };
        let mut addrs = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|e| resolve_err(e.to_string()))?;
        addrs
            .next()
            .ok_or_else(|| resolve_err("no addresses".into()))
    }

    /// Dials `target`, checks its key, and says hello (with an invite token if given).
    pub async fn connect(
        &self,
        target: &Target,
        invite: Option<String>,
    ) -> Result<NodeClient, ClientError> {
        self.connect_with_alpn(target, invite, ALPN, PROTOCOL_VERSION)
            .await
    }

    /// As [`Dialer::connect`], speaking a given ALPN and protocol version (tests use this to
    /// play an incompatible client).
    pub async fn connect_with_alpn(
        &self,
        target: &Target,
        invite: Option<String>,
        alpn: &[u8],
        version: u32,
    ) -> Result<NodeClient, ClientError> {
        let started = Instant::now();
        let addr = self.resolve(target).await?;
        let pin_key = with_default_port(&target.addr);
        let known = KnownNodes::load(&self.known_nodes).map_err(|e| {
            ClientError::Setup(format!("cannot read {}: {e}", self.known_nodes.display()))
        })?;
        let pin = known.pin(&pin_key).cloned();
        let seen: SeenFingerprint = Arc::new(Mutex::new(None));
        let config = client_config(&self.identity, pin.clone(), seen.clone(), alpn)
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let offline = || ClientError::Offline {
            name: target.name.clone(),
            addr: target.addr.clone(),
            timeout: self.timeout,
        };
        let connection_error = |e: quinn::ConnectionError| -> ClientError {
            let presented = seen.lock().ok().and_then(|s| s.clone());
            if let (Some(pinned), Some(presented)) = (pin.clone(), presented) {
                if pinned != presented {
                    return ClientError::KeyChanged {
                        name: target.name.clone(),
                        addr: target.addr.clone(),
                        pinned,
                        presented,
                    };
                }
            }
            describe_close(&target.name, e)
        };
        let connecting = self
            .endpoint
            .connect_with(config, addr, "cmdop-node")
            .map_err(|e| ClientError::Connection {
                name: target.name.clone(),
                reason: e.to_string(),
            })?;
        let connection = match tokio::time::timeout(self.timeout, connecting).await {
            Err(_) => return Err(offline()),
            Ok(Err(e)) => return Err(connection_error(e)),
            Ok(Ok(connection)) => connection,
        };
        let presented = seen
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| ClientError::Setup("the node presented no key".into()))?;
        let key_changed = |pinned: Fingerprint| {
            connection.close(close_code::DONE.into(), b"node key changed");
            ClientError::KeyChanged {
                name: target.name.clone(),
                addr: target.addr.clone(),
                pinned,
                presented: presented.clone(),
            }
        };
        let newly_pinned = match known.check(&pin_key, &presented) {
            PinCheck::Match => false,
            PinCheck::Changed { pinned } => return Err(key_changed(pinned)),
            PinCheck::Unknown => true,
        };
        let remaining = self
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        let hello = async {
            let (send, recv) = connection.open_bi().await.map_err(connection_error)?;
            let mut send = FramedSend::new(send);
            let mut recv = FramedRecv::new(recv, crate::frame::DEFAULT_MAX_FRAME);
            send.send(&Hello { version, invite })
                .await
                .map_err(|e| send_error(&target.name, &connection, e))?;
            let reply = recv
                .recv::<HelloReply>()
                .await
                .map_err(|e| recv_error(&target.name, &connection, e))?;
            Ok::<_, ClientError>((send, recv, reply))
        };
        let (send, recv, reply) = match tokio::time::timeout(remaining, hello).await {
            Err(_) => return Err(offline()),
            Ok(result) => result?,
        };
        let host = match reply {
            Some(HelloReply::Welcome { host, .. }) => host,
            Some(HelloReply::Refused(refusal)) => {
                return Err(ClientError::Refused(refusal.message))
            }
            None => return Err(recv_error(&target.name, &connection, RecvError::Truncated)),
        };
        if newly_pinned {
            // Serialize pin writes of parallel dials from this process, and look again: another
            // dial may have pinned this address meanwhile.
            let _lock = self.pins.lock();
            let mut known = KnownNodes::load(&self.known_nodes)
                .map_err(|e| ClientError::Setup(e.to_string()))?;
            match known.check(&pin_key, &presented) {
                PinCheck::Match => {}
                PinCheck::Changed { pinned } => return Err(key_changed(pinned)),
                PinCheck::Unknown => known.insert(&pin_key, presented.clone()).map_err(|e| {
                    ClientError::Setup(format!("cannot write {}: {e}", self.known_nodes.display()))
                })?,
            }
        }
        Ok(NodeClient {
            connection,
            send,
            recv,
            host,
            fingerprint: presented,
            target: target.clone(),
        })
    }
}

/// Turns a connection's end into a sentence, preferring the node's own reason.
pub fn describe_close(name: &str, error: quinn::ConnectionError) -> ClientError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            if close.error_code == close_code::UNAUTHORIZED.into()
                || close.error_code == close_code::VERSION_MISMATCH.into()
                || close.error_code == close_code::LIMIT.into()
            {
                ClientError::Refused(reason)
            } else {
                ClientError::Connection {
                    name: name.to_string(),
                    reason,
                }
            }
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn_proto::TransportErrorCode::CONNECTION_REFUSED =>
        {
            ClientError::Refused(format!(
                "{name} refused the connection: too many handshakes in progress (max_handshakes on the node); try again shortly"
            ))
        }
        quinn::ConnectionError::ConnectionClosed(close) if close.reason.is_empty() => {
            ClientError::Connection {
                name: name.to_string(),
                reason: format!("closed by the node ({})", close.error_code),
            }
        }
        other => ClientError::Connection {
            name: name.to_string(),
            reason: other.to_string(),
        },
    }
}

fn recv_error(name: &str, connection: &quinn::Connection, error: RecvError) -> ClientError {
    if let Some(close) = connection.close_reason() {
        return describe_close(name, close);
    }
    match error {
        RecvError::Stream(quinn::ReadError::ConnectionLost(e)) => describe_close(name, e),
        other => ClientError::Connection {
            name: name.to_string(),
            reason: other.to_string(),
        },
    }
}

fn send_error(name: &str, connection: &quinn::Connection, error: SendError) -> ClientError {
    if let Some(close) = connection.close_reason() {
        return describe_close(name, close);
    }
    ClientError::Connection {
        name: name.to_string(),
        reason: error.to_string(),
    }
}

impl NodeClient {
    /// Sends one request and waits for its reply.
    pub async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let name = self.target.name.clone();
        self.send
            .send(request)
            .await
            .map_err(|e| send_error(&name, &self.connection, e))?;
        match self.recv.recv::<Reply>().await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(recv_error(&name, &self.connection, RecvError::Truncated)),
            Err(e) => Err(recv_error(&name, &self.connection, e)),
        }
    }

    /// Writes raw bytes on the control stream, bypassing framing. Only for tests that play a
    /// misbehaving client.
    pub async fn danger_send_raw_control(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let name = self.target.name.clone();
        self.send
            .stream()
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Connection {
                name,
                reason: e.to_string(),
            })
    }

    /// Waits until the connection closes and describes why.
    pub async fn closed(&self) -> ClientError {
        describe_close(&self.target.name, self.connection.closed().await)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.connection.close(close_code::DONE.into(), b"bye");
    }
}
