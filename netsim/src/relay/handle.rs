//! The [`Netsim`] handle: how a relay is configured ([`NetsimConfig`]) and started, and the
//! controls a test or the binary's command loop uses on a running one (impairments, rebinding,
//! address changes, blackouts, counters, shutdown).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{lock, run_listener, run_timer, Dir, Direction, Shared, TO_CLIENT_SEED_MIX};
use crate::blackout::Blackout;
use crate::command::Target;
use crate::counters::{Counters, CountersSnapshot};
use crate::impair::Impairments;

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
