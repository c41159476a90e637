//! Tests of the NAT table with explicit time: mapping and filtering per kind, timeouts,
//! expiry, port allocation, and the 25 hole-punching combinations.

#![allow(clippy::unwrap_used)]

use super::*;

const HOST_A: &str = "192.168.1.2:5000";
const HOST_B: &str = "192.168.1.3:5000";
const SERVER: &str = "198.51.100.1:3478";
const SERVER_OTHER_PORT: &str = "198.51.100.1:9999";
const STRANGER: &str = "203.0.113.9:3478";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn nat(kind: NatKind) -> Nat {
    Nat::new(NatConfig::new(kind))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The external port of the mapping `from` -> `to` at `at` (created or refreshed).
fn mapped(table: &mut Nat, from: SocketAddr, to: SocketAddr, at: Instant) -> u16 {
    table.outbound(from, to, at).unwrap().external_port
}

#[test]
fn kind_names_round_trip() {
    for kind in NatKind::ALL {
        assert_eq!(kind.to_string().parse::<NatKind>().unwrap(), kind);
    }
    assert_eq!(
        " Port-Restricted ".parse::<NatKind>().unwrap(),
        NatKind::PortRestricted
    );
}

#[test]
fn unknown_kind_is_one_clear_sentence() {
    let message = "cone".parse::<NatKind>().unwrap_err().to_string();
    assert!(message.contains("\"cone\""), "{message}");
    assert!(message.contains("full-cone") && message.contains("symmetric"));
    assert!(!message.contains('\n'));
}

#[test]
fn cone_kinds_keep_one_port_across_destinations() {
    let t0 = Instant::now();
    for kind in [
        NatKind::None,
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
    ] {
        let mut table = nat(kind);
        let first = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
        let second = table.outbound(addr(HOST_A), addr(STRANGER), t0).unwrap();
        assert!(first.created && !second.created, "{kind}");
        assert_eq!(first.external_port, second.external_port, "{kind}");
        assert_eq!(table.mapping_count(), 1, "{kind}");
    }
}

#[test]
fn symmetric_maps_each_destination_to_its_own_port() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::Symmetric);
    let first = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    let other_port = table
        .outbound(addr(HOST_A), addr(SERVER_OTHER_PORT), t0)
        .unwrap();
    let again = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    assert_ne!(first.external_port, other_port.external_port);
    assert_eq!(first.external_port, again.external_port);
    assert!(!again.created);
    assert_eq!(table.mapping_count(), 2);
}

#[test]
fn inside_hosts_get_separate_ports() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let a = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    let b = table.outbound(addr(HOST_B), addr(SERVER), t0).unwrap();
    assert_ne!(a.external_port, b.external_port);
    assert_eq!(
        table.inbound(a.external_port, addr(SERVER), t0),
        Some(addr(HOST_A))
    );
    assert_eq!(
        table.inbound(b.external_port, addr(SERVER), t0),
        Some(addr(HOST_B))
    );
}

/// Which of (the destination, its IP on another port, a stranger) each kind admits.
#[test]
fn filtering_per_kind() {
    let expected = [
        (NatKind::None, [true, true, true]),
        (NatKind::FullCone, [true, true, true]),
        (NatKind::AddressRestricted, [true, true, false]),
        (NatKind::PortRestricted, [true, false, false]),
        (NatKind::Symmetric, [true, false, false]),
    ];
    let t0 = Instant::now();
    for (kind, admits) in expected {
        let mut table = nat(kind);
        let port = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
        let got = [SERVER, SERVER_OTHER_PORT, STRANGER]
            .map(|from| table.inbound(port.external_port, addr(from), t0).is_some());
        assert_eq!(got, admits, "{kind}");
    }
}

#[test]
fn admitted_datagrams_go_to_the_inside_host() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::PortRestricted);
    let port = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    assert_eq!(
        table.inbound(port.external_port, addr(SERVER), t0),
        Some(addr(HOST_A))
    );
}

#[test]
fn port_restricted_admits_every_destination_on_the_shared_port() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::PortRestricted);
    let port = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    assert!(table
        .inbound(port.external_port, addr(STRANGER), t0)
        .is_none());
    table.outbound(addr(HOST_A), addr(STRANGER), t0).unwrap();
    assert!(table
        .inbound(port.external_port, addr(STRANGER), t0)
        .is_some());
}

#[test]
fn symmetric_admits_a_destination_only_on_its_own_port() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::Symmetric);
    let to_server = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    let to_stranger = table.outbound(addr(HOST_A), addr(STRANGER), t0).unwrap();
    let server_port = to_server.external_port;
    let stranger_port = to_stranger.external_port;
    assert!(table.inbound(server_port, addr(STRANGER), t0).is_none());
    assert!(table.inbound(stranger_port, addr(SERVER), t0).is_none());
    assert!(table.inbound(stranger_port, addr(STRANGER), t0).is_some());
}

#[test]
fn unknown_port_admits_nothing() {
    let table = nat(NatKind::FullCone);
    assert!(table
        .inbound(FIRST_EXTERNAL_PORT, addr(SERVER), Instant::now())
        .is_none());
}

#[test]
fn mapping_lapses_after_the_idle_timeout() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    let just_before = t0 + DEFAULT_MAPPING_TIMEOUT - Duration::from_millis(1);
    assert!(table.inbound(port, addr(SERVER), just_before).is_some());
    assert!(table
        .inbound(port, addr(SERVER), t0 + DEFAULT_MAPPING_TIMEOUT)
        .is_none());
}

#[test]
fn inbound_traffic_does_not_refresh_a_mapping() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    for s in 1..30 {
        assert!(table.inbound(port, addr(SERVER), t0 + secs(s)).is_some());
    }
    assert!(table.inbound(port, addr(SERVER), t0 + secs(30)).is_none());
}

#[test]
fn outbound_traffic_refreshes_a_mapping() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::PortRestricted);
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    let refreshed = table
        .outbound(addr(HOST_A), addr(SERVER), t0 + secs(20))
        .unwrap();
    assert_eq!(refreshed.external_port, port);
    assert!(!refreshed.created);
    assert!(table.inbound(port, addr(SERVER), t0 + secs(45)).is_some());
    assert!(table.inbound(port, addr(SERVER), t0 + secs(50)).is_none());
}

#[test]
fn a_lapsed_mapping_comes_back_on_a_new_port() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::AddressRestricted);
    let old = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    let new = table
        .outbound(addr(HOST_A), addr(SERVER), t0 + secs(31))
        .unwrap();
    assert!(new.created);
    assert_ne!(new.external_port, old.external_port);
    assert_eq!(table.take_released(), vec![old.external_port]);
    assert!(table
        .inbound(old.external_port, addr(SERVER), t0 + secs(31))
        .is_none());
}

#[test]
fn each_permission_lapses_on_its_own() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::PortRestricted);
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    table
        .outbound(addr(HOST_A), addr(STRANGER), t0 + secs(20))
        .unwrap();
    let later = t0 + secs(35);
    assert!(table.inbound(port, addr(SERVER), later).is_none());
    assert!(table.inbound(port, addr(STRANGER), later).is_some());
}

#[test]
fn the_timeout_is_configurable() {
    let t0 = Instant::now();
    let mut table = Nat::new(NatConfig {
        mapping_timeout: secs(5),
        ..NatConfig::new(NatKind::FullCone)
    });
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    assert!(table.inbound(port, addr(STRANGER), t0 + secs(4)).is_some());
    assert!(table.inbound(port, addr(STRANGER), t0 + secs(5)).is_none());
}

#[test]
fn no_nat_never_expires_idle_mappings() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::None);
    let port = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    let much_later = t0 + secs(24 * 3600);
    assert_eq!(table.expire_idle(much_later), 0);
    assert_eq!(
        table.inbound(port, addr(STRANGER), much_later),
        Some(addr(HOST_A))
    );
}

#[test]
fn expire_idle_sweeps_only_lapsed_mappings() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::Symmetric);
    let idle = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    let busy = mapped(&mut table, addr(HOST_A), addr(STRANGER), t0 + secs(10));
    assert_eq!(table.expire_idle(t0 + secs(30)), 1);
    assert_eq!(table.take_released(), vec![idle]);
    assert_eq!(table.mapping_count(), 1);
    assert!(table.inbound(busy, addr(STRANGER), t0 + secs(30)).is_some());
}

#[test]
fn expire_all_forgets_every_mapping_once() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let a = mapped(&mut table, addr(HOST_A), addr(SERVER), t0);
    let b = mapped(&mut table, addr(HOST_B), addr(SERVER), t0);
    assert_eq!(table.expire_all(), 2);
    let mut released = table.take_released();
    released.sort_unstable();
    assert_eq!(released, vec![a.min(b), a.max(b)]);
    assert!(table.take_released().is_empty());
    assert!(table.inbound(a, addr(SERVER), t0).is_none());
    let again = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    assert!(again.created);
}

#[test]
fn outbound_with_uses_the_given_port_only_for_new_mappings() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let first = table.outbound_with(addr(HOST_A), addr(SERVER), t0, || Some(40_000));
    assert_eq!(first.map(|o| o.external_port), Some(40_000));
    let mut called = false;
    let second = table.outbound_with(addr(HOST_A), addr(STRANGER), t0, || {
        called = true;
        Some(40_001)
    });
    assert_eq!(second.map(|o| o.external_port), Some(40_000));
    assert!(!called);
}

#[test]
fn outbound_with_refuses_a_missing_or_taken_port() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    assert!(table
        .outbound_with(addr(HOST_A), addr(SERVER), t0, || None)
        .is_none());
    assert_eq!(table.mapping_count(), 0);
    table
        .outbound_with(addr(HOST_A), addr(SERVER), t0, || Some(40_000))
        .unwrap();
    let taken = table.outbound_with(addr(HOST_B), addr(SERVER), t0, || Some(40_000));
    assert!(taken.is_none());
    assert_eq!(table.inbound(40_000, addr(SERVER), t0), Some(addr(HOST_A)));
}

#[test]
fn the_built_in_allocator_wraps_and_skips_ports_in_use() {
    let t0 = Instant::now();
    let mut table = nat(NatKind::FullCone);
    let first = table.outbound(addr(HOST_A), addr(SERVER), t0).unwrap();
    assert_eq!(first.external_port, FIRST_EXTERNAL_PORT);
    table.next_port = u16::MAX;
    let last = table.outbound(addr(HOST_B), addr(SERVER), t0).unwrap();
    assert_eq!(last.external_port, u16::MAX);
    let wrapped = table.outbound(addr(STRANGER), addr(SERVER), t0).unwrap();
    assert_eq!(wrapped.external_port, FIRST_EXTERNAL_PORT + 1);
}

/// One side of a hole-punching attempt: a host behind its own NAT.
struct Peer {
    host: SocketAddr,
    nat: Nat,
    /// Where this side sends its punches: first the other side's address as the server saw
    /// it, then wherever the other side's datagrams actually come from (as ICE does).
    target: SocketAddr,
    received: bool,
}

impl Peer {
    fn new(kind: NatKind, host: &str, external_ip: &str) -> Peer {
        let config = NatConfig {
            external_ip: external_ip.parse().unwrap(),
            ..NatConfig::new(kind)
        };
        Peer {
            host: addr(host),
            nat: Nat::new(config),
            target: addr(SERVER),
            received: false,
        }
    }

    /// Register with the meeting server; returns the address it observed.
    fn register(&mut self, now: Instant) -> SocketAddr {
        let port = self.nat.outbound(self.host, addr(SERVER), now).unwrap();
        self.nat.external_addr(port.external_port)
    }

    /// Send one punch to `self.target`; returns the address it leaves from.
    fn punch(&mut self, now: Instant) -> SocketAddr {
        let port = self.nat.outbound(self.host, self.target, now).unwrap();
        self.nat.external_addr(port.external_port)
    }

    /// A punch from `from` arrives at `to` (one of this NAT's external addresses).
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, now: Instant) {
        if self.nat.inbound(to.port(), from, now) == Some(self.host) {
            self.received = true;
            self.target = from;
        }
    }
}

/// Whether two hosts behind NATs of these kinds reach each other directly within a few
/// rounds of simultaneous punches, after a server told each the other's observed address.
fn hole_punch(kind_a: NatKind, kind_b: NatKind) -> bool {
    let t0 = Instant::now();
    let mut a = Peer::new(kind_a, "192.168.1.2:5000", "203.0.113.1");
    let mut b = Peer::new(kind_b, "10.0.0.2:6000", "203.0.113.2");
    a.target = b.register(t0);
    b.target = a.register(t0);
    for round in 1..=4 {
        let now = t0 + Duration::from_millis(100 * round);
        let (to_b, from_a) = (a.target, a.punch(now));
        b.deliver(from_a, to_b, now);
        let (to_a, from_b) = (b.target, b.punch(now));
        a.deliver(from_b, to_a, now);
    }
    a.received && b.received
}

#[test]
fn hole_punching_opens_all_but_the_symmetric_against_port_restricted_pairs() {
    use NatKind::{PortRestricted, Symmetric};
    let mut opened = 0;
    for a in NatKind::ALL {
        for b in NatKind::ALL {
            let blocked = matches!(
                (a, b),
                (Symmetric, PortRestricted) | (PortRestricted, Symmetric) | (Symmetric, Symmetric)
            );
            assert_eq!(hole_punch(a, b), !blocked, "{a} vs {b}");
            opened += usize::from(!blocked);
        }
    }
    assert_eq!(opened, 22);
}

#[test]
fn hole_punching_is_symmetric_in_who_sends_first() {
    for a in NatKind::ALL {
        for b in NatKind::ALL {
            assert_eq!(hole_punch(a, b), hole_punch(b, a), "{a} vs {b}");
        }
    }
}
