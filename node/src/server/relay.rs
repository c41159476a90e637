//! The meeting node's side of relaying: nodes behind NAT register under a name
//! ([`cmdop_proto::Register`], only keys listed in `relay_nodes`), and a client's
//! [`cmdop_proto::Relay`] joins its control stream, byte for byte, to a new stream on the
//! registered node's connection. The client and that node run their own QUIC connection inside
//! it, so this node sees only ciphertext.

use cmdop_certs::Fingerprint;
use cmdop_client::wire::{FramedRecv, FramedSend};
use cmdop_proto::{ErrorKind, ErrorReply, RelayOpen};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long opening a stream to a registered node may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// One registration: the node's key and its connection.
#[derive(Debug)]
struct Registration {
    id: u64,
    fingerprint: Fingerprint,
    connection: quinn::Connection,
}

/// The nodes registered here, by name.
#[derive(Debug, Default)]
pub struct Registered {
    names: Mutex<HashMap<String, Registration>>,
    next: AtomicU64,
}

/// Keeps a name registered; the registration ends when it is dropped (with its connection's
/// control loop).
#[derive(Debug)]
pub struct RegisteredGuard {
    registered: Arc<Registered>,
    name: String,
    id: u64,
}

impl Drop for RegisteredGuard {
    fn drop(&mut self) {
        let mut names = self.registered.names();
        if names.get(&self.name).is_some_and(|r| r.id == self.id) {
            names.remove(&self.name);
            tracing::info!(name = %self.name, "relay registration ended");
        }
    }
}

/// A relayed client's streams, joined to the registered node's.
#[derive(Debug)]
pub struct Joined {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Where this node sees the registered node.
    node_addr: SocketAddr,
}

fn error(kind: ErrorKind, message: String) -> ErrorReply {
    ErrorReply { kind, message }
}

impl Registered {
    fn names(&self) -> MutexGuard<'_, HashMap<String, Registration>> {
        // No code panics while holding this lock.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the registration connections of `fingerprint` (a revoked key); returns how many.
    pub fn close_all_of(&self, fingerprint: &Fingerprint) -> u32 {
        let names = self.names();
        let mut closed = 0;
        for registration in names.values().filter(|r| r.fingerprint == *fingerprint) {
            registration.connection.close(
                cmdop_proto::close_code::UNAUTHORIZED.into(),
                b"this node key was revoked on the meeting node",
            );
            closed += 1;
        }
        closed
    }

    /// Closes every registration connection with `code` (the registered nodes dial again).
    pub fn close_all(&self, code: u32, reason: &[u8]) {
        for registration in self.names().values() {
            registration.connection.close(code.into(), reason);
        }
    }

    /// Registers `name` for `fingerprint` on `connection`. A name held by another key's live
    /// connection is refused; the same key registering again replaces its old registration.
    pub fn register(
        self: &Arc<Self>,
        name: &str,
        fingerprint: &Fingerprint,
        connection: &quinn::Connection,
        host: &str,
    ) -> Result<RegisteredGuard, ErrorReply> {
        if !cmdop_proto::config::valid_node_name(name) {
            return Err(error(
                ErrorKind::BadRequest,
                format!("'{name}' is not a valid node name; use letters, digits, '-', '_' and '.'"),
            ));
        }
        let mut names = self.names();
        if let Some(held) = names.get(name) {
            if held.fingerprint != *fingerprint && held.connection.close_reason().is_none() {
                return Err(error(
                    ErrorKind::NameTaken,
                    format!(
                        "the name {name} is registered at {host} by another node key ({}); give one of the nodes another node.name",
                        held.fingerprint
                    ),
                ));
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let registration = Registration {
            id,
            fingerprint: fingerprint.clone(),
            connection: connection.clone(),
        };
        names.insert(name.to_string(), registration);
        tracing::info!(%name, node = %fingerprint, "node registered for relaying");
        Ok(RegisteredGuard {
            registered: self.clone(),
            name: name.to_string(),
            id,
        })
    }

    /// Opens a stream to the node registered as `to` and announces the client on it.
    pub async fn open(
        &self,
        to: &str,
        (client_addr, client): (SocketAddr, &Fingerprint),
        host: &str,
    ) -> Result<Joined, ErrorReply> {
        let connection = self.names().get(to).map(|r| r.connection.clone());
        let not_found = || {
            error(
                ErrorKind::NotFound,
                format!(
                    "no node named {to} is registered at {host}; is its node.rendezvous set and is it online?"
                ),
            )
        };
        let connection = connection.ok_or_else(not_found)?;
        let opened = async {
            let (send, recv) = connection.open_bi().await.ok()?;
            let mut send = FramedSend::new(send);
            let open = RelayOpen {
                client_addr: client_addr.to_string(),
                client: client.clone(),
            };
            send.send(&open).await.ok()?;
            Some(Joined {
                send: send.into_inner(),
                recv,
                node_addr: connection.remote_address(),
            })
        };
        match tokio::time::timeout(OPEN_TIMEOUT, opened).await {
            Ok(Some(joined)) => Ok(joined),
            Ok(None) => Err(not_found()),
            Err(_) => Err(error(
                ErrorKind::Internal,
                format!(
                    "{to} is registered at {host} but did not take a relayed stream within {} s; try again shortly",
                    OPEN_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

/// Tells the client its control stream is joined to the node registered as `to` (and where
/// that node is seen, for hole punching), then splices the two.
pub async fn join(mut send: FramedSend, recv: FramedRecv, joined: Joined, to: &str) {
    let relaying = cmdop_proto::Relaying {
        node_addr: joined.node_addr.to_string(),
    };
    if send
        .send(&cmdop_proto::Reply::Relaying(relaying))
        .await
        .is_ok()
    {
        tracing::info!(%to, "relaying");
        splice(send, recv, joined).await;
    }
}

/// Copies bytes both ways between the client's control stream and the registered node's
/// stream until either side ends or fails; then both are ended.
async fn splice(client_send: FramedSend, client_recv: FramedRecv, joined: Joined) {
    let mut client_send = client_send.into_inner();
    let (mut client_recv, buffered) = client_recv.into_parts();
    let Joined {
        send: mut node_send,
        recv: mut node_recv,
        ..
    } = joined;
    let up = async {
        if node_send.write_all(&buffered).await.is_ok() {
            let _ = tokio::io::copy(&mut client_recv, &mut node_send).await;
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut node_recv, &mut client_send).await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    let _ = client_send.finish();
    let _ = node_send.finish();
    let _ = client_recv.stop(0u32.into());
    let _ = node_recv.stop(0u32.into());
}
