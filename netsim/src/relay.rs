//! The relay: sockets, associations, the delay queue and the [`Netsim`] handle.
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
use tracing::{debug, info, warn};

use crate::blackout::Blackout;
use crate::command::Target;
use crate::counters::{add, bump, Counters, CountersSnapshot, DirectionCounters};
use crate::impair::{plan, Departure, Impairments, Link, Plan};

/// Largest datagram the relay handles (the UDP maximum, rounded up).
const MAX_DATAGRAM: usize = 65_536;

/// Mixed into the seed for the node-to-client RNG so the two directions draw
/// independent streams.
const TO_CLIENT_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// How to start a relay.
#[derive(Clone, Debug)]
pub struct NetsimConfig {
    /// Where clients send datagrams; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The node's address.
    pub upstream: SocketAddr,
    /// Seed for every random decision.
    pub seed: u64,
    /// Impairments on client-to-node traffic.
    pub to_node: Impairments,
    /// Impairments on node-to-client traffic.
    pub to_client: Impairments,
}

impl NetsimConfig {
    /// A relay from `listen` to `upstream` with seed 0 and no impairment.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        NetsimConfig {
            listen,
            upstream,
            seed: 0,
            to_node: Impairments::default(),
            to_client: Impairments::default(),
        }
    }

    /// Apply the same impairments to both directions.
    pub fn with_impairments(mut self, both: Impairments) -> Self {
        self.to_node = both;
        self.to_client = both;
        self
    }
}

/// Lock a mutex, ignoring poisoning: every critical section here leaves its
/// data consistent, so a panic elsewhere must not stop the relay.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Socket errors after which receiving may simply continue (ICMP feedback).
fn is_transient(e: &io::Error) -> bool {
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

/// A running relay. Dropping it (or [`Netsim::shutdown`]) stops it.
pub struct Netsim {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Netsim {
    /// Bind the listen socket and start relaying. Must run inside a tokio
    /// runtime; the relay's tasks run on it.
    pub async fn start(config: NetsimConfig) -> io::Result<Netsim> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        let listen = UdpSocket::bind(config.listen).await?;
        let listen_addr = listen.local_addr()?;
        let (to_node_tx, to_node_rx) = mpsc::unbounded_channel();
        let (to_client_tx, to_client_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            listen,
            listen_addr,
            upstream: config.upstream,
            runtime: runtime.clone(),
            blackout: Blackout::new(Instant::now()),
            counters: Counters::default(),
            to_node: Direction::new(config.to_node, config.seed, to_node_tx),
            to_client: Direction::new(
                config.to_client,
                config.seed ^ TO_CLIENT_SEED_MIX,
                to_client_tx,
            ),
            associations: Mutex::new(HashMap::new()),
            upstream_ip: Mutex::new(None),
        });
        let tasks = vec![
            runtime.spawn(run_listener(Arc::clone(&shared))),
            runtime.spawn(run_timer(Arc::clone(&shared), Dir::ToNode, to_node_rx)),
            runtime.spawn(run_timer(Arc::clone(&shared), Dir::ToClient, to_client_rx)),
        ];
        info!(listen = %listen_addr, upstream = %config.upstream, seed = config.seed, "netsim started");
        Ok(Netsim { shared, tasks })
    }

    /// The address clients should send to (the actual port if 0 was asked).
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }

    /// The node's address.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Replace the impairments of both directions. Probabilities are clamped
    /// to 0..=1. Packets already delayed keep their release times.
    pub fn set_impairments(&self, to_node: Impairments, to_client: Impairments) {
        self.shared.to_node.set(to_node);
        self.shared.to_client.set(to_client);
    }

    /// Change the impairments of the direction(s) in `target` in place.
    pub fn update_impairments(&self, target: Target, change: impl Fn(&mut Impairments)) {
        for (selected, direction) in [
            (target.to_node(), &self.shared.to_node),
            (target.to_client(), &self.shared.to_client),
        ] {
            if selected {
                let mut imp = direction.get();
                change(&mut imp);
                direction.set(imp);
            }
        }
    }

    /// The current impairments: `(to_node, to_client)`.
    pub fn impairments(&self) -> (Impairments, Impairments) {
        (self.shared.to_node.get(), self.shared.to_client.get())
    }

    /// NAT rebinding: every association gets a new upstream socket (new
    /// source port); the old sockets close, so the node's replies to the old
    /// ports are lost. Errors are logged; see [`Netsim::try_rebind`].
    pub fn rebind(&self) {
        if let Err(e) = self.try_rebind() {
            warn!(error = %e, "rebind failed; keeping the old upstream sockets");
        }
    }

    /// Like [`Netsim::rebind`], returning the error if a new socket cannot be
    /// bound (in which case nothing changed).
    pub fn try_rebind(&self) -> io::Result<()> {
        self.shared.rebind_all()?;
        info!("rebound upstream sockets");
        Ok(())
    }

    /// Address change: rebind every association, and all future ones, from
    /// local IP `ip` (e.g. 127.0.0.2; all of 127.0.0.0/8 is loopback on
    /// Linux). Errors are logged; see [`Netsim::try_change_upstream_ip`].
    pub fn change_upstream_ip(&self, ip: IpAddr) {
        if let Err(e) = self.try_change_upstream_ip(ip) {
            warn!(%ip, error = %e, "address change failed; keeping the old upstream sockets");
        }
    }

    /// Like [`Netsim::change_upstream_ip`], returning the error if a socket
    /// cannot be bound on `ip` (in which case nothing changed).
    pub fn try_change_upstream_ip(&self, ip: IpAddr) -> io::Result<()> {
        let previous = lock(&self.shared.upstream_ip).replace(ip);
        if let Err(e) = self.shared.rebind_all() {
            *lock(&self.shared.upstream_ip) = previous;
            return Err(e);
        }
        info!(%ip, "moved upstream sockets to a new address");
        Ok(())
    }

    /// Drop everything in both directions for `duration` from now, including
    /// delayed packets that fall due meanwhile. Replaces any timed blackout.
    pub fn blackout(&self, duration: Duration) {
        self.shared.blackout.start_timed(Instant::now(), duration);
    }

    /// `true`: drop everything until `set_blackout(false)`. `false`: end any
    /// blackout, timed or held.
    pub fn set_blackout(&self, on: bool) {
        self.shared.blackout.set(on);
    }

    /// True if a blackout is in force now.
    pub fn is_blacked_out(&self) -> bool {
        self.shared.blackout.active_at(Instant::now())
    }

    /// The current counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// For each client address, the local address of its current upstream
    /// socket (what the node sees as the source).
    pub fn upstream_local_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        lock(&self.shared.associations)
            .values()
            .filter_map(|a| Some((a.client, a.socket().local_addr().ok()?)))
            .collect()
    }

    fn abort_all(&mut self) -> Vec<JoinHandle<()>> {
        let mut handles = std::mem::take(&mut self.tasks);
        for assoc in lock(&self.shared.associations).drain().map(|(_, a)| a) {
            handles.extend(assoc.take_reader());
        }
        for h in &handles {
            h.abort();
        }
        handles
    }

    /// Stop the relay and wait until its tasks are gone, so its sockets are
    /// closed when this returns.
    pub async fn shutdown(mut self) {
        for handle in self.abort_all() {
            // The result is a cancellation error by design.
            let _ = handle.await;
        }
        info!("netsim stopped");
    }
}

impl Drop for Netsim {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::impair::Link;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const WAIT: Duration = Duration::from_secs(5);

    fn any_port() -> SocketAddr {
        SocketAddr::new(LOOPBACK, 0)
    }

    async fn udp() -> UdpSocket {
        UdpSocket::bind(any_port()).await.unwrap()
    }

    /// An upstream that echoes every datagram to its sender.
    async fn echo_server() -> SocketAddr {
        let socket = udp().await;
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    type Arrival = (Vec<u8>, SocketAddr, Instant);

    /// An upstream that records what arrives, from whom, and when.
    async fn sink() -> (SocketAddr, mpsc::UnboundedReceiver<Arrival>) {
        let socket = udp().await;
        let addr = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if tx.send((buf[..n].to_vec(), from, Instant::now())).is_err() {
                    return;
                }
            }
        });
        (addr, rx)
    }

    /// Everything that arrives within `quiet` of the previous arrival.
    async fn drain(rx: &mut mpsc::UnboundedReceiver<Arrival>, quiet: Duration) -> Vec<Arrival> {
        let mut out = Vec::new();
        while let Ok(Some(a)) = tokio::time::timeout(quiet, rx.recv()).await {
            out.push(a);
        }
        out
    }

    async fn start(
        upstream: SocketAddr,
        seed: u64,
        to_node: Impairments,
        to_client: Impairments,
    ) -> Netsim {
        Netsim::start(NetsimConfig {
            listen: any_port(),
            upstream,
            seed,
            to_node,
            to_client,
        })
        .await
        .unwrap()
    }

    async fn recv(socket: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match tokio::time::timeout(within, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
            _ => None,
        }
    }

    async fn wait_for(sim: &Netsim, what: impl Fn(&CountersSnapshot) -> bool) -> CountersSnapshot {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = sim.counters();
            if what(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "timed out; counters: {c}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Send `n` numbered datagrams, pausing briefly every 20 so the kernel
    /// buffers never overflow.
    async fn send_numbered(client: &UdpSocket, to: SocketAddr, n: u32, size: usize) {
        for i in 0..n {
            let mut payload = i.to_be_bytes().to_vec();
            payload.resize(size.max(4), 0xAB);
            client.send_to(&payload, to).await.unwrap();
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    fn number(data: &[u8]) -> u32 {
        u32::from_be_bytes(data[..4].try_into().unwrap())
    }

    fn lossy(loss: f64) -> Impairments {
        Impairments {
            loss,
            ..Impairments::default()
        }
    }

    #[tokio::test]
    async fn passes_bytes_unchanged_both_ways() {
        let sim = start(
            echo_server().await,
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        let sizes = [0usize, 1, 2, 100, 1200, 1500, 9000, 65_507];
        let mut total = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            client.send_to(&payload, sim.listen_addr()).await.unwrap();
            let (echo, from) = recv(&client, WAIT).await.expect("echo");
            assert_eq!(echo, payload, "size {size}");
            assert_eq!(from, sim.listen_addr());
            total += size as u64;
        }
        let c = sim.counters();
        for d in [c.to_node, c.to_client] {
            assert_eq!(d.received_packets, sizes.len() as u64);
            assert_eq!(d.forwarded_packets, sizes.len() as u64);
            assert_eq!(d.forwarded_bytes, total);
            assert_eq!(
                d.dropped_loss + d.dropped_blackout + d.dropped_queue + d.errors,
                0
            );
        }
        assert_eq!(c.associations, 1);
    }

    #[tokio::test]
    async fn thousands_of_packets_pass_unimpaired() {
        let sim = start(
            echo_server().await,
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        let started = Instant::now();
        let mut got = 0;
        for burst in 0..100u32 {
            for i in 0..30u32 {
                client
                    .send_to(&(burst * 30 + i).to_be_bytes(), sim.listen_addr())
                    .await
                    .unwrap();
            }
            for _ in 0..30 {
                recv(&client, WAIT).await.expect("echo");
                got += 1;
            }
        }
        assert_eq!(got, 3000);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn same_seed_same_drops_as_the_decision_function() {
        const N: u32 = 300;
        let imp = lossy(0.5);
        let mut patterns = Vec::new();
        for seed in [42, 42, 43] {
            let (upstream, mut arrivals) = sink().await;
            let sim = start(upstream, seed, imp, Impairments::default()).await;
            let client = udp().await;
            send_numbered(&client, sim.listen_addr(), N, 20).await;
            let c = wait_for(&sim, |c| c.to_node.received_packets == u64::from(N)).await;
            let got = drain(&mut arrivals, Duration::from_millis(200)).await;
            assert_eq!(got.len() as u64, c.to_node.forwarded_packets);
            let mut delivered = vec![false; N as usize];
            for (data, _, _) in &got {
                delivered[number(data) as usize] = true;
            }
            // The relay must make exactly the decisions of the sans-IO plan.
            let mut rng = StdRng::seed_from_u64(seed);
            let mut link = Link::new();
            let now = Instant::now();
            let predicted: Vec<bool> = (0..N)
                .map(|_| plan(&imp, &mut link, &mut rng, now, 20) != Plan::Lost)
                .collect();
            assert_eq!(delivered, predicted, "seed {seed}");
            patterns.push(delivered);
        }
        assert_eq!(patterns[0], patterns[1]);
        assert_ne!(patterns[0], patterns[2]);
    }

    #[tokio::test]
    async fn loss_one_drops_everything() {
        let (upstream, mut arrivals) = sink().await;
        let sim = start(upstream, 5, lossy(1.0), lossy(1.0)).await;
        let client = udp().await;
        send_numbered(&client, sim.listen_addr(), 100, 10).await;
        let c = wait_for(&sim, |c| c.to_node.received_packets == 100).await;
        assert_eq!(c.to_node.dropped_loss, 100);
        assert_eq!(c.to_node.forwarded_packets, 0);
        assert!(drain(&mut arrivals, Duration::from_millis(100))
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn loss_point_three_drops_within_band() {
        let (upstream, mut arrivals) = sink().await;
        let sim = start(upstream, 77, lossy(0.3), Impairments::default()).await;
        let client = udp().await;
        send_numbered(&client, sim.listen_addr(), 2000, 16).await;
        let c = wait_for(&sim, |c| c.to_node.received_packets == 2000).await;
        assert!((500..=700).contains(&c.to_node.dropped_loss), "{c}");
        assert_eq!(c.to_node.forwarded_packets + c.to_node.dropped_loss, 2000);
        let got = drain(&mut arrivals, Duration::from_millis(200)).await;
        assert_eq!(got.len() as u64, c.to_node.forwarded_packets);
    }

    #[tokio::test]
    async fn duplication_sends_extra_copies() {
        let sim = start(
            echo_server().await,
            3,
            Impairments {
                duplicate: 1.0,
                ..Impairments::default()
            },
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        send_numbered(&client, sim.listen_addr(), 50, 8).await;
        let mut copies = vec![0u32; 50];
        while let Some((data, _)) = recv(&client, Duration::from_millis(300)).await {
            copies[number(&data) as usize] += 1;
        }
        assert!(copies.iter().all(|&n| n == 2), "{copies:?}");
        let c = sim.counters();
        assert_eq!(c.to_node.duplicated, 50);
        assert_eq!(c.to_node.forwarded_packets, 100);
        assert_eq!(c.to_client.duplicated, 0);
        assert_eq!(c.to_client.forwarded_packets, 100);
    }

    #[tokio::test]
    async fn jitter_reorders_and_delay_is_added() {
        let delay = Duration::from_millis(30);
        let (upstream, mut arrivals) = sink().await;
        let sim = start(
            upstream,
            9,
            Impairments {
                delay,
                jitter: Duration::from_millis(40),
                ..Impairments::default()
            },
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        let mut sent_at = Vec::new();
        for i in 0..100u32 {
            sent_at.push(Instant::now());
            client
                .send_to(&i.to_be_bytes(), sim.listen_addr())
                .await
                .unwrap();
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let got = drain(&mut arrivals, Duration::from_millis(300)).await;
        assert_eq!(got.len(), 100);
        for (data, _, at) in &got {
            let i = number(data) as usize;
            assert!(*at >= sent_at[i] + delay, "packet {i} early");
        }
        let order: Vec<u32> = got.iter().map(|(d, _, _)| number(d)).collect();
        let inversions = order.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 5, "order {order:?}");
    }

    #[tokio::test]
    async fn rebind_changes_source_port_and_loses_replies_to_the_old_one() {
        let server = udp().await;
        let sim = start(
            server.local_addr().unwrap(),
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;

        client.send_to(b"one", sim.listen_addr()).await.unwrap();
        let (data, old) = recv(&server, WAIT).await.expect("first datagram");
        assert_eq!(data, b"one");
        server.send_to(b"r1", old).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("r1").0, b"r1");

        sim.rebind();
        assert_eq!(sim.counters().rebinds, 1);
        client.send_to(b"two", sim.listen_addr()).await.unwrap();
        let (data, new) = recv(&server, WAIT).await.expect("second datagram");
        assert_eq!(data, b"two");
        assert_ne!(new.port(), old.port());
        assert_eq!(new.ip(), old.ip());
        assert_eq!(
            sim.upstream_local_addrs(),
            vec![(client.local_addr().unwrap(), new)]
        );

        server.send_to(b"stale", old).await.unwrap();
        server.send_to(b"r2", new).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("r2").0, b"r2");
        assert_eq!(recv(&client, Duration::from_millis(300)).await, None);
        assert_eq!(sim.counters().associations, 1);
    }

    #[tokio::test]
    async fn change_upstream_ip_moves_the_source_address() {
        let server = udp().await;
        let sim = start(
            server.local_addr().unwrap(),
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        client.send_to(b"a", sim.listen_addr()).await.unwrap();
        let (_, before) = recv(&server, WAIT).await.expect("a");
        assert_eq!(before.ip(), LOOPBACK);

        let other: IpAddr = "127.0.0.2".parse().unwrap();
        sim.try_change_upstream_ip(other).unwrap();
        client.send_to(b"b", sim.listen_addr()).await.unwrap();
        let (_, after) = recv(&server, WAIT).await.expect("b");
        assert_eq!(after.ip(), other);
        server.send_to(b"reply", after).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("reply").0, b"reply");

        // New clients use the new address too.
        let second = udp().await;
        second.send_to(b"c", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&server, WAIT).await.expect("c").1.ip(), other);

        // An address of the wrong family cannot be used; nothing changes.
        assert!(sim.try_change_upstream_ip("::1".parse().unwrap()).is_err());
        client.send_to(b"d", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&server, WAIT).await.expect("d").1, after);
        assert_eq!(sim.counters().rebinds, 1);
    }

    #[tokio::test]
    async fn blackout_drops_everything_then_traffic_resumes() {
        let sim = start(
            echo_server().await,
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        client.send_to(b"before", sim.listen_addr()).await.unwrap();
        assert!(recv(&client, WAIT).await.is_some());

        sim.blackout(Duration::from_millis(300));
        assert!(sim.is_blacked_out());
        for _ in 0..10 {
            client.send_to(b"during", sim.listen_addr()).await.unwrap();
        }
        assert_eq!(recv(&client, Duration::from_millis(100)).await, None);
        let c = wait_for(&sim, |c| c.to_node.received_packets == 11).await;
        assert_eq!(c.to_node.dropped_blackout, 10);

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!sim.is_blacked_out());
        client.send_to(b"after", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("after").0, b"after");

        sim.set_blackout(true);
        client.send_to(b"held", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&client, Duration::from_millis(200)).await, None);
        sim.set_blackout(false);
        client.send_to(b"cleared", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("cleared").0, b"cleared");
    }

    #[tokio::test]
    async fn blackout_also_drops_delayed_packets() {
        let (upstream, mut arrivals) = sink().await;
        let delayed = Impairments {
            delay: Duration::from_millis(100),
            ..Impairments::default()
        };
        let sim = start(upstream, 1, delayed, Impairments::default()).await;
        let client = udp().await;
        client.send_to(b"x", sim.listen_addr()).await.unwrap();
        wait_for(&sim, |c| c.to_node.received_packets == 1).await;
        sim.blackout(Duration::from_millis(300));
        assert!(drain(&mut arrivals, Duration::from_millis(400))
            .await
            .is_empty());
        assert_eq!(sim.counters().to_node.dropped_blackout, 1);
    }

    #[tokio::test]
    async fn rate_limit_bounds_throughput() {
        const RATE: u64 = 50_000;
        const SIZE: usize = 1000;
        let (upstream, mut arrivals) = sink().await;
        let limited = Impairments {
            rate_bytes_per_sec: Some(RATE),
            queue_bytes: 10_000,
            ..Impairments::default()
        };
        let sim = start(upstream, 1, limited, Impairments::default()).await;
        let client = udp().await;
        let started = Instant::now();
        // Offer 500 kB/s for 0.4 s, ten times the limit.
        for i in 0..200u32 {
            let mut payload = i.to_be_bytes().to_vec();
            payload.resize(SIZE, 0);
            client.send_to(&payload, sim.listen_addr()).await.unwrap();
            tokio::time::sleep_until((started + Duration::from_millis(2 * u64::from(i))).into())
                .await;
        }
        let got = drain(&mut arrivals, Duration::from_millis(500)).await;
        let c = sim.counters();
        assert_eq!(c.to_node.received_packets, 200);
        assert_eq!(got.len() as u64, c.to_node.forwarded_packets);
        assert_eq!(c.to_node.forwarded_packets + c.to_node.dropped_queue, 200);
        assert!(c.to_node.dropped_queue > 100, "{c}");
        // A 1000-byte packet takes 20 ms on the wire: arrivals are spaced so.
        let first = got.first().unwrap().2;
        let last = got.last().unwrap().2;
        let span = last.duration_since(first);
        let min_span = Duration::from_millis(20 * (got.len() as u64 - 1)).mul_f64(0.9);
        assert!(span >= min_span, "{} packets in {span:?}", got.len());
        // Never more than the rate allows since the start, plus the queue.
        let budget =
            (RATE as f64 * last.duration_since(started).as_secs_f64()) as usize + 10_000 + SIZE;
        assert!(
            got.len() * SIZE <= budget,
            "{} packets, budget {budget} B",
            got.len()
        );
        assert!(got.len() >= 15, "only {} packets", got.len());
    }

    #[tokio::test]
    async fn each_client_gets_its_own_association() {
        let sim = start(
            echo_server().await,
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let a = udp().await;
        let b = udp().await;
        a.send_to(b"from a", sim.listen_addr()).await.unwrap();
        b.send_to(b"from b", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&a, WAIT).await.unwrap().0, b"from a");
        assert_eq!(recv(&b, WAIT).await.unwrap().0, b"from b");
        assert_eq!(sim.counters().associations, 2);
        let mut locals = sim.upstream_local_addrs();
        locals.sort();
        assert_eq!(locals.len(), 2);
        assert_ne!(locals[0].1, locals[1].1);
        sim.rebind();
        a.send_to(b"again a", sim.listen_addr()).await.unwrap();
        b.send_to(b"again b", sim.listen_addr()).await.unwrap();
        assert_eq!(recv(&a, WAIT).await.unwrap().0, b"again a");
        assert_eq!(recv(&b, WAIT).await.unwrap().0, b"again b");
    }

    #[tokio::test]
    async fn one_direction_can_be_impaired_alone() {
        let server = udp().await;
        let sim = start(
            server.local_addr().unwrap(),
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        sim.update_impairments(Target::ToClient, |imp| imp.loss = 1.0);
        assert_eq!(sim.impairments(), (Impairments::default(), lossy(1.0)));
        let client = udp().await;
        client.send_to(b"up", sim.listen_addr()).await.unwrap();
        let (data, from) = recv(&server, WAIT).await.expect("up");
        assert_eq!(data, b"up");
        server.send_to(b"down", from).await.unwrap();
        assert_eq!(recv(&client, Duration::from_millis(200)).await, None);
        assert_eq!(
            wait_for(&sim, |c| c.to_client.received_packets == 1)
                .await
                .to_client
                .dropped_loss,
            1
        );
        sim.set_impairments(Impairments::default(), Impairments::default());
        server.send_to(b"down again", from).await.unwrap();
        assert_eq!(
            recv(&client, WAIT).await.expect("down again").0,
            b"down again"
        );
    }

    #[tokio::test]
    async fn carries_on_after_the_node_was_unreachable() {
        let server = udp().await;
        let addr = server.local_addr().unwrap();
        drop(server);
        let sim = start(addr, 1, Impairments::default(), Impairments::default()).await;
        let client = udp().await;
        for _ in 0..5 {
            client
                .send_to(b"nobody home", sim.listen_addr())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_for(&sim, |c| c.to_node.received_packets == 5).await;
        let server = UdpSocket::bind(addr).await.unwrap();
        client.send_to(b"hello", sim.listen_addr()).await.unwrap();
        let (data, from) = recv(&server, WAIT).await.expect("hello");
        assert_eq!(data, b"hello");
        server.send_to(b"hi", from).await.unwrap();
        assert_eq!(recv(&client, WAIT).await.expect("hi").0, b"hi");
    }

    #[tokio::test]
    async fn shutdown_closes_the_listen_socket() {
        let sim = start(
            echo_server().await,
            1,
            Impairments::default(),
            Impairments::default(),
        )
        .await;
        let client = udp().await;
        client.send_to(b"x", sim.listen_addr()).await.unwrap();
        assert!(recv(&client, WAIT).await.is_some());
        let addr = sim.listen_addr();
        sim.shutdown().await;
        UdpSocket::bind(addr)
            .await
            .expect("port released by shutdown");
    }
}
