//! `floor`: what a keystroke's round trip costs below cmdop's own code. The bench writes one byte
//! into a pipe and times it until it comes back out of another, at typing pace, through chains
//! of processes built alike:
//!
//! - `cat`: the pipes alone;
//! - a relay process that forwards its stdin over plain UDP, or over QUIC exactly as cmdop sets
//!   it up (quinn, TLS 1.3 with client certificates, the node's endpoint and transport
//!   settings), to an echo server process;
//! - the QUIC relay to a server that passes the byte through a `cat` of its own, and, when an
//!   sshd answers, `ssh -T localhost cat`: the same six wake-ups, the second through ssh's
//!   transport.
//!
//! The chains are timed in turn, one echo each per round, so a noisy machine weighs on all of
//! them alike. Servers and relays are this binary (`cmdop-bench __floor-echo ...`); they die
//! with the bench.

use cmdop_certs::Identity;
use cmdop_client::tls;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Echoes timed per chain.
const ECHOES: usize = 300;

/// How long the UDP relay waits for an echo: a lost datagram must not hang the bench (QUIC
/// resends, and gives up at its idle timeout).
const UDP_ECHO_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the benchmark, keystrokes `gap` apart (150 ms when none given: an echo floor is a
/// person's-pace figure).
pub fn run(gap: Duration) {
    let gap = if gap.is_zero() {
        Duration::from_millis(150)
    } else {
        gap
    };
    println!(
        "== floor: one byte through a chain of processes and back, {ECHOES} times each, {} ms apart, chains in turn ==",
        gap.as_millis()
    );
    let udp_server = Server::start("udp");
    let quic_server = Server::start("quic");
    let quic_cat_server = Server::start("quic-cat");
    let mut chains = vec![
        Chain::start("cat (pipes)", "cat", &[]),
        Chain::relay("relay, UDP, echo", "udp", udp_server.port),
        Chain::relay("relay, QUIC, echo", "quic", quic_server.port),
        Chain::relay("relay, QUIC, cat", "quic", quic_cat_server.port),
    ];
    if crate::ssh_available() {
        let ssh = ["-T", "-o", "BatchMode=yes", "localhost", "cat"];
        chains.push(Chain::start("ssh -T localhost cat", "ssh", &ssh));
    } else {
        println!("  ssh -T localhost cat: not measured (no sshd answering with key auth)");
    }
    let millis = time_in_turn(&mut chains, gap);
    for (chain, millis) in chains.iter().zip(&millis) {
        print_line(chain.name, millis);
    }
    let p50 = |i: usize| percentile(&millis[i], 50);
    println!(
        "QUIC over plain UDP, same chain: +{:.3} ms a round trip at p50",
        p50(2) - p50(1)
    );
    if millis.len() > 4 {
        println!(
            "ssh -T against the QUIC chain of the same shape: {:+.3} ms at p50",
            p50(4) - p50(3)
        );
    }
}

/// Times an echo through each chain in turn, `gap` apart, until each has `ECHOES`.
fn time_in_turn(chains: &mut [Chain], gap: Duration) -> Vec<Vec<f64>> {
    // The first echo of each chain may wait for a login or a handshake: not counted.
    for chain in chains.iter_mut() {
        chain.echo();
    }
    let mut millis = vec![Vec::with_capacity(ECHOES); chains.len()];
    for _ in 0..ECHOES {
        for (chain, millis) in chains.iter_mut().zip(&mut millis) {
            std::thread::sleep(gap);
            millis.push(chain.echo().as_secs_f64() * 1e3);
        }
    }
    millis
}

fn print_line(name: &str, millis: &[f64]) {
    println!(
        "  {name:<24} p10 {:.3}  p50 {:.3}  p90 {:.3} ms",
        percentile(millis, 10),
        percentile(millis, 50),
        percentile(millis, 90),
    );
}

/// The `p`th percentile of `millis` (any order).
fn percentile(millis: &[f64], p: usize) -> f64 {
    let mut sorted = millis.to_vec();
    sorted.sort_by(f64::total_cmp);
    crate::percentile(&sorted, p as f64 / 100.0)
}

/// A program that echoes its stdin to its stdout, driven over pipes; killed when dropped.
struct Chain {
    name: &'static str,
    _child: KilledOnDrop,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Chain {
    fn start(name: &'static str, program: &str, args: &[&str]) -> Chain {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Chain {
            name,
            _child: KilledOnDrop(child),
            stdin,
            stdout,
        }
    }

    /// This binary relaying its stdin over `transport` to the server on `port`.
    fn relay(name: &'static str, transport: &str, port: u16) -> Chain {
        let me = std::env::current_exe().unwrap();
        let port = port.to_string();
        Chain::start(
            name,
            me.to_str().unwrap(),
            &["__floor-echo", "relay", transport, &port],
        )
    }

    /// One byte through the chain and back: how long it took.
    fn echo(&mut self) -> Duration {
        let started = Instant::now();
        let mut byte = [0u8; 1];
        self.stdin.write_all(b"x").unwrap();
        self.stdout
            .read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("{}: the echo did not come back: {e}", self.name));
        assert_eq!(&byte, b"x", "{}: echoed the wrong byte", self.name);
        started.elapsed()
    }
}

/// A helper process, killed and reaped when dropped.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An echo server process on a port of its choosing; killed when dropped.
struct Server {
    _child: KilledOnDrop,
    port: u16,
}

impl Server {
    fn start(kind: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["__floor-echo", "serve", kind])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The server prints its port once it is bound.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the {kind} echo server did not start: {line:?}"));
        Server {
            _child: KilledOnDrop(child),
            port,
        }
    }
}

/// The helper processes: `__floor-echo serve udp|quic|quic-cat` and
/// `__floor-echo relay udp|quic PORT`, run until the bench goes.
pub fn helper(args: &[String]) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's parent-death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.as_slice() {
        ["serve", "udp"] => runtime.block_on(serve_udp()),
        ["serve", kind @ ("quic" | "quic-cat")] => {
            runtime.block_on(serve_quic(*kind == "quic-cat"))
        }
        ["relay", transport @ ("udp" | "quic"), port] => {
            let port = port.parse().expect("a port number");
            let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            runtime.block_on(relay(transport, server));
        }
        _ => {
            eprintln!(
                "usage: cmdop-bench __floor-echo serve udp|quic|quic-cat, or relay udp|quic PORT"
            );
            std::process::exit(2);
        }
    }
}

fn announce(port: u16) {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{port}").unwrap();
    stdout.flush().unwrap();
}

async fn serve_udp() {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    announce(socket.local_addr().unwrap().port());
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

async fn serve_quic(through_cat: bool) {
    let identity = Identity::generate("floor-node").unwrap();
    let config = tls::server_config(&identity).unwrap();
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    let endpoint = quinn::Endpoint::new(
        tls::node_endpoint_config(&identity),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    announce(port);
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                return;
            };
            if through_cat {
                echo_through_cat(&mut recv, &mut send).await;
            } else {
                let _ = tokio::io::copy(&mut recv, &mut send).await;
            }
        });
    }
}

/// Passes what arrives on `recv` through a `cat` of its own and back out on `send`.
async fn echo_through_cat(recv: &mut quinn::RecvStream, send: &mut quinn::SendStream) {
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_cat = pipe::Sender::from_owned_fd(cat.stdin.take().unwrap().into()).unwrap();
    let mut from_cat = pipe::Receiver::from_owned_fd(cat.stdout.take().unwrap().into()).unwrap();
    let _cat = KilledOnDrop(cat);
    let _ = tokio::join!(
        tokio::io::copy(recv, &mut to_cat),
        tokio::io::copy(&mut from_cat, send)
    );
}

/// Forwards stdin to the server over `transport` and the server's answer to stdout.
async fn relay(transport: &str, server: SocketAddr) {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let stdin = pipe::Receiver::from_owned_fd(stdin).unwrap();
    match transport {
        "udp" => relay_udp(stdin, server).await,
        _ => relay_quic(stdin, server).await,
    }
}

async fn relay_udp(mut stdin: pipe::Receiver, server: SocketAddr) {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    socket.connect(server).await.unwrap();
    let mut buf = [0u8; 2048];
    while let Ok(n @ 1..) = stdin.read(&mut buf).await {
        socket.send(&buf[..n]).await.unwrap();
        let echo = tokio::time::timeout(UDP_ECHO_DEADLINE, socket.recv(&mut buf));
        let n = echo.await.expect("a UDP echo in time").unwrap();
        write_out(&buf[..n]);
    }
}

async fn relay_quic(mut stdin: pipe::Receiver, server: SocketAddr) {
    let identity = Identity::generate("floor-client").unwrap();
    let config =
        tls::client_config(&identity, None, Default::default(), cmdop_proto::ALPN).unwrap();
    let mut endpoint = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    endpoint.set_default_client_config(config);
    let connecting = endpoint.connect(server, "cmdop-node").unwrap();
    let connection = connecting.await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut buf = [0u8; 2048];
    while let Ok(n @ 1..) = stdin.read(&mut buf).await {
        send.write_all(&buf[..n]).await.unwrap();
        recv.read_exact(&mut buf[..n]).await.unwrap();
        write_out(&buf[..n]);
    }
}

/// Writes an echo to stdout at once.
fn write_out(bytes: &[u8]) {
    let mut stdout = std::io::stdout();
    stdout.write_all(bytes).unwrap();
    stdout.flush().unwrap();
}
