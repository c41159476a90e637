//! Virtual UDP sockets over relayed QUIC streams: how a client and a node behind NAT run their
//! ordinary QUIC connection through a meeting node that sees only ciphertext.
//!
//! A relayed stream carries datagrams as frames: a big-endian `u16` length, then that many
//! bytes ([`encode_datagram`], [`DatagramDecoder`], sans-IO). A [`VirtualSocket`] implements
//! quinn's [`quinn::AsyncUdpSocket`] over any number of such streams, each one a peer with its
//! own (synthetic) address: the client's socket has one, the home node's one per relayed
//! client. Sending never blocks: a datagram that finds its stream's queue full is dropped, as
//! a congested UDP path would, and QUIC recovers it.

use quinn::udp::{RecvMeta, Transmit};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Largest datagram carried (QUIC's own packets stay under 1500 bytes).
pub const MAX_DATAGRAM: usize = 2048;

/// Bytes of a frame's length prefix.
const PREFIX: usize = 2;

/// Datagrams queued per stream before new ones are dropped.
const QUEUE: usize = 1024;

/// A datagram that cannot be framed, or a frame that is no datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Empty datagrams are never sent, so a zero length means the stream is corrupt.
    #[error("a relayed datagram frame announced 0 bytes")]
    Empty,
    /// Longer than [`MAX_DATAGRAM`].
    #[error("a relayed datagram of {0} bytes is over the limit of {MAX_DATAGRAM}")]
    TooLong(usize),
}

fn check_len(len: usize) -> Result<(), FramingError> {
    match len {
        0 => Err(FramingError::Empty),
        len if len > MAX_DATAGRAM => Err(FramingError::TooLong(len)),
        _ => Ok(()),
    }
}

/// Appends `datagram` to `out` as one frame.
pub fn encode_datagram(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
    check_len(datagram.len())?;
    // check_len bounds the length at MAX_DATAGRAM, which fits in a u16.
    let len = u16::try_from(datagram.len()).map_err(|_| FramingError::TooLong(datagram.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Reassembles datagrams from a relayed stream's bytes.
#[derive(Debug, Default)]
pub struct DatagramDecoder {
    buffer: Vec<u8>,
    consumed: usize,
}

impl DatagramDecoder {
    /// A decoder that starts with `bytes` (received before the stream began carrying datagrams).
    pub fn with_buffered(bytes: Vec<u8>) -> Self {
        DatagramDecoder {
            buffer: bytes,
            consumed: 0,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        } else if self.consumed > 64 * 1024 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole datagram, if one is buffered; an error means the stream is not trusted.
    pub fn next_datagram(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let pending = &self.buffer[self.consumed..];
        let Some(prefix) = pending.get(..PREFIX) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        check_len(len)?;
        let Some(datagram) = pending.get(PREFIX..PREFIX + len) else {
            return Ok(None);
        };
        let datagram = datagram.to_vec();
        self.consumed += PREFIX + len;
        Ok(Some(datagram))
    }
}

/// The synthetic address of the `n`th relayed peer: `100.64.0.0/10` (shared address space),
/// never dialed, unique per socket.
pub fn synthetic_addr(n: u32) -> SocketAddr {
    let host = n % (1 << 22);
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) | host);
    SocketAddr::new(ip.into(), 7443)
}

/// A relayed peer just added: its synthetic address, and word when its stream ends.
#[derive(Debug)]
pub struct Peer {
    /// The address quinn knows the peer by.
    pub addr: SocketAddr,
    /// Completes (or fails) when the relayed stream ended.
    pub ended: tokio::sync::oneshot::Receiver<()>,
}

type Routes = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// A UDP socket whose peers are relayed streams.
pub struct VirtualSocket {
    local: SocketAddr,
    inbound_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    inbound: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    routes: Routes,
    next_peer: AtomicU32,
}

impl std::fmt::Debug for VirtualSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl VirtualSocket {
    /// A socket with no peers yet, reporting `local` as its address.
    pub fn new(local: SocketAddr) -> Arc<Self> {
        let (inbound_tx, inbound) = mpsc::channel(QUEUE);
        Arc::new(VirtualSocket {
            local,
            inbound_tx,
            inbound: Mutex::new(inbound),
            routes: Arc::default(),
            next_peer: AtomicU32::new(1),
        })
    }

    /// Adds a relayed stream as a new peer with a synthetic address. `buffered` holds bytes of
    /// the stream already read. The peer is gone when the stream ends or fails.
    pub fn add_peer(
        &self,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        buffered: Vec<u8>,
    ) -> Peer {
        let peer = loop {
            let peer = synthetic_addr(self.next_peer.fetch_add(1, Ordering::Relaxed));
            if !self.lock_routes().contains_key(&peer) {
                break peer;
            }
        };
        let (outbound_tx, outbound) = mpsc::channel(QUEUE);
        self.lock_routes().insert(peer, outbound_tx);
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        let link = Link {
            peer,
            inbound: self.inbound_tx.clone(),
            routes: self.routes.clone(),
            ended: ended_tx,
        };
        let decoder = DatagramDecoder::with_buffered(buffered);
        tokio::spawn(link.run(send, recv, decoder, outbound));
        Peer { addr: peer, ended }
    }

    /// Forgets `peer`: its stream carries what is queued for it, then finishes (the relay's
    /// other end sees it end).
    pub fn remove_peer(&self, peer: SocketAddr) {
        self.lock_routes().remove(&peer);
    }

    /// How many relayed peers are connected.
    pub fn peers(&self) -> usize {
        self.lock_routes().len()
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A quinn endpoint over this socket: a client one, or a server one with `server`.
    pub fn endpoint(
        self: &Arc<Self>,
        config: quinn::EndpointConfig,
        server: Option<quinn::ServerConfig>,
    ) -> io::Result<quinn::Endpoint> {
        crate::udp::endpoint_on(self.clone(), config, server)
    }
}

/// The tasks' side of one relayed peer.
struct Link {
    peer: SocketAddr,
    inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    routes: Routes,
    ended: tokio::sync::oneshot::Sender<()>,
}

impl Link {
    /// Carries datagrams both ways until either direction ends, then forgets the peer.
    async fn run(
        self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        decoder: DatagramDecoder,
        mut outbound: mpsc::Receiver<Vec<u8>>,
    ) {
        let write = async {
            while let Some(frame) = outbound.recv().await {
                if send.write_all(&frame).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = write => {}
            () = self.read(&mut recv, decoder) => {}
        }
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.peer);
        let _ = send.finish();
        let _ = recv.stop(0u32.into());
        tracing::debug!(peer = %self.peer, "relayed stream ended");
        let _ = self.ended.send(());
    }

    async fn read(&self, recv: &mut quinn::RecvStream, mut decoder: DatagramDecoder) {
        let mut buf = vec![0; 16 * 1024];
        loop {
            loop {
                match decoder.next_datagram() {
                    Ok(Some(datagram)) => {
                        if self.inbound.send((self.peer, datagram)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(peer = %self.peer, "dropping a relayed stream: {e}");
                        return;
                    }
                }
            }
            match recv.read(&mut buf).await {
                Ok(Some(n)) => decoder.push(&buf[..n]),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// What quinn learns of one received datagram of `len` bytes from `from` (no GRO batch, no
/// ECN, no local address).
pub(crate) fn one_datagram(from: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        addr: from,
        len,
        stride: len,
        ecn: None,
        dst_ip: None,
    }
}

impl quinn::AsyncUdpSocket for VirtualSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(route) = self.lock_routes().get(&transmit.destination).cloned() else {
            // The peer's stream is gone: the datagram is lost, as on a dead path.
            return Ok(());
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut frame = Vec::with_capacity(transmit.contents.len() + PREFIX);
        for datagram in transmit.contents.chunks(segment) {
            if encode_datagram(datagram, &mut frame).is_err() {
                return Ok(());
            }
        }
        // A full queue drops the datagram, as a congested path would.
        let _ = route.try_send(frame);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // The socket holds a sender itself, so the channel never reports closed.
            let Some((from, datagram)) = std::task::ready!(inbound.poll_recv(cx)) else {
                return Poll::Pending;
            };
            let Some(target) = buf.get_mut(..datagram.len()) else {
                continue;
            };
            target.copy_from_slice(&datagram);
            *meta = one_datagram(from, datagram.len());
            return Poll::Ready(Ok(1));
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Sends never wait (a full queue drops), so the socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datagrams {
            encode_datagram(d, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn datagrams_round_trip_across_any_split() {
        let bytes = frames(&[b"one", &[7; MAX_DATAGRAM], b"x"]);
        for split in [1, 2, 3, 5, 100, bytes.len()] {
            let mut decoder = DatagramDecoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                decoder.push(chunk);
                while let Some(d) = decoder.next_datagram().unwrap() {
                    got.push(d);
                }
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0], b"one");
            assert_eq!(got[1].len(), MAX_DATAGRAM);
            assert_eq!(got[2], b"x");
        }
    }

    #[test]
    fn buffered_bytes_come_first() {
        let bytes = frames(&[b"ab", b"cd"]);
        let mut decoder = DatagramDecoder::with_buffered(bytes[..3].to_vec());
        assert_eq!(decoder.next_datagram().unwrap(), None);
        decoder.push(&bytes[3..]);
        assert_eq!(decoder.next_datagram().unwrap().unwrap(), b"ab");
        assert_eq!(decoder.next_datagram().unwrap().unwrap(), b"cd");
        assert_eq!(decoder.next_datagram().unwrap(), None);
    }

    #[test]
    fn bad_lengths_are_rejected() {
        let mut out = Vec::new();
        assert_eq!(encode_datagram(b"", &mut out), Err(FramingError::Empty));
        let long = vec![0; MAX_DATAGRAM + 1];
        assert_eq!(
            encode_datagram(&long, &mut out),
            Err(FramingError::TooLong(MAX_DATAGRAM + 1))
        );
        assert!(out.is_empty());
        let mut decoder = DatagramDecoder::default();
        decoder.push(&[0, 0, 1]);
        assert_eq!(decoder.next_datagram(), Err(FramingError::Empty));
        let mut decoder = DatagramDecoder::default();
        decoder.push(&[0xff, 0xff]);
        assert_eq!(decoder.next_datagram(), Err(FramingError::TooLong(0xffff)));
    }

    #[test]
    fn synthetic_addresses_are_shared_space_and_distinct() {
        let a = synthetic_addr(1);
        let b = synthetic_addr(2);
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("100.64.0.1:"), "{a}");
    }
}
