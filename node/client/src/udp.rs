//! The main UDP socket of a client or a node, as quinn sees it: a plain socket, or (for tests)
//! one behind a simulated NAT box, and in both cases the place where hole punching happens.
//!
//! Hole punching needs two things quinn does not do: sending a bare datagram from the
//! endpoint's own socket (a node opening its NAT towards a client, [`MainSocket::punch`]), and
//! noticing where such datagrams come from (a client learning the address a node's NAT really
//! gave it, [`PunchLog`]). A punch is [`PUNCH`], 16 bytes: quinn ignores datagrams that short
//! from unknown peers (too small to answer with a stateless reset), so they never disturb a
//! connection, and [`MainSocket`] records their sources on the way in.
//!
//! The NAT box seam: when [`NAT_BOX_ENV`] names a `cmdop-netsim` NAT box's inside address,
//! [`MainSocket::bind`] sends everything through that box in its framed format
//! ([`cmdop_netsim::nat_box::frame`]) instead of straight onto the network, so end-to-end tests
//! can put real client and node processes behind simulated NATs on loopback.

use quinn::udp::{RecvMeta, Transmit};
use quinn::AsyncUdpSocket;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::watch;

/// Names the inside address of a NAT box to send everything through (a test seam).
pub const NAT_BOX_ENV: &str = "CMDOP_NAT_BOX";

/// The datagram a node sends to open its NAT towards a client.
pub const PUNCH: [u8; 16] = *b"cmdop-punch-v1\r\n";

/// A source punching again after this long is news to watchers.
const REHEARD: std::time::Duration = std::time::Duration::from_millis(500);

/// Punch sources remembered; older ones are forgotten first.
const MAX_SOURCES: usize = 16;

/// Where punches came from, and when the last one from each arrived; newest first seen last.
#[derive(Debug)]
pub struct PunchLog {
    sources: watch::Sender<Vec<(SocketAddr, Instant)>>,
}

impl Default for PunchLog {
    fn default() -> Self {
        PunchLog {
            sources: watch::Sender::new(Vec::new()),
        }
    }
}

impl PunchLog {
    /// Notes a punch from `source`: watchers hear of a new source, or of one heard again after
    /// a pause, not of every repeat.
    pub fn record(&self, source: SocketAddr) {
        let now = Instant::now();
        self.sources.send_if_modified(|sources| {
            if let Some(seen) = sources.iter_mut().find(|(addr, _)| *addr == source) {
                let after_a_pause = now.duration_since(seen.1) > REHEARD;
                seen.1 = now;
                return after_a_pause;
            }
            if sources.len() == MAX_SOURCES {
                sources.remove(0);
            }
            sources.push((source, now));
            true
        });
    }

    /// Watches the sources and when each was last heard from.
    pub fn subscribe(&self) -> watch::Receiver<Vec<(SocketAddr, Instant)>> {
        self.sources.subscribe()
    }
}

/// Whether a received datagram is a punch.
fn is_punch(datagram: &[u8]) -> bool {
    datagram == PUNCH
}

/// An endpoint's socket: sends and receives for quinn, sends punches, records punches received.
#[derive(Debug)]
pub struct MainSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    punches: Arc<PunchLog>,
}

impl MainSocket {
    /// Binds `addr` (through the NAT box named by [`NAT_BOX_ENV`], if set).
    pub fn bind(addr: SocketAddr, punches: Arc<PunchLog>) -> io::Result<Arc<MainSocket>> {
        Self::from_std(std::net::UdpSocket::bind(addr)?, punches)
    }

    /// Wraps an open socket (through the NAT box named by [`NAT_BOX_ENV`], if set). Needs a
    /// tokio runtime.
    pub fn from_std(
        socket: std::net::UdpSocket,
        punches: Arc<PunchLog>,
    ) -> io::Result<Arc<MainSocket>> {
        Self::wrap(socket, nat_box_from_env()?, punches)
    }

    /// Wraps an open socket that sends through `nat_box` if given, else straight out.
    pub fn wrap(
        socket: std::net::UdpSocket,
        nat_box: Option<SocketAddr>,
        punches: Arc<PunchLog>,
    ) -> io::Result<Arc<MainSocket>> {
        let inner: Arc<dyn AsyncUdpSocket> = match nat_box {
            Some(nat_box) => NatBoxSocket::new(socket, nat_box)?,
            None => quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?,
        };
        Ok(Arc::new(MainSocket { inner, punches }))
    }

    /// Sends one punch to `to`, once the socket takes datagrams.
    pub async fn punch(&self, to: SocketAddr) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &PUNCH,
            segment_size: None,
            src_ip: None,
        };
        let mut writable = self.inner.clone().create_io_poller();
        loop {
            if let Err(e) = std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx)).await {
                tracing::debug!(%to, "punch not sent: {e}");
                return;
            }
            match self.inner.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => tracing::debug!(%to, "punch not sent: {e}"),
                Ok(()) => {}
            }
            return;
        }
    }

    /// The punches received.
    pub fn punches(&self) -> &Arc<PunchLog> {
        &self.punches
    }

    /// A quinn endpoint on this socket.
    pub fn endpoint(
        self: &Arc<Self>,
        config: quinn::EndpointConfig,
        server: Option<quinn::ServerConfig>,
    ) -> io::Result<quinn::Endpoint> {
        endpoint_on(self.clone(), config, server)
    }
}

/// A quinn endpoint on `socket` (on the tokio runtime): a client one, or a server one with
/// `server`.
pub fn endpoint_on(
    socket: Arc<dyn AsyncUdpSocket>,
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))
}

/// The NAT box named by [`NAT_BOX_ENV`]; an unreadable value is an error, not a direct socket.
pub fn nat_box_from_env() -> io::Result<Option<SocketAddr>> {
    let Some(value) = std::env::var_os(NAT_BOX_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    value.parse().map(Some).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NAT_BOX_ENV}={value} is not an address like 127.0.0.1:4000; unset it to use the network directly"),
        )
    })
}

impl AsyncUdpSocket for MainSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let received = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
        for (buf, meta) in bufs.iter().zip(meta.iter()).take(received) {
            let datagrams = buf.get(..meta.len).unwrap_or(&[]);
            // Quinn ignores punches itself: too short to be answered with a reset.
            if datagrams.chunks(meta.stride.max(1)).any(is_punch) {
                self.punches.record(meta.addr);
            }
        }
        Poll::Ready(Ok(received))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A socket whose datagrams all go through a NAT box, framed with their far end's address.
#[derive(Debug)]
struct NatBoxSocket {
    socket: tokio::net::UdpSocket,
    /// Room for a whole framed datagram, whatever quinn's buffer holds.
    received: std::sync::Mutex<Vec<u8>>,
}

impl NatBoxSocket {
    fn new(socket: std::net::UdpSocket, nat_box: SocketAddr) -> io::Result<Arc<Self>> {
        socket.set_nonblocking(true)?;
        socket.connect(nat_box)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let received = std::sync::Mutex::new(vec![0; 65_536]);
        Ok(Arc::new(NatBoxSocket { socket, received }))
    }
}

/// Waits for the NAT box socket to take a datagram.
#[derive(Debug)]
struct Writable(Arc<NatBoxSocket>);

impl quinn::UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.0.socket.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for NatBoxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable(self))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // One segment per transmit (max_transmit_segments is 1), so no GSO batches.
        let mut framed = Vec::with_capacity(transmit.contents.len() + 19);
        cmdop_netsim::nat_box::frame::encode(transmit.destination, transmit.contents, &mut framed);
        match self.socket.try_send(&framed) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            // As quinn's own socket does: a datagram that cannot go is lost, not the connection.
            Err(e) => {
                tracing::debug!("NAT box send failed: {e}");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
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
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            std::task::ready!(self.socket.poll_recv_ready(cx))?;
            let n = match self.socket.try_recv(&mut received) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The box went away for a moment (an ICMP error on a connected socket): the
                // path is down, the endpoint is not.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let frame = &received[..n];
            let Ok((source, payload)) = cmdop_netsim::nat_box::frame::decode(frame) else {
                continue;
            };
            // Longer than quinn's buffer: cut, as a plain socket would.
            let len = payload.len().min(buf.len());
            buf[..len].copy_from_slice(&payload[..len]);
            *meta = crate::vsock::one_datagram(source, len);
            return Poll::Ready(Ok(1));
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_log_keeps_each_source_once_and_forgets_the_oldest() {
        let log = PunchLog::default();
        let watching = log.subscribe();
        log.record(addr("127.0.0.1:1"));
        log.record(addr("127.0.0.1:1"));
        let first = watching.borrow().clone();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, addr("127.0.0.1:1"));
        for port in 2..=20 {
            log.record(SocketAddr::new([127, 0, 0, 1].into(), port));
        }
        let sources = watching.borrow().clone();
        assert_eq!(sources.len(), MAX_SOURCES);
        assert_eq!(sources[0].0, addr("127.0.0.1:5"));
        assert_eq!(sources[MAX_SOURCES - 1].0, addr("127.0.0.1:20"));
    }

    #[test]
    fn only_the_exact_punch_is_one() {
        assert!(is_punch(&PUNCH));
        assert!(!is_punch(&PUNCH[..15]));
        let mut longer = PUNCH.to_vec();
        longer.push(0);
        assert!(!is_punch(&longer));
    }

    #[tokio::test]
    async fn punches_are_recorded_by_the_receiver_and_ignored_by_quinn() {
        let log = Arc::new(PunchLog::default());
        let receiver = MainSocket::bind(addr("127.0.0.1:0"), log.clone()).unwrap();
        let endpoint = receiver
            .endpoint(quinn::EndpointConfig::default(), None)
            .unwrap();
        let to = endpoint.local_addr().unwrap();
        let sender = MainSocket::bind(addr("127.0.0.1:0"), Arc::default()).unwrap();
        let from = sender.local_addr().unwrap();
        let mut watching = log.subscribe();
        sender.punch(to).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), watching.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(watching.borrow()[0].0, from);
        assert_eq!(endpoint.open_connections(), 0);
    }

    #[tokio::test]
    async fn through_a_nat_box_datagrams_leave_from_its_outside_address() {
        use cmdop_netsim::nat::NatKind;
        use cmdop_netsim::nat_box::{NatBox, NatBoxConfig};
        let nat_box = NatBox::start(NatBoxConfig::new(NatKind::FullCone))
            .await
            .unwrap();
        let log = Arc::new(PunchLog::default());
        let receiver = MainSocket::bind(addr("127.0.0.1:0"), log.clone()).unwrap();
        let _endpoint = receiver
            .endpoint(quinn::EndpointConfig::default(), None)
            .unwrap();
        let inside = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inside_addr = inside.local_addr().unwrap();
        let sender = MainSocket::wrap(inside, Some(nat_box.inside_addr()), Arc::default()).unwrap();
        let mut watching = log.subscribe();
        sender.punch(receiver.local_addr().unwrap()).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), watching.changed())
            .await
            .unwrap()
            .unwrap();
        let seen = watching.borrow()[0].0;
        assert_ne!(
            seen, inside_addr,
            "the box's mapping, not the inside socket"
        );
        assert_eq!(nat_box.counters().outbound, 1);
    }
}
