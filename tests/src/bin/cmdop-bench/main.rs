//! `cmdop-bench`: the numbers we keep score with, measured in one run on this machine.
//!
//! - `terminal`: `cmdop connect` against the local PTY (the physical limit) and, when an sshd
//!   answers on localhost, `ssh localhost`: keystroke echo latency (p50/p99), bulk output
//!   throughput and whether every byte arrived, interrupt latency during a flood, attach time.
//! - `roaming`: an attachment through netsim at 0 and 50 ms one-way delay: time until output
//!   flows again after the client changes socket, after a NAT rebinding it cannot see, and after
//!   a blackout longer than the QUIC idle timeout; bytes re-sent after the reconnect against
//!   bytes missed.
//!
//! - `slowlink`: through netsim at 1 Mbit/s and 100 ms round trip, beside mosh when installed:
//!   Ctrl+C under a flood until the prompt, bytes drawn after it, echo while output floods, and
//!   110 KB with nobody typing (every byte, no skip).
//! - `predict`: words typed at 150 ms a keystroke through netsim at 25 and 100 ms one way, with
//!   predictive echo adaptive and off, beside mosh when installed: each keystroke timed until the
//!   screen shows it.
//! - `scale`: 1,000 idle sessions on one node: memory per session, idle CPU and wake-ups, time
//!   to list them; next to a tmux server with 1,000 sessions when tmux is installed.
//! - `upgrade`: `cmdop-node upgrade` with 1 to 200 sessions and up to 240 MB of scrollback: the
//!   pause and the command's time, next to a plain restart (which ends every session).
//! - `floor`: one byte at typing pace through chains of processes over pipes (`cat`; a relay
//!   over plain UDP or over QUIC as cmdop sets it up; the QUIC relay through a `cat` beside
//!   `ssh -T localhost cat`): the part of the echo the transport sets (see `floor.rs`).
//! - `relay`: 20 sessions attached through a meeting node next to the same 20 attached
//!   directly: echo at typing pace while they stream, aggregate throughput, and the meeting
//!   node's CPU time and RSS.
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/cmdop-bench [terminal|floor|roaming|slowlink|predict|scale|upgrade|relay]
//! ./target/release/cmdop-bench terminal --gap 150ms   # keystrokes at a person's pace
//! ```

#![allow(clippy::unwrap_used)]

use cmdop_e2e::{bin, free_port, procfs, Home, NodeProcess};
use portable_pty::{CommandBuilder, PtySize};
use std::io::{Read, Write};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const PROMPT: &str = "READY> ";

/// A program in a PTY, read synchronously by the measuring thread.
struct Pty {
    writer: Box<dyn Write + Send>,
    chunks: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    _child: Box<dyn portable_pty::Child + Send + Sync>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Pty {
    fn spawn(program: &str, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let pair = portable_pty::native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 120,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(program);
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let writer = pair.master.take_writer().unwrap();
        Pty {
            writer,
            chunks,
            pending: Vec::new(),
            _child: child,
            _master: pair.master,
        }
    }

    /// The process id of the program (the client under test).
    fn pid(&self) -> Option<u32> {
        self._child.process_id()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Reads until `needle` appears in what arrives from now on; returns the bytes read
    /// (through the needle), or None on timeout.
    fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut total = 0u64;
        loop {
            if let Some(at) = find(&self.pending, needle) {
                let end = at + needle.len();
                total += end as u64;
                self.pending.drain(..end);
                return Some(total);
            }
            // Keep only a needle-sized tail of what did not match.
            let keep = self.pending.len().saturating_sub(needle.len());
            total += keep as u64;
            self.pending.drain(..keep);
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.pending.extend_from_slice(&chunk),
                Err(_) => return None,
            }
        }
    }

    /// Counts `\n` bytes until `needle` appears.
    fn count_lines_until(&mut self, needle: &[u8], timeout: Duration) -> Option<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        let (mut lines, mut bytes) = (0u64, 0u64);
        loop {
            if let Some(at) = find(&self.pending, needle) {
                lines += self.pending[..at].iter().filter(|&&b| b == b'\n').count() as u64;
                bytes += at as u64;
                self.pending.drain(..at + needle.len());
                return Some((lines, bytes));
            }
            let keep = self.pending.len().saturating_sub(needle.len());
            lines += self.pending[..keep].iter().filter(|&&b| b == b'\n').count() as u64;
            bytes += keep as u64;
            self.pending.drain(..keep);
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.pending.extend_from_slice(&chunk),
                Err(_) => return None,
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Figures {
    name: String,
    echo_p50_ms: f64,
    echo_p99_ms: f64,
    /// Context switches per keystroke of the processes on the path (client and server side).
    switches_per_key: Option<f64>,
    seq_secs: f64,
    seq_complete: bool,
    interrupt_ms: f64,
    attach_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

const SEQ_LINES: u64 = 3_000_000;

/// How one side of the comparison is reached.
struct Target<'a> {
    name: &'a str,
    /// Starts the shell: the PTY and how long it took until the prompt.
    start: &'a dyn Fn() -> (Pty, Duration),
    /// The processes on the keystroke path, to count their context switches.
    path_pids: &'a dyn Fn(&Pty) -> Vec<u32>,
}

const KEYSTROKES: usize = 300;

/// Types into `cat` (echoed by the terminal) one key at a time, `gap` apart: each key's echo
/// latency in ms, and the context switches of `pids` per key.
fn measure_echo(pty: &mut Pty, gap: Duration, pids: &[u32]) -> (Vec<f64>, Option<f64>) {
    pty.send(b"cat >/dev/null\r");
    std::thread::sleep(Duration::from_millis(300));
    while pty.chunks.try_recv().is_ok() {}
    pty.pending.clear();
    let switches = || {
        pids.iter()
            .map(|&pid| procfs::wakeups_by_thread(pid))
            .collect::<Vec<_>>()
    };
    let cpu = || {
        pids.iter()
            .map(|&pid| procfs::on_cpu_seconds(pid))
            .sum::<f64>()
    };
    let (before, cpu_before) = (switches(), cpu());
    let mut samples = Vec::new();
    for i in 0..KEYSTROKES {
        let key = [b'a' + (i % 26) as u8];
        let started = Instant::now();
        pty.send(&key);
        pty.read_until(&key, Duration::from_secs(5)).expect("echo");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(gap);
    }
    let after = switches();
    let woken: u64 = before
        .iter()
        .zip(&after)
        .map(|(before, after)| procfs::wakeups_between(before, after))
        .sum();
    let per_key = (!pids.is_empty()).then(|| woken as f64 / KEYSTROKES as f64);
    if !pids.is_empty() {
        eprintln!(
            "  CPU on the keystroke path: {:.3} ms per keystroke",
            (cpu() - cpu_before) * 1000.0 / KEYSTROKES as f64
        );
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples, per_key)
}

/// Runs every measurement on a shell reached by `target`, keystrokes `gap` apart.
fn measure(target: &Target, gap: Duration) -> Figures {
    let (mut pty, attach) = (target.start)();
    let pids = (target.path_pids)(&pty);
    let (samples, switches_per_key) = measure_echo(&mut pty, gap, &pids);
    pty.send(b"\x03");
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(5))
        .expect("prompt after cat");

    // Throughput: seq 1 3000000, every line counted.
    let started = Instant::now();
    pty.send(format!("seq 1 {SEQ_LINES}; echo SEQ-$((1+1))-END\r").as_bytes());
    // Skip the echo of the command line itself.
    pty.read_until(b"END\r\n", Duration::from_secs(5))
        .expect("command echo");
    let (lines, _) = pty
        .count_lines_until(b"SEQ-2-END", Duration::from_secs(120))
        .expect("seq output");
    let seq_secs = started.elapsed().as_secs_f64();
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(5))
        .expect("prompt after seq");

    // Interrupt: Ctrl+C during a flood until the prompt is back.
    pty.send(b"yes flood\r");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    pty.send(b"\x03");
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(30))
        .expect("prompt after flood");
    let interrupt = started.elapsed();

    Figures {
        name: target.name.to_string(),
        echo_p50_ms: percentile(&samples, 0.5),
        echo_p99_ms: percentile(&samples, 0.99),
        switches_per_key,
        seq_secs,
        seq_complete: lines >= SEQ_LINES,
        interrupt_ms: interrupt.as_secs_f64() * 1000.0,
        attach_ms: attach.as_secs_f64() * 1000.0,
    }
}

fn shell_env() -> Vec<(&'static str, &'static str)> {
    vec![("PS1", PROMPT), ("TERM", "xterm"), ("ENV", "")]
}

fn local_pty() -> (Pty, Duration) {
    let started = Instant::now();
    let mut pty = Pty::spawn("/bin/sh", &[], &shell_env());
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(5))
        .expect("local prompt");
    (pty, started.elapsed())
}

fn ssh_available() -> bool {
    std::process::Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=2",
            "-o",
            "StrictHostKeyChecking=no",
            "localhost",
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ssh() -> (Pty, Duration) {
    let started = Instant::now();
    let mut pty = Pty::spawn(
        "ssh",
        &[
            "-tt",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "localhost",
            &format!("PS1='{PROMPT}' ENV= exec /bin/sh"),
        ],
        &[("TERM", "xterm")],
    );
    pty.read_until(PROMPT.as_bytes(), Duration::from_secs(10))
        .expect("ssh prompt");
    (pty, started.elapsed())
}

mod floor;
mod peers;
mod predict;
mod relay;
mod roaming;
mod scale;
mod slowlink;
mod upgrade;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "terminal" => terminal_bench(typing_gap()),
        "floor" => floor::run(typing_gap()),
        "__floor-echo" => floor::helper(&std::env::args().skip(2).collect::<Vec<_>>()),
        "roaming" => roaming::run(),
        "scale" => scale::run(),
        "slowlink" => slowlink::run(),
        "predict" => predict::run(),
        "upgrade" => upgrade::run(),
        "relay" => relay::run(),
        "all" => {
            terminal_bench(typing_gap());
            floor::run(typing_gap());
            roaming::run();
            slowlink::run();
            predict::run();
            scale::run();
            upgrade::run();
            relay::run();
        }
        other => {
            eprintln!("cmdop-bench: unknown benchmark '{other}'; use terminal, floor, roaming, slowlink, predict, scale, upgrade, relay, or nothing for all");
            std::process::exit(2);
        }
    }
}

/// `--gap 150ms` after the benchmark's name: the pause between keystrokes (none by default).
fn typing_gap() -> Duration {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let Some(at) = args.iter().position(|a| a == "--gap") else {
        return Duration::ZERO;
    };
    let value = args.get(at + 1).map(String::as_str).unwrap_or("");
    match value.trim_end_matches("ms").parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => {
            eprintln!("cmdop-bench: --gap takes milliseconds, like --gap 150ms");
            std::process::exit(2);
        }
    }
}

fn terminal_bench(gap: Duration) {
    let home = Home::new("bench");
    let node = NodeProcess::start(&home, free_port(), "");
    let home_path = home.path.to_string_lossy().into_owned();
    // A named session whose shell prints our prompt.
    home.cmdop(&["session", "create", "local", "--name", "bench"])
        .ok();
    home.cmdop(&["session", "send", "bench", &format!("PS1='{PROMPT}'\\n")])
        .ok();
    std::thread::sleep(Duration::from_millis(300));
    let cmdop = bin("cmdop");
    let cmdop = cmdop.to_string_lossy().into_owned();
    let connect = || {
        let started = Instant::now();
        let mut pty = Pty::spawn(
            &cmdop,
            &["connect", "local", "--session", "bench"],
            &[("CMDOP_HOME", &home_path), ("TERM", "xterm")],
        );
        pty.read_until(PROMPT.as_bytes(), Duration::from_secs(10))
            .expect("cmdop prompt");
        let attach = started.elapsed();
        // Let the redraw nudge settle before measuring.
        std::thread::sleep(Duration::from_millis(200));
        while pty.chunks.try_recv().is_ok() {}
        pty.pending.clear();
        (pty, attach)
    };

    let node_pid = node.pid();
    let cmdop_pids = move |pty: &Pty| pty.pid().into_iter().chain([node_pid]).collect();
    let ssh_pids = |pty: &Pty| {
        let mut pids: Vec<u32> = pty.pid().into_iter().collect();
        pids.extend(procfs::pids_named(&["sshd", "sshd-session"]));
        pids
    };
    let no_pids = |_: &Pty| Vec::new();
    let targets = [
        Target {
            name: "local PTY",
            start: &local_pty,
            path_pids: &no_pids,
        },
        Target {
            name: "cmdop connect",
            start: &connect,
            path_pids: &cmdop_pids,
        },
        Target {
            name: "ssh localhost",
            start: &ssh,
            path_pids: &ssh_pids,
        },
    ];
    eprintln!("keystrokes {} ms apart", gap.as_millis());
    let mut results = Vec::new();
    for target in &targets {
        if target.name.starts_with("ssh") && !ssh_available() {
            eprintln!("ssh localhost: not measured (no sshd answering with key auth on localhost)");
            continue;
        }
        eprintln!("measuring {}...", target.name);
        results.push(measure(target, gap));
    }
    drop(node);

    println!();
    println!(
        "{:<15} {:>10} {:>10} {:>12} {:>12} {:>9} {:>8} {:>13} {:>11}",
        "",
        "echo p50",
        "echo p99",
        "switches/key",
        "seq 3M (s)",
        "MB/s",
        "bytes",
        "interrupt ms",
        "attach ms"
    );
    let seq_bytes = (1..=SEQ_LINES)
        .map(|n| n.to_string().len() as u64 + 1)
        .sum::<u64>() as f64;
    for f in &results {
        let switches = f
            .switches_per_key
            .map_or_else(|| "-".to_string(), |n| format!("{n:.1}"));
        println!(
            "{:<15} {:>8.3}ms {:>8.3}ms {:>12} {:>12.3} {:>9.1} {:>8} {:>13.1} {:>11.1}",
            f.name,
            f.echo_p50_ms,
            f.echo_p99_ms,
            switches,
            f.seq_secs,
            seq_bytes / 1e6 / f.seq_secs,
            if f.seq_complete { "all" } else { "LOST" },
            f.interrupt_ms,
            f.attach_ms
        );
    }
    let local = &results[0];
    let cmdop = &results[1];
    println!();
    println!(
        "cmdop vs local PTY: echo p50 {:.2}x (target <= 1.5x + 1 ms: {}), seq {:.2}x (target <= 1.2x: {}), interrupt {:.0} ms (target < 200: {}), attach {:.0} ms (target < 100: {})",
        cmdop.echo_p50_ms / local.echo_p50_ms,
        verdict(cmdop.echo_p50_ms <= local.echo_p50_ms * 1.5 + 1.0),
        cmdop.seq_secs / local.seq_secs,
        verdict(cmdop.seq_secs <= local.seq_secs * 1.2 && cmdop.seq_complete),
        cmdop.interrupt_ms,
        verdict(cmdop.interrupt_ms < 200.0),
        cmdop.attach_ms,
        verdict(cmdop.attach_ms < 100.0),
    );
    if let Some(ssh) = results.get(2) {
        println!(
            "cmdop vs ssh, keystrokes {} ms apart: echo p50 {:.2}x (target <= 1.0x: {}), p99 {:.2}x (target <= 1.5x: {})",
            gap.as_millis(),
            cmdop.echo_p50_ms / ssh.echo_p50_ms,
            verdict(cmdop.echo_p50_ms <= ssh.echo_p50_ms),
            cmdop.echo_p99_ms / ssh.echo_p99_ms,
            verdict(cmdop.echo_p99_ms <= ssh.echo_p99_ms * 1.5)
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
