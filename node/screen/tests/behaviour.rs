//! Garbage input, size clamping, resizing, text views and the comparison
//! helper itself.

mod common;

use cmdop_screen::{clamp_size, Screen, MAX_COLS, MAX_ROWS};
use common::{feed_in_pieces, session_stream, Rng};

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(11);

    for round in 0..50 {
        let (cols, rows) = (1 + rng.below(100) as u16, 1 + rng.below(40) as u16);
        let mut screen = Screen::new(cols, rows);
        let garbage = rng.bytes(20_000);
        feed_in_pieces(&mut rng, &garbage, 64, |piece| screen.feed(piece));

        if round % 5 == 0 {
            screen.resize(1 + rng.below(200) as u16, 1 + rng.below(60) as u16);
        }

        // Whatever state garbage left, it must still dump and restore.
        let mut copy = Screen::new(screen.size().0, screen.size().1);
        copy.feed(&screen.frame());
        assert_eq!(screen.compare(&copy), Ok(()), "round {round}");
        assert_eq!(screen.rows_text().len(), usize::from(screen.size().1));
        let _ = screen.rows_ansi();
    }
}

#[test]
fn escape_heavy_garbage_never_panics() {
    // Bytes biased towards ESC, CSI parameters and C1 controls reach deep
    // parser states that uniform bytes rarely do.
    const ALPHABET: &[u8] = b"\x1b\x1b\x1b[[]P?;:0123456789hlmqHJKr \x07\x18\x9b\xc2\xe6\xff\n\r";
    let mut rng = Rng::new(12);
    let mut screen = Screen::new(80, 24);

    for _ in 0..200_000 {
        screen.feed(&[ALPHABET[rng.below(ALPHABET.len())]]);
    }

    let mut copy = Screen::new(80, 24);
    copy.feed(&screen.frame());
    assert_eq!(screen.compare(&copy), Ok(()));
}

#[test]
fn absurd_sizes_are_clamped() {
    assert_eq!(clamp_size(0, 0), (1, 1));
    assert_eq!(clamp_size(65535, 65535), (MAX_COLS, MAX_ROWS));
    assert_eq!(clamp_size(80, 24), (80, 24));
    assert_eq!(clamp_size(0, 24), (1, 24));
    assert_eq!(Screen::new(0, 0).size(), (1, 1));
    assert_eq!(Screen::new(65535, 65535).size(), (MAX_COLS, MAX_ROWS));
    let mut screen = Screen::new(80, 24);
    screen.resize(0, 65535);
    assert_eq!(screen.size(), (1, MAX_ROWS));
    // A 1x1 screen still takes output, wide characters included.
    let mut tiny = Screen::new(0, 0);
    tiny.feed("界x\r\n\x1b[31m日".as_bytes());
    assert_eq!(tiny.rows_text().len(), 1);
}

#[test]
fn resize_follows() {
    let mut screen = Screen::new(20, 5);
    screen.feed(b"first\r\n0123456789abcdefghijKLMNO\r\nlast");
    assert_eq!(screen.rows_text()[1..3], ["0123456789abcdefghij", "KLMNO"]);

    // Narrower: the soft-wrapped line reflows and the cursor follows the
    // text; the top row scrolls away (the node's ring buffer keeps history).
    screen.resize(10, 5);
    assert_eq!(screen.size(), (10, 5));
    let narrow = ["0123456789", "abcdefghij", "KLMNO", "last", ""];
    assert_eq!(screen.rows_text(), narrow);
    assert_eq!(screen.cursor(), (4, 3, true));

    // Wider and taller: the line joins again.
    screen.resize(40, 8);
    assert_eq!(screen.size(), (40, 8));
    assert!(screen
        .rows_text()
        .iter()
        .any(|row| row == "0123456789abcdefghijKLMNO"));
    let (col, row, visible) = screen.cursor();
    assert!(visible && col == 4);
    assert_eq!(screen.rows_text()[usize::from(row)], "last");

    // Output after the resize uses the new width.
    screen.feed(&[b'#'; 45]);
    assert_eq!(screen.rows_text()[usize::from(row)].len(), 40);
}

#[test]
fn text_views_and_cursor() {
    let mut screen = Screen::new(20, 3);
    screen.feed(b"\x1b[1;31mred\x1b[0m plain   \r\n");
    screen.feed("\x1b[42m  \x1b[0m wide 界\x1b[?25l".as_bytes());
    assert_eq!(screen.rows_text(), ["red plain", "   wide 界", ""]);
    let ansi = screen.rows_ansi();
    assert_eq!(ansi[0], "\x1b[0;1;31mred\x1b[0m plain");
    assert_eq!(ansi[1], "\x1b[0;42m  \x1b[0m wide 界");
    assert_eq!(ansi[2], "");
    assert_eq!(screen.cursor(), (10, 1, false));

    // A full last row leaves the cursor waiting to wrap; it reports the last column.
    screen.feed(b"\x1b[3;1H");
    screen.feed(&[b'x'; 20]);
    assert_eq!(screen.cursor(), (19, 2, false));
}

#[test]
fn alternate_screen_views() {
    let mut screen = Screen::new(20, 3);
    screen.feed(b"shell$ vim\r\n\x1b[?1049h\x1b[H\x1b[2Jeditor");
    assert!(screen.alternate_screen());
    assert_eq!(screen.rows_text()[0], "editor");
    screen.feed(b"\x1b[?1049l");
    assert!(!screen.alternate_screen());
    assert_eq!(screen.rows_text()[0], "shell$ vim");
}

#[test]
fn compare_reports_each_kind_of_difference() {
    let base = "text\x1b[2;3H";
    let variants: [&[u8]; 11] = [
        b"\x1b[31m",         // pen only: no cell differs
        b"\x1b[2;3r",        // scroll region (hidden state)
        b"\x1b7\x1b[H\x1b8", // saved cursor
        b"\x1b[?6h",         // origin mode
        b"\x1b[?2004h",      // bracketed paste (extra mode)
        b"\x1b[5",           // half-parsed escape sequence
        b"\xe4\xb8",         // half-received UTF-8 character
        b"\x1b[?1049h",      // alternate screen
        b"\x1b[?25l",        // cursor visibility
        b"x",                // a cell
        b"\x1b[3g",          // tab stops
    ];

    for variant in variants {
        let mut a = Screen::new(10, 4);
        let mut b = Screen::new(10, 4);
        a.feed(base.as_bytes());
        b.feed(base.as_bytes());
        b.feed(variant);
        let shown = String::from_utf8_lossy(variant);
        assert!(a.compare(&b).is_err(), "{shown:?} went unnoticed");
    }

    let mut c = Screen::new(10, 5);
    c.feed(base.as_bytes());
    let mut a = Screen::new(10, 4);
    a.feed(base.as_bytes());
    assert!(a.compare(&c).is_err(), "size went unnoticed");
}

#[test]
fn feed_is_independent_of_chunking() {
    let stream = session_stream(50, 12, 5);
    let mut whole = Screen::new(50, 12);
    whole.feed(&stream);
    let mut bytewise = Screen::new(50, 12);

    for byte in &stream {
        bytewise.feed(std::slice::from_ref(byte));
    }

    assert_eq!(whole.compare(&bytewise), Ok(()));
}

#[test]
fn screen_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Screen>();
}
