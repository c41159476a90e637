//! Save, restore and node-to-node migration between two nodes on loopback, each with its own
//! `$CMDOP_HOME`, and one client authorized on both.

use cmdop_client::dial::{ClientError, Dialer, Target};
use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, free_port, sessions_json, wait_until, Home, NodeProcess};
use cmdop_proto::{Credential, IssueTicket, ListSessions, Migrate, Restore};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const MARKER: &str = "[restored from ";

/// Two nodes ("one" and "two") and a client authorized on both.
struct Pair {
    _one_home: Home,
    one: NodeProcess,
    two_home: Home,
    two: NodeProcess,
    client: Home,
}

impl Pair {
    fn start(tag: &str, two_config: &str) -> Pair {
        let one_home = Home::new(&format!("{tag}-one"));
        let one = NodeProcess::start(&one_home, free_port(), "");
        let two_home = Home::new(&format!("{tag}-two"));
        let two = NodeProcess::start(&two_home, free_port(), two_config);
        let client = Home::new(&format!("{tag}-client"));
        client.write_config(&format!(
            "client:\n  connect_timeout: 2s\nhosts:\n  one:\n    addr: {}\n  two:\n    addr: {}\n",
            one.addr(),
            two.addr()
        ));
        let fp = client.cmdop(&["id"]).ok();
        for home in [&one_home, &two_home] {
            home.cmdop_node(&["authorize", fp.trim()]).ok();
        }
        Pair {
            _one_home: one_home,
            one,
            two_home,
            two,
            client,
        }
    }

    fn cmdop(&self, args: &[&str]) -> cmdop_e2e::Run {
        self.client.cmdop(args)
    }

    fn sessions(&self, host: &str) -> Vec<serde_json::Value> {
        sessions_json(
            &self
                .cmdop(&["session", "list", "--host", host, "--json"])
                .ok(),
        )
    }

    fn tail(&self, session: &str, host: &str, lines: &str) -> String {
        self.cmdop(&["session", "show", session, "--host", host, "--tail", lines])
            .ok()
    }

    /// Creates a named session on `host` that has printed `text`.
    fn session_with(&self, host: &str, name: &str, command: &str, text: &str) {
        self.cmdop(&["session", "create", host, "--name", name])
            .ok();
        self.cmdop(&[
            "session",
            "send",
            name,
            "--host",
            host,
            &format!("{command}\\n"),
        ])
        .ok();
        assert!(
            wait_until(WAIT, || self.tail(name, host, "20").contains(text)),
            "{text} never appeared: {}",
            self.tail(name, host, "20")
        );
    }

    fn snap_path(&self, file: &str) -> PathBuf {
        self.client.path.join(file)
    }

    /// A control connection to `node` with the client's key (for requests the CLI never sends).
    fn raw_client(
        &self,
        runtime: &tokio::runtime::Runtime,
        node: &NodeProcess,
    ) -> (Dialer, Target) {
        let _inside = runtime.enter();
        let identity = cmdop_certs::Identity::load_or_create(&self.client.path, "client").unwrap();
        let dialer = Dialer::new(
            Arc::new(identity),
            self.client.path.join("known_nodes"),
            Duration::from_secs(3),
        )
        .unwrap();
        let target = Target {
            name: "raw".into(),
            addr: node.addr(),
            via: None,
        };
        (dialer, target)
    }
}

#[test]
fn save_then_restore_on_the_other_node_keeps_scrollback_cwd_and_name() {
    let pair = Pair::start("snap-restore", "");
    pair.session_with("one", "web", "cd /tmp && echo saved-$((6*7))", "saved-42");
    assert!(wait_until(WAIT, || pair.sessions("one")[0]["cwd"] == "/tmp"));

    let snap = pair.snap_path("snap.json");
    let snap_arg = snap.to_str().unwrap();
    let out = pair
        .cmdop(&["session", "save", "web", "--to", snap_arg, "--lines", "50"])
        .ok();
    assert!(
        out.contains("saved session") && out.contains("processes are not saved"),
        "{out}"
    );
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "snapshot mode {mode:o}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["name"], "web");
    assert_eq!(json["cwd"], "/tmp");
    assert_eq!(json["scrollback_encoding"], "utf-8-lines");
    assert!(
        json["scrollback"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("saved-42")),
        "{json}"
    );

    // By default the snapshot goes back where it came from, where the name is taken.
    let err = pair
        .cmdop(&["session", "restore", "--from", snap_arg])
        .fails();
    assert!(
        err.contains("'web' already exists on") && err.contains("--name"),
        "{err}"
    );
    assert_eq!(pair.sessions("one").len(), 1);

    let out = pair
        .cmdop(&["session", "restore", "--from", snap_arg, "--host", "two"])
        .ok();
    assert!(
        out.contains("restored session") && out.contains("(web) on two"),
        "{out}"
    );
    assert!(out.contains("processes do not move"), "{out}");
    let restored = pair.sessions("two");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["name"], "web");
    assert_eq!(restored[0]["cwd"], "/tmp");

    // Old scrollback, then the marker, then the new shell, which runs in the saved directory.
    pair.cmdop(&[
        "session",
        "send",
        "web",
        "--host",
        "two",
        r"pwd; echo new-$((1+1))\n",
    ])
    .ok();
    assert!(wait_until(WAIT, || pair
        .tail("web", "two", "50")
        .contains("new-2")));
    let tail = pair.tail("web", "two", "50");
    let old = tail.find("saved-42").expect("old scrollback");
    let marker = tail.find(MARKER).expect("marker");
    let pwd = tail[marker..]
        .find("\n/tmp")
        .expect("pwd in /tmp after the marker");
    assert!(old < marker && pwd > 0, "{tail}");
    // A second restore under another name is a second, independent session.
    pair.cmdop(&[
        "session", "restore", "--from", snap_arg, "--host", "two", "--name", "web2",
    ])
    .ok();
    assert_eq!(pair.sessions("two").len(), 2);
}

#[test]
fn bad_snapshots_are_refused_and_create_nothing() {
    let pair = Pair::start("snap-bad", "");
    pair.session_with("one", "src", "echo hello-bad", "hello-bad");
    let good = pair.snap_path("good.json");
    pair.cmdop(&["session", "save", "src", "--to", good.to_str().unwrap()])
        .ok();
    let text = std::fs::read_to_string(&good).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut future = value.clone();
    future["format_version"] = 99.into();
    value.as_object_mut().unwrap().remove("cwd");
    let cases = [
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "the snapshot is truncated",
        ),
        ("future.json", future.to_string(), "format_version 99"),
        (
            "garbage.json",
            "this is not json\n".to_string(),
            "the snapshot is not JSON",
        ),
        ("nocwd.json", value.to_string(), "missing the field 'cwd'"),
    ];
    for (file, contents, expected) in cases {
        let path = pair.snap_path(file);
        std::fs::write(&path, contents).unwrap();
        let err = pair
            .cmdop(&[
                "session",
                "restore",
                "--from",
                path.to_str().unwrap(),
                "--host",
                "two",
            ])
            .fails();
        assert!(err.contains(expected), "{file}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
    assert!(
        pair.sessions("two").is_empty(),
        "a bad snapshot created a session"
    );
}

#[test]
fn oversized_snapshot_keeps_the_newest_bytes_and_says_so() {
    let pair = Pair::start("snap-big", "ringbuffer: 64KiB");
    pair.session_with("one", "big", "echo small", "small");
    let path = pair.snap_path("big.json");
    pair.cmdop(&["session", "save", "big", "--to", path.to_str().unwrap()])
        .ok();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = (0..20_000)
        .map(|i| format!("line-{i:05}\r").into())
        .collect();
    value["scrollback"] = lines.into();
    std::fs::write(&path, value.to_string()).unwrap();

    let run = pair.cmdop(&[
        "session",
        "restore",
        "--from",
        path.to_str().unwrap(),
        "--host",
        "two",
    ]);
    let err = run.stderr.clone();
    run.ok();
    assert!(
        err.contains("larger than two's ringbuffer")
            && err.contains("kept the newest")
            && err.contains("dropped the oldest"),
        "{err}"
    );
    let all = pair.tail("big", "two", "100000");
    assert!(all.contains("line-19999") && all.contains(MARKER), "{all}");
    assert!(!all.contains("line-00000"), "the oldest bytes were kept");
}

#[test]
fn migrate_moves_a_named_session_and_tells_the_attached_client() {
    let pair = Pair::start("snap-migrate", "");
    pair.session_with("one", "api", "cd /tmp && echo before-move", "before-move");
    assert!(wait_until(WAIT, || pair.sessions("one")[0]["cwd"] == "/tmp"));
    let term = Terminal::spawn(
        &bin("cmdop"),
        &["session", "attach", "api", "--interactive"],
        &pair.client.path,
        30,
        100,
    );
    term.expect("before-move", WAIT);

    let out = pair
        .cmdop(&["session", "migrate", "api", "--to", "two"])
        .ok();
    assert!(
        out.contains("moved session") && out.contains("from one to two"),
        "{out}"
    );
    assert!(out.contains("processes did not"), "{out}");
    term.expect(
        "session moved to two; reattach with: cmdop connect two --session api",
        WAIT,
    );
    assert!(
        pair.sessions("one").is_empty(),
        "the source still lists the session"
    );
    let moved = pair.sessions("two");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["name"], "api");
    assert_eq!(moved[0]["cwd"], "/tmp");
    let tail = pair.tail("api", "two", "50");
    let old = tail.find("before-move").expect("old scrollback moved");
    assert!(tail[old..].contains(MARKER), "{tail}");
    // The ticket was one-time and kept apart from invites: the source node is not authorized.
    let clients = pair.two_home.cmdop_node(&["clients"]).ok();
    assert_eq!(clients.matches("SHA256:").count(), 1, "{clients}");
}

/// Asserts that `name` is still on `one`, with its scrollback.
fn assert_intact(pair: &Pair, name: &str, text: &str) {
    let sessions = pair.sessions("one");
    assert!(
        sessions.iter().any(|s| s["name"] == name),
        "{name} is gone: {sessions:?}"
    );
    assert!(pair.tail(name, "one", "20").contains(text));
}

#[test]
fn migrate_to_an_offline_node_leaves_the_session() {
    let mut pair = Pair::start("snap-offline", "");
    pair.session_with("one", "stay", "echo still-here", "still-here");
    // Learn two's key and a ticket while it is up, then take it down.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dialer, target) = pair.raw_client(&runtime, &pair.two);
    let (fingerprint, ticket) = runtime.block_on(async {
        let mut client = dialer.connect(&target, None).await.unwrap();
        let ticket = client.call(IssueTicket).await.unwrap();
        (client.fingerprint.clone(), ticket.token)
    });
    pair.two.stop();

    let err = pair
        .cmdop(&["session", "migrate", "stay", "--to", "two"])
        .fails();
    assert!(
        err.contains("offline") && err.contains("stays on one"),
        "{err}"
    );
    assert_intact(&pair, "stay", "still-here");

    // The source's own dial to the offline target fails the same way.
    let id = pair.sessions("one")[0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (dialer, target) = pair.raw_client(&runtime, &pair.one);
    let reply = runtime.block_on(async {
        let mut client = dialer.connect(&target, None).await.unwrap();
        let migrate = Migrate {
            session: id,
            to_name: "two".into(),
            to_addr: pair.two.addr(),
            to_fingerprint: fingerprint,
            ticket,
            name: None,
        };
        client.call(migrate).await
    });
    let Err(ClientError::Rejected(e)) = reply else {
        panic!("migrate to an offline node succeeded: {reply:?}")
    };
    assert!(
        e.message.contains("got no answer from two") && e.message.contains("stays on"),
        "{}",
        e.message
    );
    assert!(pair.sessions("one").iter().any(|s| s["name"] == "stay"));
}

#[test]
fn migrate_to_an_untrusted_node_leaves_the_session() {
    let mut pair = Pair::start("snap-untrusted", "");
    pair.session_with("one", "keep", "echo kept-safe", "kept-safe");

    // The source checks the target's key against the fingerprint it is given.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = pair.sessions("one")[0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (dialer_two, target_two) = pair.raw_client(&runtime, &pair.two);
    let (dialer_one, target_one) = pair.raw_client(&runtime, &pair.one);
    let reply = runtime.block_on(async {
        let mut two = dialer_two.connect(&target_two, None).await.unwrap();
        let token = two.call(IssueTicket).await.unwrap().token;
        let mut one = dialer_one.connect(&target_one, None).await.unwrap();
        let wrong = cmdop_certs::Fingerprint::of_spki(b"someone else");
        let migrate = Migrate {
            session: id,
            to_name: "two".into(),
            to_addr: pair.two.addr(),
            to_fingerprint: wrong,
            ticket: token,
            name: None,
        };
        one.call(migrate).await
    });
    let Err(ClientError::Rejected(e)) = reply else {
        panic!("migrate to a node with another key succeeded: {reply:?}")
    };
    assert!(
        e.message.contains("presented key") && e.message.contains("stays on"),
        "{}",
        e.message
    );
    assert_intact(&pair, "keep", "kept-safe");
    assert!(pair.sessions("two").is_empty());

    // A different node answering at two's pinned address is refused by the client.
    let port = pair.two.port;
    pair.two.stop();
    let impostor_home = Home::new("snap-impostor");
    let _impostor = NodeProcess::start(&impostor_home, port, "");
    let fp = pair.cmdop(&["id"]).ok();
    impostor_home.cmdop_node(&["authorize", fp.trim()]).ok();
    let err = pair
        .cmdop(&["session", "migrate", "keep", "--to", "two"])
        .fails();
    assert!(
        err.contains("NODE KEY CHANGED") && err.contains("stays on one"),
        "{err}"
    );
    let sessions = pair.sessions("one");
    assert!(sessions.iter().any(|s| s["name"] == "keep"));
    assert!(pair.tail("keep", "one", "20").contains("kept-safe"));
}

#[test]
fn migrate_of_a_full_ringbuffer_is_timed() {
    let pair = Pair::start("snap-timed", "");
    pair.cmdop(&["session", "create", "one", "--name", "full"])
        .ok();
    // About 6 MB of output: the default 4 MiB ringbuffer is full and has wrapped.
    pair.cmdop(&[
        "session",
        "send",
        "full",
        r"head -c 6000000 /dev/zero | tr '\\0' x | fold -w 99; echo filled-$((1+1))-up\n",
    ])
    .ok();
    assert!(
        wait_until(Duration::from_secs(60), || pair
            .tail("full", "one", "3")
            .contains("filled-2-up")),
        "the output never finished"
    );
    let bytes = pair.sessions("one")[0]["output_bytes"].as_u64().unwrap();
    assert!(bytes > 4 << 20, "only {bytes} bytes printed");

    let started = Instant::now();
    pair.cmdop(&["session", "migrate", "full", "--to", "two"])
        .ok();
    let elapsed = started.elapsed();
    let log = strip_ansi(&pair.one.log_text());
    let node_ms = log
        .lines()
        .find(|l| l.contains("session migrated"))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "migrate of a full 4 MiB ringbuffer on loopback: {} ms end to end (cmdop run), {node_ms} ms on the source node",
        elapsed.as_millis()
    );
    assert!(pair.sessions("one").is_empty());
    let moved = pair.sessions("two");
    // The whole ringbuffer moved (less the few bytes that make room for the marker line).
    assert!(moved[0]["output_bytes"].as_u64().unwrap() > (4 << 20) - 8192);
    let tail = pair.tail("full", "two", "5");
    assert!(
        tail.contains("filled-2-up") && tail.contains(MARKER),
        "{tail}"
    );
}

/// The text of a log without its colour escapes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the CSI sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_migration_ticket_admits_one_restore_once_and_nothing_else() {
    let pair = Pair::start("snap-ticket", "");
    pair.session_with("one", "src", "echo ticket-src", "ticket-src");
    let snap = pair.snap_path("t.json");
    pair.cmdop(&["session", "save", "src", "--to", snap.to_str().unwrap()])
        .ok();
    let snapshot =
        cmdop_proto::snapshot::Snapshot::from_json(&std::fs::read(&snap).unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dialer, target) = pair.raw_client(&runtime, &pair.two);
    let stranger_home = Home::new("snap-stranger");
    runtime.block_on(async {
        let mut client = dialer.connect(&target, None).await.unwrap();
        let token = client.call(IssueTicket).await.unwrap().token;
        // A key the node has never seen, holding the ticket.
        let stranger = cmdop_certs::Identity::load_or_create(&stranger_home.path, "node").unwrap();
        let stranger = Dialer::new(
            Arc::new(stranger),
            stranger_home.path.join("known_nodes"),
            Duration::from_secs(3),
        )
        .unwrap();
        let mut peer = stranger
            .connect(&target, Some(Credential::MigrationTicket(token.clone())))
            .await
            .unwrap();
        let Err(ClientError::Rejected(e)) = peer.call(ListSessions).await else {
            panic!("a ticket allowed a listing")
        };
        assert!(e.message.contains("one restore"), "{}", e.message);
        let restore = Restore {
            snapshot,
            name: Some("via-ticket".into()),
        };
        let session = peer.call(restore.clone()).await.unwrap().session;
        assert_eq!(session.name.as_deref(), Some("via-ticket"));
        let Err(ClientError::Rejected(_)) = peer.call(restore).await else {
            panic!("a ticket allowed a second restore")
        };
        // Used once, the ticket is gone.
        let again = stranger
            .connect(&target, Some(Credential::MigrationTicket(token)))
            .await
            .unwrap_err();
        assert!(
            again.to_string().contains("unknown or was already used"),
            "{again}"
        );
    });
    assert_eq!(pair.sessions("two").len(), 1);
}
