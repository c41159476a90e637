//! Predictive local echo through a 200 ms round trip: a password is never drawn, and once the
//! typing is done no prediction is left behind (the client's screen equals the node's).

use cmdop_e2e::pty::Terminal;
use cmdop_e2e::{bin, wait_until, Relayed};
use cmdop_netsim::Impairments;
use cmdop_screen::Screen;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const ROWS: u16 = 24;
const COLS: u16 = 80;

/// A node behind a relay with 100 ms each way, and a client home that reaches it through it.
struct FarNode(Relayed);

impl FarNode {
    fn new(tag: &str) -> FarNode {
        let impairments = Impairments {
            delay: Duration::from_millis(100),
            ..Impairments::default()
        };
        FarNode(Relayed::start(tag, "", impairments, 13, "far"))
    }

    fn connect(&self, name: &str) -> Terminal {
        let mut term = Terminal::spawn(
            &bin("cmdop"),
            &["connect", "far", "--name", name, "--predict", "always"],
            &self.0.home.path,
            ROWS,
            COLS,
        );
        term.expect("# ", WAIT);
        term.type_line("PS1='ok''> '");
        term.expect("ok> ", WAIT);
        term
    }

    /// The node's screen rows, read from the node directly.
    fn node_rows(&self, name: &str) -> Vec<String> {
        let out = self
            .0
            .home
            .cmdop(&[
                "session", "show", name, "--host", "local", "--screen", "--json",
            ])
            .ok();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        value["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_str().unwrap().to_string())
            .collect()
    }
}

/// Types `text` a key at a time, 150 ms apart, as a person does.
fn type_slowly(term: &mut Terminal, text: &str) {
    for ch in text.chars() {
        term.type_bytes(ch.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Whether `bytes` hold a cursor move to a row and column (`ESC [ n ; m H`).
fn has_cursor_move(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(at, w)| {
        if w != b"\x1b[" {
            return false;
        }
        let rest = &bytes[at + 2..];
        let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
        let row = digits(rest);
        row > 0
            && rest.get(row) == Some(&b';')
            && digits(&rest[row + 1..]) > 0
            && rest.get(row + 1 + digits(&rest[row + 1..])) == Some(&b'H')
    })
}

/// What the client's terminal shows, rendered from everything it was sent.
fn client_rows(term: &Terminal) -> Vec<String> {
    let mut screen = Screen::new(COLS, ROWS);
    screen.feed(&term.output());
    screen.rows_text()
}

#[test]
fn a_password_at_a_silent_prompt_is_never_drawn() {
    let far = FarNode::new("predict-password");
    let mut term = far.connect("secret");
    // Once a keystroke of the line is echoed (the epoch confirmed), the next ones, typed well
    // within a round trip, are drawn before their echo.
    term.type_bytes(b"e");
    term.expect("ok> e", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    for ch in "cho warm-$((1+1))".chars() {
        term.type_bytes(ch.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(30));
    }
    term.type_bytes(b"\r");
    term.expect("warm-2", WAIT);
    // A prompt that does not echo (what `read -s` and sudo do).
    type_slowly(
        &mut term,
        "stty -echo; read pw; stty echo; echo got-${#pw}\r",
    );
    std::thread::sleep(Duration::from_millis(800));
    // Letters that appear nowhere else in the session's output.
    type_slowly(&mut term, "QZXQZX\r");
    term.expect("got-6", WAIT);
    let shown = term.output();
    // Predictions were on (drawn with absolute cursor moves, which this shell never sends)...
    assert!(
        has_cursor_move(&shown),
        "no prediction was drawn at all: {:?}",
        String::from_utf8_lossy(&shown)
    );
    // ...and never for the password.
    for secret in [b'Q', b'Z', b'X'] {
        assert!(
            !shown.contains(&secret),
            "{} was drawn: {:?}",
            secret as char,
            String::from_utf8_lossy(&shown)
        );
    }
}

#[test]
fn after_typing_no_prediction_is_left_behind() {
    let far = FarNode::new("predict-converge");
    let mut term = far.connect("typing");
    type_slowly(&mut term, "echo predicted-$((2+3)) and more words");
    // Erase a word with backspaces and move with the arrows, then run it.
    type_slowly(&mut term, "\x7f\x7f\x7f\x7f\x7f");
    type_slowly(&mut term, "\x1b[D\x1b[C\r");
    term.expect("predicted-5 and more", WAIT);
    assert_converges(&far, &term, "typing");
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}

/// Waits until the client's screen equals the node's (no guess left on it).
fn assert_converges(far: &FarNode, term: &Terminal, name: &str) {
    let same = || client_rows(term) == far.node_rows(name);
    assert!(
        wait_until(Duration::from_secs(5), same),
        "client {:#?}\nnode {:#?}",
        client_rows(term),
        far.node_rows(name)
    );
}

#[test]
fn vim_normal_mode_insert_mode_and_a_paste_leave_no_prediction_behind() {
    let far = FarNode::new("predict-vim");
    let mut term = far.connect("editor");
    let file = far.0.home.path.join("words.txt");
    std::fs::write(
        &file,
        "one two three\nfour five six\nseven eight\nnine ten\n",
    )
    .unwrap();
    term.type_line(&format!("vim -u NONE -N {}", file.display()));
    term.expect("nine ten", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    // Normal-mode commands: printable keys that are never echoed.
    type_slowly(&mut term, "jjjwwkb");
    // Insert mode: echoed text.
    type_slowly(&mut term, "iquick ");
    term.type_bytes(b"\x1b");
    std::thread::sleep(Duration::from_millis(500));
    assert_converges(&far, &term, "editor");
    type_slowly(&mut term, ":q!\r");
    term.expect("ok> ", WAIT);
    // A paste: 150 bytes at once, no guesses for it.
    let pasted = format!("echo {}", "p".repeat(145));
    term.type_bytes(pasted.as_bytes());
    term.type_bytes(b"\r");
    term.expect(&"p".repeat(145), WAIT);
    assert_converges(&far, &term, "editor");
    term.type_bytes(b"\x04");
    assert_eq!(term.wait_exit(WAIT), Some(0));
}
