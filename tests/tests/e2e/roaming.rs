//! Roaming: `cmdop connect` through netsim to a real node, comparing byte for byte what the
//! session printed (its ringbuffer) with what the client showed (its transcript).

use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, Home, NodeProcess, Relayed};
use cmdop_netsim::{Impairments, Netsim};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const PROMPT: &str = "ok> ";

/// A node, a netsim relay in front of it, and a client home that reaches the node through it.
struct Roaming {
    home: Home,
    node: NodeProcess,
    netsim: Netsim,
    _runtime: tokio::runtime::Runtime,
    transcript: std::path::PathBuf,
}

impl Roaming {
    fn new(tag: &str, node_config: &str, impairments: Impairments) -> Roaming {
        let Relayed {
            home,
            node,
            netsim,
            runtime,
        } = Relayed::start(tag, node_config, impairments, 7, "via");
        let transcript = home.path.join("transcript");
        Roaming {
            home,
            node,
            netsim,
            _runtime: runtime,
            transcript,
        }
    }

    fn connect(&self, args: &[&str]) -> Terminal {
        let mut all = vec!["connect", "via"];
        all.extend_from_slice(args);
        let transcript = self.transcript.to_string_lossy().into_owned();
        Terminal::spawn_with_env(
            &bin("cmdop"),
            &all,
            &self.home.path,
            30,
            100,
            &[("CMDOP_TRANSCRIPT", &transcript)],
        )
    }

    /// Connects and sets a known prompt, `ok> ` (typed so that its echo does not contain it).
    fn connect_with_prompt(&self, args: &[&str]) -> Terminal {
        let mut term = self.connect(args);
        term.expect("# ", WAIT);
        term.type_line("PS1='ok''> '");
        term.expect(PROMPT, WAIT);
        term
    }

    /// Everything the session printed, read from the node directly (not through netsim).
    fn session_output(&self, name: &str) -> String {
        let out = self
            .home
            .cmdop(&[
                "session", "show", name, "--host", "local", "--tail", "1000000", "--json",
            ])
            .ok();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        value["tail"].as_str().unwrap().to_string()
    }

    fn transcript(&self) -> String {
        String::from_utf8(std::fs::read(&self.transcript).unwrap()).unwrap()
    }

    /// The client showed exactly the bytes the session printed since the attach: the
    /// transcript is a suffix of the session's output, and every stream line is there once.
    fn assert_shown_exactly(&self, name: &str, lines: usize) {
        let printed = self.session_output(name);
        let shown = self.transcript();
        assert!(
            printed.ends_with(&shown),
            "the client's bytes differ from the session's:\n--- session (last 2000) ---\n{}\n--- client (last 2000) ---\n{}",
            tail(&printed, 2000),
            tail(&shown, 2000)
        );
        assert_stream_complete(&shown, lines);
    }
}

pub(crate) fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A shell loop printing `line-1` .. `line-N` at a steady pace, then a marker.
pub(crate) fn stream_command(lines: usize, pause: &str) -> String {
    format!("for i in $(seq 1 {lines}); do echo line-$i; sleep {pause}; done; echo STREAM-$((1+1))-DONE")
}

pub(crate) fn assert_stream_complete(shown: &str, lines: usize) {
    // A prompt may precede the first line; the loop's own echo has `line-$i`, not digits.
    let got: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.find("line-").map(|at| l[at..].trim_end()))
        .filter(|l| l[5..].chars().all(|c| c.is_ascii_digit()) && l.len() > 5)
        .collect();
    let want: Vec<String> = (1..=lines).map(|i| format!("line-{i}")).collect();
    assert_eq!(got.len(), want.len(), "lines lost or repeated");
    assert!(
        got.iter().zip(&want).all(|(a, b)| a == b),
        "lines out of order"
    );
}

fn detach(term: &mut Terminal) {
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());
}

#[test]
fn nat_rebinding_mid_stream_loses_and_repeats_nothing() {
    let roam = Roaming::new("roam-rebind", "", Impairments::default());
    let mut term = roam.connect_with_prompt(&["--name", "rebind"]);
    term.type_line(&stream_command(300, "0.01"));
    term.expect("line-20", WAIT);
    for round in 1..=4 {
        roam.netsim.rebind();
        let marker = format!("line-{}", 20 + round * 50);
        term.expect(&marker, WAIT);
    }
    term.expect("STREAM-2-DONE", WAIT);
    term.expect_count(PROMPT, 2, WAIT);
    detach(&mut term);
    assert!(roam.netsim.counters().rebinds >= 4);
    roam.assert_shown_exactly("rebind", 300);
}

#[test]
fn loss_duplication_and_jitter_for_the_whole_run() {
    let impaired = Impairments {
        loss: 0.10,
        duplicate: 0.05,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(40),
        ..Impairments::default()
    };
    let roam = Roaming::new("roam-lossy", "", impaired);
    let mut term = roam.connect_with_prompt(&["--name", "lossy"]);
    term.type_line(&stream_command(200, "0.005"));
    term.expect("STREAM-2-DONE", Duration::from_secs(60));
    term.type_line("echo typed-$((6*7))");
    term.expect("typed-42", WAIT);
    detach(&mut term);
    let counters = roam.netsim.counters();
    assert!(
        counters.to_client.dropped_loss > 0 && counters.to_client.duplicated > 0,
        "{counters}"
    );
    roam.assert_shown_exactly("lossy", 200);
}

#[test]
fn blackout_past_the_idle_timeout_reconnects_and_keystrokes_arrive_once() {
    let roam = Roaming::new("roam-blackout", "", Impairments::default());
    let mut term = roam.connect_with_prompt(&["--name", "dark"]);
    term.type_line(&stream_command(150, "0.05"));
    term.expect("line-10", WAIT);
    // Longer than the 10 s QUIC idle timeout: the connection dies and the client reconnects.
    roam.netsim.set_blackout(true);
    std::thread::sleep(Duration::from_secs(4));
    term.type_line("echo typed-in-the-dark-$((6*7))");
    std::thread::sleep(Duration::from_secs(9));
    term.expect("reconnecting to via", WAIT);
    let lifted = Instant::now();
    roam.netsim.set_blackout(false);
    term.expect("STREAM-2-DONE", Duration::from_secs(60));
    term.expect("typed-in-the-dark-42", WAIT);
    eprintln!(
        "output resumed {:?} after the blackout ended",
        lifted.elapsed()
    );
    term.expect_count(PROMPT, 3, WAIT);
    detach(&mut term);
    roam.assert_shown_exactly("dark", 150);
    let printed = roam.session_output("dark");
    assert_eq!(
        printed.matches("typed-in-the-dark-42").count(),
        1,
        "keystrokes applied more than once"
    );
    assert_eq!(
        printed.matches("echo typed-in-the-dark").count(),
        1,
        "keystrokes echoed more than once"
    );
}

#[test]
fn ringbuffer_overflow_during_a_blackout_gets_the_screen_and_the_rest_is_exact() {
    let roam = Roaming::new("roam-overflow", "ringbuffer: 64KiB", Impairments::default());
    let mut term = roam.connect_with_prompt(&["--name", "flood"]);
    // The flood (~1.2 MB into a 64 KiB ringbuffer) runs while the client is cut off.
    term.type_line("sleep 1; seq 1 200000; echo FLOOD-$((1+1))-DONE");
    term.expect("FLOOD-$((1+1))-DONE", WAIT);
    roam.netsim.set_blackout(true);
    std::thread::sleep(Duration::from_secs(12));
    roam.netsim.set_blackout(false);
    // The bytes the client missed left the ringbuffer: it gets the screen instead, and says so.
    term.expect("FLOOD-2-DONE", Duration::from_secs(60));
    term.expect("of output that the node no longer holds", WAIT);
    term.expect_count(PROMPT, 2, WAIT);
    // Live output continues exactly after the screen.
    term.type_line("echo after-$((6*7))");
    term.expect("after-42", WAIT);
    detach(&mut term);
    let printed = roam.session_output("flood");
    let shown = roam.transcript();
    assert!(printed.ends_with(&shown[shown.len() - 20..]), "{shown:?}");
    assert!(shown.contains("after-42"));
}

#[test]
fn node_restart_is_reported_promptly() {
    let roam = Roaming::new("roam-restart", "", Impairments::default());
    let mut term = roam.connect_with_prompt(&["--name", "mortal"]);
    term.type_line("echo alive-$((1+2))");
    term.expect("alive-3", WAIT);
    let port = roam.node.port;
    let mut node = roam.node;
    node.crash();
    let _restarted = NodeProcess::spawn(&roam.home, port);
    let started = Instant::now();
    let code = term.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(1), "{}", term.text());
    term.expect("the node restarted", WAIT);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}
