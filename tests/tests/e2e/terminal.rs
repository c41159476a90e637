//! `cmdop connect` in a pseudo-terminal, as a person would use it.

use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, free_port, sessions_json, wait_until, Home, NodeProcess};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn connect(home: &Home, args: &[&str]) -> Terminal {
    let mut all = vec!["connect", "local"];
    all.extend_from_slice(args);
    Terminal::spawn(&bin("cmdop"), &all, &home.path, 30, 100)
}

#[test]
fn type_detach_and_reattach_shows_earlier_output() {
    let home = Home::new("term-basic");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &["--name", "work"]);
    term.type_line("echo typed-$((40+2))");
    term.expect("typed-42", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
    term.expect("detached from session work", WAIT);
    term.expect("cmdop connect local --session work", WAIT);

    let detached = wait_until(WAIT, || {
        let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
        assert_eq!(s.len(), 1, "the session survives the detach");
        s[0]["attached"] == false
    });
    assert!(detached, "the node still counts the client as attached");

    // Reconnecting reuses the detached session and replays its scrollback.
    let mut again = connect(&home, &[]);
    again.expect("typed-42", WAIT);
    again.type_line("echo second-$((1+1))");
    again.expect("second-2", WAIT);
    again.type_bytes(b"\x04");
    assert_eq!(again.wait_exit(WAIT), Some(0), "{}", again.text());
}

#[test]
fn a_terminal_that_stops_reading_holds_up_only_the_output() {
    let home = Home::new("term-stalled");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &[]);
    term.type_line("echo ready-$((1+1))");
    term.expect("ready-2", WAIT);
    term.pause_reading();
    // Far more output than the PTY holds: the client's writes to its terminal wait.
    term.type_line("seq 1 300000; echo flood-$((2+3))-done");
    std::thread::sleep(Duration::from_millis(500));
    let marker = home.path.join("typed-while-stalled");
    term.type_line(&format!("touch {}", marker.display()));
    assert!(
        wait_until(WAIT, || marker.exists()),
        "keystrokes typed while the terminal was not reading never reached the session"
    );
    term.resume_reading();
    term.expect("flood-5-done", WAIT);
    term.type_line("echo after-$((3+4))");
    term.expect("after-7", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0), "{}", term.text());
}

#[test]
fn second_attach_is_refused_and_takeover_wins() {
    let home = Home::new("term-takeover");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut first = connect(&home, &["--name", "shared"]);
    // Markers are computed by the remote shell, so the local echo of the typed line (before
    // the client enters raw mode) cannot satisfy them.
    first.type_line("echo first-$((1+1))");
    first.expect("first-2", WAIT);

    let mut refused = connect(&home, &["--session", "shared"]);
    assert_eq!(refused.wait_exit(WAIT), Some(1));
    let text = refused.text();
    assert!(
        text.contains("is held by client") && text.contains("--takeover"),
        "{text}"
    );

    let mut second = connect(&home, &["--session", "shared", "--takeover"]);
    second.expect("first-2", WAIT);
    assert_eq!(first.wait_exit(WAIT), Some(0));
    first.expect("taken over by client", WAIT);
    second.type_line("echo second-$((2+2))");
    second.expect("second-4", WAIT);
    second.type_bytes(b"\x04");
    assert_eq!(second.wait_exit(WAIT), Some(0));
}

#[test]
fn read_only_viewer_sees_output_but_cannot_type() {
    let home = Home::new("term-viewer");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut owner = connect(&home, &["--name", "watched"]);
    owner.type_line("echo ready-$((3+3))");
    owner.expect("ready-6", WAIT);
    let mut viewer = connect(&home, &["--session", "watched", "--read-only"]);
    viewer.expect("ready-6", WAIT);
    viewer.type_line("echo viewer-typed-$((3*3))");
    owner.type_line("echo owner-typed-$((2*2))");
    viewer.expect("owner-typed-4", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !owner.text().contains("viewer-typed-9"),
        "viewer keystrokes reached the session"
    );
    let tail = home
        .cmdop(&["session", "show", "watched", "--tail", "50"])
        .ok();
    assert!(!tail.contains("viewer-typed"), "{tail}");
    viewer.type_bytes(b"\x04");
    assert_eq!(viewer.wait_exit(WAIT), Some(0));
    owner.type_bytes(b"\x04");
    assert_eq!(owner.wait_exit(WAIT), Some(0));
}

#[test]
fn resize_reaches_the_remote_and_exit_code_propagates() {
    let home = Home::new("term-resize");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &[]);
    term.type_line("stty size");
    term.expect("30 100", WAIT);
    term.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    term.type_line("stty size");
    term.expect("40 120", WAIT);
    term.type_line("exit 7");
    assert_eq!(term.wait_exit(WAIT), Some(7));
    term.expect("exited with code 7", WAIT);
}

#[test]
fn ctrl_c_stops_a_flood_and_the_prompt_returns() {
    let home = Home::new("term-flood");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &[]);
    term.type_line("PS1='pr''ompt> '");
    term.expect("prompt> ", WAIT);
    term.type_line("yes flood");
    term.expect("flood\r\nflood\r\nflood", WAIT);
    term.type_bytes(b"\x03");
    term.type_line("echo after-$((5*5))");
    term.expect("after-25", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}

#[test]
fn takeover_during_a_flood_detaches_the_old_holder_at_once() {
    let home = Home::new("term-flood-takeover");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut first = connect(&home, &["--name", "busy"]);
    first.type_line("yes flood");
    first.expect("flood\r\nflood\r\nflood", WAIT);
    let mut second = connect(&home, &["--session", "busy", "--takeover"]);
    // The old holder is told even though its output never stops.
    assert_eq!(first.wait_exit(WAIT), Some(0), "{}", tail_text(&first));
    assert!(first.text().contains("taken over by client"));
    second.type_bytes(b"\x03");
    second.type_line("echo mine-$((20+3))");
    second.expect("mine-23", WAIT);
    second.type_bytes(b"\x04");
    assert_eq!(second.wait_exit(WAIT), Some(0));
}

#[test]
fn output_printed_just_before_the_shell_exits_is_shown() {
    let home = Home::new("term-last-words");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &[]);
    term.type_line("printf 'last-words-%s\\n' $((40+2)); exit 3");
    assert_eq!(term.wait_exit(WAIT), Some(3));
    term.expect("last-words-42", WAIT);
}

fn tail_text(term: &Terminal) -> String {
    let text: String = term.text().replace("flood\r\n", "");
    let text: Vec<char> = text.chars().collect();
    text[text.len().saturating_sub(2000)..].iter().collect()
}

#[test]
fn session_attach_interactive_opens_the_named_session() {
    let home = Home::new("term-attach-i");
    let _node = NodeProcess::start(&home, free_port(), "");
    home.cmdop(&["session", "create", "local", "--name", "named"])
        .ok();
    home.cmdop(&["session", "send", "named", r"echo before-attach-$((3+4))\n"])
        .ok();
    let mut term = Terminal::spawn(
        &bin("cmdop"),
        &["session", "attach", "named", "--interactive"],
        &home.path,
        30,
        100,
    );
    term.expect("before-attach-7", WAIT);
    term.type_line("echo inside-$((8*8))");
    term.expect("inside-64", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
    term.expect("detached from session named", WAIT);
}

#[test]
fn the_detach_key_is_configurable_and_a_literal_ctrl_d_can_be_sent() {
    let home = Home::new("term-keys");
    let node = NodeProcess::start(&home, free_port(), "");
    // The harness wrote node settings; add the client's detach key.
    let config = std::fs::read_to_string(home.path.join("config.yaml")).unwrap();
    home.write_config(&config.replace("client:\n", "client:\n  detach_key: ctrl-q\n"));
    let _ = &node;
    let mut term = connect(&home, &[]);
    // Ctrl+D is an ordinary key now: it ends `cat`, not the attachment.
    term.type_line("cat; echo cat-ended-$((1+1))");
    std::thread::sleep(Duration::from_millis(300));
    term.type_bytes(b"\x04");
    term.expect("cat-ended-2", WAIT);
    // With the default key, Ctrl+] then Ctrl+D sends a literal Ctrl+D; here Ctrl+] Ctrl+Q sends
    // a literal Ctrl+Q (a no-op for the shell), and the client stays attached.
    term.type_bytes(b"\x1d\x11");
    term.type_line("echo still-here-$((5+5))");
    term.expect("still-here-10", WAIT);
    term.type_bytes(b"\x11");
    assert_eq!(term.wait_exit(WAIT), Some(0));
    term.expect("detached from session", WAIT);
}

#[test]
fn ctrl_bracket_then_ctrl_d_sends_a_literal_ctrl_d() {
    let home = Home::new("term-literal");
    let _node = NodeProcess::start(&home, free_port(), "");
    let mut term = connect(&home, &[]);
    term.type_line("cat; echo literal-worked-$((9+9))");
    std::thread::sleep(Duration::from_millis(300));
    term.type_bytes(b"\x1d\x04");
    term.expect("literal-worked-18", WAIT);
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}
