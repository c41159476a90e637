//! A sans-IO NAT table: which external port an inside host's datagram leaves from, and which
//! datagrams arriving at an external port are let in. No sockets and no clock: every call takes
//! the current time as an [`Instant`], so tests can step time explicitly. The userspace NAT box
//! that drives it over real loopback sockets is [`crate::nat_box`]; the tests are in
//! `nat/tests.rs`.
//!
//! The behaviours follow RFC 4787's vocabulary:
//!
//! | [`NatKind`]          | mapping                      | filtering (who may send in)         |
//! |----------------------|------------------------------|-------------------------------------|
//! | `none`               | one port per inside host     | anyone; mappings never expire       |
//! | `full-cone`          | endpoint-independent         | anyone                              |
//! | `address-restricted` | endpoint-independent         | addresses the inside host sent to   |
//! | `port-restricted`    | endpoint-independent         | exact addr:port the host sent to    |
//! | `symmetric`          | a new port per destination   | only that mapping's destination     |
//!
//! Only outbound traffic keeps a mapping alive, as real NATs commonly do: a mapping (and each
//! destination's permission to send back) lapses after [`NatConfig::mapping_timeout`] without an
//! outbound datagram, however much inbound traffic it sees. A lapsed mapping is gone: the next
//! outbound datagram gets a fresh external port. [`Nat::expire_all`] simulates a NAT reboot.
//! Every removed external port is reported once by [`Nat::take_released`], so a driver holding a
//! socket per port can close it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::command::ParseError;

#[cfg(test)]
mod tests;

/// The idle time after which a mapping lapses unless configured otherwise.
pub const DEFAULT_MAPPING_TIMEOUT: Duration = Duration::from_secs(30);

/// First port the built-in allocator of [`Nat::outbound`] hands out.
const FIRST_EXTERNAL_PORT: u16 = 20_000;

/// How a NAT maps and filters; see the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// No NAT: a public host (on loopback a forwarder is still needed, with no filtering).
    None,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping; admits addresses the inside host has sent to.
    AddressRestricted,
    /// Endpoint-independent mapping; admits exact addr:port pairs the inside host has sent to.
    PortRestricted,
    /// A new mapping per destination; each admits only its own destination.
    Symmetric,
}

impl NatKind {
    /// Every kind, in increasing order of strictness.
    pub const ALL: [NatKind; 5] = [
        NatKind::None,
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
    ];

    /// The name used by [`fmt::Display`] and [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            NatKind::None => "none",
            NatKind::FullCone => "full-cone",
            NatKind::AddressRestricted => "address-restricted",
            NatKind::PortRestricted => "port-restricted",
            NatKind::Symmetric => "symmetric",
        }
    }

    /// Whether the external port depends on the destination.
    fn maps_per_destination(self) -> bool {
        self == NatKind::Symmetric
    }

    /// Whether inbound datagrams are checked against where the inside host sent.
    fn filters(self) -> bool {
        !matches!(self, NatKind::None | NatKind::FullCone)
    }

    /// Whether mappings lapse when idle.
    fn expires(self) -> bool {
        self != NatKind::None
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NatKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        NatKind::ALL
            .into_iter()
            .find(|kind| kind.name() == wanted)
            .ok_or_else(|| {
                ParseError(format!(
                    "unknown NAT kind {s:?}: use none, full-cone, address-restricted, \
                     port-restricted or symmetric"
                ))
            })
    }
}

/// How a [`Nat`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Mapping and filtering behaviour.
    pub kind: NatKind,
    /// Idle time (without outbound traffic) after which a mapping lapses; ignored for
    /// [`NatKind::None`].
    pub mapping_timeout: Duration,
    /// The NAT's outside address, the IP half of every external address.
    pub external_ip: IpAddr,
}

impl NatConfig {
    /// A NAT of `kind` with the default timeout and external IP 127.0.0.1.
    pub fn new(kind: NatKind) -> Self {
        NatConfig {
            kind,
            mapping_timeout: DEFAULT_MAPPING_TIMEOUT,
            external_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// The result of [`Nat::outbound`]: where the datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The external port the datagram leaves from.
    pub external_port: u16,
    /// True if this datagram created the mapping.
    pub created: bool,
}

/// What identifies a mapping: the inside host, plus the destination for symmetric NATs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MappingKey {
    inside: SocketAddr,
    destination: Option<SocketAddr>,
}

/// One external port and who may send to it.
#[derive(Debug)]
struct Mapping {
    key: MappingKey,
    /// Last outbound datagram through this mapping.
    last_outbound: Instant,
    /// Last outbound datagram to each destination: the filtering permissions.
    sent_to: HashMap<SocketAddr, Instant>,
}

/// A NAT table; see the module docs.
#[derive(Debug)]
pub struct Nat {
    config: NatConfig,
    by_port: HashMap<u16, Mapping>,
    by_key: HashMap<MappingKey, u16>,
    next_port: u16,
    released: VecDeque<u16>,
}

impl Nat {
    /// An empty table.
    pub fn new(config: NatConfig) -> Self {
        Nat {
            config,
            by_port: HashMap::new(),
            by_key: HashMap::new(),
            next_port: FIRST_EXTERNAL_PORT,
            released: VecDeque::new(),
        }
    }

    /// The configuration this table was made with.
    pub fn config(&self) -> NatConfig {
        self.config
    }

    /// The external address of `port`.
    pub fn external_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.config.external_ip, port)
    }

    /// Live mappings (lapsed ones not yet swept by [`Nat::expire_idle`] included).
    pub fn mapping_count(&self) -> usize {
        self.by_port.len()
    }

    /// `inside` sends a datagram to `dest` at `now`: find or create its mapping, refresh it and
    /// record `dest` as allowed to reply. Ports for new mappings come from a built-in
    /// allocator; `None` only if all of them are taken.
    pub fn outbound(
        &mut self,
        inside: SocketAddr,
        dest: SocketAddr,
        now: Instant,
    ) -> Option<Outbound> {
        self.outbound_allocating(inside, dest, now, Nat::free_port)
    }

    /// As [`Nat::outbound`], but a new mapping's external port comes from `new_port` (called
    /// at most once, only when a mapping is created; a driver binds a real socket there).
    /// `None` if `new_port` gives none or gives one already in use.
    pub fn outbound_with(
        &mut self,
        inside: SocketAddr,
        dest: SocketAddr,
        now: Instant,
        new_port: impl FnOnce() -> Option<u16>,
    ) -> Option<Outbound> {
        self.outbound_allocating(inside, dest, now, |_| new_port())
    }

    fn outbound_allocating(
        &mut self,
        inside: SocketAddr,
        dest: SocketAddr,
        now: Instant,
        new_port: impl FnOnce(&mut Nat) -> Option<u16>,
    ) -> Option<Outbound> {
        let key = self.key_for(inside, dest);
        let filters = self.config.kind.filters();
        let (external_port, created) = match self.live_port(key, now) {
            Some(port) => (port, false),
            None => (self.create_mapping(key, now, new_port)?, true),
        };
        let mapping = self.by_port.get_mut(&external_port)?;
        mapping.last_outbound = now;
        if filters {
            mapping.sent_to.insert(dest, now);
        }
        Some(Outbound {
            external_port,
            created,
        })
    }

    /// A datagram from `from` arrives at `external_port` at `now`: the inside host to deliver
    /// it to, or `None` if there is no live mapping or the filtering refuses it. Inbound
    /// traffic never refreshes a mapping.
    pub fn inbound(
        &self,
        external_port: u16,
        from: SocketAddr,
        now: Instant,
    ) -> Option<SocketAddr> {
        let mapping = self.by_port.get(&external_port)?;
        if self.lapsed(mapping.last_outbound, now) {
            return None;
        }
        self.admits(mapping, from, now)
            .then_some(mapping.key.inside)
    }

    /// Remove every mapping idle for the timeout at `now`, and stale permissions of the
    /// others; returns how many mappings went.
    pub fn expire_idle(&mut self, now: Instant) -> usize {
        let lapsed: Vec<u16> = self
            .by_port
            .iter()
            .filter(|(_, m)| self.lapsed(m.last_outbound, now))
            .map(|(port, _)| *port)
            .collect();
        lapsed.iter().for_each(|port| self.remove(*port));
        let timeout = self.config.mapping_timeout;
        let expires = self.config.kind.expires();
        for mapping in self.by_port.values_mut() {
            mapping
                .sent_to
                .retain(|_, at| !expires || now.saturating_duration_since(*at) < timeout);
        }
        lapsed.len()
    }

    /// Forget every mapping at once, as a NAT reboot does (even for [`NatKind::None`]: the
    /// forwarder's sockets go too); returns how many went.
    pub fn expire_all(&mut self) -> usize {
        let ports: Vec<u16> = self.by_port.keys().copied().collect();
        ports.iter().for_each(|port| self.remove(*port));
        ports.len()
    }

    /// External ports removed since the last call, each reported once.
    pub fn take_released(&mut self) -> Vec<u16> {
        self.released.drain(..).collect()
    }

    fn key_for(&self, inside: SocketAddr, dest: SocketAddr) -> MappingKey {
        let destination = self.config.kind.maps_per_destination().then_some(dest);
        MappingKey {
            inside,
            destination,
        }
    }

    /// The port of `key`'s mapping if it is live; a lapsed one is removed.
    fn live_port(&mut self, key: MappingKey, now: Instant) -> Option<u16> {
        let port = *self.by_key.get(&key)?;
        let last = self.by_port.get(&port)?.last_outbound;
        if self.lapsed(last, now) {
            self.remove(port);
            return None;
        }
        Some(port)
    }

    fn create_mapping(
        &mut self,
        key: MappingKey,
        now: Instant,
        new_port: impl FnOnce(&mut Nat) -> Option<u16>,
    ) -> Option<u16> {
        let port = new_port(self)?;
        if self.by_port.contains_key(&port) {
            return None;
        }
        let mapping = Mapping {
            key,
            last_outbound: now,
            sent_to: HashMap::new(),
        };
        self.by_port.insert(port, mapping);
        self.by_key.insert(key, port);
        Some(port)
    }

    fn remove(&mut self, port: u16) {
        if let Some(mapping) = self.by_port.remove(&port) {
            self.by_key.remove(&mapping.key);
            self.released.push_back(port);
        }
    }

    /// Whether something last refreshed at `last` has lapsed by `now`.
    fn lapsed(&self, last: Instant, now: Instant) -> bool {
        self.config.kind.expires()
            && now.saturating_duration_since(last) >= self.config.mapping_timeout
    }

    /// Whether `mapping`'s filtering lets a datagram from `from` in at `now`.
    fn admits(&self, mapping: &Mapping, from: SocketAddr, now: Instant) -> bool {
        let mut permitted = mapping
            .sent_to
            .iter()
            .filter(|(_, at)| !self.lapsed(**at, now))
            .map(|(dest, _)| *dest);
        match self.config.kind {
            NatKind::None | NatKind::FullCone => true,
            NatKind::AddressRestricted => permitted.any(|dest| dest.ip() == from.ip()),
            NatKind::PortRestricted | NatKind::Symmetric => permitted.any(|dest| dest == from),
        }
    }

    /// The next unused port of the built-in allocator, wrapping within the dynamic range.
    fn free_port(&mut self) -> Option<u16> {
        let span = usize::from(u16::MAX - FIRST_EXTERNAL_PORT) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = port.checked_add(1).unwrap_or(FIRST_EXTERNAL_PORT);
            if !self.by_port.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }
}
