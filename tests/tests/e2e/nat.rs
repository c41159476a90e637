//! Nodes and clients behind simulated NATs: each home node runs behind a `cmdop-netsim` NAT
//! box of its own (`CMDOP_NAT_BOX`), each client dials from behind another, and only the
//! meeting node has a plain address. Everything is on loopback; each box has its own outside
//! IP (127.0.0.x) so that address-restricted filtering can tell the boxes apart.
//!
//! - Through the meeting node, a home node behind a port-restricted NAT is reached with the
//!   plain CLI: create, connect, type, detach, reattach; the pin is the home node's key.
//! - The 25 combinations of NAT kinds: a streaming terminal reaches every home node; hole
//!   punching moves it to a direct path unless a symmetric NAT faces a port-restricted or
//!   symmetric one, and no output byte is lost or repeated at the switch.
//! - A home NAT that forgets all its mappings again and again: the node stays reachable.

use cmdop_client::dial::{Dialer, Target};
use cmdop_client::live::{AttachSpec, Attachment, Event};
use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, free_port, wait_until, Home, NodeProcess};
use cmdop_netsim::nat::NatKind;
use cmdop_netsim::nat_box::{NatBox, NatBoxConfig};
use cmdop_proto::{AttachMode, CreateSession, SendInput, WinSize};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn node_key(home: &Home) -> String {
    home.cmdop_node(&["id"]).ok().trim().to_string()
}

/// A NAT box of `kind` whose mappings are on 127.0.0.`ip`.
fn nat_box(runtime: &tokio::runtime::Runtime, kind: NatKind, ip: u8) -> NatBox {
    let config = NatBoxConfig {
        outside_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, ip)),
        ..NatBoxConfig::new(kind)
    };
    runtime.block_on(NatBox::start(config)).unwrap()
}

/// A meeting node `vps` on a plain address, and a client key it authorizes.
struct World {
    runtime: tokio::runtime::Runtime,
    _vps_home: Home,
    vps: NodeProcess,
    vps_key: String,
    client: Home,
    client_key: String,
}

/// A home node behind its own NAT box, registered at vps as `name`.
struct HomeBehind {
    /// Kept for its directory (removed on drop).
    _home: Home,
    node: NodeProcess,
    nat: NatBox,
    name: String,
    key: String,
}

impl World {
    fn start(tag: &str) -> World {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let vps_home = Home::new(&format!("{tag}-vps"));
        let vps = NodeProcess::start(&vps_home, free_port(), "max_connections_per_client: 64");
        let vps_key = node_key(&vps_home);
        let client = Home::new(&format!("{tag}-client"));
        client.write_config(&format!(
            "client:\n  connect_timeout: 10s\nhosts:\n  vps:\n    addr: {}\n",
            vps.addr()
        ));
        let client_key = client.cmdop(&["id"]).ok().trim().to_string();
        vps_home.cmdop_node(&["authorize", &client_key]).ok();
        World {
            runtime,
            vps_key,
            vps,
            _vps_home: vps_home,
            client,
            client_key,
        }
    }

    /// Starts a home node named `name` behind a NAT box of `kind` on 127.0.0.`ip`, authorized
    /// at vps and authorizing the client, and waits until it registered.
    fn home_behind(&self, name: &str, kind: NatKind, ip: u8) -> HomeBehind {
        let nat = nat_box(&self.runtime, kind, ip);
        let home = Home::new(name);
        let key = node_key(&home);
        self._vps_home
            .cmdop_node(&["authorize", "--relay", &key])
            .ok();
        home.cmdop_node(&["authorize", &self.client_key]).ok();
        let config = format!(
            "name: {name}\nrendezvous:\n  - name: vps\n    addr: {}\n    fingerprint: {}\n",
            self.vps.addr(),
            self.vps_key
        );
        let inside = nat.inside_addr().to_string();
        let env = [(cmdop_client::udp::NAT_BOX_ENV, inside.as_str())];
        let node = NodeProcess::start_with_env(&home, free_port(), &config, &env);
        let behind = HomeBehind {
            _home: home,
            node,
            nat,
            name: name.to_string(),
            key,
        };
        behind.wait_registered(1);
        behind
    }

    /// The client's dialer from behind `nat`.
    fn dialer_behind(&self, nat: Option<&NatBox>) -> Arc<Dialer> {
        let _guard = self.runtime.enter();
        let nat_box = nat.map(NatBox::inside_addr);
        Arc::new(self.client.dialer_behind(Duration::from_secs(5), nat_box))
    }

    fn via(&self, name: &str) -> Target {
        Target::relayed(name, Target::direct("vps", &self.vps.addr()))
    }
}

impl HomeBehind {
    /// Waits until the node logged its `n`th registration at vps.
    fn wait_registered(&self, n: usize) {
        let registered = self.node.wait_logged("registered for relaying", n, WAIT);
        assert!(
            registered,
            "{} did not register: {}",
            self.name,
            self.node.log_text()
        );
    }
}

#[test]
fn a_home_node_behind_a_port_restricted_nat_is_reached_through_the_meeting_node() {
    let world = World::start("nat-pr");
    let home = world.home_behind("home", NatKind::PortRestricted, 31);
    let out = world
        .client
        .cmdop(&["host", "add", "home", "--via", "vps"])
        .ok();
    assert!(out.contains("added host home (via vps)"), "{out}");
    let connect = |args: &[&str]| {
        let mut all = vec!["connect", "home"];
        all.extend_from_slice(args);
        Terminal::spawn(&bin("cmdop"), &all, &world.client.path, 24, 80)
    };
    let mut term = connect(&["--name", "work"]);
    term.type_line("echo behind-$((40+2))");
    term.expect("behind-42", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());

    let mut again = connect(&["--session", "work"]);
    again.expect("behind-42", WAIT);
    again.type_line("echo back-$((6*7))");
    again.expect("back-42", WAIT);
    again.type_bytes(b"\x04");
    assert_eq!(again.wait_exit(WAIT), Some(0), "{}", again.text());

    // The listing tries the direct path within its 1.5 s probe; a loaded machine may need a
    // second listing.
    let mut list = String::new();
    let direct = wait_until(WAIT, || {
        list = world.client.cmdop(&["connect", "--list"]).ok();
        let row = list.lines().find(|l| l.starts_with("home")).unwrap_or("");
        row.contains("via vps") && row.contains("direct after hole punching")
    });
    assert!(direct, "{list}");

    let pins = std::fs::read_to_string(world.client.path.join("known_nodes")).unwrap();
    assert!(pins.contains(&format!("home@vps {}", home.key)), "{pins}");
    assert_ne!(home.key, world.vps_key);
    // Everything the home node received came through its NAT box.
    assert!(home.nat.counters().inbound > 0, "{}", home.nat.counters());
}

/// Whether hole punching can open a path between these two NAT kinds (the model in
/// `cmdop-netsim`'s NAT table tests): not when one side is symmetric and the other is
/// port-restricted or symmetric.
fn punchable(home: NatKind, client: NatKind) -> bool {
    use NatKind::{PortRestricted, Symmetric};
    !matches!(
        (home, client),
        (Symmetric, PortRestricted) | (PortRestricted, Symmetric) | (Symmetric, Symmetric)
    )
}

/// What one client saw of one streaming session.
struct Streamed {
    /// When the attachment moved to a direct path, after it was attached.
    direct_after: Option<Duration>,
    /// Every output byte, in order.
    shown: String,
    /// How many lines had been shown at the switch.
    lines_at_switch: usize,
}

/// Lines shown after the switch (or after hole punching gave up) before the stream is stopped.
const LINES_AFTER: usize = 25;

/// A shell loop printing `line-1`, `line-2`, ... 50 a second until interrupted.
const ENDLESS_STREAM: &str = "i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.02; done\n";

/// The numbers of the `line-N` lines shown (the loop's own echo has `line-$i`, not digits).
fn line_numbers(shown: &str) -> Vec<u64> {
    shown
        .lines()
        .filter_map(|l| l.find("line-").map(|at| l[at + 5..].trim_end()))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Creates a session on `target` that streams lines, attaches from `dialer` while it streams,
/// and takes the output until a direct path opened (or hole punching gave up) and more lines
/// came after that; then stops the stream and takes the rest.
async fn stream_through(dialer: Arc<Dialer>, target: Target) -> (Streamed, Attachment) {
    let mut client = dialer.connect(&target, None).await.unwrap();
    let create = CreateSession {
        name: None,
        size: WinSize::default(),
        term: None,
        cwd: None,
        env: Vec::new(),
    };
    let session = client.call(create).await.unwrap();
    // The stream starts before the attachment (the scrollback replays its first lines), so the
    // switch falls in the middle of it.
    let start = SendInput {
        session: session.id,
        data: ENDLESS_STREAM.as_bytes().to_vec(),
    };
    client.call(start).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = AttachSpec {
        session: session.id,
        mode: AttachMode::Interactive,
        takeover: false,
        scrollback_bytes: 1 << 20,
        size: WinSize::default(),
    };
    let mut attachment = Attachment::open(dialer, client, spec).await.unwrap();
    let attached = Instant::now();
    let mut streamed = Streamed {
        direct_after: None,
        shown: String::new(),
        lines_at_switch: 0,
    };
    let give_up = attached + cmdop_client::punch::PUNCH_WINDOW + Duration::from_secs(1);
    let mut lines_at_give_up = None;
    let mut stopped = false;
    while !streamed.shown.contains("STREAM-2-DONE") {
        let lines = line_numbers(&streamed.shown).len();
        if streamed.direct_after.is_none() && lines_at_give_up.is_none() && Instant::now() > give_up
        {
            lines_at_give_up = Some(lines);
        }
        let settled = streamed
            .direct_after
            .map(|_| streamed.lines_at_switch)
            .or(lines_at_give_up);
        if !stopped && settled.is_some_and(|at| lines >= at + LINES_AFTER) {
            attachment
                .handle()
                .input(b"\x03echo STREAM-$((1+1))-DONE\n".to_vec());
            stopped = true;
        }
        let event = tokio::time::timeout(Duration::from_millis(200), attachment.next_event());
        match event.await {
            Ok(Some(Event::Output(bytes))) => {
                streamed.shown.push_str(&String::from_utf8_lossy(&bytes))
            }
            Ok(Some(Event::Direct(_))) => {
                streamed.direct_after = Some(attached.elapsed());
                streamed.lines_at_switch = line_numbers(&streamed.shown).len();
            }
            Ok(Some(Event::End(end))) => panic!("the attachment ended: {end:?}"),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the attachment's events ended"),
        }
        assert!(
            attached.elapsed() < Duration::from_secs(90),
            "the stream did not finish: {}",
            streamed.shown
        );
    }
    (streamed, attachment)
}

/// Asserts that the lines shown are `line-1`, `line-2`, ... with none lost or repeated, and at
/// least `at_least` of them.
fn assert_lines_whole(shown: &str, at_least: usize) {
    let numbers = line_numbers(shown);
    let want: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, want, "lines lost, repeated or out of order");
    assert!(numbers.len() >= at_least, "only {} lines", numbers.len());
}

/// Checks one pair's stream: whole, and direct exactly when punching can open a path; notes
/// when it switched, and how many lines were shown by then, in `report`.
fn check_pair(home_kind: NatKind, client_kind: NatKind, streamed: &Streamed, report: &mut String) {
    let pair = format!("home {home_kind} / client {client_kind}");
    assert_lines_whole(&streamed.shown, LINES_AFTER);
    let switch = streamed
        .direct_after
        .map(|after| (after, streamed.lines_at_switch));
    report.push_str(&format!("{pair}: direct (after, lines shown) {switch:?}\n"));
    assert_eq!(
        switch.is_some(),
        punchable(home_kind, client_kind),
        "{pair}: direct {switch:?}"
    );
}

#[test]
fn every_pair_of_nat_kinds_connects_and_hole_punching_goes_direct_where_it_can() {
    let world = World::start("nat-25");
    let homes: Vec<HomeBehind> = NatKind::ALL
        .iter()
        .zip(40u8..)
        .map(|(&kind, ip)| world.home_behind(&format!("home-{kind}"), kind, ip))
        .collect();
    let mut report = String::new();
    // Five at a time (one home kind against every client kind), so that 25 streaming shells do
    // not crowd the two cores the tests run on.
    for (home_kind, home) in NatKind::ALL.into_iter().zip(&homes) {
        let mut runs = Vec::new();
        let mut client_boxes = Vec::new();
        for (client_kind, ip) in NatKind::ALL.into_iter().zip(50u8..) {
            let nat = nat_box(&world.runtime, client_kind, ip + 10 * (home_kind as u8));
            let dialer = world.dialer_behind(Some(&nat));
            let run = world
                .runtime
                .spawn(stream_through(dialer, world.via(&home.name)));
            runs.push((client_kind, run));
            client_boxes.push(nat);
        }
        for (client_kind, run) in runs {
            let (streamed, attachment) = world.runtime.block_on(run).unwrap();
            attachment.handle().detach();
            check_pair(home_kind, client_kind, &streamed, &mut report);
        }
    }
    eprintln!("{report}");
}

#[test]
fn a_home_node_stays_reachable_when_its_nat_forgets_every_mapping() {
    let world = World::start("nat-expire");
    let home = world.home_behind("home", NatKind::PortRestricted, 35);
    world
        .client
        .cmdop(&["host", "add", "home", "--via", "vps"])
        .ok();
    world.client.cmdop(&["session", "create", "home"]).ok();
    for round in 1..=3 {
        // As a mapping timing out, or the NAT rebooting: the next datagram out gets a new port.
        // The meeting node reaches the home node again once its next keep-alive (4 s) went out.
        assert!(
            home.nat.expire_all() > 0,
            "round {round}: no mapping to forget"
        );
        let asked = Instant::now();
        let listed = world
            .client
            .cmdop(&["session", "list", "--host", "home", "--json"])
            .ok();
        assert_eq!(cmdop_e2e::sessions_json(&listed).len(), 1, "{listed}");
        eprintln!(
            "round {round}: answered {:?} after the NAT forgot",
            asked.elapsed()
        );
    }
    let counters = home.nat.counters();
    assert!(counters.mappings_expired >= 3, "{counters}");
    // The registration moved with the mapping (QUIC migration) or was made again.
    home.wait_registered(1);
}

#[test]
fn after_the_switch_to_direct_the_meeting_node_carries_nothing() {
    let world = World::start("nat-quiet");
    let home = world.home_behind("home", NatKind::FullCone, 36);
    // The client reaches vps through a netsim relay that counts the bytes (to the home node's
    // NAT, the relay's own port makes the client look as if behind a symmetric NAT).
    let config = cmdop_netsim::NetsimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        world.vps.addr().parse().unwrap(),
    );
    let counter = world
        .runtime
        .block_on(cmdop_netsim::Netsim::start(config))
        .unwrap();
    let vps = Target::direct("vps", &counter.listen_addr().to_string());
    let target = Target::relayed(&home.name, vps);
    let dialer = world.dialer_behind(None);
    let (streamed, mut attachment) = world.runtime.block_on(stream_through(dialer, target));
    assert_lines_whole(&streamed.shown, LINES_AFTER);
    assert!(
        streamed.direct_after.is_some(),
        "no direct path: {}",
        counter.counters()
    );

    // The relayed connection closes after the switch (its last packets take a moment); from
    // then on, nothing goes through vps.
    let relayed_bytes = || {
        let now = counter.counters();
        now.to_node.received_bytes + now.to_client.received_bytes
    };
    let mut last = relayed_bytes();
    let settled = wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = relayed_bytes();
        std::mem::replace(&mut last, now) == now
    });
    assert!(settled, "vps kept carrying bytes: {}", counter.counters());
    let before = relayed_bytes();
    let quiet = Duration::from_secs(6);
    world.runtime.block_on(async {
        attachment
            .handle()
            .input(b"echo still-$((40+2))\n".to_vec());
        let mut shown = String::new();
        let typed = Instant::now();
        while !shown.contains("still-42") {
            match tokio::time::timeout(WAIT, attachment.next_event()).await {
                Ok(Some(Event::Output(bytes))) => shown.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Event::End(end))) => panic!("the attachment ended: {end:?}"),
                Ok(Some(_)) => {}
                other => panic!("no echo on the direct path: {other:?} {shown}"),
            }
        }
        tokio::time::sleep(quiet.saturating_sub(typed.elapsed())).await;
    });
    let relayed = relayed_bytes() - before;
    let per_minute = relayed * 60 / quiet.as_secs();
    eprintln!("relay traffic after the switch: {relayed} B in {quiet:?} ({per_minute} B/min)");
    assert!(
        per_minute < 1024,
        "{per_minute} B/min through vps after the switch"
    );
    attachment.handle().detach();
}

#[test]
fn a_session_migrates_to_a_node_behind_nat_through_its_meeting_node() {
    let world = World::start("nat-migrate");
    let _home = world.home_behind("home", NatKind::PortRestricted, 37);
    let client = &world.client;
    client.cmdop(&["host", "add", "home", "--via", "vps"]).ok();
    client
        .cmdop(&["session", "create", "vps", "--name", "api"])
        .ok();
    let send = [
        "session",
        "send",
        "api",
        "--host",
        "vps",
        "echo before-$((40+2))\\n",
    ];
    client.cmdop(&send).ok();
    let tail = |host: &str| {
        let args = ["session", "show", "api", "--host", host, "--tail", "50"];
        client.cmdop(&args).ok()
    };
    assert!(
        wait_until(WAIT, || tail("vps").contains("before-42")),
        "{}",
        tail("vps")
    );
    let args = ["session", "attach", "api", "--host", "vps", "--interactive"];
    let term = Terminal::spawn(&bin("cmdop"), &args, &client.path, 30, 100);
    term.expect("before-42", WAIT);

    // vps cannot dial home (it is behind NAT): the client carries the session there.
    let out = client
        .cmdop(&["session", "migrate", "api", "--host", "vps", "--to", "home"])
        .ok();
    assert!(
        out.contains("moved session") && out.contains("from vps to home"),
        "{out}"
    );
    term.expect(
        "session moved to home; reattach with: cmdop connect home --session api",
        WAIT,
    );
    let on_vps = client
        .cmdop(&["session", "list", "--host", "vps", "--json"])
        .ok();
    assert!(cmdop_e2e::sessions_json(&on_vps).is_empty(), "{on_vps}");
    assert!(tail("home").contains("before-42"), "{}", tail("home"));
}

#[test]
fn a_new_socket_on_the_direct_path_goes_back_through_the_meeting_node_and_punches_again() {
    let world = World::start("nat-rebind");
    let home = world.home_behind("home", NatKind::PortRestricted, 38);
    let client_nat = nat_box(&world.runtime, NatKind::PortRestricted, 39);
    let dialer = world.dialer_behind(Some(&client_nat));
    let (streamed, mut attachment) = world
        .runtime
        .block_on(stream_through(dialer, world.via(&home.name)));
    assert_lines_whole(&streamed.shown, LINES_AFTER);
    assert!(streamed.direct_after.is_some(), "no direct path");

    // A network change: the client's NAT gives the new socket a new port, which the home
    // node's port-restricted NAT would drop.
    world.runtime.block_on(async {
        attachment.handle().rebind();
        attachment
            .handle()
            .input(b"echo again-$((40+2))\n".to_vec());
        let mut shown = String::new();
        let mut direct_again = false;
        while !(shown.contains("again-42") && direct_again) {
            match tokio::time::timeout(WAIT, attachment.next_event()).await {
                Ok(Some(Event::Output(bytes))) => shown.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Event::Direct(_))) => direct_again = true,
                Ok(Some(Event::End(end))) => panic!("the attachment ended: {end:?}"),
                Ok(Some(_)) => {}
                other => panic!(
                    "stuck after the rebind: {other:?}, direct again {direct_again}: {shown}"
                ),
            }
        }
        assert_eq!(
            shown.matches("again-42").count(),
            1,
            "printed once: {shown}"
        );
    });
    attachment.handle().detach();
}

#[test]
fn only_a_relayed_connection_may_ask_for_a_punch() {
    let world = World::start("nat-punch-direct");
    let home = world.home_behind("home", NatKind::FullCone, 33);
    let _guard = world.runtime.enter();
    let dialer = world.dialer_behind(Some(&home.nat));
    world.runtime.block_on(async {
        // Straight to vps (no meeting node on the way): nothing to punch through.
        let vps = Target::direct("vps", &world.vps.addr());
        let mut client = dialer.connect(&vps, None).await.unwrap();
        let refused = client.call(cmdop_proto::Punch).await.unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("did not come through a meeting node"),
            "{message}"
        );
        // Through vps to the home node: granted.
        let mut relayed = dialer.connect(&world.via(&home.name), None).await.unwrap();
        relayed.call(cmdop_proto::Punch).await.unwrap();
    });
}
