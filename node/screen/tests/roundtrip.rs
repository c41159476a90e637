//! The key property of the screen model: a dump restores a screen exactly.
//!
//! A realistic session stream (see `common::session_stream`) is cut at
//! random points. The prefix goes into emulator A in random pieces; A's
//! frame (reset + dump) goes into a fresh emulator B and into a dirty one C
//! that had shown something else; then the rest of the stream goes into all
//! three with different chunking. A, B and C must agree cell for cell,
//! cursor, modes and pending parser state included, at the cut, along the
//! way and at the end, where they must also match a screen fed the whole
//! stream at once.

mod common;

use cmdop_screen::{Screen, RESTORE_PREFIX};
use common::{assert_portable, feed_in_pieces, session_stream, Rng};

fn expect_same(a: &Screen, b: &Screen, context: &str) {
    if let Err(diff) = a.compare(b) {
        panic!("{context}: {diff}");
    }
}

/// Describes the bytes around `cut`, for failure messages.
fn around(stream: &[u8], cut: usize) -> String {
    let from = cut.saturating_sub(12);
    let to = (cut + 12).min(stream.len());
    format!(
        "cut {cut}: {:?} | {:?}",
        String::from_utf8_lossy(&stream[from..cut]),
        String::from_utf8_lossy(&stream[cut..to])
    )
}

/// What kind of place a cut falls in, to show the cuts cover the cases.
#[derive(Debug, Default)]
struct Coverage {
    alternate: usize,
    in_csi: usize,
    in_utf8: usize,
}

impl Coverage {
    fn record(&mut self, head: &[u8], screen: &Screen) {
        self.alternate += usize::from(screen.alternate_screen());
        let incomplete = matches!(std::str::from_utf8(head), Err(e) if e.error_len().is_none());
        self.in_utf8 += usize::from(incomplete);
        let csi = head.iter().rposition(|&b| b == 0x1b).is_some_and(|esc| {
            head.get(esc + 1) == Some(&b'[')
                && head[esc + 2..].iter().all(|b| (0x20..0x40).contains(b))
        });
        self.in_csi += usize::from(csi);
    }
}

fn check_cut(
    stream: &[u8],
    cut: usize,
    size: (u16, u16),
    whole: &Screen,
    rng: &mut Rng,
    coverage: &mut Coverage,
) {
    let (cols, rows) = size;
    let context = around(stream, cut);
    let (head, tail) = stream.split_at(cut);

    let mut a = Screen::new(cols, rows);
    feed_in_pieces(rng, head, 700, |piece| a.feed(piece));
    coverage.record(head, &a);

    let mut b = Screen::new(cols, rows);
    let frame = a.frame();
    assert_portable(&frame);
    b.feed(&frame);
    expect_same(&a, &b, &format!("fresh restore at {context}"));

    let mut c = Screen::new(cols, rows);
    c.feed(&stream[..rng.below(stream.len())]);
    c.feed(RESTORE_PREFIX);
    c.feed(&a.dump());
    expect_same(&a, &c, &format!("dirty restore at {context}"));

    let mut rest = tail;
    let mut step = 0;

    while !rest.is_empty() {
        let n = (1 + rng.below(400)).min(rest.len());
        let (chunk, after) = rest.split_at(n);
        a.feed(chunk);
        let split = rng.below(n + 1);
        b.feed(&chunk[..split]);
        b.feed(&chunk[split..]);
        feed_in_pieces(rng, chunk, 3, |piece| c.feed(piece));
        rest = after;
        step += 1;

        if step % 10 == 0 {
            let position = stream.len() - rest.len();
            expect_same(&a, &b, &format!("{context}, then at {position}"));
        }
    }

    expect_same(&a, &b, &format!("end after {context}"));
    expect_same(&a, &c, &format!("end after dirty {context}"));
    expect_same(whole, &a, &format!("chunking independence, {context}"));
}

/// Cut points: `random` seeded ones plus every offset near the first
/// occurrence of each marker (split escape sequences and characters).
fn cut_points(stream: &[u8], random: usize, rng: &mut Rng, markers: &[&str]) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..random).map(|_| rng.below(stream.len() + 1)).collect();

    for marker in markers {
        let marker = marker.as_bytes();
        let found = stream.windows(marker.len()).position(|w| w == marker);
        let Some(start) = found else {
            panic!("marker {marker:?} not in the stream");
        };
        cuts.extend(start..=start + marker.len());
    }

    cuts
}

fn check_stream(cols: u16, rows: u16, random_cuts: usize, seed: u64) {
    let stream = session_stream(usize::from(cols), usize::from(rows), seed);
    let mut whole = Screen::new(cols, rows);
    whole.feed(&stream);
    // The stream ends with the shell waiting and bracketed paste on.
    assert!(!whole.alternate_screen());
    assert!(whole.extra_modes().dec_mode(2004));

    let mut rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let markers = [
        "\x1b[6 q",
        "中文",
        "\x1b]2;notes",
        "\x1b[38;5;196m",
        "\x1b(0",
        "\x1b[?1049h",
        "🎉",
    ];

    let mut coverage = Coverage::default();
    let cuts = cut_points(&stream, random_cuts, &mut rng, &markers);

    for &cut in &cuts {
        check_cut(&stream, cut, (cols, rows), &whole, &mut rng, &mut coverage);
    }

    eprintln!("{} bytes, {} cuts: {coverage:?}", stream.len(), cuts.len());
    assert!(coverage.alternate >= cuts.len() / 5, "{coverage:?}");
    assert!(
        coverage.in_csi >= 10 && coverage.in_utf8 >= 5,
        "{coverage:?}"
    );
}

#[test]
fn restore_at_random_cuts_80x24() {
    check_stream(80, 24, 200, 1);
}

#[test]
fn restore_at_random_cuts_small_screen() {
    // A small screen puts wide characters, wrapping and scrolling at edges.
    check_stream(13, 5, 200, 2);
}

#[test]
fn restore_at_cuts_after_resizes() {
    let stream = session_stream(80, 24, 3);
    let mut rng = Rng::new(3);

    for _ in 0..20 {
        let cut = rng.below(stream.len() + 1);
        let mut a = Screen::new(80, 24);
        a.feed(&stream[..cut]);
        let (cols, rows) = (1 + rng.below(120) as u16, 1 + rng.below(50) as u16);
        a.resize(cols, rows);
        let mut b = Screen::new(cols, rows);
        b.feed(&a.frame());
        expect_same(
            &a,
            &b,
            &format!("resized to {cols}x{rows}, {}", around(&stream, cut)),
        );
        a.feed(&stream[cut..]);
        b.feed(&stream[cut..]);
        expect_same(&a, &b, &format!("end, resized to {cols}x{rows}"));
    }
}

#[test]
fn dump_restores_modes_avt_ignores() {
    let mut a = Screen::new(40, 10);
    a.feed(b"\x1b[?1049h\x1b[?1002h\x1b[?1006h\x1b[?2004h\x1b[?1004h\x1b=\x1b[4 q\x1b[>4;2m");
    let frame = String::from_utf8_lossy(&a.frame()).into_owned();

    for part in [
        "\x1b[?1002h",
        "\x1b[?1006h",
        "\x1b[?2004h",
        "\x1b[?1004h",
        "\x1b=",
        "\x1b[4 q",
    ] {
        assert!(frame.contains(part), "{part:?} missing from {frame:?}");
    }

    let mut b = Screen::new(40, 10);
    b.feed(&a.frame());
    expect_same(&a, &b, "modes");
    assert_eq!(b.extra_modes().cursor_style(), 4);
    assert_eq!(b.extra_modes().modify_other_keys(), 2);
}

#[test]
fn dump_uses_7bit_controls_for_pending_sequences() {
    for pending in [
        "\x1b[?10",
        "\x1b]0;ti",
        "\x1bP1$",
        "\x1b[2 ",
        "\x1b_x",
        "\x1b(",
        "\x1b",
    ] {
        let mut a = Screen::new(20, 4);
        a.feed(b"hi ");
        a.feed(pending.as_bytes());
        let dump = a.dump();
        assert!(!String::from_utf8_lossy(&dump).contains(|c| ('\u{80}'..='\u{9f}').contains(&c)));
        let mut b = Screen::new(20, 4);
        b.feed(&a.frame());
        expect_same(&a, &b, pending);
    }
}
