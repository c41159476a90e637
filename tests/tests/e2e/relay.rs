//! Reaching a node behind NAT through a meeting node: the home node registers at the meeting
//! node, the client dials only the meeting node, and the terminal runs end to end over the
//! relayed stream (hole punching is off here: `nat.rs` tests the direct path). Also the three
//! ways it fails, each in one sentence and without hanging.

use cmdop_client::dial::{ClientError, Dialer, Target};
use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, free_port, wait_until, Home, NodeProcess};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A meeting node `vps`, a home node registered there as `home`, and a client that knows
/// `vps` by address and `home` only as `--via vps`.
struct Meeting {
    vps_home: Home,
    vps: NodeProcess,
    home_home: Home,
    home: NodeProcess,
    client: Home,
    home_key: String,
    vps_key: String,
}

fn node_key(home: &Home) -> String {
    home.cmdop_node(&["id"]).ok().trim().to_string()
}

impl Meeting {
    /// Starts both nodes; `authorize_relay` says whether the meeting node authorizes the home
    /// node's key with 'cmdop-node authorize --relay'.
    fn start(tag: &str, authorize_relay: bool) -> Meeting {
        let vps_home = Home::new(&format!("{tag}-vps"));
        let vps = NodeProcess::start(&vps_home, free_port(), "");
        let vps_key = node_key(&vps_home);
        let home_home = Home::new(&format!("{tag}-home"));
        let home_key = node_key(&home_home);
        if authorize_relay {
            vps_home
                .cmdop_node(&["authorize", "--relay", &home_key])
                .ok();
        }
        let rendezvous = format!(
            "name: home\nrendezvous:\n  - name: vps\n    addr: {}\n    fingerprint: {vps_key}\n",
            vps.addr()
        );
        let home = NodeProcess::start(&home_home, free_port(), &rendezvous);
        let client = Home::new(&format!("{tag}-client"));
        client.write_config(&format!(
            "client:\n  connect_timeout: 3s\n  hole_punching: false\nhosts:\n  vps:\n    addr: {}\n",
            vps.addr()
        ));
        let client_key = client.cmdop(&["id"]).ok().trim().to_string();
        vps_home.cmdop_node(&["authorize", &client_key]).ok();
        home_home.cmdop_node(&["authorize", &client_key]).ok();
        let out = client.cmdop(&["host", "add", "home", "--via", "vps"]).ok();
        assert!(out.contains("added host home (via vps)"), "{out}");
        Meeting {
            vps_home,
            vps,
            home_home,
            home,
            client,
            home_key,
            vps_key,
        }
    }

    /// Waits until the home node logged its `n`th registration at vps.
    fn wait_registered(&self, n: usize) {
        let registered = self.home.wait_logged("registered for relaying", n, WAIT);
        assert!(
            registered,
            "home never registered: {}",
            self.home.log_text()
        );
    }

    fn connect(&self, args: &[&str]) -> Terminal {
        let mut all = vec!["connect", "home"];
        all.extend_from_slice(args);
        Terminal::spawn(&bin("cmdop"), &all, &self.client.path, 30, 100)
    }
}

#[test]
fn relayed_terminal_attaches_detaches_and_pins_the_home_key() {
    let meeting = Meeting::start("relay-term", true);
    meeting.wait_registered(1);
    assert_ne!(meeting.home_key, meeting.vps_key);

    let mut term = meeting.connect(&["--name", "work"]);
    term.type_line("echo relayed-$((40+2))");
    term.expect("relayed-42", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());
    term.expect("detached from session work", WAIT);

    // Reattaching replays the scrollback, through the relay again.
    let mut again = meeting.connect(&["--session", "work"]);
    again.expect("relayed-42", WAIT);
    again.type_line("echo again-$((1+1))");
    again.expect("again-2", WAIT);
    again.type_bytes(b"\x04");
    assert_eq!(again.wait_exit(WAIT), Some(0), "{}", again.text());

    // Takeover: a second interactive client wins, the first is told.
    let mut first = meeting.connect(&["--session", "work"]);
    first.expect("again-2", WAIT);
    let mut second = meeting.connect(&["--session", "work", "--takeover"]);
    second.expect("again-2", WAIT);
    assert_eq!(first.wait_exit(WAIT), Some(0), "{}", first.text());
    first.expect("taken over by client", WAIT);
    second.type_bytes(b"\x04");
    assert_eq!(second.wait_exit(WAIT), Some(0), "{}", second.text());

    // Show, save and restore, relayed.
    let client = &meeting.client;
    let tail = client
        .cmdop(&["session", "show", "work", "--tail", "20"])
        .ok();
    assert!(tail.contains("again-2"), "{tail}");
    let file = client.path.join("work.json");
    let file = file.to_str().unwrap();
    client
        .cmdop(&["session", "save", "work", "--to", file])
        .ok();
    client
        .cmdop(&[
            "session", "restore", "--from", file, "--host", "home", "--name", "copy",
        ])
        .ok();
    let copy = client
        .cmdop(&["session", "show", "copy", "--tail", "50"])
        .ok();
    assert!(copy.contains("relayed-42"), "{copy}");

    // The client pinned the home node's own key, apart from the meeting node's.
    let pins = std::fs::read_to_string(meeting.client.path.join("known_nodes")).unwrap();
    assert!(
        pins.contains(&format!("home@vps {}", meeting.home_key)),
        "{pins}"
    );
    assert!(
        pins.contains(&format!("{} {}", meeting.vps.addr(), meeting.vps_key)),
        "{pins}"
    );
    let list = meeting.client.cmdop(&["connect", "--list"]).ok();
    let row = list.lines().find(|l| l.starts_with("home")).unwrap_or("");
    assert!(row.contains("via vps") && row.contains("online"), "{list}");
    assert!(row.contains("relayed"), "hole punching is off here: {list}");
    let hosts = meeting.client.cmdop(&["host", "list"]).ok();
    assert!(hosts.contains(&meeting.home_key), "{hosts}");

    // The session lives on the home node.
    let on_home = meeting
        .home_home
        .cmdop(&["session", "list", "--host", "local"])
        .ok();
    assert!(on_home.contains("work"), "{on_home}");

    // Both ends saw the relay: the meeting node spliced, the home node took relayed clients
    // on its virtual endpoint (from a synthetic address, never the client's port).
    assert!(
        meeting.vps.log_text().contains("relaying"),
        "{}",
        meeting.vps.log_text()
    );
    let home_log = meeting.home.log_text();
    assert!(home_log.contains("relayed client"), "{home_log}");
    assert!(home_log.contains("100.64.0."), "{home_log}");
}

#[test]
fn a_relayed_terminal_survives_a_meeting_node_restart() {
    let mut meeting = Meeting::start("relay-restart", true);
    meeting.wait_registered(1);
    let mut term = meeting.connect(&["--name", "kept"]);
    term.type_line("echo before-$((2+3))");
    term.expect("before-5", WAIT);

    meeting.vps.stop();
    meeting.vps = NodeProcess::spawn(&meeting.vps_home, meeting.vps.port);
    let restarted = Instant::now();
    meeting.wait_registered(2);
    let registered_in = restarted.elapsed();
    assert!(registered_in < Duration::from_secs(5), "{registered_in:?}");

    // The live terminal reconnects through the restarted meeting node by itself.
    term.type_line("echo after-$((3+4))");
    term.expect("after-7", Duration::from_secs(20));
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());
}

#[test]
fn a_changed_home_key_is_refused() {
    let meeting = Meeting::start("relay-pin", true);
    meeting.wait_registered(1);
    meeting.client.cmdop(&["session", "create", "home"]).ok();
    // Someone else registers as home at vps: a node with another key.
    let known = meeting.client.path.join("known_nodes");
    let pins = std::fs::read_to_string(&known).unwrap();
    let forged = pins.replace(
        &format!("home@vps {}", meeting.home_key),
        &format!("home@vps {}", meeting.vps_key),
    );
    std::fs::write(&known, forged).unwrap();
    let err = meeting.client.cmdop(&["session", "create", "home"]).fails();
    assert!(err.contains("NODE KEY CHANGED for home"), "{err}");
    assert!(err.contains(&meeting.home_key), "{err}");
}

/// Runs `cmdop session create home` and returns its stderr, checking it failed in time.
fn create_fails(client: &Home) -> String {
    let started = Instant::now();
    let err = client.cmdop(&["session", "create", "home"]).fails();
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    err
}

#[test]
fn relay_failures_are_one_sentence_each() {
    let mut meeting = Meeting::start("relay-errors", false);
    let key = meeting.home_key.clone();
    let sentence = format!(
        "vps does not authorize relay node key {key}; on vps run 'cmdop-node authorize --relay {key}'"
    );
    let logged = wait_until(WAIT, || meeting.home.log_text().contains(&sentence));
    assert!(logged, "{}", meeting.home.log_text());
    let err = create_fails(&meeting.client);
    assert!(
        err.contains(
            "no node named home is registered at vps; is its node.rendezvous set and is it online?"
        ),
        "{err}"
    );

    // Hosts: a via must name a known host, and a meeting node in use is not removed.
    let err = meeting
        .client
        .cmdop(&["host", "add", "x", "--via", "nosuch"])
        .fails();
    assert!(err.contains("no host named 'nosuch'"), "{err}");
    let err = meeting.client.cmdop(&["host", "remove", "vps"]).fails();
    assert!(err.contains("other hosts are reached via 'vps'"), "{err}");

    // Authorized now: the home node registers by itself on its next attempt.
    meeting
        .vps_home
        .cmdop_node(&["authorize", "--relay", &key])
        .ok();
    meeting.wait_registered(1);
    meeting.client.cmdop(&["session", "create", "home"]).ok();

    // The meeting node offline: the usual offline sentence, naming vps.
    meeting.vps.stop();
    let err = create_fails(&meeting.client);
    assert!(
        err.contains("vps (127.0.0.1:") && err.contains("is offline"),
        "{err}"
    );

    // Back on the same port: the home node registers again within seconds.
    meeting.vps = NodeProcess::spawn(&meeting.vps_home, meeting.vps.port);
    meeting.wait_registered(2);
    meeting.client.cmdop(&["session", "create", "home"]).ok();

    // The home node gone without a word: offline or not registered, in time either way.
    meeting.home.crash();
    let err = create_fails(&meeting.client);
    assert!(
        err.contains("home (home@vps) is offline") || err.contains("no node named home"),
        "{err}"
    );
}

/// A dialer that presents the node key of `home` (as a node behind NAT does).
fn node_dialer(home: &Home, runtime: &tokio::runtime::Runtime) -> Dialer {
    let identity =
        cmdop_certs::Identity::load_or_create(&home.path, cmdop_client::home::NODE_IDENTITY)
            .unwrap();
    let pins = home.path.join("known_nodes_test");
    runtime.block_on(async { Dialer::new(Arc::new(identity), pins, WAIT).unwrap() })
}

#[test]
fn a_relay_key_may_only_register_and_names_are_not_stolen() {
    let meeting = Meeting::start("relay-limits", true);
    meeting.wait_registered(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vps = Target::direct("vps", &meeting.vps.addr());

    // The home node's key is no client of vps: it may register and do nothing else.
    let dialer = node_dialer(&meeting.home_home, &runtime);
    let mut as_node = runtime.block_on(dialer.connect(&vps, None)).unwrap();
    for request in [
        cmdop_proto::Request::ListSessions(cmdop_proto::ListSessions),
        cmdop_proto::Request::Relay(cmdop_proto::Relay { to: "home".into() }),
    ] {
        let reply = runtime.block_on(as_node.request(&request)).unwrap();
        let cmdop_proto::Reply::Error(e) = reply else {
            panic!("{reply:?}")
        };
        assert!(e.message.contains("may only register"), "{e:?}");
    }

    // Another relay key cannot take the name of a node registered and online.
    let other = Home::new("relay-limits-other");
    let other_key = node_key(&other);
    meeting
        .vps_home
        .cmdop_node(&["authorize", "--relay", &other_key])
        .ok();
    let dialer = node_dialer(&other, &runtime);
    let mut intruder = runtime.block_on(dialer.connect(&vps, None)).unwrap();
    let register = cmdop_proto::Register {
        name: "home".into(),
    };
    let err = runtime.block_on(intruder.call(register)).unwrap_err();
    let ClientError::Rejected(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.kind, cmdop_proto::ErrorKind::NameTaken, "{e:?}");
    assert!(e.message.contains(&meeting.home_key), "{e:?}");
    // The real home node is still the one clients reach.
    meeting.client.cmdop(&["session", "create", "home"]).ok();
}

/// The session's whole output, read on the home node itself.
fn printed_on_home(meeting: &Meeting, name: &str) -> String {
    let args = [
        "session", "show", name, "--host", "local", "--tail", "1000000", "--json",
    ];
    let out = meeting.home_home.cmdop(&args).ok();
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value["tail"].as_str().unwrap().to_string()
}

#[test]
fn relayed_roaming_loss_and_a_blackout_lose_and_repeat_nothing() {
    use crate::roaming::{assert_stream_complete, stream_command, tail};
    let meeting = Meeting::start("relay-roam", true);
    meeting.wait_registered(1);
    // The client reaches the meeting node through netsim: 5% loss and 20 ms each way, with
    // rebinds and a blackout.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let impaired = cmdop_netsim::Impairments {
        loss: 0.05,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        ..cmdop_netsim::Impairments::default()
    };
    let config = cmdop_netsim::NetsimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        meeting.vps.addr().parse().unwrap(),
    )
    .with_impairments(impaired);
    let netsim = runtime
        .block_on(cmdop_netsim::Netsim::start(config))
        .unwrap();
    meeting.client.write_config(&format!(
        "client:\n  connect_timeout: 3s\n  hole_punching: false\nhosts:\n  vps:\n    addr: {}\n  home:\n    via: vps\n",
        netsim.listen_addr()
    ));
    let transcript = meeting.client.path.join("transcript");
    let env = [("CMDOP_TRANSCRIPT", transcript.to_str().unwrap())];
    let args = ["connect", "home", "--name", "roam"];
    let mut term =
        Terminal::spawn_with_env(&bin("cmdop"), &args, &meeting.client.path, 30, 100, &env);
    term.expect("# ", WAIT);
    term.type_line("PS1='ok''> '");
    term.expect("ok> ", WAIT);
    term.type_line(&stream_command(200, "0.01"));
    term.expect("line-20", WAIT);
    for round in 1..=3 {
        netsim.rebind();
        term.expect(&format!("line-{}", 20 + round * 50), WAIT);
    }
    term.expect("STREAM-2-DONE", WAIT);

    // Longer than the idle timeout: every connection on the path dies; the client reconnects.
    netsim.set_blackout(true);
    std::thread::sleep(Duration::from_secs(3));
    term.type_line("echo dark-$((6*7))");
    std::thread::sleep(Duration::from_secs(9));
    term.expect("reconnecting to home", WAIT);
    let lifted = Instant::now();
    netsim.set_blackout(false);
    term.expect("dark-42", Duration::from_secs(30));
    eprintln!(
        "relayed output resumed {:?} after the blackout ended",
        lifted.elapsed()
    );
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());

    let printed = printed_on_home(&meeting, "roam");
    let shown = String::from_utf8(std::fs::read(&transcript).unwrap()).unwrap();
    assert!(
        printed.ends_with(&shown),
        "the client's bytes differ from the session's:\n{}\n---\n{}",
        tail(&printed, 2000),
        tail(&shown, 2000)
    );
    assert_stream_complete(&shown, 200);
    assert_eq!(
        printed.matches("dark-42").count(),
        1,
        "{}",
        tail(&printed, 500)
    );
    let counters = netsim.counters();
    assert!(
        counters.rebinds >= 3 && counters.to_client.dropped_loss > 0,
        "{counters}"
    );
}

#[test]
fn relayed_connections_closed_or_abandoned_leave_nothing_behind() {
    let meeting = Meeting::start("relay-leak", true);
    meeting.wait_registered(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dialer = meeting.client.dialer(Duration::from_secs(5));
        let target = Target::relayed("home", Target::direct("vps", &meeting.vps.addr()));
        // More than max_connections_per_client (16) at the meeting node, one after another:
        // each closed connection must free its relay there.
        for n in 0..24 {
            let mut client = dialer
                .connect(&target, None)
                .await
                .unwrap_or_else(|e| panic!("relayed dial {n}: {e}"));
            client.call(cmdop_proto::ListSessions).await.unwrap();
            client.close().await;
        }
        // Connections let go without a close (as a live terminal's attempt that timed out after
        // its dial is) free theirs too...
        for n in 0..20 {
            let client = dialer
                .connect(&target, None)
                .await
                .unwrap_or_else(|e| panic!("relayed dial {n} let go: {e}"));
            drop(client);
        }
        // ... and so do dials abandoned part way.
        for wait_ms in 1..=20 {
            let dial = dialer.connect(&target, None);
            let _ = tokio::time::timeout(Duration::from_millis(wait_ms), dial).await;
        }
        // Their closes take a moment to reach the meeting node; a leak would last for good.
        let deadline = Instant::now() + WAIT;
        loop {
            match dialer.connect(&target, None).await {
                Ok(client) => break client.close().await,
                Err(e) if Instant::now() > deadline => panic!("abandoned dials leaked: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        for n in 0..4 {
            let mut client = dialer
                .connect(&target, None)
                .await
                .unwrap_or_else(|e| panic!("relayed dial after the abandoned ones, {n}: {e}"));
            client.call(cmdop_proto::ListSessions).await.unwrap();
            client.close().await;
        }
    });
}

#[test]
fn a_home_key_given_up_front_is_the_only_one_accepted_through_the_meeting_node() {
    let meeting = Meeting::start("relay-fingerprint", true);
    meeting.wait_registered(1);
    let client = &meeting.client;
    let err = client
        .cmdop(&["host", "add", "h2", "--via", "vps", "--token", "t0ken"])
        .fails();
    assert!(
        err.contains("--via with --token needs --fingerprint"),
        "{err}"
    );
    let add_pinned = |key: &str| {
        client.cmdop(&["host", "remove", "home"]);
        client
            .cmdop(&["host", "add", "home", "--via", "vps", "--fingerprint", key])
            .ok();
    };
    // The meeting node's key where the home node's belongs: as if it answered in its place.
    add_pinned(&meeting.vps_key);
    let err = create_fails(client);
    assert!(err.contains("NODE KEY CHANGED for home"), "{err}");
    add_pinned(&meeting.home_key);
    client.cmdop(&["session", "create", "home"]).ok();
}

#[test]
fn a_relay_invite_authorizes_one_node_key_once() {
    let vps_home = Home::new("relay-invite-vps");
    let vps = NodeProcess::start(&vps_home, free_port(), "");
    let vps_key = node_key(&vps_home);
    let invite = |args: &[&str]| vps_home.cmdop_node(args).ok().trim().to_string();
    let token = invite(&["invite", "--relay"]);
    let client_token = invite(&["invite"]);
    let start_home = |tag: &str, token: &str| {
        let home = Home::new(tag);
        let rendezvous = format!(
            "name: {tag}\nrendezvous:\n  - name: vps\n    addr: {}\n    fingerprint: {vps_key}\n    token: {token}\n",
            vps.addr()
        );
        let node = NodeProcess::start(&home, free_port(), &rendezvous);
        (home, node)
    };
    let logged = |node: &NodeProcess, text: &str| node.wait_logged(text, 1, WAIT);

    let (first_home, mut first) = start_home("invited", &token);
    assert!(
        logged(&first, "registered for relaying"),
        "{}",
        first.log_text()
    );
    let clients = vps_home.cmdop_node(&["clients"]).ok();
    let first_key = node_key(&first_home);
    assert!(
        clients.contains(&format!("{first_key} (relay node)")),
        "{clients}"
    );

    // The token is spent; a client invite is no relay invite.
    let (_second_home, second) = start_home("second", &token);
    assert!(
        logged(
            &second,
            "the relay token in node.rendezvous is unknown or was already used on "
        ),
        "{}",
        second.log_text()
    );
    let (_third_home, third) = start_home("third", &client_token);
    assert!(
        logged(
            &third,
            "the relay token in node.rendezvous is unknown or was already used on "
        ),
        "{}",
        third.log_text()
    );
    assert!(!third.log_text().contains("registered for relaying"));

    // Authorized for good: the spent token in its config no longer matters.
    let port = first.addr().rsplit(':').next().unwrap().parse().unwrap();
    first.stop();
    let first = NodeProcess::spawn(&first_home, port);
    // The log is appended to: the restarted node's registration is the second.
    let again = first.wait_logged("registered for relaying", 2, WAIT);
    assert!(again, "{}", first.log_text());
}
