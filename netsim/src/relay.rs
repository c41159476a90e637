//! The relay: sockets, associations and the delay queue; the [`Netsim`] handle that starts,
//! steers and stops it is in [`handle`], and the tests are in `relay/tests.rs`.
//!
//! One listen socket faces the clients. Each distinct client source address
//! gets an association: an upstream socket connected to the node and a task
//! reading the node's replies, as a NAT would keep a mapping. A packet in
//! either direction goes through [`ingress`]: with no impairment and no
//! blackout it is sent straight away from the receiving task; otherwise the
//! sans-IO [`plan`] decides its fate, and copies that must wait go to that
//! direction's timer task, which keeps them in a heap ordered by release time.
//!
//! Rebinding swaps every association's upstream socket for a fresh one (new
//! port, optionally new local IP) and stops the old reader, so replies sent to
//! the old port are lost, exactly as after a real NAT rebinding. Delayed
//! client packets are sent from whatever socket is current when they leave.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::blackout::Blackout;
use crate::counters::{add, bump, Counters, DirectionCounters};
use crate::impair::{plan, Departure, Impairments, Link, Plan};

mod handle;
#[cfg(test)]
mod tests;

pub use handle::{Netsim, NetsimConfig};

/// Largest datagram the relay handles (the UDP maximum, rounded up).
const MAX_DATAGRAM: usize = 65_536;

/// Mixed into the seed for the node-to-client RNG so the two directions draw
/// independent streams.
const TO_CLIENT_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Lock a mutex, ignoring poisoning: every critical section here leaves its
/// data consistent, so a panic elsewhere must not stop the relay.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Socket errors after which receiving may simply continue (ICMP feedback).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToNode,
    ToClient,
}

/// The current upstream socket of an association and its reader task.
struct Upstream {
    socket: Arc<UdpSocket>,
    reader: Option<JoinHandle<()>>,
}

/// One client address and its upstream socket (a NAT mapping).
struct Association {
    client: SocketAddr,
    /// Bumped on every rebind; a reader whose generation is stale drops what
    /// it reads and exits.
    generation: AtomicU64,
    current: Mutex<Upstream>,
}

impl Association {
    fn socket(&self) -> Arc<UdpSocket> {
        Arc::clone(&lock(&self.current).socket)
    }

    /// Make `socket` the upstream socket and start its reader; the previous
    /// reader is stopped, which closes the previous socket.
    fn install(self: &Arc<Self>, shared: &Arc<Shared>, socket: Arc<UdpSocket>) {
        let mut current = lock(&self.current);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let reader = shared.runtime.spawn(run_upstream_reader(
            Arc::clone(shared),
            Arc::clone(self),
            Arc::clone(&socket),
            generation,
        ));
        let old = std::mem::replace(
            &mut *current,
            Upstream {
                socket,
                reader: Some(reader),
            },
        );
        if let Some(old_reader) = old.reader {
            old_reader.abort();
        }
    }

    fn take_reader(&self) -> Option<JoinHandle<()>> {
        lock(&self.current).reader.take()
    }
}

/// A datagram copy waiting in a timer task.
struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    assoc: Arc<Association>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so the std max-heap pops the earliest (then first-queued).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Mutable decision state of one direction.
struct DirState {
    imp: Impairments,
    rng: StdRng,
    link: Link,
}

/// One direction of the relay.
struct Direction {
    /// Mirrors `state.imp.is_active()` so the fast path needs no lock.
    active: AtomicBool,
    state: Mutex<DirState>,
    next_seq: AtomicU64,
    timer: mpsc::UnboundedSender<Pending>,
}

impl Direction {
    fn new(imp: Impairments, seed: u64, timer: mpsc::UnboundedSender<Pending>) -> Self {
        let imp = imp.sanitized();
        Direction {
            active: AtomicBool::new(imp.is_active()),
            state: Mutex::new(DirState {
                imp,
                rng: StdRng::seed_from_u64(seed),
                link: Link::new(),
            }),
            next_seq: AtomicU64::new(0),
            timer,
        }
    }

    fn set(&self, imp: Impairments) {
        let imp = imp.sanitized();
        let mut state = lock(&self.state);
        state.imp = imp;
        self.active.store(imp.is_active(), Ordering::Relaxed);
    }

    fn get(&self) -> Impairments {
        lock(&self.state).imp
    }
}

/// State shared by the handle and every task.
struct Shared {
    listen: UdpSocket,
    listen_addr: SocketAddr,
    upstream: SocketAddr,
    runtime: Handle,
    blackout: Blackout,
    counters: Counters,
    to_node: Direction,
    to_client: Direction,
    associations: Mutex<HashMap<SocketAddr, Arc<Association>>>,
    /// Local IP for new upstream sockets; `None` = unspecified address.
    upstream_ip: Mutex<Option<IpAddr>>,
}

impl Shared {
    fn direction(&self, dir: Dir) -> &Direction {
        match dir {
            Dir::ToNode => &self.to_node,
            Dir::ToClient => &self.to_client,
        }
    }

    fn counters(&self, dir: Dir) -> &DirectionCounters {
        match dir {
            Dir::ToNode => &self.counters.to_node,
            Dir::ToClient => &self.counters.to_client,
        }
    }

    /// A new upstream socket, bound to the configured local IP and connected
    /// to the node (so the kernel filters out anyone else's datagrams).
    fn bind_upstream(&self) -> io::Result<Arc<UdpSocket>> {
        let ip = lock(&self.upstream_ip).unwrap_or(match self.upstream {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        socket.set_nonblocking(true)?;
        socket.connect(self.upstream)?;
        let _runtime = self.runtime.enter();
        Ok(Arc::new(UdpSocket::from_std(socket)?))
    }

    /// The association for `client`, created on first sight.
    fn association(self: &Arc<Self>, client: SocketAddr) -> io::Result<Arc<Association>> {
        let mut map = lock(&self.associations);
        if let Some(assoc) = map.get(&client) {
            return Ok(Arc::clone(assoc));
        }
        let socket = self.bind_upstream()?;
        let assoc = Arc::new(Association {
            client,
            generation: AtomicU64::new(0),
            current: Mutex::new(Upstream {
                socket: Arc::clone(&socket),
                reader: None,
            }),
        });
        assoc.install(self, socket);
        map.insert(client, Arc::clone(&assoc));
        bump(&self.counters.associations);
        debug!(%client, "new association");
        Ok(assoc)
    }

    /// Replace every association's upstream socket.
    fn rebind_all(self: &Arc<Self>) -> io::Result<()> {
        let assocs: Vec<Arc<Association>> = lock(&self.associations).values().cloned().collect();
        // Bind everything first, so a failure changes nothing.
        let sockets = assocs
            .iter()
            .map(|_| self.bind_upstream())
            .collect::<io::Result<Vec<_>>>()?;
        for (assoc, socket) in assocs.iter().zip(sockets) {
            assoc.install(self, socket);
        }
        bump(&self.counters.rebinds);
        Ok(())
    }

    /// Send one copy on, counting the outcome.
    async fn send(&self, dir: Dir, assoc: &Association, data: &[u8]) {
        let result = match dir {
            Dir::ToNode => {
                let socket = assoc.socket();
                match socket.send(data).await {
                    // A connected UDP socket reports an earlier ICMP error on
                    // the next send, without sending; the error is then
                    // cleared, so try once more.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        socket.send(data).await
                    }
                    other => other,
                }
            }
            Dir::ToClient => self.listen.send_to(data, assoc.client).await,
        };
        let counters = self.counters(dir);
        match result {
            Ok(n) => {
                bump(&counters.forwarded_packets);
                add(&counters.forwarded_bytes, n);
            }
            Err(e) => {
                bump(&counters.errors);
                debug!(?dir, client = %assoc.client, error = %e, "send failed");
            }
        }
    }
}

/// Handle one datagram arriving in direction `dir`.
async fn ingress(shared: &Shared, dir: Dir, assoc: &Arc<Association>, data: &[u8]) {
    let direction = shared.direction(dir);
    let counters = shared.counters(dir);
    bump(&counters.received_packets);
    add(&counters.received_bytes, data.len());

    if !direction.active.load(Ordering::Relaxed) && !shared.blackout.maybe_active() {
        shared.send(dir, assoc, data).await;
        return;
    }
    let now = Instant::now();
    if shared.blackout.active_at(now) {
        bump(&counters.dropped_blackout);
        return;
    }
    let fate = {
        let mut state = lock(&direction.state);
        let DirState { imp, rng, link } = &mut *state;
        if imp.is_active() {
            plan(imp, link, rng, now, data.len())
        } else {
            Plan::Send {
                first: Departure::At(now),
                duplicate: None,
            }
        }
    };
    let (first, duplicate) = match fate {
        Plan::Lost => {
            bump(&counters.dropped_loss);
            return;
        }
        Plan::Send { first, duplicate } => (first, duplicate),
    };
    if duplicate.is_some() {
        bump(&counters.duplicated);
    }
    for departure in [Some(first), duplicate].into_iter().flatten() {
        match departure {
            Departure::QueueFull => bump(&counters.dropped_queue),
            Departure::At(at) if at <= now => shared.send(dir, assoc, data).await,
            Departure::At(at) => {
                let pending = Pending {
                    at,
                    seq: direction.next_seq.fetch_add(1, Ordering::Relaxed),
                    data: data.to_vec(),
                    assoc: Arc::clone(assoc),
                };
                if direction.timer.send(pending).is_err() {
                    // Only while shutting down.
                    bump(&counters.errors);
                }
            }
        }
    }
}

/// Release delayed copies of direction `dir` when they are due.
async fn run_timer(shared: Arc<Shared>, dir: Dir, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = heap.pop() else { break };
            if shared.blackout.active_at(now) {
                bump(&shared.counters(dir).dropped_blackout);
            } else {
                shared.send(dir, &p.assoc, &p.data).await;
            }
        }
        if let Some(next) = heap.peek() {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(next.at));
        }
        tokio::select! {
            received = rx.recv() => match received {
                Some(p) => {
                    heap.push(p);
                    while let Ok(p) = rx.try_recv() {
                        heap.push(p);
                    }
                }
                None => return,
            },
            () = &mut sleep, if !heap.is_empty() => {}
        }
    }
}

/// Read datagrams from clients and send them towards the node.
async fn run_listener(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match shared.listen.recv_from(&mut buf).await {
            Ok((n, client)) => match shared.association(client) {
                Ok(assoc) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    ingress(&shared, Dir::ToNode, &assoc, data).await;
                }
                Err(e) => {
                    bump(&shared.counters.to_node.errors);
                    warn!(%client, error = %e, "cannot open an upstream socket");
                }
            },
            Err(e) => {
                bump(&shared.counters.to_node.errors);
                debug!(error = %e, "listen socket receive failed");
                if !is_transient(&e) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Read the node's replies on one upstream socket and send them to the client.
async fn run_upstream_reader(
    shared: Arc<Shared>,
    assoc: Arc<Association>,
    socket: Arc<UdpSocket>,
    generation: u64,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = socket.recv(&mut buf).await;
        if assoc.generation.load(Ordering::SeqCst) != generation {
            // Rebound: this socket's mapping is gone.
            return;
        }
        match received {
            Ok(n) => {
                let data = buf.get(..n).unwrap_or(&[]);
                ingress(&shared, Dir::ToClient, &assoc, data).await;
            }
            Err(e) => {
                bump(&shared.counters.to_client.errors);
                debug!(client = %assoc.client, error = %e, "upstream receive failed");
                if !is_transient(&e) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
