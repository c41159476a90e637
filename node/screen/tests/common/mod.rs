//! Shared test helpers: a seeded RNG and a synthesized, realistic PTY
//! byte stream (shell with colours, `ls --color`, a vim-like editor on the
//! alternate screen, an htop-like redraw loop, wide characters).
#![allow(dead_code)]

use std::fmt::Write as _;

/// xorshift64*: small, seeded, good enough to pick cut points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Feeds `bytes` to `feed` in random-sized pieces (1..=max bytes).
pub fn feed_in_pieces(rng: &mut Rng, bytes: &[u8], max: usize, mut feed: impl FnMut(&[u8])) {
    let mut rest = bytes;

    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        feed(&rest[..n]);
        rest = &rest[n..];
    }
}

/// A whole session's output for a `cols` x `rows` terminal.
pub fn session_stream(cols: usize, rows: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut s = String::new();
    shell_prompt(&mut s);
    run(&mut s, "ls --color=auto -l");
    ls_output(&mut s, &mut rng, 2 * rows);
    shell_prompt(&mut s);
    run(&mut s, "vim notes.md");
    vim_session(&mut s, cols, rows);
    shell_prompt(&mut s);
    run(&mut s, "htop");
    htop_session(&mut s, &mut rng, cols, rows);
    shell_prompt(&mut s);
    wide_and_wrapping(&mut s, cols);
    shell_prompt(&mut s);
    s.push_str("printf '\\e[31"); // the user is typing: the stream ends mid-line
    s.into_bytes()
}

fn shell_prompt(s: &mut String) {
    s.push_str("\x1b]0;alice@box: ~/src\x07\x1b]133;A\x07");
    s.push_str("\x1b[01;32malice@box\x1b[00m:\x1b[01;34m~/src\x1b[00m$ ");
    s.push_str("\x1b]133;B\x07\x1b[?2004h");
}

/// The echo of a typed command and Enter; bash turns bracketed paste off
/// again when a command is submitted.
fn run(s: &mut String, command: &str) {
    s.push_str(command);
    s.push_str("\x1b[?2004l\r\n\x1b]133;C\x07");
}

fn ls_output(s: &mut String, rng: &mut Rng, lines: usize) {
    const NAMES: [(&str, &str); 6] = [
        ("01;34", "src"),
        ("01;32", "build.sh"),
        ("01;31", "release.tar.gz"),
        ("38;5;208", "notes.md"),
        ("01;36", "latest -> release.tar.gz"),
        ("38;2;255;105;180", "日本語.txt"),
    ];
    s.push_str("total 42\r\n");

    for i in 0..lines {
        let (colour, name) = NAMES[rng.below(NAMES.len())];
        let size = rng.below(100_000);
        let _ = write!(
            s,
            "-rw-r--r-- 1 alice alice {size:>6} Mar {:>2} 12:{:02} \x1b[{colour}m{name}\x1b[0m\r\n",
            1 + i % 28,
            i % 60
        );
    }
}

fn vim_session(s: &mut String, cols: usize, rows: usize) {
    let text_rows = rows.saturating_sub(2).max(1);
    // Enter: alternate screen, app cursor keys, keypad, mouse, paste, title.
    s.push_str("\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\x1b[H\x1b[2J");
    s.push_str("\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b]2;notes.md - VIM\x07");
    let _ = write!(s, "\x1b[1;{text_rows}r\x1b[?25l\x1b[H");

    for row in 1..=text_rows {
        let _ = write!(s, "\x1b[{row};1H");
        if row < 5 {
            let _ = write!(
                s,
                "\x1b[1m# Heading {row}\x1b[22m plain \x1b[3mitalic\x1b[23m"
            );
        } else {
            s.push_str("\x1b[34m~\x1b[39m");
        }
    }

    // Status line in reverse video, then the command line.
    let _ = write!(
        s,
        "\x1b[{};1H\x1b[7m notes.md [+]",
        rows.saturating_sub(1).max(1)
    );
    let _ = write!(s, "{:>w$}\x1b[27m", "1,1 All", w = cols.saturating_sub(14));
    let _ = write!(
        s,
        "\x1b[{rows};1H\x1b[K-- INSERT --\x1b[1;1H\x1b[?25h\x1b[6 q"
    );
    // Typing, inserting lines, deleting chars, saving and restoring cursor.
    s.push_str("\x1b[4hx\x1b[4l\x1b[2;5H\x1b[Ltyped line with 中文 \x1b[38;5;196mred\x1b[0m");
    s.push_str("\x1b7\x1b[3;1H\x1b[2P\x1b[K\x1b8\x1b[1P");
    // Scroll inside the region: index at the bottom, reverse index at top.
    let _ = write!(
        s,
        "\x1b[{text_rows};1H\n\n\x1bDscrolled\x1b[1;1H\x1bM\x1bMtop"
    );
    s.push_str("\x1b[2;1H\x1b[2S\x1b[1T\x1b[3;3H\x1b[2@ab\x1b[3X");
    // Origin mode within the region, line drawing charset, tab stops.
    s.push_str("\x1b[?6h\x1b[2;2H\x1b(0lqqk\x1b(B\x1b[?6l\x1b[3g\x1b[1;9H\x1bH\t\x1b[?7l");
    s.push_str("\x1b[0 q\x1b[?7h\x1b[r");
    // Leave: undo everything vim set up.
    s.push_str("\x1b[?1000l\x1b[?1006l\x1b[?2004l\x1b[?1l\x1b>\x1b[?1049l\x1b[23;0;0t");
}

fn htop_session(s: &mut String, rng: &mut Rng, cols: usize, rows: usize) {
    s.push_str("\x1b[?1049h\x1b[?1h\x1b=\x1b[?25l\x1b[H\x1b[2J");

    for frame in 0..12 {
        s.push_str("\x1b[H");

        for cpu in 0..2.min(rows) {
            let used = rng.below(cols.saturating_sub(12).max(1));
            let _ = write!(s, "\x1b[{};1H  {cpu}\x1b[1m[\x1b[0m\x1b[32m", cpu + 1);
            s.push_str(&"|".repeat(used / 2));
            s.push_str("\x1b[31m");
            s.push_str(&"|".repeat(used - used / 2));
            let _ = write!(
                s,
                "\x1b[0m\x1b[K {}.{}%\x1b[1m]\x1b[0m",
                frame,
                rng.below(10)
            );
        }

        if rows > 3 {
            let _ = write!(
                s,
                "\x1b[3;1H\x1b[30;42m  PID USER      CPU%  Command\x1b[K\x1b[0m"
            );
        }

        for row in 4..=rows.saturating_sub(1) {
            let selected = row == 4 + frame % 5;
            let pen = if selected { "\x1b[30;46m" } else { "\x1b[0m" };
            let _ = write!(
                s,
                "\x1b[{row};1H{pen}{:>5} alice    {:>4.1}  proc-{}\x1b[K\x1b[0m",
                1000 + row,
                rng.below(1000) as f32 / 10.0,
                rng.below(99)
            );
        }

        let _ = write!(
            s,
            "\x1b[{rows};1H\x1b[30;46mF1\x1b[0mHelp \x1b[30;46mF10\x1b[0mQuit"
        );
    }

    s.push_str("\x1b[?25h\x1b[?1l\x1b>\x1b[?1049l");
}

fn wide_and_wrapping(s: &mut String, cols: usize) {
    run(s, "cat wide.txt");
    // A wide character lands on the last column and must wrap whole.
    s.push_str(&"x".repeat(cols.saturating_sub(1)));
    s.push_str("界 follows\r\n");
    // A long line soft-wraps over several rows, mixing widths and colours.
    for i in 0..(cols / 2 + 7) {
        let _ = write!(
            s,
            "\x1b[{}m{}",
            31 + i % 6,
            if i % 3 == 0 { "漢" } else { "ab" }
        );
    }
    s.push_str("\x1b[0m\r\n");
    // Exactly filling a row leaves the cursor waiting to wrap.
    s.push_str(&"=".repeat(cols));
    s.push_str("\r\nemoji 🎉 done\r\n");
}

/// Checks a dump uses nothing a common terminal may lack: no 8-bit C1
/// controls, no REP (`CSI n b`), no colon sub-parameters.
pub fn assert_portable(dump: &[u8]) {
    let text = String::from_utf8_lossy(dump);
    assert!(
        !text.contains(|c| ('\u{80}'..='\u{9f}').contains(&c)),
        "C1 control in {text:?}"
    );

    for (i, _) in text.match_indices("\x1b[") {
        let seq = &text[i + 2..];
        let end = seq.find(|c: char| ('\u{40}'..='\u{7e}').contains(&c));
        let Some(end) = end else { continue };
        let (params, fin) = (&seq[..end], &seq[end..end + 1]);
        assert!(
            fin != "b" || !params.bytes().all(|b| b.is_ascii_digit()),
            "REP in {text:?}"
        );
        assert!(fin != "m" || !params.contains(':'), "colon SGR in {text:?}");
    }
}
