//! Hostile and broken input: ways in that must fail, broken configs and keys, and a flood of
//! garbage and half-open handshakes that must not disturb a working client.

use cmdop_client::dial::{ClientError, Dialer, Target};
use cmdop_e2e::{bin, client_home, free_port, wait_until, Home, NodeProcess};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn node_start_error(home: &Home, port: u16) -> String {
    let out = Command::new(bin("cmdop-node"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("CMDOP_HOME", &home.path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the node started anyway");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn node_refuses_to_start_with_a_key_others_can_read() {
    let home = Home::new("exposed-key");
    home.cmdop_node(&["id"]).ok();
    let key = home.path.join("node.key");
    let mode = std::fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let dir = std::fs::metadata(&home.path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&dir) & 0o077,
        0,
        "home must be 0700"
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = node_start_error(&home, free_port());
    assert!(
        err.contains("readable by other users") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn broken_config_is_reported_with_file_line_and_expected_form() {
    let home = Home::new("bad-config");
    for (config, expect) in [
        (
            "node:\n  idle_ttl: soon\n",
            vec!["config.yaml", "line 2", "24h"],
        ),
        (
            "node:\n  colour: blue\n",
            vec!["config.yaml", "unknown field `colour`", "line 2"],
        ),
        (
            "node:\n  max_sessions: many\n",
            vec!["config.yaml", "line 2", "invalid type"],
        ),
        ("node: [\n", vec!["config.yaml", "line"]),
    ] {
        home.write_config(config);
        let err = node_start_error(&home, free_port());
        for needle in expect {
            assert!(err.contains(needle), "{config:?}: {err}");
        }
        // The client refuses the same file, with the same words.
        let client_err = home.cmdop(&["session", "list"]).fails();
        assert!(client_err.contains("config.yaml"), "{client_err}");
    }
}

fn dialer(home: &Home, runtime: &tokio::runtime::Runtime) -> Dialer {
    runtime.block_on(async { home.dialer(Duration::from_secs(3)) })
}

#[test]
fn another_alpn_or_protocol_version_is_refused_clearly() {
    let home = Home::new("alpn");
    let node = NodeProcess::start(&home, free_port(), "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dialer = dialer(&home, &runtime);
    let target = Target {
        name: "local".into(),
        addr: node.addr(),
        via: None,
    };
    let err = runtime
        .block_on(dialer.connect_with_alpn(
            &target,
            None,
            b"other/1",
            cmdop_proto::PROTOCOL_VERSION,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("protocol"), "{err}");
    let err = runtime
        .block_on(dialer.connect_with_alpn(&target, None, cmdop_proto::ALPN, 99))
        .unwrap_err();
    assert!(matches!(err, ClientError::VersionMismatch(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("protocol {}", cmdop_proto::PROTOCOL_VERSION))
            && text.contains("99")
            && text.contains("upgrade"),
        "{text}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || node
            .log_text()
            .contains("no application protocol")
            || node.log_text().contains("handshake failed")),
        "the node did not log the refused handshake:\n{}",
        node.log_text()
    );
    // The node still serves a proper client.
    home.cmdop(&["session", "list", "--host", "local"]).ok();
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let home = Home::new("no-cert");
    let node = NodeProcess::start(&home, free_port(), "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result: Result<(), String> = runtime.block_on(async {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = cmdop_certs::verify::PinnedNodeVerifier::new(None, Default::default());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![cmdop_proto::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connecting = endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                node.addr().parse().unwrap(),
                "cmdop-node",
            )
            .unwrap();
        let connection = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        // TLS 1.3 clients finish before the server checks their certificate: the refusal
        // arrives as the connection closing.
        let (mut send, _recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let _ = send.write_all(b"\0\0\0\x01\x00").await;
        let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
            .await
            .map_err(|_| "not closed".to_string())?;
        Err(closed.to_string())
    });
    let err = result.unwrap_err();
    assert!(
        err.contains("certificate") || err.contains("closed"),
        "{err}"
    );
    home.cmdop(&["session", "list", "--host", "local"]).ok();
}

#[test]
fn an_expired_invite_is_refused() {
    let node_home = Home::new("invite-expired");
    let node = NodeProcess::start(&node_home, free_port(), "");
    let token = node_home
        .cmdop_node(&["invite", "--valid", "1s"])
        .ok()
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let client = Home::new("invite-late");
    client.write_config("client:\n  connect_timeout: 3s\n");
    let err = client
        .cmdop(&["host", "add", "box", &node.addr(), "--token", &token])
        .fails();
    assert!(err.contains("expired"), "{err}");
    let _ = client_home;
}

/// Sends `count` half-open QUIC handshakes (a valid first flight, then silence) and `garbage`
/// random datagrams to `addr`.
fn flood(addr: std::net::SocketAddr, count: usize, garbage: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let home = Home::new("flooder");
    let identity = cmdop_certs::Identity::load_or_create(&home.path, "client").unwrap();
    let config =
        cmdop_client::tls::client_config(&identity, None, Default::default(), cmdop_proto::ALPN)
            .unwrap();
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let mut buf = Vec::new();
    for _ in 0..count {
        let Ok((_, mut connection)) =
            endpoint.connect(Instant::now(), config.clone(), addr, "cmdop-node")
        else {
            continue;
        };
        buf.clear();
        if let Some(transmit) = connection.poll_transmit(Instant::now(), 1, &mut buf) {
            let _ = socket.send_to(&buf[..transmit.size], addr);
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in 0..garbage {
        let len = 1 + (n * 37) % 1400;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = socket.send_to(&datagram, addr);
    }
}

#[test]
fn garbage_and_half_open_handshakes_do_not_disturb_a_working_client() {
    let home = Home::new("flood");
    let node = NodeProcess::start(&home, free_port(), "");
    // A person at a live terminal, connected before the flood starts.
    let mut term = cmdop_e2e::pty::Terminal::spawn(
        &bin("cmdop"),
        &["connect", "local", "--name", "worker"],
        &home.path,
        30,
        100,
    );
    term.expect("# ", Duration::from_secs(10));
    let addr: std::net::SocketAddr = node.addr().parse().unwrap();
    let flooder = std::thread::spawn(move || {
        for _ in 0..3 {
            flood(addr, 100, 4000);
        }
    });
    let started = Instant::now();
    let mut round = 0;
    while !flooder.is_finished() || round < 3 {
        round += 1;
        term.type_line(&format!("echo echo-{round}-$((6*7))"));
        term.expect(&format!("echo-{round}-42"), Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(90));
    }
    flooder.join().unwrap();
    // Every echo came back exactly once (the typed line shows the unexpanded command).
    let text = term.text();
    for r in 1..=round {
        assert_eq!(text.matches(&format!("echo-{r}-42")).count(), 1, "{text}");
    }
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        node.log_text().lines().count() < 5000,
        "the flood made the node log every packet"
    );
}

#[test]
fn limits_are_enforced_with_errors_that_name_them() {
    let home = Home::new("limits");
    let node = NodeProcess::start(
        &home,
        free_port(),
        "max_sessions: 2\nmax_attachments: 1\nmax_connections_per_client: 2",
    );
    home.cmdop(&["session", "create", "local", "--name", "a"])
        .ok();
    home.cmdop(&["session", "create", "local", "--name", "b"])
        .ok();
    let err = home
        .cmdop(&["session", "create", "local", "--name", "c"])
        .fails();
    assert!(err.contains("max_sessions"), "{err}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dialer = Arc::new(dialer(&home, &runtime));
    let target = Target {
        name: "local".into(),
        addr: node.addr(),
        via: None,
    };
    let session = sessions_json_id(&home, "a");
    runtime.block_on(async {
        use cmdop_client::live::{AttachSpec, Attachment};
        use cmdop_proto::{AttachMode, WinSize};
        let spec = AttachSpec {
            session,
            mode: AttachMode::ReadOnly,
            takeover: false,
            scrollback_bytes: 0,
            size: WinSize::default(),
        };
        let first = dialer.connect(&target, None).await.unwrap();
        let _viewer = Attachment::open(dialer.clone(), first, spec).await.unwrap();
        let second = dialer.connect(&target, None).await.unwrap();
        let err = Attachment::open(dialer.clone(), second, spec)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_attachments"), "{err}");
        // The viewer's connection and one more are held; a third is refused.
        let _held = dialer.connect(&target, None).await.unwrap();
        let err = dialer.connect(&target, None).await.unwrap_err();
        assert!(matches!(err, ClientError::Refused(_)), "{err:?}");
        assert!(
            err.to_string().contains("max_connections_per_client"),
            "{err}"
        );
        // Another client is not affected.
        let other = Home::new("limits-other");
        let fp = other.cmdop(&["id"]).ok();
        home.cmdop_node(&["authorize", fp.trim()]).ok();
        let other_dialer = other.dialer(Duration::from_secs(3));
        other_dialer.connect(&target, None).await.unwrap();
    });
}

fn sessions_json_id(home: &Home, name: &str) -> uuid::Uuid {
    let list = cmdop_e2e::sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    let id = list.iter().find(|s| s["name"] == name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    id.parse().unwrap()
}

#[test]
fn revoke_closes_the_live_connections_of_that_key() {
    let node_home = Home::new("revoke-node");
    let node = NodeProcess::start(&node_home, free_port(), "");
    let client = Home::new("revoke-client");
    let fingerprint = client.cmdop(&["id"]).ok().trim().to_string();
    node_home.cmdop_node(&["authorize", &fingerprint]).ok();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dialer = dialer(&client, &runtime);
    let target = Target {
        name: "box".into(),
        addr: node.addr(),
        via: None,
    };
    let live = runtime.block_on(dialer.connect(&target, None)).unwrap();
    let out = node_home.cmdop_node(&["revoke", &fingerprint]).ok();
    assert!(out.contains("1 live connections were closed"), "{out}");
    let closed = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), live.closed()).await })
        .unwrap();
    assert!(closed.to_string().contains("revoked"), "{closed}");
    let err = runtime.block_on(dialer.connect(&target, None)).unwrap_err();
    assert!(err.to_string().contains(&fingerprint), "{err}");
}

#[test]
fn handshakes_beyond_the_limit_are_refused_and_the_node_recovers() {
    let home = Home::new("handshakes");
    let node = NodeProcess::start(&home, free_port(), "max_handshakes: 8");
    home.cmdop(&["session", "create", "local", "--name", "steady"])
        .ok();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dialer = dialer(&home, &runtime);
    let target = Target {
        name: "local".into(),
        addr: node.addr(),
        via: None,
    };
    let mut established = runtime.block_on(dialer.connect(&target, None)).unwrap();
    flood(node.addr().parse().unwrap(), 200, 0);
    assert!(
        wait_until(Duration::from_secs(5), || node
            .log_text()
            .contains("refusing handshakes")),
        "{}",
        node.log_text()
    );
    // The established connection is not affected.
    let sessions = runtime
        .block_on(established.call(cmdop_proto::ListSessions))
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    // Once the half-open handshakes time out, new clients get in again.
    assert!(
        wait_until(Duration::from_secs(30), || runtime
            .block_on(dialer.connect(&target, None))
            .is_ok()),
        "the node never accepted new clients again"
    );
}
