//! Text renderings of the visible screen, for `cmdop session show --screen`.
//!
//! [`plain_row`] gives the characters of one row with trailing blanks
//! trimmed; [`ansi_row`] adds SGR sequences so colours and attributes show
//! when the text is printed to a terminal. Wide characters appear once (the
//! cell after a wide character holds no character of its own).

use avt::{Cell, Color, Line, Pen};
use std::fmt::Write as _;

/// The row's characters with trailing spaces trimmed.
pub(crate) fn plain_row(line: &Line) -> String {
    let mut text = line.text();
    text.truncate(text.trim_end_matches(' ').len());
    text
}

/// The row with SGR colour and attribute sequences, ending in the default
/// pen. Trailing blanks in the default pen are trimmed; coloured blanks
/// (backgrounds) are kept.
pub(crate) fn ansi_row(line: &Line) -> String {
    let cells = line.cells();
    let end = cells
        .iter()
        .rposition(|cell| !is_default_blank(cell))
        .map_or(0, |i| i + 1);

    let mut out = String::new();
    let mut pen = Pen::default();

    for cell in &cells[..end] {
        if cell.width() == 0 {
            continue;
        }

        if *cell.pen() != pen {
            pen = *cell.pen();
            out.push_str(&sgr(&pen));
        }

        out.push(cell.char());
    }

    if !pen.is_default() {
        out.push_str("\x1b[0m");
    }

    out
}

fn is_default_blank(cell: &Cell) -> bool {
    cell.char() == ' ' && cell.width() == 1 && cell.pen().is_default()
}

/// A complete SGR sequence selecting `pen` from any previous pen.
pub(crate) fn sgr(pen: &Pen) -> String {
    let mut out = String::from("\x1b[0");
    let flags = [
        (pen.is_bold(), "1"),
        (pen.is_faint(), "2"),
        (pen.is_italic(), "3"),
        (pen.is_underline(), "4"),
        (pen.is_blink(), "5"),
        (pen.is_inverse(), "7"),
        (pen.is_strikethrough(), "9"),
    ];

    for (on, code) in flags {
        if on {
            out.push(';');
            out.push_str(code);
        }
    }

    if let Some(color) = pen.foreground() {
        push_color(&mut out, color, 30);
    }

    if let Some(color) = pen.background() {
        push_color(&mut out, color, 40);
    }

    out.push('m');
    out
}

fn push_color(out: &mut String, color: Color, base: u16) {
    // Writing to a String cannot fail.
    let _ = match color {
        Color::Indexed(c) if c < 8 => write!(out, ";{}", base + u16::from(c)),
        Color::Indexed(c) if c < 16 => write!(out, ";{}", base + 60 + u16::from(c - 8)),
        Color::Indexed(c) => write!(out, ";{};5;{c}", base + 8),
        Color::RGB(rgb) => write!(out, ";{};2;{};{};{}", base + 8, rgb.r, rgb.g, rgb.b),
    };
}
