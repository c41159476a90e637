//! Hole punching, the client's half: after a relayed dial, reach the same node directly.
//!
//! The meeting node told the node where it sees this client ([`cmdop_proto::RelayOpen`]);
//! asked by the client over their end-to-end connection ([`cmdop_proto::Punch`]), the node
//! sends punches there from its own socket for a few seconds, opening its NAT towards the
//! client. The meeting node told this client where it sees the node
//! ([`cmdop_proto::Relaying`]). [`Dialer::punch`] dials that address from the dialer's own
//! socket (its QUIC packets open this side's NAT), and also every address punches from the
//! node's IP arrive from: a symmetric NAT in front of the node gives its punches a port of their
//! own, and only that port lets this client in. The first dial to finish its handshake with the
//! pinned key wins; when none does within [`PUNCH_WINDOW`] (symmetric NATs on the way), the
//! connection stays relayed.

use crate::dial::{Dialer, NodeClient, Target, Way};
use cmdop_proto::{ALPN, PROTOCOL_VERSION};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long a direct path is tried for.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(5);

/// Punch sources last heard from longer than this before a try began are not dialed: the node
/// punches every 100 ms while it expects a dial.
const STALE: Duration = Duration::from_secs(1);

impl Dialer {
    /// Dials `target` directly at `seen` (where its meeting node sees it) and wherever punches
    /// from that IP come from; the first connection made within [`PUNCH_WINDOW`], or None.
    /// `initial_rtt` is the relayed path's round trip: the direct one is no longer, so lost
    /// handshake packets are sent again soon.
    pub async fn punch(
        self: &Arc<Self>,
        target: &Target,
        seen: SocketAddr,
        initial_rtt: Duration,
    ) -> Option<NodeClient> {
        let started = Instant::now();
        let mut sources = self.punches().subscribe();
        let mut tried = HashSet::new();
        let mut dials = JoinSet::new();
        let mut dial = |addr: SocketAddr, dials: &mut JoinSet<_>| {
            if addr.ip() == seen.ip() && tried.insert(addr) {
                tracing::debug!(%addr, "dialing directly");
                let dialer = self.clone();
                let target = target.clone();
                dials.spawn(async move { dialer.dial_direct(&target, addr, initial_rtt).await });
            }
        };
        dial(seen, &mut dials);
        let deadline = tokio::time::Instant::from_std(started + PUNCH_WINDOW);
        loop {
            // Sources heard from lately: older ones belong to earlier punches.
            let fresh = started.checked_sub(STALE).unwrap_or(started);
            for (addr, _) in sources
                .borrow_and_update()
                .iter()
                .filter(|(_, at)| *at >= fresh)
            {
                dial(*addr, &mut dials);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                changed = sources.changed() => if changed.is_err() { return None },
                Some(done) = dials.join_next() => {
                    if let Ok(Some(client)) = done {
                        tracing::info!(node = %target.name, addr = %client.connection.remote_address(), ms = started.elapsed().as_millis() as u64, "direct path open");
                        return Some(client);
                    }
                }
            }
        }
    }

    /// One direct dial of `target` at `addr` from this dialer's socket.
    async fn dial_direct(
        &self,
        target: &Target,
        addr: SocketAddr,
        initial_rtt: Duration,
    ) -> Option<NodeClient> {
        let way = Way {
            endpoint: self.endpoint(),
            addr,
            started: Instant::now(),
            initial_rtt: Some(initial_rtt),
        };
        match self
            .connect_on(way, target, None, ALPN, PROTOCOL_VERSION)
            .await
        {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::debug!(%addr, "direct dial failed: {e}");
                None
            }
        }
    }
}
