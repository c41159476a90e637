//! Slow links: a client that cannot keep up gets the current screen instead of the backlog,
//! and `session show --screen` prints what is on a session's screen.

use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, free_port, wait_until, Home, NodeProcess, Relayed};
use cmdop_netsim::Impairments;
use cmdop_screen::Screen;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const ROWS: u16 = 30;
const COLS: u16 = 100;

/// What `session show NAME --screen --json` says, read from the node directly.
fn node_screen(home: &Home, name: &str) -> serde_json::Value {
    let out = home
        .cmdop(&[
            "session", "show", name, "--host", "local", "--screen", "--json",
        ])
        .ok();
    serde_json::from_str(&out).unwrap()
}

fn rows_of(screen: &serde_json::Value) -> Vec<String> {
    screen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn show_screen_prints_the_screen_as_text_and_json() {
    let home = Home::new("screen-show");
    let _node = NodeProcess::start(&home, free_port(), "");
    home.cmdop(&["session", "create", "local", "--name", "scr"])
        .ok();
    home.cmdop(&[
        "session",
        "send",
        "scr",
        r"clear; printf '\e[1malpha\e[0m\\nbe''ta\\n'\n",
    ])
    .ok();
    let screen = || home.cmdop(&["session", "show", "scr", "--screen"]).ok();
    assert!(
        wait_until(WAIT, || screen().lines().any(|l| l == "beta")),
        "{}",
        screen()
    );
    let text = screen();
    let rows: Vec<&str> = text.lines().collect();
    let alpha = rows.iter().position(|r| *r == "alpha").unwrap();
    assert_eq!(rows[alpha + 1], "beta");
    // With --ansi the bold survives.
    let ansi = home
        .cmdop(&["session", "show", "scr", "--screen", "--ansi"])
        .ok();
    assert!(
        ansi.contains("\x1b[1malpha") || ansi.contains(";1malpha"),
        "{ansi:?}"
    );
    // JSON: the rows, the cursor below "beta", and no full-screen program.
    let json = node_screen(&home, "scr");
    assert_eq!(rows_of(&json)[alpha + 1], "beta");
    assert!(json["cursor"]["row"].as_u64().unwrap() > alpha as u64 + 1);
    assert_eq!(json["alternate_screen"], false);
    // A full-screen program's alternate screen is reported as such.
    home.cmdop(&[
        "session",
        "send",
        "scr",
        r"printf '\e[?1049h\e[HFULL'; sleep 30\n",
    ])
    .ok();
    assert!(wait_until(WAIT, || node_screen(&home, "scr")
        ["alternate_screen"]
        == true));
    assert_eq!(rows_of(&node_screen(&home, "scr"))[0], "FULL");
}

/// A node, a 1 Mbit/s relay with 100 ms round trip in front of it, and a client through it.
struct SlowLink(Relayed);

impl SlowLink {
    fn new(tag: &str) -> SlowLink {
        let impairments = Impairments {
            delay: Duration::from_millis(50),
            rate_bytes_per_sec: Some(125_000),
            queue_bytes: 64 * 1024,
            ..Impairments::default()
        };
        SlowLink(Relayed::start(tag, "", impairments, 11, "slow"))
    }

    fn connect(&self, name: &str) -> Terminal {
        let mut term = Terminal::spawn(
            &bin("cmdop"),
            &["connect", "slow", "--name", name],
            &self.0.home.path,
            ROWS,
            COLS,
        );
        term.expect("# ", WAIT);
        term.type_line("PS1='ok''> '");
        term.expect("ok> ", WAIT);
        term
    }
}

#[test]
fn ctrl_c_under_a_flood_on_a_slow_link_skips_to_the_screen() {
    let link = SlowLink::new("slow-flood");
    let mut term = link.connect("flood");
    term.type_line("seq 1 100000000");
    // Let the flood fill every buffer on the way.
    term.expect("\r\n2000\r\n", WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let pressed = Instant::now();
    term.type_bytes(b"\x03");
    term.type_line("echo after-$((6*7))");
    term.expect("after-42", WAIT);
    let elapsed = pressed.elapsed();
    // Without skipping, the backlog at 1 Mbit/s took 44 s to drain.
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    term.expect("[cmdop: skipped ", WAIT);

    // Once output settles, the slow client shows the screen the node has, row for row (the
    // top row may hold the client's status line).
    let settled = || {
        let mut client = Screen::new(COLS, ROWS);
        client.feed(&term.output());
        let node = rows_of(&node_screen(&link.0.home, "flood"));
        let ours: Vec<String> = client.rows_text().into_iter().skip(1).collect();
        (ours == node[1..], ours, node)
    };
    assert!(
        wait_until(Duration::from_secs(10), || settled().0),
        "client and node screens differ: {:#?}",
        settled()
    );
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}

#[test]
fn output_a_slow_link_can_carry_arrives_whole_with_no_skip() {
    let link = SlowLink::new("slow-whole");
    let mut term = link.connect("whole");
    // 110,000 bytes on the wire (13,750 lines of 8), printed at once, nobody typing: about a
    // second at 1 Mbit/s.
    term.type_line("seq 100000 113749; echo DONE-$((1+1))");
    term.expect("DONE-2", WAIT);
    let text = term.text();
    assert!(!text.contains("[cmdop: skipped"), "skipped output");
    let seen: Vec<u64> = text
        .split("\r\n")
        .filter_map(|line| line.parse().ok())
        .filter(|n| (100_000..=113_749).contains(n))
        .collect();
    let expected: Vec<u64> = (100_000..=113_749).collect();
    assert_eq!(seen, expected, "every line, once, in order");
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}
