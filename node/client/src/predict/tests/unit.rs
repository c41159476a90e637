//! One test per behaviour of the prediction engine, on a fake clock.

use crate::predict::timing::{ECHO_TIMEOUT, GLITCH_THRESHOLD};
use crate::predict::{Overlay, OverlayCell, PredictMode, Predictor};
use cmdop_screen::Screen;
use std::time::{Duration, Instant};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A predictor, the client's screen and a clock, at a `$ ` prompt.
struct Rig {
    predictor: Predictor,
    screen: Screen,
    now: Instant,
    seq: u64,
}

impl Rig {
    fn new(mode: PredictMode, rtt: u64) -> Self {
        let mut screen = Screen::new(40, 5);
        screen.feed(b"$ ");
        let mut predictor = Predictor::new(mode);
        predictor.set_rtt(ms(rtt));
        Self {
            predictor,
            screen,
            now: Instant::now(),
            seq: 0,
        }
    }

    /// A rig whose first epoch is confirmed: `l` typed and echoed.
    fn confirmed(mode: PredictMode, rtt: u64) -> Self {
        let mut rig = Self::new(mode, rtt);
        rig.key(b"l");
        rig.echo(b"l");
        rig.wait(1000);
        rig
    }

    fn key(&mut self, bytes: &[u8]) {
        let Self {
            predictor, screen, ..
        } = self;
        predictor.keystroke(bytes, self.seq, screen, self.now);
        self.seq += bytes.len() as u64;
    }

    /// Everything typed so far reached the PTY.
    fn ack(&mut self) {
        self.predictor.echo_ack(self.seq, self.now);
        self.predictor.output(&self.screen, self.now);
    }

    /// Node output arrives.
    fn node(&mut self, bytes: &[u8]) {
        self.screen.feed(bytes);
        self.predictor.output(&self.screen, self.now);
    }

    /// The acknowledgement, then the echo.
    fn echo(&mut self, bytes: &[u8]) {
        self.ack();
        self.node(bytes);
    }

    fn wait(&mut self, millis: u64) {
        self.now += ms(millis);
        self.predictor.output(&self.screen, self.now);
    }

    fn overlay(&self) -> Overlay {
        self.predictor.overlay(&self.screen, self.now)
    }

    /// The overlay's characters in order.
    fn shown(&self) -> String {
        self.overlay().cells.iter().map(|cell| cell.ch).collect()
    }
}

fn cell(col: u16, row: u16, ch: char, underline: bool) -> OverlayCell {
    OverlayCell {
        col,
        row,
        ch,
        underline,
    }
}

#[test]
fn first_epoch_is_hidden_until_an_acknowledged_echo_confirms_it() {
    let mut rig = Rig::new(PredictMode::Always, 200);
    rig.key(b"l");
    assert_eq!(rig.overlay(), Overlay::default());

    // The echo alone is not enough: the keystroke must be acknowledged.
    rig.node(b"l");
    rig.key(b"s");
    assert_eq!(rig.overlay(), Overlay::default());

    rig.ack();
    let overlay = rig.overlay();
    assert_eq!(overlay.cells, [cell(3, 0, 's', true)]);
    assert_eq!(overlay.cursor, Some((4, 0)));

    // Echoed: the screen shows it, the overlay only keeps the cursor until
    // the grace period has passed.
    rig.echo(b"s");
    assert_eq!(rig.overlay().cells, []);
    assert_eq!(rig.overlay().cursor, Some((4, 0)));
    rig.wait(300);
    assert_eq!(rig.overlay(), Overlay::default());
}

#[test]
fn a_password_is_never_shown() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"s");
    assert_eq!(rig.shown(), "s", "the epoch before Enter is confirmed");
    rig.echo(b"s");

    rig.key(b"\r");
    rig.echo(b"\r\nPassword: ");
    rig.wait(400);
    for (i, &byte) in b"hunter2 x".iter().enumerate() {
        rig.key(&[byte]);
        assert_eq!(rig.shown(), "", "key {i}");
        rig.wait(30);
        assert_eq!(rig.shown(), "", "key {i}");
        rig.ack();
        for _ in 0..10 {
            rig.wait(40);
            assert_eq!(rig.shown(), "", "key {i}");
        }
    }
    rig.key(b"\r");
    rig.echo(b"\r\n$ ");
    rig.wait(1000);
    assert_eq!(rig.overlay(), Overlay::default());
}

#[test]
fn after_enter_the_first_echo_confirms_the_new_epoch() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"\r");
    rig.echo(b"\r\nName: ");
    rig.wait(400);
    rig.key(b"a");
    assert_eq!(rig.shown(), "");
    rig.echo(b"a");
    rig.key(b"b");
    assert_eq!(rig.overlay().cells, [cell(7, 1, 'b', true)]);
}

#[test]
fn typing_before_the_screen_caught_up_is_not_predicted() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"\t");
    rig.key(b"a");
    rig.ack();
    rig.node(b"\x07a");
    rig.key(b"b");
    assert_eq!(rig.overlay(), Overlay::default(), "within the grace period");
    rig.echo(b"b");
    rig.wait(400);
    rig.key(b"c");
    assert_eq!(
        rig.overlay(),
        Overlay::default(),
        "a new, unconfirmed epoch"
    );
    rig.echo(b"c");
    rig.key(b"d");
    assert_eq!(rig.shown(), "d");
}

#[test]
fn a_wrong_guess_is_erased_and_resets() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"b");
    assert_eq!(rig.shown(), "b");
    // The program draws something else; within the grace period the guess
    // stays, after it the guess is wrong.
    rig.echo(b"X");
    assert_eq!(rig.shown(), "b");
    rig.wait(149);
    assert_eq!(rig.shown(), "b");
    rig.wait(1);
    assert_eq!(rig.overlay(), Overlay::default());

    // Reset: the next guess waits for a new confirmation.
    rig.key(b"c");
    assert_eq!(rig.overlay(), Overlay::default());
    rig.echo(b"c");
    rig.key(b"d");
    assert_eq!(rig.overlay().cells, [cell(5, 0, 'd', true)]);
}

#[test]
fn a_wrong_cursor_resets() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"\x1b[C");
    assert_eq!(rig.overlay().cursor, Some((4, 0)));
    // The shell refuses to move past the end of the line.
    rig.echo(b"");
    rig.wait(200);
    rig.key(b"x");
    assert_eq!(rig.overlay(), Overlay::default());
}

#[test]
fn backspace_and_arrows_move_the_cursor() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"a");
    rig.echo(b"a");
    rig.wait(1000);
    rig.key(b"b");
    rig.echo(b"b");
    // "$ lab", cursor after it.
    rig.key(b"\x7f");
    assert_eq!(rig.overlay().cells, [cell(4, 0, ' ', true)]);
    assert_eq!(rig.overlay().cursor, Some((4, 0)));
    rig.key(b"\x08");
    assert_eq!(rig.overlay().cursor, Some((3, 0)));
    rig.key(b"\x1b[C");
    assert_eq!(rig.overlay().cursor, Some((4, 0)));
    rig.key(b"\x1bOC");
    assert_eq!(rig.overlay().cursor, Some((5, 0)));
    rig.key(b"\x1b[D");
    rig.key(b"\x1bOD");
    rig.key(b"\x1b[D");
    assert_eq!(rig.overlay().cursor, Some((2, 0)));
    rig.key(b"z");
    let expected = [
        cell(4, 0, ' ', true),
        cell(3, 0, ' ', true),
        cell(2, 0, 'z', true),
    ];
    assert_eq!(rig.overlay().cells, expected);
    assert_eq!(rig.overlay().cursor, Some((3, 0)));
}

#[test]
fn an_escape_sequence_split_across_reads_is_not_text() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"a");
    rig.key(b"\x1b");
    rig.key(b"[");
    rig.key(b"D");
    assert_eq!(rig.overlay().cells, [cell(3, 0, 'a', true)]);
    assert_eq!(rig.overlay().cursor, Some((3, 0)));
}

#[test]
fn a_paste_resets() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"x");
    assert_eq!(rig.shown(), "x");
    rig.key(&[b'p'; 100]);
    assert_eq!(rig.overlay(), Overlay::default());
    rig.key(b"y");
    assert_eq!(rig.overlay(), Overlay::default());

    // Fewer bytes at once are typing.
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(&[b'p'; 20]);
    assert_eq!(rig.shown(), "p".repeat(20));
}

#[test]
fn adaptive_display_follows_the_round_trip() {
    for (rtt, shown, underline) in [(40, false, false), (120, true, false), (200, true, true)] {
        let mut rig = Rig::confirmed(PredictMode::Adaptive, rtt);
        rig.key(b"s");
        let expected = if shown {
            vec![cell(3, 0, 's', underline)]
        } else {
            Vec::new()
        };
        assert_eq!(rig.overlay().cells, expected, "rtt {rtt}");
        assert_eq!(rig.overlay().cursor.is_some(), shown, "rtt {rtt}");
    }
}

#[test]
fn a_long_pending_guess_turns_display_on() {
    let mut rig = Rig::confirmed(PredictMode::Adaptive, 40);
    rig.key(b"q");
    rig.wait(249);
    assert_eq!(rig.shown(), "");
    rig.now += ms(1);
    assert_eq!(rig.shown(), "q", "due before the next check");
    rig.wait(0);
    rig.echo(b"q");
    assert_eq!(rig.shown(), "");

    // The glitch trigger stays on for later keystrokes.
    rig.key(b"r");
    assert_eq!(rig.shown(), "r");
}

#[test]
fn never_shows_anything() {
    let mut rig = Rig::confirmed(PredictMode::Never, 500);
    rig.key(b"s");
    rig.wait(10_000);
    assert_eq!(rig.overlay(), Overlay::default());
    assert_eq!(rig.predictor.deadline(), None);
}

#[test]
fn the_last_column_is_not_predicted() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(&[b'a'; 36]);
    assert_eq!(rig.shown(), "a".repeat(36));
    assert_eq!(rig.overlay().cursor, Some((39, 0)));
    rig.key(b"b");
    assert_eq!(rig.shown(), "a".repeat(36), "no guess in the last column");
    assert_eq!(rig.overlay().cursor, None);
}

#[test]
fn utf8_is_predicted_wide_characters_are_not() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key("é".as_bytes());
    assert_eq!(rig.overlay().cells, [cell(3, 0, 'é', true)]);
    rig.echo("é".as_bytes());
    rig.key("中".as_bytes());
    rig.key(b"x");
    assert_eq!(rig.overlay(), Overlay::default());
}

#[test]
fn a_resize_resets() {
    let mut rig = Rig::confirmed(PredictMode::Always, 200);
    rig.key(b"s");
    assert_eq!(rig.shown(), "s");
    rig.screen.resize(50, 5);
    rig.wait(0);
    assert_eq!(rig.overlay(), Overlay::default());
}

#[test]
fn deadline_names_the_next_check() {
    let mut rig = Rig::confirmed(PredictMode::Adaptive, 40);
    assert_eq!(rig.predictor.deadline(), None);
    let typed = rig.now;
    rig.key(b"s");
    assert_eq!(rig.predictor.deadline(), Some(typed + GLITCH_THRESHOLD));
    rig.wait(10);
    rig.ack();
    // Grace at 40 ms: 50 ms plus the 20 ms send interval.
    let judged = rig.now + ECHO_TIMEOUT + ms(20);
    assert_eq!(rig.predictor.deadline(), Some(judged));
}

#[test]
fn modes_parse() {
    assert_eq!("adaptive".parse(), Ok(PredictMode::Adaptive));
    assert_eq!("Always".parse(), Ok(PredictMode::Always));
    assert_eq!("never".parse(), Ok(PredictMode::Never));
    assert!("sometimes".parse::<PredictMode>().is_err());
}
