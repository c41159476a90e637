//! A userspace NAT box on loopback, driven by the sans-IO [`Nat`] table.
//!
//! # Design
//!
//! Loopback has no routing, so an inside host cannot simply send "through" a NAT to any
//! address. The seam is a small header ([`frame`]): the inside host sends every datagram to
//! the box's *inside socket*, prefixed with the destination's address, and receives every
//! datagram back prefixed with its real source. [`NatSocket`] does this for tokio code: its
//! `send_to`/`recv_from` look like a plain `UdpSocket`'s, with real addresses.
//!
//! The outside is real: each external mapping of the table is a real UDP socket bound on the
//! box's outside IP (127.0.0.1 by default), and the table is told that socket's port. So an
//! outside peer, a meeting node say, sees an ordinary observed address `127.0.0.1:port` and
//! can send to it with a plain socket; the table's filtering decides what is forwarded in.
//! Inside hosts are told apart by the source address of their datagrams to the inside socket,
//! so several can share a box, like hosts on one LAN; tests put each side behind its own box.
//! Datagrams between two boxes' outside sockets are plain loopback UDP, and a host sending to
//! its own box's external address gets hairpinning for free. Give each box its own outside IP
//! (Linux routes all of 127.0.0.0/8 to loopback: 127.0.0.11, 127.0.0.12, ...): with every box
//! and peer on 127.0.0.1, address-restricted filtering could not tell them apart and would
//! behave like full cone. Kind `none` still needs the box on loopback (the observed address
//! is the box's, not the host's); it just never filters and never lapses.
//!
//! Mappings lapse after the idle timeout (outbound traffic refreshes them, inbound does not);
//! a sweeper task removes them and closes their sockets, so a peer's datagrams to a lapsed
//! mapping go nowhere, and the next outbound datagram opens a new mapping (on whatever port
//! the OS gives its socket, usually a new one).
//! [`NatBox::expire_all`] does the same to every mapping at once (a NAT reboot).
//!
//! ## A quinn endpoint behind a box
//!
//! Quinn 0.11 takes any `quinn::AsyncUdpSocket` through
//! `Endpoint::new_with_abstract_socket`. A wrapper around a tokio socket connected to the
//! box's inside address would:
//! - `try_send`: write [`frame::encode`]`(transmit.destination, transmit.contents)` as one
//!   datagram. Report `max_transmit_segments() == 1`, so quinn never hands over a GSO batch
//!   (`segment_size` is then always `None`); ECN and `src_ip` are dropped.
//! - `poll_recv`: receive one datagram into `bufs[0]`, call [`frame::decode_header`], move the
//!   payload to the front with `copy_within`, and set `meta[0].addr` to the decoded source,
//!   `len` and `stride` to the payload length, `ecn` and `dst_ip` to `None`; report
//!   `max_receive_segments() == 1`. Skip a frame that does not decode, as a corrupt datagram.
//! - `create_io_poller`: wait for the inner socket to be writable, like quinn's own tokio
//!   socket; `local_addr`: the inner socket's (the inside address).
//!
//! The header costs at most [`frame::MAX_HEADER_LEN`] bytes of loopback's 64 KiB MTU, so
//! quinn's path MTU is unaffected. Quinn then sees peers' true addresses, which is what hole
//! punching needs: the meeting node's "observed address" of the other side is dialable as is.
//! [`NatSocket`] is the same seam for plain tokio code.
//!
//! (Quinn is not a dependency of this crate; the wrapper belongs with the transport that uses
//! it.)

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::nat::{Nat, NatConfig, NatKind, DEFAULT_MAPPING_TIMEOUT};
use crate::relay::is_transient;

pub mod control;
pub mod frame;
mod socket;
#[cfg(test)]
mod tests;

pub use socket::NatSocket;

/// Largest datagram the box handles, header included.
const MAX_DATAGRAM: usize = 65_536;

/// Bounds of how often the sweeper looks for lapsed mappings.
const MIN_SWEEP: Duration = Duration::from_millis(10);
const MAX_SWEEP: Duration = Duration::from_secs(1);

/// How to start a [`NatBox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatBoxConfig {
    /// Mapping and filtering behaviour.
    pub kind: NatKind,
    /// Idle time without outbound traffic after which a mapping lapses.
    pub mapping_timeout: Duration,
    /// Where inside hosts send framed datagrams; port 0 picks a free port.
    pub inside: SocketAddr,
    /// The IP the outside sockets bind to: the external half of every observed address.
    pub outside_ip: IpAddr,
}

impl NatBoxConfig {
    /// A box of `kind` on 127.0.0.1 with the default mapping timeout.
    pub fn new(kind: NatKind) -> Self {
        NatBoxConfig {
            kind,
            mapping_timeout: DEFAULT_MAPPING_TIMEOUT,
            inside: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            outside_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// What a box has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatBoxCounters {
    /// Datagrams sent out from an external mapping.
    pub outbound: u64,
    /// Datagrams let in and handed to an inside host.
    pub inbound: u64,
    /// Datagrams refused by the filtering (or arriving at a lapsed mapping).
    pub filtered: u64,
    /// Datagrams from inside hosts without a valid header.
    pub bad_frames: u64,
    /// External mappings created.
    pub mappings_created: u64,
    /// Mappings that lapsed or were expired.
    pub mappings_expired: u64,
    /// Socket errors (binding, sending).
    pub errors: u64,
}

impl fmt::Display for NatBoxCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nat: out {} in {} filtered {} bad-frames {} mappings +{} -{} errors {}",
            self.outbound,
            self.inbound,
            self.filtered,
            self.bad_frames,
            self.mappings_created,
            self.mappings_expired,
            self.errors
        )
    }
}

/// Live counters, bumped with relaxed atomics.
#[derive(Debug, Default)]
struct Counters {
    outbound: AtomicU64,
    inbound: AtomicU64,
    filtered: AtomicU64,
    bad_frames: AtomicU64,
    mappings_created: AtomicU64,
    mappings_expired: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NatBoxCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatBoxCounters {
            outbound: get(&self.outbound),
            inbound: get(&self.inbound),
            filtered: get(&self.filtered),
            bad_frames: get(&self.bad_frames),
            mappings_created: get(&self.mappings_created),
            mappings_expired: get(&self.mappings_expired),
            errors: get(&self.errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Lock a mutex, ignoring poisoning: every critical section leaves the table consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The real socket of one external mapping and the task reading it.
struct OutsideSocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// The table and the sockets of its mappings, kept under one lock so they agree.
struct State {
    nat: Nat,
    outside: HashMap<u16, OutsideSocket>,
}

impl State {
    /// Close the sockets of mappings the table has removed.
    fn close_released(&mut self, counters: &Counters) {
        for port in self.nat.take_released() {
            if let Some(gone) = self.outside.remove(&port) {
                gone.reader.abort();
                bump(&counters.mappings_expired);
                debug!(port, "mapping closed");
            }
        }
    }
}

/// State shared by the handle and the tasks.
struct Shared {
    inside: UdpSocket,
    inside_addr: SocketAddr,
    outside_ip: IpAddr,
    runtime: Handle,
    state: Mutex<State>,
    counters: Counters,
}

impl Shared {
    fn bind_outside(&self) -> io::Result<Arc<UdpSocket>> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.outside_ip, 0))?;
        socket.set_nonblocking(true)?;
        let _runtime = self.runtime.enter();
        Ok(Arc::new(UdpSocket::from_std(socket)?))
    }

    /// The outside socket `host`'s datagram to `dest` leaves from, creating the mapping (and
    /// its socket and reader) if needed.
    fn route_out(self: &Arc<Self>, host: SocketAddr, dest: SocketAddr) -> Option<Arc<UdpSocket>> {
        let mut bound = None;
        let mut state = lock(&self.state);
        let allocate = || {
            let socket = self.bind_outside().map_err(|e| self.bind_failed(&e)).ok()?;
            let port = socket.local_addr().map_err(|e| self.bind_failed(&e)).ok()?;
            bound = Some(socket);
            Some(port.port())
        };
        let outbound = state
            .nat
            .outbound_with(host, dest, Instant::now(), allocate);
        state.close_released(&self.counters);
        let port = outbound?.external_port;
        if let Some(socket) = bound {
            self.open_mapping(&mut state, port, socket);
        }
        state.outside.get(&port).map(|o| Arc::clone(&o.socket))
    }

    fn bind_failed(&self, error: &io::Error) {
        bump(&self.counters.errors);
        debug!(%error, "cannot bind an outside socket");
    }

    fn open_mapping(self: &Arc<Self>, state: &mut State, port: u16, socket: Arc<UdpSocket>) {
        let reader = self.runtime.spawn(run_outside_reader(
            Arc::clone(self),
            Arc::clone(&socket),
            port,
        ));
        state.outside.insert(port, OutsideSocket { socket, reader });
        bump(&self.counters.mappings_created);
        debug!(port, "mapping opened");
    }

    /// Send `payload` from `host` to `dest` through the NAT.
    async fn forward_out(self: &Arc<Self>, host: SocketAddr, dest: SocketAddr, payload: &[u8]) {
        let Some(socket) = self.route_out(host, dest) else {
            return;
        };
        match socket.send_to(payload, dest).await {
            Ok(_) => bump(&self.counters.outbound),
            Err(error) => {
                bump(&self.counters.errors);
                debug!(%host, %dest, %error, "outbound send failed");
            }
        }
    }

    /// Hand a datagram from `from`, arrived at external `port`, to its inside host if the
    /// filtering lets it in.
    async fn forward_in(&self, port: u16, from: SocketAddr, payload: &[u8]) {
        let host = lock(&self.state).nat.inbound(port, from, Instant::now());
        let Some(host) = host else {
            bump(&self.counters.filtered);
            return;
        };
        let mut framed = Vec::new();
        frame::encode(from, payload, &mut framed);
        match self.inside.send_to(&framed, host).await {
            Ok(_) => bump(&self.counters.inbound),
            Err(error) => {
                bump(&self.counters.errors);
                debug!(%host, %from, %error, "inbound send failed");
            }
        }
    }

    fn sweep(&self) {
        let mut state = lock(&self.state);
        state.nat.expire_idle(Instant::now());
        state.close_released(&self.counters);
    }
}

/// Back off briefly after a receive error that may repeat at once.
async fn after_receive_error(shared: &Shared, error: &io::Error) {
    bump(&shared.counters.errors);
    debug!(%error, "receive failed");
    if !is_transient(error) {
        tokio::time::sleep(MIN_SWEEP).await;
    }
}

/// Read framed datagrams from inside hosts and send them out.
async fn run_inside_reader(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match shared.inside.recv_from(&mut buf).await {
            Ok((n, host)) => match frame::decode(buf.get(..n).unwrap_or(&[])) {
                Ok((dest, payload)) => shared.forward_out(host, dest, payload).await,
                Err(error) => {
                    bump(&shared.counters.bad_frames);
                    debug!(%host, %error, "bad frame from inside");
                }
            },
            Err(error) => after_receive_error(&shared, &error).await,
        }
    }
}

/// Read one mapping's outside socket and let admitted datagrams in.
async fn run_outside_reader(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let payload = buf.get(..n).unwrap_or(&[]);
                shared.forward_in(port, from, payload).await;
            }
            Err(error) => after_receive_error(&shared, &error).await,
        }
    }
}

/// Remove lapsed mappings every `every`.
async fn run_sweeper(shared: Arc<Shared>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        shared.sweep();
    }
}

/// A running NAT box; see the module docs. Dropping it (or [`NatBox::shutdown`]) stops it.
pub struct NatBox {
    shared: Arc<Shared>,
    kind: NatKind,
    tasks: Vec<JoinHandle<()>>,
}

impl NatBox {
    /// Bind the inside socket and start forwarding. Must run inside a tokio runtime.
    pub async fn start(config: NatBoxConfig) -> io::Result<NatBox> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        let inside = UdpSocket::bind(config.inside).await?;
        let inside_addr = inside.local_addr()?;
        let nat = Nat::new(NatConfig {
            kind: config.kind,
            mapping_timeout: config.mapping_timeout,
            external_ip: config.outside_ip,
        });
        let shared = Arc::new(Shared {
            inside,
            inside_addr,
            outside_ip: config.outside_ip,
            runtime: runtime.clone(),
            state: Mutex::new(State {
                nat,
                outside: HashMap::new(),
            }),
            counters: Counters::default(),
        });
        let mut tasks = vec![runtime.spawn(run_inside_reader(Arc::clone(&shared)))];
        if config.kind != NatKind::None {
            let every = (config.mapping_timeout / 4).clamp(MIN_SWEEP, MAX_SWEEP);
            tasks.push(runtime.spawn(run_sweeper(Arc::clone(&shared), every)));
        }
        Ok(NatBox {
            shared,
            kind: config.kind,
            tasks,
        })
    }

    /// Where inside hosts send framed datagrams (see [`NatSocket`]).
    pub fn inside_addr(&self) -> SocketAddr {
        self.shared.inside_addr
    }

    /// The box's mapping and filtering behaviour.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// The external addresses of the current mappings, sorted.
    pub fn external_addrs(&self) -> Vec<SocketAddr> {
        let state = lock(&self.shared.state);
        let mut addrs: Vec<SocketAddr> = state
            .outside
            .keys()
            .map(|port| state.nat.external_addr(*port))
            .collect();
        addrs.sort_unstable();
        addrs
    }

    /// Drop every mapping and close its socket, as a NAT reboot does; returns how many went.
    pub fn expire_all(&self) -> usize {
        let mut state = lock(&self.shared.state);
        let expired = state.nat.expire_all();
        state.close_released(&self.shared.counters);
        expired
    }

    /// What the box has done so far.
    pub fn counters(&self) -> NatBoxCounters {
        self.shared.counters.snapshot()
    }

    /// Stop forwarding and close every socket.
    pub async fn shutdown(mut self) {
        let tasks = self.stop();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Abort every task; returns them so a caller can wait for them to finish.
    fn stop(&mut self) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.tasks);
        let mut state = lock(&self.shared.state);
        tasks.extend(state.outside.drain().map(|(_, o)| o.reader));
        tasks.iter().for_each(JoinHandle::abort);
        tasks
    }
}

impl Drop for NatBox {
    fn drop(&mut self) {
        self.stop();
    }
}
