//! Predictive local echo on the real terminal, without giving up its scrollback: the node's
//! bytes are still written as they come; the predictions are drawn over them.
//!
//! A screen model fed with the same bytes tells the [`Predictor`] where the cursor is and what
//! each cell shows. Before each chunk of output, the cells that hold predictions are repainted
//! from the model and the cursor put back where the node left it; after it, the predictions
//! that still stand are drawn again. Nothing extra is written while nothing is predicted, so
//! `--predict never` (and adaptive mode on a fast link) writes exactly the node's bytes.
//!
//! Parsing costs about as much as drawing, so output that arrives while nothing is predicted
//! is only kept (its last [`PENDING_LIMIT`] bytes) and parsed when a keystroke needs the model.

use cmdop_client::predict::{Overlay, OverlayCell, PredictMode, Predictor};
use cmdop_proto::config::Predict;
use cmdop_proto::WinSize;
use cmdop_screen::Screen;
use std::io::Write;
use std::time::{Duration, Instant};

/// Output kept unparsed while nothing is predicted; more keeps only its tail.
pub const PENDING_LIMIT: usize = 1 << 20;

/// The predictor, the screen model it reads, and what is drawn over the terminal now.
pub struct LocalEcho {
    predictor: Predictor,
    screen: Screen,
    /// Output written but not yet parsed into `screen`.
    pending: Vec<u8>,
    /// Output was dropped unparsed (a long flood while nothing was predicted): the model may
    /// not match the terminal, so nothing is predicted until a screen frame redraws it.
    desynced: bool,
    /// Bytes typed so far (the predictor's keystroke numbers).
    typed: u64,
    /// What was last drawn over the terminal.
    drawn: Overlay,
}

impl LocalEcho {
    /// Local echo in `mode` for a terminal of `size`; None when it is off.
    pub fn new(mode: Predict, size: WinSize) -> Option<LocalEcho> {
        let mode = match mode {
            Predict::Adaptive => PredictMode::Adaptive,
            Predict::Always => PredictMode::Always,
            Predict::Never => return None,
        };
        Some(LocalEcho {
            predictor: Predictor::new(mode),
            screen: Screen::new(size.cols, size.rows),
            pending: Vec::new(),
            desynced: false,
            typed: 0,
            drawn: Overlay::default(),
        })
    }

    /// The link's round trip changed (zero: not measured yet).
    pub fn set_rtt(&mut self, rtt: Duration) {
        if !rtt.is_zero() {
            self.predictor.set_rtt(rtt);
        }
    }

    /// The terminal changed size (it reflows what is drawn: take the guesses away first).
    pub fn resize(&mut self, out: &mut impl Write, size: WinSize) -> std::io::Result<()> {
        self.clear(out)?;
        self.catch_up();
        self.screen.resize(size.cols, size.rows);
        Ok(())
    }

    /// Parses the output kept while nothing was predicted.
    fn catch_up(&mut self) {
        self.screen.feed(&self.pending);
        self.pending.clear();
    }

    /// Keeps output for later parsing; past [`PENDING_LIMIT`] it is dropped and the model no
    /// longer trusted.
    fn keep(&mut self, bytes: &[u8]) {
        if self.desynced {
            return;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > PENDING_LIMIT {
            self.pending = Vec::new();
            self.desynced = true;
            self.predictor.reset();
        }
    }

    /// The person typed `bytes` (already sent to the node).
    pub fn keystroke(&mut self, out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
        self.catch_up();
        let now = Instant::now();
        if !self.desynced {
            self.predictor
                .keystroke(bytes, self.typed, &self.screen, now);
        }
        self.typed += bytes.len() as u64;
        self.redraw(out, now)
    }

    /// Writes the node's output, keeping the predictions over it.
    pub fn output(&mut self, out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
        self.erase(out)?;
        out.write_all(bytes)?;
        if self.predictor.deadline().is_none() {
            // Nothing predicted: no need for the model until the next keystroke.
            self.keep(bytes);
            return Ok(());
        }
        self.catch_up();
        self.screen.feed(bytes);
        let now = Instant::now();
        self.predictor.output(&self.screen, now);
        self.redraw(out, now)
    }

    /// The node echoed (or chose not to echo) the first `typed` bytes typed.
    pub fn echo_ack(&mut self, out: &mut impl Write, typed: u64) -> std::io::Result<()> {
        self.catch_up();
        let now = Instant::now();
        self.predictor.echo_ack(typed, now);
        self.predictor.output(&self.screen, now);
        self.redraw(out, now)
    }

    /// Takes away every prediction (before the terminal is redrawn wholesale).
    pub fn clear(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.predictor.reset();
        self.erase(out)
    }

    /// Records a screen frame written to the terminal: it redraws everything, so the model is
    /// trusted again from here.
    pub fn redrawn(&mut self, bytes: &[u8]) {
        if self.desynced {
            let (cols, rows) = self.screen.size();
            self.screen = Screen::new(cols, rows);
            self.desynced = false;
        }
        self.keep(bytes);
    }

    /// Takes every guess off the terminal for good (the attachment ended).
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.clear(out)?;
        out.flush()
    }

    /// When [`LocalEcho::tick`] is due, if a prediction is outstanding.
    pub fn deadline(&self) -> Option<Instant> {
        self.predictor.deadline()
    }

    /// Time passed: predictions may show, flag themselves or expire.
    pub fn tick(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.catch_up();
        let now = Instant::now();
        self.predictor.output(&self.screen, now);
        self.redraw(out, now)
    }

    /// Draws the overlay due now, if it differs from what is drawn.
    fn redraw(&mut self, out: &mut impl Write, now: Instant) -> std::io::Result<()> {
        let overlay = self.predictor.overlay(&self.screen, now);
        if overlay == self.drawn {
            return Ok(());
        }
        self.erase(out)?;
        for cell in &overlay.cells {
            draw_cell(out, cell)?;
        }
        if !overlay.cells.is_empty() || overlay.cursor.is_some() {
            let (col, row) = overlay.cursor.unwrap_or_else(|| self.model_cursor());
            write!(out, "\x1b[{};{}H", row + 1, col + 1)?;
        }
        out.flush()?;
        self.drawn = overlay;
        Ok(())
    }

    /// Repaints the cells under the drawn predictions from the model (in the current pen, which
    /// is the node's) and puts the cursor back where the node left it.
    fn erase(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.drawn.cells.is_empty() && self.drawn.cursor.is_none() {
            return Ok(());
        }
        for cell in &self.drawn.cells {
            let shown = self.screen.cell_char(cell.col, cell.row).unwrap_or(' ');
            write!(out, "\x1b[{};{}H{shown}", cell.row + 1, cell.col + 1)?;
        }
        let (col, row) = self.model_cursor();
        write!(out, "\x1b[{};{}H", row + 1, col + 1)?;
        self.drawn = Overlay::default();
        Ok(())
    }

    fn model_cursor(&self) -> (u16, u16) {
        let (col, row, _) = self.screen.cursor();
        (col, row)
    }
}

/// Draws one predicted cell in the node's current pen, as its echo would be (underlined when
/// the guess is flagged). The pen is never otherwise touched: the node's next bytes assume it.
fn draw_cell(out: &mut impl Write, cell: &OverlayCell) -> std::io::Result<()> {
    let (row, col, ch) = (cell.row + 1, cell.col + 1, cell.ch);
    if cell.underline {
        write!(out, "\x1b[{row};{col}H\x1b[4m{ch}\x1b[24m")
    } else {
        write!(out, "\x1b[{row};{col}H{ch}")
    }
}
