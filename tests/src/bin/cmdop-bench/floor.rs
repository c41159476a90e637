//! `floor`: what a keystroke's round trip costs below cmdop's own code. One byte is echoed at
//! typing pace by a separate process (as the node is one), over plain UDP, over QUIC as cmdop
//! sets it up (quinn, TLS 1.3 with client certificates, the node's endpoint and transport
//! settings), through a local `cat` over pipes, and through `ssh -T localhost cat` when an sshd
//! answers (ssh's transport plus two pipe trips like `cat`'s, no PTY). The terminal benchmark's
//! echo pays the QUIC line on top of the PTYs and the shell, as ssh's pays its transport on top
//! of the same: the difference between the two transports is a gap no code of ours can close.
//!
//! The echo servers are this binary run as `cmdop-bench __floor-echo udp|quic PORT`.

use cmdop_certs::Identity;
use cmdop_client::tls;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Echoes measured per transport.
const ECHOES: usize = 300;

/// Runs the benchmark: each transport in turn, keystrokes `gap` apart (150 ms when none given).
pub fn run(gap: Duration) {
    let gap = if gap.is_zero() {
        Duration::from_millis(150)
    } else {
        gap
    };
    println!(
        "== floor: one byte echoed by another process, {ECHOES} times, {} ms apart ==",
        gap.as_millis()
    );
    let udp = measure_udp(gap);
    print_line("plain UDP", &udp);
    let quic = measure_quic(gap);
    print_line("QUIC as cmdop sets it up", &quic);
    let cat = measure_piped("cat", &[], gap).expect("cat echoes its input");
    print_line("cat (pipes)", &cat);
    let ssh = measure_ssh(gap);
    match &ssh {
        Some(ssh) => print_line("ssh -T localhost cat (pipes)", ssh),
        None => println!("  ssh -T localhost cat: not measured (no sshd answering with key auth)"),
    }
    println!(
        "QUIC over plain UDP: +{:.3} ms a round trip at p50",
        percentile(&quic, 50) - percentile(&udp, 50)
    );
    if let Some(ssh) = ssh {
        // ssh -T's trip is ssh's transport plus two pipe trips like cat's: to ssh and back, and
        // from sshd to the remote cat and back.
        let transport = percentile(&ssh, 50) - 2.0 * percentile(&cat, 50);
        println!(
            "ssh's transport alone, estimated as ssh -T less two cat trips: {transport:.3} ms at p50; QUIC's is {:.3} ms more",
            percentile(&quic, 50) - transport
        );
    }
}

/// The echo server half: `__floor-echo udp|quic PORT`, run until killed.
pub fn serve(args: &[String]) {
    let (Some(kind), Some(port)) = (args.first(), args.get(1).and_then(|p| p.parse().ok())) else {
        eprintln!("usage: cmdop-bench __floor-echo udp|quic PORT");
        std::process::exit(2);
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let runtime = current_thread();
    match kind.as_str() {
        "udp" => runtime.block_on(serve_udp(addr)),
        "quic" => runtime.block_on(serve_quic(addr)),
        other => {
            eprintln!("cmdop-bench __floor-echo: unknown transport '{other}'; use udp or quic");
            std::process::exit(2);
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn print_line(name: &str, millis: &[f64]) {
    println!(
        "  {name:<30} p10 {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3} ms",
        percentile(millis, 10),
        percentile(millis, 50),
        percentile(millis, 90),
        percentile(millis, 99)
    );
}

/// The `p`th percentile of `millis` (any order).
fn percentile(millis: &[f64], p: usize) -> f64 {
    let mut sorted = millis.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The echo server of `kind` on a free port, killed when dropped.
struct EchoServer {
    child: Child,
    addr: SocketAddr,
}

impl EchoServer {
    fn start(kind: &str) -> EchoServer {
        let port = cmdop_e2e::free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["__floor-echo", kind, &port.to_string()])
            .spawn()
            .unwrap();
        // Both servers bind at once; this leaves the process time to start.
        std::thread::sleep(Duration::from_millis(300));
        EchoServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_udp(addr: SocketAddr) {
    let socket = tokio::net::UdpSocket::bind(addr).await.unwrap();
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

fn measure_udp(gap: Duration) -> Vec<f64> {
    let server = EchoServer::start("udp");
    current_thread().block_on(async {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        socket.connect(server.addr).await.unwrap();
        let mut buf = [0u8; 2048];
        let mut millis = Vec::with_capacity(ECHOES);
        for _ in 0..ECHOES {
            tokio::time::sleep(gap).await;
            let started = Instant::now();
            socket.send(b"x").await.unwrap();
            socket.recv(&mut buf).await.unwrap();
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        millis
    })
}

async fn serve_quic(addr: SocketAddr) {
    let identity = Identity::generate("floor-node").unwrap();
    let config = tls::server_config(&identity).unwrap();
    let socket = std::net::UdpSocket::bind(addr).unwrap();
    let endpoint = quinn::Endpoint::new(
        tls::node_endpoint_config(&identity),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                if send.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn measure_quic(gap: Duration) -> Vec<f64> {
    let server = EchoServer::start("quic");
    current_thread().block_on(async {
        let identity = Identity::generate("floor-client").unwrap();
        let config =
            tls::client_config(&identity, None, Default::default(), cmdop_proto::ALPN).unwrap();
        let mut endpoint = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(server.addr, "cmdop-node")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let mut buf = [0u8; 1];
        let mut millis = Vec::with_capacity(ECHOES);
        for _ in 0..ECHOES {
            tokio::time::sleep(gap).await;
            let started = Instant::now();
            send.write_all(b"x").await.unwrap();
            recv.read_exact(&mut buf).await.unwrap();
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        millis
    })
}

/// `ssh -T localhost cat` over pipes, when an sshd answers.
fn measure_ssh(gap: Duration) -> Option<Vec<f64>> {
    if !crate::ssh_available() {
        return None;
    }
    measure_piped(
        "ssh",
        &["-T", "-o", "BatchMode=yes", "localhost", "cat"],
        gap,
    )
}

/// A program that echoes its stdin, over pipes: the first echo (which may wait for a login) is
/// not counted.
fn measure_piped(program: &str, args: &[&str], gap: Duration) -> Option<Vec<f64>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let mut buf = [0u8; 1];
    let mut echo = || {
        stdin
            .write_all(b"x")
            .and_then(|()| stdout.read_exact(&mut buf))
    };
    let mut millis = Vec::with_capacity(ECHOES);
    let measured = echo().and_then(|()| {
        for _ in 0..ECHOES {
            std::thread::sleep(gap);
            let started = Instant::now();
            echo()?;
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    });
    let _ = child.kill();
    let _ = child.wait();
    measured.ok().map(|()| millis)
}
