//! The slow-link benchmark: `cmdop connect` and, when installed, mosh, each through the same
//! netsim relay at 1 Mbit/s with 100 ms round trip and a 64 KiB bottleneck queue (a weak hotel
//! or train Wi-Fi), measured as a person meets them in a real terminal:
//! - Ctrl+C under a flood (`seq 1 100000000`) until the prompt is back, and how many bytes the
//!   terminal had to draw after the Ctrl+C;
//! - keystrokes typed at a person's pace (150 ms apart) while output floods: time until each
//!   one is on the screen (the terminal's output rendered by a screen model, as a person sees
//!   it);
//! - 110 KB printed at once with nobody typing (cmdop only: mosh never sends the bytes): the
//!   time to the last line and whether every line arrived once, in order.

use super::peers::{mosh, mosh_installed, relay, relay_runtime};
use super::{find, Pty, PROMPT};
use cmdop_e2e::{bin, free_port, Home, NodeProcess};
use cmdop_netsim::Impairments;
use cmdop_screen::Screen;
use std::time::{Duration, Instant};

/// The link: 1 Mbit/s, 50 ms each way, 64 KiB queue.
fn impairments() -> Impairments {
    Impairments {
        delay: Duration::from_millis(50),
        rate_bytes_per_sec: Some(125_000),
        queue_bytes: 64 * 1024,
        ..Impairments::default()
    }
}

/// What one tool scored.
struct Row {
    name: &'static str,
    interrupt: Option<Duration>,
    drawn_after_interrupt: u64,
    echo_p50: Option<Duration>,
    echo_max: Option<Duration>,
    burst: Option<(Duration, bool)>,
}

pub fn run() {
    let runtime = relay_runtime();
    let mut rows = Vec::new();
    eprintln!("measuring cmdop connect through a 1 Mbit/s, 100 ms relay...");
    rows.push(cmdop_row(&runtime));
    if mosh_installed() {
        eprintln!("measuring mosh through the same relay...");
        rows.push(mosh_row(&runtime));
    } else {
        eprintln!("mosh: not measured (apt-get install mosh)");
    }
    report(&rows);
}

fn cmdop_row(runtime: &tokio::runtime::Runtime) -> Row {
    let home = Home::new("slow-bench");
    let node = NodeProcess::start(&home, free_port(), "");
    let netsim = relay(runtime, node.addr().parse().unwrap(), impairments());
    home.cmdop(&["host", "add", "slow", &netsim.listen_addr().to_string()])
        .ok();
    home.cmdop(&["session", "create", "local", "--name", "bench"])
        .ok();
    home.cmdop(&[
        "session",
        "send",
        "bench",
        "--host",
        "local",
        &format!("PS1='{PROMPT}'\\n"),
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(300));
    let home_path = home.path.to_string_lossy().into_owned();
    let mut pty = Pty::spawn(
        &bin("cmdop").to_string_lossy(),
        &["connect", "slow", "--session", "bench"],
        &[("CMDOP_HOME", &home_path), ("TERM", "xterm")],
    );
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(20))
        .expect("cmdop prompt");
    settle(&mut pty);
    let burst = burst(&mut pty);
    let (interrupt, drawn) = interrupt(&mut pty);
    let (echo_p50, echo_max) = echo_under_flood(&mut pty);
    drop(pty);
    runtime.block_on(netsim.shutdown());
    drop(node);
    Row {
        name: "cmdop connect",
        interrupt,
        drawn_after_interrupt: drawn,
        echo_p50,
        echo_max,
        burst,
    }
}

fn mosh_row(runtime: &tokio::runtime::Runtime) -> Row {
    let (mut pty, netsim) = mosh(runtime, impairments());
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(20))
        .expect("mosh prompt");
    settle(&mut pty);
    let (interrupt, drawn) = interrupt(&mut pty);
    let (echo_p50, echo_max) = echo_under_flood(&mut pty);
    pty.send(b"exit\r");
    std::thread::sleep(Duration::from_millis(500));
    drop(pty);
    runtime.block_on(netsim.shutdown());
    Row {
        name: "mosh",
        interrupt,
        drawn_after_interrupt: drawn,
        echo_p50,
        echo_max,
        burst: None,
    }
}

/// Waits for the terminal to go quiet and forgets what it drew.
fn settle(pty: &mut Pty) {
    std::thread::sleep(Duration::from_millis(500));
    while pty.chunks.try_recv().is_ok() {}
    pty.pending.clear();
}

/// Ctrl+C three seconds into a flood: time until the prompt, and bytes drawn until then.
fn interrupt(pty: &mut Pty) -> (Option<Duration>, u64) {
    pty.send(b"seq 1 100000000\r");
    std::thread::sleep(Duration::from_secs(3));
    while pty.chunks.try_recv().is_ok() {}
    pty.pending.clear();
    let started = Instant::now();
    pty.send(b"\x03");
    let drawn = pty.read_until(PROMPT.as_bytes(), Duration::from_secs(120));
    let elapsed = started.elapsed();
    settle(pty);
    match drawn {
        Some(bytes) => (Some(elapsed), bytes),
        None => (None, 0),
    }
}

/// Ten keystrokes 150 ms apart while a loop floods the top row (about a megabyte a second,
/// drawn in place so that the keystrokes' echo stays on the screen): time until each is on
/// the screen, as a terminal showing the output would display it.
fn echo_under_flood(pty: &mut Pty) -> (Option<Duration>, Option<Duration>) {
    pty.send(b"i=0; while :; do printf '\\0337\\033[1;1H%s\\0338' $i; i=$((i+1)); done\r");
    std::thread::sleep(Duration::from_secs(2));
    let mut screen = Screen::new(120, 40);
    let mut samples = Vec::new();
    let word = b"qwertyuiop";
    for typed in 1..=word.len() {
        let started = Instant::now();
        pty.send(&word[typed - 1..typed]);
        let needle = String::from_utf8_lossy(&word[..typed]).into_owned();
        if !on_screen(pty, &mut screen, &needle, Duration::from_secs(30)) {
            break;
        }
        samples.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    pty.send(b"\x03");
    let _ = pty.read_until(PROMPT.as_bytes(), Duration::from_secs(120));
    settle(pty);
    if samples.len() < word.len() {
        return (None, None);
    }
    samples.sort();
    (Some(samples[samples.len() / 2]), samples.last().copied())
}

/// Feeds what the terminal receives into `screen` until a row shows `needle`.
pub fn on_screen(pty: &mut Pty, screen: &mut Screen, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    screen.feed(&std::mem::take(&mut pty.pending));
    loop {
        if screen.rows_text().iter().any(|row| row.contains(needle)) {
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match pty.chunks.recv_timeout(left) {
            Ok(chunk) => screen.feed(&chunk),
            Err(_) => return false,
        }
    }
}

/// 110,000 bytes (13,750 lines of 8 on the wire) at once with nobody typing: time to the last
/// line, and whether every line came once and in order.
fn burst(pty: &mut Pty) -> Option<(Duration, bool)> {
    let started = Instant::now();
    pty.send(b"seq 100000 113749; echo BURST-$((1+1))-END\r");
    pty.read_until(b"END\r\n", Duration::from_secs(10))?;
    let mut text = std::mem::take(&mut pty.pending);
    let deadline = Instant::now() + Duration::from_secs(60);
    while find(&text, b"BURST-2-END").is_none() {
        let left = deadline.checked_duration_since(Instant::now())?;
        text.extend(pty.chunks.recv_timeout(left).ok()?);
    }
    let elapsed = started.elapsed();
    let numbers: Vec<u64> = String::from_utf8_lossy(&text)
        .split("\r\n")
        .filter_map(|line| line.parse().ok())
        .collect();
    let whole = numbers == (100_000..=113_749).collect::<Vec<u64>>();
    settle(pty);
    Some((elapsed, whole))
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "FAILED".into())
}

fn report(rows: &[Row]) {
    println!();
    println!("1 Mbit/s, 100 ms round trip, 64 KiB queue (cmdop-netsim):");
    println!(
        "{:<15} {:>15} {:>16} {:>14} {:>14} {:>20}",
        "", "Ctrl+C->prompt", "drawn after ^C", "echo p50", "echo max", "110 KB burst"
    );
    for row in rows {
        let burst = row
            .burst
            .map(|(d, whole)| format!("{} ({})", ms(Some(d)), if whole { "all" } else { "LOST" }))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<15} {:>15} {:>16} {:>14} {:>14} {:>20}",
            row.name,
            ms(row.interrupt),
            cmdop_proto::units::format_bytes(row.drawn_after_interrupt),
            ms(row.echo_p50),
            ms(row.echo_max),
            burst
        );
    }
    let cmdop = &rows[0];
    let target = Duration::from_millis(250);
    println!();
    println!(
        "cmdop: Ctrl+C to prompt {} (target <= 250 ms: {}), 110 KB burst whole: {}",
        ms(cmdop.interrupt),
        super::verdict(cmdop.interrupt.is_some_and(|d| d <= target)),
        super::verdict(cmdop.burst.is_some_and(|(_, whole)| whole)),
    );
    if let (Some(mosh), Some(ours)) = (rows.get(1).and_then(|m| m.interrupt), cmdop.interrupt) {
        println!(
            "cmdop vs mosh: Ctrl+C to prompt {:.2}x, echo under flood p50 {}",
            ours.as_secs_f64() / mosh.as_secs_f64(),
            match (cmdop.echo_p50, rows[1].echo_p50) {
                (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
                _ => "-".into(),
            }
        );
    }
}
