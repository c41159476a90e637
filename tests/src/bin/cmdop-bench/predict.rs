//! The typing benchmark: words typed at a person's pace (150 ms between keystrokes) into a
//! shell through `cmdop-netsim` at 25 and 100 ms one way, with `cmdop connect` (predictive echo
//! adaptive, and off) and, when installed, mosh. Each keystroke is timed until a screen model fed
//! with the terminal's output shows it, as a person would see it.

use super::peers::{mosh, mosh_installed, relay, relay_runtime};
use super::{slowlink::on_screen, Pty, PROMPT};
use cmdop_e2e::{bin, free_port, Home, NodeProcess};
use cmdop_netsim::Impairments;
use cmdop_screen::Screen;
use std::time::{Duration, Instant};

/// What is typed: words of a few letters, as at a prompt.
const TEXT: &str = "echo the quick brown fox jumps over the lazy dog";

/// One keystroke's time to the screen, and its place in its word.
struct Sample {
    elapsed: Duration,
    in_word: usize,
}

/// One tool at one delay.
struct Row {
    name: String,
    delay: Duration,
    samples: Vec<Sample>,
}

/// A link with `delay` each way.
fn delayed(delay: Duration) -> Impairments {
    Impairments {
        delay,
        ..Impairments::default()
    }
}

pub fn run() {
    let runtime = relay_runtime();
    let mosh = mosh_installed();
    let mut rows = Vec::new();
    for delay in [Duration::from_millis(25), Duration::from_millis(100)] {
        for predict in ["adaptive", "never"] {
            eprintln!("typing through cmdop (--predict {predict}) at {delay:?} one way...");
            rows.push(cmdop_row(&runtime, delay, predict));
        }
        if mosh {
            eprintln!("typing through mosh at {delay:?} one way...");
            rows.push(mosh_row(&runtime, delay));
        }
    }
    report(&rows);
}

fn cmdop_row(runtime: &tokio::runtime::Runtime, delay: Duration, predict: &str) -> Row {
    let home = Home::new("predict-bench");
    let node = NodeProcess::start(&home, free_port(), "");
    let netsim = relay(runtime, node.addr().parse().unwrap(), delayed(delay));
    home.cmdop(&["host", "add", "far", &netsim.listen_addr().to_string()])
        .ok();
    home.cmdop(&["session", "create", "local", "--name", "typing"])
        .ok();
    let prompt = format!("PS1='{PROMPT}'\\n");
    home.cmdop(&["session", "send", "typing", "--host", "local", &prompt])
        .ok();
    std::thread::sleep(Duration::from_millis(300));
    let home_path = home.path.to_string_lossy().into_owned();
    let mut pty = Pty::spawn(
        &bin("cmdop").to_string_lossy(),
        &[
            "connect",
            "far",
            "--session",
            "typing",
            "--predict",
            predict,
        ],
        &[("CMDOP_HOME", &home_path), ("TERM", "xterm")],
    );
    let samples = type_words(&mut pty);
    drop(pty);
    runtime.block_on(netsim.shutdown());
    drop(node);
    Row {
        name: format!("cmdop {predict}"),
        delay,
        samples,
    }
}

fn mosh_row(runtime: &tokio::runtime::Runtime, delay: Duration) -> Row {
    let (mut pty, netsim) = mosh(runtime, delayed(delay));
    let samples = type_words(&mut pty);
    pty.send(b"\x03exit\r");
    std::thread::sleep(Duration::from_millis(500));
    drop(pty);
    runtime.block_on(netsim.shutdown());
    Row {
        name: "mosh".into(),
        delay,
        samples,
    }
}

/// Types [`TEXT`] 150 ms a keystroke, timing each until the screen shows it.
fn type_words(pty: &mut Pty) -> Vec<Sample> {
    let mut screen = Screen::new(120, 40);
    if !on_screen(pty, &mut screen, PROMPT.trim_end(), Duration::from_secs(20)) {
        panic!("no prompt");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::new();
    let mut in_word = 0;
    for (at, ch) in TEXT.char_indices() {
        let started = Instant::now();
        pty.send(ch.to_string().as_bytes());
        let typed = format!("{PROMPT}{}", &TEXT[..at + ch.len_utf8()]);
        if !on_screen(pty, &mut screen, typed.trim_end(), Duration::from_secs(10)) {
            eprintln!("keystroke {at} never showed");
            break;
        }
        samples.push(Sample {
            elapsed: started.elapsed(),
            in_word,
        });
        in_word = if ch == ' ' { 0 } else { in_word + 1 };
        std::thread::sleep(Duration::from_millis(150));
    }
    pty.send(b"\x15");
    samples
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The median and the share within `limit` of `samples`.
fn figures(samples: &[&Sample], limit: Duration) -> (Duration, f64) {
    let mut times: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let within = times.iter().filter(|t| **t <= limit).count();
    (median, within as f64 / times.len().max(1) as f64 * 100.0)
}

fn report(rows: &[Row]) {
    println!();
    println!(
        "{:<16} {:>9} {:>10} {:>11} {:>12} {:>22}",
        "", "one-way", "keystrokes", "median", "within 5 ms", "3rd+ of word <= 20 ms"
    );
    for row in rows {
        let all: Vec<&Sample> = row.samples.iter().collect();
        let later: Vec<&Sample> = row.samples.iter().filter(|s| s.in_word >= 2).collect();
        let (median, within_5) = figures(&all, Duration::from_millis(5));
        let (_, later_20) = figures(&later, Duration::from_millis(20));
        println!(
            "{:<16} {:>9} {:>10} {:>11} {:>11.0}% {:>21.0}%",
            row.name,
            ms(row.delay),
            row.samples.len(),
            ms(median),
            within_5,
            later_20
        );
    }
    println!();
    println!("target at 100 ms one way (200 ms RTT): at least 80% of the keystrokes after the second of a word within 20 ms (mosh's median is under 5 ms)");
}
