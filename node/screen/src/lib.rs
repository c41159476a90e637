//! The terminal screen model the cmdop node keeps per session.
//!
//! A [`Screen`] is fed the raw bytes a session's PTY produces and keeps what
//! a terminal showing them would display: the primary and alternate
//! screens, cursor, pen and modes. It is built on the [`avt`] virtual
//! terminal and adds what the node needs around it:
//!
//! - [`Screen::feed`] takes raw bytes: UTF-8 split across reads is carried
//!   over, invalid bytes become U+FFFD, nothing panics and nothing is
//!   allocated per byte;
//! - sizes are clamped to [`MIN_SIZE`]`..=`[`MAX_COLS`] / [`MAX_ROWS`]
//!   ([`clamp_size`] validates a client's size the same way);
//! - no scrollback is kept: the node's ring buffer is the one scrollback
//!   source, so memory depends only on the size (about 66 KB for 80x24,
//!   about 3 MB at the 400x200 maximum; see `tests/memory.rs`);
//! - [`Screen::dump`] / [`Screen::frame`] redraw the screen in a reset
//!   terminal, including modes avt itself ignores (mouse, bracketed paste,
//!   keypad, cursor style: see [`ExtraModes`]);
//! - [`Screen::rows_text`], [`Screen::rows_ansi`] and [`Screen::cursor`]
//!   serve `cmdop session show S --screen`; [`Screen::cell_char`] reads one
//!   cell (the client's prediction engine checks its guesses with it);
//! - [`Screen::compare`] checks two screens cell for cell in tests.
//!
//! Not restored by a dump: the window title (OSC 0/2), kitty keyboard
//! protocol flags, palette changes (OSC 4), and other state that avt and
//! [`ExtraModes`] do not model.

mod compare;
mod dump;
mod modes;
mod utf8;
mod view;

pub use dump::RESTORE_PREFIX;
pub use modes::ExtraModes;

use modes::ModeTracker;
use utf8::Utf8Decoder;

/// Smallest accepted width and height.
pub const MIN_SIZE: u16 = 1;
/// Largest accepted width; wider requests are clamped.
pub const MAX_COLS: u16 = 400;
/// Largest accepted height; taller requests are clamped.
pub const MAX_ROWS: u16 = 200;

/// Clamps a requested size to `MIN_SIZE..=MAX_COLS` columns and
/// `MIN_SIZE..=MAX_ROWS` rows. Returns `(cols, rows)`.
pub fn clamp_size(cols: u16, rows: u16) -> (u16, u16) {
    (
        cols.clamp(MIN_SIZE, MAX_COLS),
        rows.clamp(MIN_SIZE, MAX_ROWS),
    )
}

/// The screen state of one terminal session.
pub struct Screen {
    vt: avt::Terminal,
    utf8: Utf8Decoder,
    tracker: ModeTracker,
}

impl Screen {
    /// A blank screen; the size is clamped with [`clamp_size`].
    pub fn new(cols: u16, rows: u16) -> Self {
        let (cols, rows) = clamp_size(cols, rows);
        // Both dimensions are at least 1, so avt accepts them; fall back to
        // 1x1 rather than panic should that ever change.
        let vt = avt::Terminal::new(usize::from(cols), usize::from(rows))
            .or_else(|_| avt::Terminal::new(1, 1));

        Self {
            vt: match vt {
                Ok(vt) => vt,
                Err(err) => unreachable!("avt rejects a 1x1 terminal: {err}"),
            },
            utf8: Utf8Decoder::default(),
            tracker: ModeTracker::default(),
        }
    }

    /// Processes raw PTY output. Any bytes are accepted.
    pub fn feed(&mut self, bytes: &[u8]) {
        let Self { vt, utf8, tracker } = self;

        utf8.decode(bytes, |text| {
            vt.feed(text);
            tracker.feed_str(text);
        });
    }

    /// Changes the size (clamped with [`clamp_size`]). The primary screen
    /// reflows soft-wrapped lines; the alternate screen is clipped or padded.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let (cols, rows) = clamp_size(cols, rows);
        self.vt.resize(usize::from(cols), usize::from(rows));
    }

    /// The current size as `(cols, rows)`.
    pub fn size(&self) -> (u16, u16) {
        let (cols, rows) = self.vt.size();
        (to_u16(cols), to_u16(rows))
    }

    /// The cursor as `(col, row, visible)`, zero-based. After a character
    /// is written in the last column the cursor waits there for the wrap;
    /// it is reported in the last column.
    pub fn cursor(&self) -> (u16, u16, bool) {
        let cursor = self.vt.cursor();
        let (cols, _) = self.size();
        let col = to_u16(cursor.col).min(cols.saturating_sub(1));
        (col, to_u16(cursor.row), cursor.visible)
    }

    /// The character shown at a cell of the active screen, zero-based;
    /// `' '` for a blank cell, the wide character itself for both of the
    /// cells it covers, `None` outside the screen.
    ///
    /// ```
    /// let mut screen = cmdop_screen::Screen::new(10, 2);
    /// screen.feed("ab\r\n中".as_bytes());
    /// assert_eq!(screen.cell_char(1, 0), Some('b'));
    /// assert_eq!(screen.cell_char(2, 0), Some(' '));
    /// assert_eq!(screen.cell_char(1, 1), Some('中'));
    /// assert_eq!(screen.cell_char(10, 0), None);
    /// ```
    pub fn cell_char(&self, col: u16, row: u16) -> Option<char> {
        let line = self.vt.screen().line(usize::from(row))?;
        let cells = line.cells();
        let col = usize::from(col);
        let cell = cells.get(col)?;
        if cell.width() == 0 && col > 0 {
            // The right half of a wide character: report the character.
            return cells.get(col - 1).map(avt::Cell::char);
        }
        Some(cell.char())
    }

    /// Whether the alternate screen (full-screen programs) is active.
    pub fn alternate_screen(&self) -> bool {
        self.vt.active_screen_kind() == avt::ScreenKind::Alternate
    }

    /// Whether cursor keys send application sequences (DECCKM).
    pub fn cursor_keys_app_mode(&self) -> bool {
        self.vt.cursor_key_app_mode()
    }

    /// The modes avt does not model, as tracked alongside it.
    pub fn extra_modes(&self) -> ExtraModes {
        self.tracker.modes()
    }

    /// The visible rows as plain text, trailing spaces trimmed.
    pub fn rows_text(&self) -> Vec<String> {
        self.vt
            .screen()
            .visible_lines()
            .map(view::plain_row)
            .collect()
    }

    /// The visible rows with SGR colours and attributes; each row ends in
    /// the default pen, trailing default blanks trimmed.
    pub fn rows_ansi(&self) -> Vec<String> {
        self.vt
            .screen()
            .visible_lines()
            .map(view::ansi_row)
            .collect()
    }
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen")
            .field("size", &self.size())
            .field("cursor", &self.cursor())
            .field("alternate_screen", &self.alternate_screen())
            .field("extra_modes", &self.extra_modes())
            .finish_non_exhaustive()
    }
}

fn to_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}
