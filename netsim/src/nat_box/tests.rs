//! Tests of the NAT box over real loopback sockets: datagrams pass unchanged both ways with
//! real addresses, each kind maps and filters as the table says, mappings lapse and can be
//! expired, bad frames are counted, and two boxes let hole punching through (or not).
//!
//! Absence is never shown by waiting: a refused datagram is followed by one the filtering
//! must admit, sent to the same outside socket, and the box handles a socket's datagrams in
//! order, so whatever arrives before that sentinel is all that got through.

#![allow(clippy::unwrap_used)]

use super::*;

const WAIT: Duration = Duration::from_secs(5);
const SENTINEL: &[u8] = b"sentinel";

fn any_port(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 0)
}

async fn start_box(kind: NatKind) -> NatBox {
    NatBox::start(NatBoxConfig::new(kind)).await.unwrap()
}

/// A box whose outside sockets are on their own loopback IP.
async fn start_box_on(kind: NatKind, outside_ip: &str) -> NatBox {
    let config = NatBoxConfig {
        outside_ip: outside_ip.parse().unwrap(),
        ..NatBoxConfig::new(kind)
    };
    NatBox::start(config).await.unwrap()
}

async fn inside_host(nat_box: &NatBox) -> NatSocket {
    NatSocket::bind(any_port("127.0.0.1"), nat_box.inside_addr())
        .await
        .unwrap()
}

async fn peer_on(ip: &str) -> UdpSocket {
    UdpSocket::bind(any_port(ip)).await.unwrap()
}

async fn peer() -> UdpSocket {
    peer_on("127.0.0.1").await
}

async fn recv_outside(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let received = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await;
    let (n, from) = received.expect("nothing arrived outside").unwrap();
    (buf[..n].to_vec(), from)
}

async fn recv_inside(host: &NatSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let received = tokio::time::timeout(WAIT, host.recv_from(&mut buf)).await;
    let (n, from) = received.expect("nothing arrived inside").unwrap();
    (buf[..n].to_vec(), from)
}

/// The inside host sends to `peer`; returns the external address the peer observed.
async fn open_mapping(host: &NatSocket, peer: &UdpSocket) -> SocketAddr {
    let to = peer.local_addr().unwrap();
    host.send_to(b"hello", to).await.unwrap();
    let (data, observed) = recv_outside(peer).await;
    assert_eq!(data, b"hello");
    observed
}

/// Sources of everything the inside host receives before the sentinel.
async fn sources_before_sentinel(host: &NatSocket) -> Vec<SocketAddr> {
    let mut sources = Vec::new();
    loop {
        let (data, from) = recv_inside(host).await;
        if data == SENTINEL {
            return sources;
        }
        sources.push(from);
    }
}

#[tokio::test]
async fn outbound_datagrams_leave_unchanged_from_an_external_address() {
    let nat_box = start_box(NatKind::PortRestricted).await;
    let host = inside_host(&nat_box).await;
    let outside = peer().await;
    let observed = open_mapping(&host, &outside).await;
    assert_eq!(observed.ip(), nat_box.shared.outside_ip);
    assert_ne!(observed, host.local_addr().unwrap());
    assert_eq!(nat_box.external_addrs(), vec![observed]);
    let counters = nat_box.counters();
    assert_eq!((counters.outbound, counters.mappings_created), (1, 1));
}

#[tokio::test]
async fn replies_reach_the_inside_host_with_their_real_source() {
    let nat_box = start_box(NatKind::Symmetric).await;
    let host = inside_host(&nat_box).await;
    let outside = peer().await;
    let observed = open_mapping(&host, &outside).await;
    let big = vec![7u8; 60_000];
    outside.send_to(&big, observed).await.unwrap();
    let (data, from) = recv_inside(&host).await;
    assert_eq!(data, big);
    assert_eq!(from, outside.local_addr().unwrap());
    assert_eq!(nat_box.counters().inbound, 1);
}

#[tokio::test]
async fn cone_kinds_show_every_peer_one_address_and_symmetric_does_not() {
    for kind in NatKind::ALL {
        let nat_box = start_box(kind).await;
        let host = inside_host(&nat_box).await;
        let first = open_mapping(&host, &peer().await).await;
        let second = open_mapping(&host, &peer().await).await;
        assert_eq!(first == second, kind != NatKind::Symmetric, "{kind}");
    }
}

/// Which of (a stranger on another IP, another port on the peer's IP) each kind lets in
/// after the inside host has sent to the peer.
#[tokio::test]
async fn filtering_per_kind_end_to_end() {
    let expected = [
        (NatKind::None, [true, true]),
        (NatKind::FullCone, [true, true]),
        (NatKind::AddressRestricted, [false, true]),
        (NatKind::PortRestricted, [false, false]),
        (NatKind::Symmetric, [false, false]),
    ];
    for (kind, admits) in expected {
        let nat_box = start_box(kind).await;
        let host = inside_host(&nat_box).await;
        let outside = peer().await;
        let observed = open_mapping(&host, &outside).await;
        let probes = [peer_on("127.0.0.2").await, peer().await];
        for probe in &probes {
            probe.send_to(b"probe", observed).await.unwrap();
        }
        outside.send_to(SENTINEL, observed).await.unwrap();
        let arrived = sources_before_sentinel(&host).await;
        let got = probes
            .each_ref()
            .map(|p| arrived.contains(&p.local_addr().unwrap()));
        assert_eq!(got, admits, "{kind}");
        let refused = admits.iter().filter(|a| !**a).count() as u64;
        assert_eq!(nat_box.counters().filtered, refused, "{kind}");
    }
}

/// The datagram to the old mapping is sent before the new mapping exists, so even if the OS
/// gives the new socket the old port it cannot land there.
#[tokio::test]
async fn expire_all_closes_every_mapping() {
    let nat_box = start_box(NatKind::FullCone).await;
    let host = inside_host(&nat_box).await;
    let outside = peer().await;
    let old = open_mapping(&host, &outside).await;
    assert_eq!(nat_box.expire_all(), 1);
    assert!(nat_box.external_addrs().is_empty());
    outside.send_to(b"to the old mapping", old).await.unwrap();
    let new = open_mapping(&host, &outside).await;
    outside.send_to(SENTINEL, new).await.unwrap();
    assert!(sources_before_sentinel(&host).await.is_empty());
    let counters = nat_box.counters();
    assert_eq!(
        (counters.mappings_created, counters.mappings_expired),
        (2, 1)
    );
}

#[tokio::test]
async fn idle_mappings_lapse_and_outbound_traffic_opens_a_new_one() {
    let config = NatBoxConfig {
        mapping_timeout: Duration::from_millis(50),
        ..NatBoxConfig::new(NatKind::PortRestricted)
    };
    let nat_box = NatBox::start(config).await.unwrap();
    let host = inside_host(&nat_box).await;
    let outside = peer().await;
    open_mapping(&host, &outside).await;
    let deadline = Instant::now() + WAIT;
    while !nat_box.external_addrs().is_empty() {
        assert!(Instant::now() < deadline, "the mapping never lapsed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nat_box.counters().mappings_expired, 1);
    // A new mapping (the OS may hand its socket the old port; the mapping is new either way).
    open_mapping(&host, &outside).await;
    assert_eq!(nat_box.counters().mappings_created, 2);
}

#[tokio::test]
async fn bad_frames_are_counted_and_skipped() {
    let nat_box = start_box(NatKind::FullCone).await;
    let raw = peer().await;
    let outside = peer().await;
    raw.send_to(&[9, 9, 9], nat_box.inside_addr())
        .await
        .unwrap();
    raw.send_to(&[], nat_box.inside_addr()).await.unwrap();
    let mut good = Vec::new();
    frame::encode(outside.local_addr().unwrap(), b"good", &mut good);
    raw.send_to(&good, nat_box.inside_addr()).await.unwrap();
    assert_eq!(recv_outside(&outside).await.0, b"good");
    assert_eq!(nat_box.counters().bad_frames, 2);
}

#[tokio::test]
async fn inside_hosts_get_their_own_mappings() {
    let nat_box = start_box(NatKind::AddressRestricted).await;
    let (host_a, host_b) = (inside_host(&nat_box).await, inside_host(&nat_box).await);
    let outside = peer().await;
    let observed_a = open_mapping(&host_a, &outside).await;
    let observed_b = open_mapping(&host_b, &outside).await;
    assert_ne!(observed_a, observed_b);
    outside.send_to(b"for b", observed_b).await.unwrap();
    outside.send_to(b"for a", observed_a).await.unwrap();
    assert_eq!(recv_inside(&host_a).await.0, b"for a");
    assert_eq!(recv_inside(&host_b).await.0, b"for b");
}

/// One side of a hole-punching attempt over real sockets.
struct Side {
    host: NatSocket,
    target: SocketAddr,
    received: bool,
}

impl Side {
    async fn punch(&self) {
        self.host.send_to(b"punch", self.target).await.unwrap();
    }

    /// Take one punch if one arrives soon; follow its source, as ICE does.
    async fn catch(&mut self) {
        let mut buf = [0u8; 64];
        let soon = Duration::from_millis(20);
        if let Ok(Ok((_, from))) = tokio::time::timeout(soon, self.host.recv_from(&mut buf)).await {
            self.received = true;
            self.target = from;
        }
    }
}

/// Two hosts behind boxes of these kinds register with a meeting socket, learn each other's
/// observed address, and punch for `rounds` rounds; whether both heard the other. Each box
/// has its own outside IP, so address-restricted filtering tells them from the meeting node.
async fn hole_punch(kind_a: NatKind, kind_b: NatKind, rounds: usize) -> bool {
    let box_a = start_box_on(kind_a, "127.0.0.11").await;
    let box_b = start_box_on(kind_b, "127.0.0.12").await;
    let meeting = peer().await;
    let (host_a, host_b) = (inside_host(&box_a).await, inside_host(&box_b).await);
    let observed_a = open_mapping(&host_a, &meeting).await;
    let observed_b = open_mapping(&host_b, &meeting).await;
    assert_ne!(observed_a.ip(), observed_b.ip());
    let mut a = Side {
        host: host_a,
        target: observed_b,
        received: false,
    };
    let mut b = Side {
        host: host_b,
        target: observed_a,
        received: false,
    };
    for _ in 0..rounds {
        a.punch().await;
        b.punch().await;
        a.catch().await;
        b.catch().await;
        if a.received && b.received {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn hole_punching_opens_between_port_restricted_boxes() {
    assert!(hole_punch(NatKind::PortRestricted, NatKind::PortRestricted, 200).await);
}

#[tokio::test]
async fn hole_punching_opens_from_symmetric_to_address_restricted() {
    assert!(hole_punch(NatKind::Symmetric, NatKind::AddressRestricted, 200).await);
}

/// Timing cannot help here: no datagram of either side can ever pass the other's filter.
#[tokio::test]
async fn hole_punching_never_opens_from_symmetric_to_port_restricted() {
    assert!(!hole_punch(NatKind::Symmetric, NatKind::PortRestricted, 10).await);
}
