//! The roaming benchmark: a live attachment (the same library code `cmdop connect` runs) through
//! netsim to a real node, whose session prints a nanosecond timestamp every few milliseconds.
//! "Output flows again" is the arrival of the first line generated after the event, so packets
//! already in flight do not flatter the figures.

use cmdop_client::dial::{Dialer, Target};
use cmdop_client::live::{AttachSpec, Attachment, Event, LinkState};
use cmdop_e2e::{free_port, Home, NodeProcess};
use cmdop_netsim::{Impairments, Netsim, NetsimConfig};
use cmdop_proto::{AttachMode, ListSessions, WinSize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One output line as it arrived.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    generated_ns: u128,
    bytes: usize,
}

#[derive(Default)]
struct Observed {
    arrivals: Vec<Arrival>,
    reconnected_at: Vec<Instant>,
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Waits until a line generated after `since_ns` arrives; returns when, relative to `from`.
fn resumed_after(
    observed: &Mutex<Observed>,
    since_ns: u128,
    from: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        {
            let observed = observed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(a) = observed.arrivals.iter().find(|a| a.generated_ns > since_ns) {
                return Some(a.at.saturating_duration_since(from));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Row {
    delay: Duration,
    rtt: Duration,
    baseline: Duration,
    client_rebind: Duration,
    nat_rebind: Duration,
    blackout: Option<Duration>,
    missed: u64,
    resent: u64,
}

pub fn run() {
    let home = Home::new("roam-bench");
    let node = NodeProcess::start(&home, free_port(), "");
    home.cmdop(&["session", "create", "local", "--name", "ticker"])
        .ok();
    home.cmdop(&[
        "session",
        "send",
        "ticker",
        r"stty -echo; while :; do echo tick-$(date +%s%N); sleep 0.003; done\n",
    ])
    .ok();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for delay in [Duration::ZERO, Duration::from_millis(50)] {
        eprintln!("measuring roaming at {} one-way delay...", ms(delay));
        rows.push(measure(&runtime, &home, &node, delay));
    }
    drop(node);
    println!();
    println!(
        "{:>10} {:>9} {:>12} {:>15} {:>13} {:>16} {:>16}",
        "one-way",
        "rtt",
        "steady",
        "client rebind",
        "NAT rebind",
        "after blackout",
        "missed/re-sent"
    );
    for row in &rows {
        println!(
            "{:>10} {:>9} {:>12} {:>15} {:>13} {:>16} {:>16}",
            ms(row.delay),
            ms(row.rtt),
            ms(row.baseline),
            ms(row.client_rebind),
            ms(row.nat_rebind),
            row.blackout.map(ms).unwrap_or_else(|| "FAILED".into()),
            format!("{}/{}", row.missed, row.resent),
        );
    }
    println!();
    println!(
        "steady: from a line's generation to its arrival with no event (the floor of every figure)"
    );
    for row in &rows {
        let rtt = row.rtt.max(row.delay * 2);
        println!(
            "at {}: client rebind {} (target <= rtt + 50 ms = {}: {}), NAT rebind {} (target <= 1 s heartbeat, mosh 34 ms median: {}), after blackout {} (target <= 2 rtt + 1 s = {}: {}), re-sent {} of {} missed bytes ({})",
            ms(row.delay),
            ms(row.client_rebind),
            ms(rtt + Duration::from_millis(50)),
            verdict(row.client_rebind <= rtt + Duration::from_millis(50) + row.baseline),
            ms(row.nat_rebind),
            verdict(row.nat_rebind <= Duration::from_secs(1)),
            row.blackout.map(ms).unwrap_or_else(|| "-".into()),
            ms(rtt * 2 + Duration::from_secs(1)),
            verdict(row.blackout.is_some_and(|b| b <= rtt * 2 + Duration::from_secs(1) + row.baseline)),
            row.resent,
            row.missed,
            verdict(row.resent == row.missed),
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    home: &Home,
    node: &NodeProcess,
    delay: Duration,
) -> Row {
    let mut config =
        NetsimConfig::new("127.0.0.1:0".parse().unwrap(), node.addr().parse().unwrap());
    config.seed = 1;
    let netsim = runtime
        .block_on(Netsim::start(config.with_impairments(Impairments {
            delay,
            ..Impairments::default()
        })))
        .unwrap();
    let identity = Arc::new(cmdop_certs::Identity::load_or_create(&home.path, "client").unwrap());
    // The endpoint needs the runtime to exist.
    let dialer = runtime.block_on(async {
        Arc::new(
            Dialer::new(
                identity,
                home.path.join("known_nodes_bench"),
                Duration::from_secs(5),
            )
            .unwrap(),
        )
    });
    let target = Target {
        name: "via".into(),
        addr: netsim.listen_addr().to_string(),
        via: None,
    };
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (handle, rtt, stats) = runtime.block_on(async {
        let mut client = dialer.connect(&target, None).await.unwrap();
        let sessions = client.call(ListSessions).await.unwrap();
        let session = sessions
            .iter()
            .find(|s| s.name.as_deref() == Some("ticker"))
            .unwrap()
            .id;
        let rtt = client.connection.rtt();
        let spec = AttachSpec {
            session,
            mode: AttachMode::ReadOnly,
            takeover: false,
            scrollback_bytes: 0,
            size: WinSize::default(),
        };
        let mut attachment = Attachment::open(dialer.clone(), client, spec)
            .await
            .unwrap();
        let handle = attachment.handle();
        let sink = observed.clone();
        let (stats_tx, stats) = tokio::sync::watch::channel(attachment.stats());
        tokio::spawn(async move {
            let mut line = Vec::new();
            while let Some(event) = attachment.next_event().await {
                match event {
                    Event::Output(bytes) => {
                        let at = Instant::now();
                        for &b in &bytes {
                            line.push(b);
                            if b == b'\n' {
                                let text = String::from_utf8_lossy(&line);
                                if let Some(ns) = text
                                    .trim()
                                    .strip_prefix("tick-")
                                    .and_then(|n| n.parse().ok())
                                {
                                    sink.lock().unwrap().arrivals.push(Arrival {
                                        at,
                                        generated_ns: ns,
                                        bytes: line.len(),
                                    });
                                }
                                line.clear();
                            }
                        }
                        let _ = stats_tx.send(attachment.stats());
                    }
                    Event::Link(LinkState::Up) => {
                        sink.lock().unwrap().reconnected_at.push(Instant::now())
                    }
                    Event::End(end) => {
                        if end != cmdop_client::live::End::Detached {
                            eprintln!("the attachment ended early: {end:?}");
                        }
                        break;
                    }
                    _ => {}
                }
            }
        });
        (handle, rtt, stats)
    });
    std::thread::sleep(Duration::from_millis(500));

    // Steady state: generation to arrival with nothing happening.
    let mut steady = Vec::new();
    for _ in 0..5 {
        let (t0, w0) = (Instant::now(), wall_ns());
        steady.push(resumed_after(&observed, w0, t0, Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The client moves to a new socket (its own address changes).
    let mut client_rebind = Vec::new();
    for _ in 0..5 {
        let (t0, w0) = (Instant::now(), wall_ns());
        handle.rebind();
        client_rebind.push(resumed_after(&observed, w0, t0, Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(300));
    }
    // The NAT in front of the client rebinds: the node's packets to the old port are lost.
    let mut nat_rebind = Vec::new();
    for _ in 0..5 {
        let (t0, w0) = (Instant::now(), wall_ns());
        netsim.rebind();
        nat_rebind.push(resumed_after(&observed, w0, t0, Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(300));
    }
    // A blackout past the 10 s idle timeout: the connection dies, the client reconnects.
    let before = *stats.borrow();
    let shown_before = before.output_bytes;
    netsim.set_blackout(true);
    let dark_from = wall_ns();
    std::thread::sleep(Duration::from_secs(12));
    let (t0, w0) = (Instant::now(), wall_ns());
    netsim.set_blackout(false);
    let blackout = resumed_after(&observed, w0, t0, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    // Missed: lines generated while dark (and not shown before it) that arrived afterwards.
    let missed: u64 = {
        let observed = observed.lock().unwrap();
        observed
            .arrivals
            .iter()
            .filter(|a| a.generated_ns >= dark_from && a.generated_ns < w0 && a.at > t0)
            .map(|a| a.bytes as u64)
            .sum()
    };
    let after = *stats.borrow();
    assert!(
        after.output_bytes > shown_before,
        "nothing shown after the blackout"
    );
    // Re-sent: what the node sent again for the outage, counting anything the client had to
    // drop as already shown.
    let resent = missed + (after.duplicate_bytes - before.duplicate_bytes);
    handle.detach();
    std::thread::sleep(Duration::from_millis(200));
    runtime.block_on(netsim.shutdown());
    Row {
        delay,
        rtt,
        baseline: median(&mut steady),
        client_rebind: median(&mut client_rebind),
        nat_rebind: median(&mut nat_rebind),
        blackout,
        missed,
        resent,
    }
}
