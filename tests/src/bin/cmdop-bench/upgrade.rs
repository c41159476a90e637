//! The upgrade benchmark: `cmdop-node upgrade` on nodes holding more and more scrollback.
//! Prints, per load, how long the node served nothing (as the new binary reports it), how long
//! the command took, the state's rate, and, as the reference measured in the same run, what a
//! plain restart costs: the time until a restarted node answers again, with every session lost.
//! With one session it also times an attached `cmdop connect`: from the start of the command
//! until a line typed into it as the command returns comes back (the client reconnects by
//! itself).

use crate::Pty;
use cmdop_e2e::{bin, free_port, Home, NodeProcess};
use cmdop_proto::{CreateSession, ListSessions, SendInput};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Upgrades per load; the figures are their median and worst.
const ROUNDS: usize = 5;

/// (sessions, scrollback bytes each).
const LOADS: [(usize, u64); 4] = [(1, 0), (10, 100_000), (50, 1_200_000), (200, 1_200_000)];

struct Row {
    sessions: usize,
    scrollback: u64,
    paused_ms: Vec<u64>,
    command_ms: Vec<u64>,
}

pub fn run() {
    let mut rows = Vec::new();
    for (sessions, bytes) in LOADS {
        eprintln!("upgrade: {sessions} sessions of {bytes} bytes...");
        rows.push(measure(sessions, bytes));
    }
    let typed_again = typing_again_after_upgrade();
    let restart_ms = restart_reference();
    println!();
    println!(
        "{:>9} {:>14} {:>22} {:>22} {:>14}",
        "sessions", "scrollback", "paused p50/max (ms)", "command p50/max (ms)", "state MB/s"
    );
    for row in &rows {
        let paused = median(&row.paused_ms);
        let total = row.scrollback as f64 * row.sessions as f64;
        let rate = if paused > 0 {
            total / 1e6 / (paused as f64 / 1000.0)
        } else {
            0.0
        };
        println!(
            "{:>9} {:>14} {:>22} {:>22} {:>14.0}",
            row.sessions,
            format!("{:.1} MB", total / 1e6),
            format!("{paused} / {}", row.paused_ms.iter().max().unwrap_or(&0)),
            format!(
                "{} / {}",
                median(&row.command_ms),
                row.command_ms.iter().max().unwrap_or(&0)
            ),
            rate
        );
    }
    println!(
        "attached client echoes a line typed when the upgrade returns {} ms after the upgrade started (p50 of {ROUNDS}, max {}; target 1000)",
        median(&typed_again),
        typed_again.iter().max().unwrap_or(&0)
    );
    println!(
        "reference: a plain restart answers again after {restart_ms} ms and ends every session; \
         upgrade pause with 1 session is {:.2}x that",
        median(&rows[0].paused_ms) as f64 / restart_ms.max(1) as f64
    );
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// A node run from its own copy of the binary (so that it can be replaced).
fn installed(home: &Home, sessions: usize) -> (NodeProcess, PathBuf) {
    let exe = home.path.join("cmdop-node");
    std::fs::copy(bin("cmdop-node"), &exe).unwrap();
    let port = free_port();
    home.write_config(&format!(
        "node:\n  listen: 127.0.0.1:{port}\n  max_sessions: {}\n",
        sessions + 10
    ));
    (NodeProcess::spawn_binary(home, port, &exe, &[]), exe)
}

fn measure(sessions: usize, bytes: u64) -> Row {
    let home = Home::new("bench-upgrade");
    let (node, _exe) = installed(&home, sessions);
    fill(&home, &node, sessions, bytes);
    let mut row = Row {
        sessions,
        scrollback: bytes,
        paused_ms: Vec::new(),
        command_ms: Vec::new(),
    };
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let out = home.cmdop_node(&["upgrade"]).ok();
        row.command_ms.push(started.elapsed().as_millis() as u64);
        row.paused_ms.push(paused_ms(&out));
    }
    row
}

/// "upgraded ...: paused N ms, ..." -> N.
fn paused_ms(out: &str) -> u64 {
    out.split("paused ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pause in {out:?}"))
}

/// Creates `sessions` sessions, each printing `bytes` bytes, and waits until they have.
fn fill(home: &Home, node: &NodeProcess, sessions: usize, bytes: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dialer = home.dialer(Duration::from_secs(5));
        let mut client = dialer.connect(&node.target("local"), None).await.unwrap();
        for _ in 0..sessions {
            let session = client.call(CreateSession::default()).await.unwrap();
            if bytes > 0 {
                let command = format!("seq 1 1000000000 | head -c {bytes}; echo\n");
                client
                    .call(SendInput {
                        session: session.id,
                        data: command.into_bytes(),
                    })
                    .await
                    .unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let list = client.call(ListSessions).await.unwrap();
            if list.iter().all(|s| s.output_bytes >= bytes) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client.close().await;
    });
}

/// Times, over [`ROUNDS`] upgrades, how long after `cmdop-node upgrade` starts an attached
/// terminal echoes a line typed as it returns.
fn typing_again_after_upgrade() -> Vec<u64> {
    let home = Home::new("bench-upgrade-typing");
    let (_node, _exe) = installed(&home, 1);
    let home_dir = home.path.display().to_string();
    let cmdop = bin("cmdop").display().to_string();
    let env = [("CMDOP_HOME", home_dir.as_str()), ("TERM", "xterm")];
    let mut term = Pty::spawn(&cmdop, &["connect", "local", "--name", "typing"], &env);
    term.send(b"echo ready-$((1+1))\r");
    term.read_until(b"ready-2", Duration::from_secs(10))
        .expect("the terminal never answered");
    let mut figures = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        home.cmdop_node(&["upgrade"]).ok();
        let needle = format!("again-{round}-ok");
        term.send(format!("echo again-{round}-$(echo ok)\r").as_bytes());
        term.read_until(needle.as_bytes(), Duration::from_secs(30))
            .expect("the terminal never typed again");
        figures.push(started.elapsed().as_millis() as u64);
    }
    term.send(b"\x04");
    figures
}

/// How long a stopped node takes to answer again when started anew.
fn restart_reference() -> u64 {
    let home = Home::new("bench-restart");
    let (mut node, exe) = installed(&home, 1);
    let port = node.port;
    node.stop();
    let started = Instant::now();
    let node = NodeProcess::spawn_binary(&home, port, &exe, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dialer = home.dialer(Duration::from_secs(5));
        let mut client = dialer.connect(&node.target("local"), None).await.unwrap();
        client.call(ListSessions).await.unwrap();
        client.close().await;
    });
    started.elapsed().as_millis() as u64
}
