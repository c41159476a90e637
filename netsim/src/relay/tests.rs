//! Tests of the relay over real loopback sockets: bytes pass unchanged, the seeded decisions
//! match [`plan`], and loss, duplication, jitter, rate limits, blackouts, rebinding and address
//! changes do what they say.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::command::Target;
use crate::counters::CountersSnapshot;
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
        tokio::time::sleep_until((started + Duration::from_millis(2 * u64::from(i))).into()).await;
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
