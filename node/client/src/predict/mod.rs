//! Predictive local echo: guess what the node will draw for a keystroke and
//! show the guess before the round trip completes, the way mosh's
//! `PredictionEngine` (`src/frontend/terminaloverlay.cc`) does.
//!
//! [`Predictor`] is sans-IO: the caller feeds it keystrokes
//! ([`Predictor::keystroke`]), echo acknowledgements
//! ([`Predictor::echo_ack`]), the round-trip time ([`Predictor::set_rtt`])
//! and, after feeding node output into its client-side
//! [`Screen`], asks it to check its guesses ([`Predictor::output`]). Every
//! call takes the time; nothing reads a clock. [`Predictor::overlay`] says
//! what to draw over the real screen now; nothing is drawn here.
//!
//! The rules:
//!
//! - printable one-cell characters (UTF-8 included), backspace (DEL, BS)
//!   and left/right arrows (`ESC [ C/D`, `ESC O C/D`) are predicted at a
//!   predicted cursor, overwriting the cell under it; typing in the last
//!   column is not predicted;
//! - any other key (Enter, control bytes, other escape sequences, wide
//!   characters) starts a new *epoch* and leaves the cursor unknown: no
//!   prediction is made until every keystroke sent so far has been
//!   acknowledged and the grace period has passed, then the cursor is
//!   taken from the real screen. Unconfirmed predictions of older epochs
//!   are dropped;
//! - the predictions of an epoch are shown only once the node has
//!   confirmed one of them (an acknowledged keystroke whose character is
//!   now on the screen, where the cell did not hold it before). The first
//!   epoch starts unconfirmed, so input nobody echoes (passwords) is
//!   never shown;
//! - a prediction whose keystroke was acknowledged more than the grace
//!   period ago ([`timing`]) and whose cell does not match is wrong: in a
//!   confirmed epoch everything is reset, in an unconfirmed one that epoch
//!   and later ones are dropped. A cursor that is not where it was
//!   predicted resets everything too;
//! - a paste (100 bytes or more in one call, as mosh) resets the engine;
//! - what is shown depends on [`PredictMode`]; adaptive mode follows
//!   mosh's round-trip and glitch triggers ([`timing`]).
//!
//! # Drawing
//!
//! The overlay never changes the screen model, and node output keeps
//! going to the local terminal untouched, so its scrollback stays right.
//! After writing node output, the caller paints each [`Overlay`] cell at
//! an absolute position (`CSI row;col H`, SGR 4 when underlined, the
//! character) and moves the cursor to [`Overlay::cursor`]. Before writing
//! more node output (or resizing), it erases what it painted by repainting
//! those cells or rows from the screen model ([`Screen::rows_ansi`]), then
//! puts the cursor back at [`Screen::cursor`] and re-selects the pen the
//! node's output had set. It never writes a newline, and overlay cells are
//! never in the last column, so painting cannot wrap or scroll anything
//! into the scrollback. DECSC/DECRC (`ESC 7`/`ESC 8`) are best avoided:
//! they would overwrite a cursor the program saved.

mod judge;
mod keys;
pub mod timing;
mod typing;

#[cfg(test)]
mod tests;

use cmdop_screen::Screen;
use std::time::{Duration, Instant};

use keys::KeyDecoder;
use timing::Triggers;

/// When predictions are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PredictMode {
    /// As mosh: when the round trip is slow or a prediction lingers.
    #[default]
    Adaptive,
    /// Whenever the epoch is confirmed.
    Always,
    /// Never; the engine does nothing.
    Never,
}

/// The text was none of `adaptive`, `always`, `never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown prediction mode {0:?} (expected adaptive, always or never)")]
pub struct UnknownPredictMode(pub String);

impl std::str::FromStr for PredictMode {
    type Err = UnknownPredictMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "adaptive" => Ok(Self::Adaptive),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(UnknownPredictMode(text.to_owned())),
        }
    }
}

/// What to draw over the real screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Predicted cells that differ from the screen, in prediction order.
    pub cells: Vec<OverlayCell>,
    /// Where to show the cursor as `(col, row)`; `None` leaves it where the
    /// screen has it.
    pub cursor: Option<(u16, u16)>,
}

/// One predicted cell, zero-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayCell {
    pub col: u16,
    pub row: u16,
    pub ch: char,
    /// Flag the guess (slow link, or a long glitch).
    pub underline: bool,
}

/// Bytes in one keystroke call that make it a paste (mosh: over 100).
pub const PASTE_BYTES: usize = 100;

/// When and in which epoch a guess was made, and when the echo
/// acknowledgement of its keystroke arrived.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    seq: u64,
    epoch: u64,
    made: Instant,
    acked: Option<Instant>,
}

/// A guessed cell. `originals` are what the cell showed before and earlier
/// guesses for it: finding one of those there again proves nothing.
#[derive(Debug, Clone)]
struct CellGuess {
    col: u16,
    row: u16,
    ch: char,
    originals: Vec<char>,
    stamp: Stamp,
}

/// The guessed cursor after the latest predicted keystroke.
#[derive(Debug, Clone, Copy)]
struct CursorGuess {
    col: u16,
    row: u16,
    stamp: Stamp,
}

/// The prediction engine; see the [module documentation](self).
#[derive(Debug)]
pub struct Predictor {
    mode: PredictMode,
    triggers: Triggers,
    keys: KeyDecoder,
    cells: Vec<CellGuess>,
    cursor: Option<CursorGuess>,
    /// The epoch new guesses belong to.
    prediction_epoch: u64,
    /// Guesses of this epoch and older ones may be shown.
    confirmed_epoch: u64,
    /// Every keystroke with a lower sequence number has reached the PTY.
    acked: u64,
    /// The sequence number of the latest keystroke.
    last_seq: Option<u64>,
    /// When the acknowledgement covering `last_seq` arrived.
    quiet_since: Option<Instant>,
    /// The screen size last seen; a change resets.
    size: Option<(u16, u16)>,
}

impl Predictor {
    /// An engine with no round trip known yet (adaptive mode assumes a slow
    /// one, as mosh does, until [`set_rtt`](Self::set_rtt)).
    pub fn new(mode: PredictMode) -> Self {
        Self {
            mode,
            triggers: Triggers::default(),
            keys: KeyDecoder::default(),
            cells: Vec::new(),
            cursor: None,
            prediction_epoch: 1,
            confirmed_epoch: 0,
            acked: 0,
            last_seq: None,
            quiet_since: None,
            size: None,
        }
    }

    /// The display mode.
    pub fn mode(&self) -> PredictMode {
        self.mode
    }

    /// Takes the current smoothed round-trip time.
    pub fn set_rtt(&mut self, srtt: Duration) {
        self.triggers.set_rtt(srtt);
        self.triggers.update(self.active());
    }

    /// The node has written every keystroke with a sequence number below
    /// `seq` into the PTY. Call [`output`](Self::output) afterwards.
    pub fn echo_ack(&mut self, seq: u64, now: Instant) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        let stamps = self.cells.iter_mut().map(|cell| &mut cell.stamp);
        for stamp in stamps.chain(self.cursor.as_mut().map(|cursor| &mut cursor.stamp)) {
            if stamp.seq < seq && stamp.acked.is_none() {
                stamp.acked = Some(now);
            }
        }
        if self.last_seq.is_some_and(|last| last < seq) && self.quiet_since.is_none() {
            self.quiet_since = Some(now);
        }
    }

    /// Drops every guess and starts a new, unconfirmed epoch (mosh's
    /// `reset`). The keystroke and acknowledgement counts are kept: use a
    /// new engine when the sequence numbers start again.
    pub fn reset(&mut self) {
        self.cells.clear();
        self.cursor = None;
        self.become_tentative();
    }

    /// What to draw over `screen` at `now` (the screen the caller feeds).
    pub fn overlay(&self, screen: &Screen, now: Instant) -> Overlay {
        if !self.showing(now) {
            return Overlay::default();
        }
        let grace = self.triggers.grace();
        let visible = |stamp: &Stamp| {
            stamp.epoch <= self.confirmed_epoch
                && stamp.acked.is_none_or(|acked| now < acked + grace)
        };
        let underline = self.triggers.underline();
        let cells = self
            .cells
            .iter()
            .filter(|cell| visible(&cell.stamp))
            .filter(|cell| {
                screen
                    .cell_char(cell.col, cell.row)
                    .is_some_and(|ch| ch != cell.ch)
            })
            .map(|cell| OverlayCell {
                col: cell.col,
                row: cell.row,
                ch: cell.ch,
                underline,
            })
            .collect();
        let cursor = self
            .cursor
            .filter(|cursor| visible(&cursor.stamp))
            .map(|cursor| (cursor.col, cursor.row));
        Overlay { cells, cursor }
    }

    /// When [`output`](Self::output) should next be called even if nothing
    /// arrives (a guess falls due or a glitch timer fires); `None` when no
    /// guess is outstanding. The instant may already have passed.
    pub fn deadline(&self) -> Option<Instant> {
        let grace = self.triggers.grace();
        let glitch = self.triggers.glitch_below(timing::GLITCH_REPAIR_COUNT);
        let flag = self.triggers.glitch_below(timing::GLITCH_REPAIR_COUNT * 2);
        let cells = self.cells.iter().flat_map(|cell| {
            [
                glitch.then_some(cell.stamp.made + timing::GLITCH_THRESHOLD),
                flag.then_some(cell.stamp.made + timing::GLITCH_FLAG_THRESHOLD),
            ]
        });
        let stamps = self.cells.iter().map(|cell| cell.stamp);
        let judged = stamps
            .chain(self.cursor.map(|cursor| cursor.stamp))
            .map(|stamp| stamp.acked.map(|acked| acked + grace));
        cells.chain(judged).flatten().min()
    }

    /// Whether predictions are drawn at `now` (before looking at epochs).
    fn showing(&self, now: Instant) -> bool {
        match self.mode {
            PredictMode::Never => false,
            PredictMode::Always => true,
            PredictMode::Adaptive => {
                let oldest = self.cells.iter().map(|cell| cell.stamp.made).min();
                self.triggers.showing(oldest, now)
            }
        }
    }

    /// Whether any guess is outstanding.
    fn active(&self) -> bool {
        !self.cells.is_empty() || self.cursor.is_some()
    }

    /// Starts a new epoch: the cursor becomes unknown and guesses nobody
    /// confirmed are dropped (they could only ever be shown late).
    fn become_tentative(&mut self) {
        self.prediction_epoch += 1;
        self.cursor = None;
        let confirmed = self.confirmed_epoch;
        self.cells.retain(|cell| cell.stamp.epoch <= confirmed);
    }

    /// Resets when the screen changed size since last seen (as mosh).
    fn check_size(&mut self, screen: &Screen) {
        let size = screen.size();
        if self.size.is_some_and(|seen| seen != size) {
            self.reset();
        }
        self.size = Some(size);
    }
}
