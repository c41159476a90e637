//! Keystrokes: each decoded key becomes a guessed cell and cursor, moves
//! the guessed cursor, or starts a new epoch.

use super::keys::Key;
use super::{CellGuess, CursorGuess, PredictMode, Predictor, Stamp, PASTE_BYTES};
use cmdop_screen::Screen;
use std::time::Instant;

impl Predictor {
    /// The user typed `bytes`, the first of which has sequence number `seq`
    /// (the number [`echo_ack`](Self::echo_ack) counts). `screen` is the
    /// client's screen as currently fed.
    pub fn keystroke(&mut self, bytes: &[u8], seq: u64, screen: &Screen, now: Instant) {
        if self.mode == PredictMode::Never {
            return;
        }
        self.check_size(screen);
        self.triggers.update(self.active());
        // Whether the cursor may be taken from the screen: only once the
        // screen shows the outcome of every earlier keystroke.
        let mut anchor = self.quiet(now);
        self.sent(seq);

        if bytes.len() >= PASTE_BYTES {
            self.keys = Default::default();
            self.reset();
            return;
        }

        let stamp = Stamp {
            seq,
            epoch: 0,
            made: now,
            acked: (seq < self.acked).then_some(now),
        };
        for key in self.keys.decode(bytes) {
            if !self.apply(key, stamp, screen, anchor) {
                self.become_tentative();
                anchor = false;
            }
        }
    }

    /// Applies one key; `false` when it cannot be predicted and a new epoch
    /// must begin.
    fn apply(&mut self, key: Key, stamp: Stamp, screen: &Screen, anchor: bool) -> bool {
        if key == Key::Control {
            return false;
        }
        let stamp = Stamp {
            epoch: self.prediction_epoch,
            ..stamp
        };
        let Some(mut cursor) = self.cursor.or_else(|| anchor.then(|| here(screen, stamp))) else {
            // Unknown cursor: wait for the screen to catch up.
            return true;
        };
        let (cols, _) = screen.size();
        match key {
            Key::Print(ch) => {
                if cursor.col + 1 >= cols {
                    // The last column: the program may wrap, scroll or refuse.
                    return false;
                }
                self.guess_cell(cursor.col, cursor.row, ch, stamp, screen);
                cursor.col += 1;
            }
            Key::Backspace if cursor.col > 0 => {
                cursor.col -= 1;
                self.guess_cell(cursor.col, cursor.row, ' ', stamp, screen);
            }
            Key::Left if cursor.col > 0 => cursor.col -= 1,
            Key::Right if cursor.col + 1 < cols => cursor.col += 1,
            // At an edge the cursor is expected to stay.
            _ => {}
        }
        cursor.stamp = stamp;
        self.cursor = Some(cursor);
        true
    }

    /// Guesses `ch` at a cell, replacing an earlier guess for it.
    fn guess_cell(&mut self, col: u16, row: u16, ch: char, stamp: Stamp, screen: &Screen) {
        let existing = self
            .cells
            .iter()
            .position(|cell| cell.col == col && cell.row == row);
        if let Some(index) = existing {
            let mut cell = self.cells.remove(index);
            cell.originals.push(cell.ch);
            cell.ch = ch;
            cell.stamp = stamp;
            self.cells.push(cell);
            return;
        }
        let shown = screen.cell_char(col, row).unwrap_or(' ');
        self.cells.push(CellGuess {
            col,
            row,
            ch,
            originals: vec![shown],
            stamp,
        });
    }

    /// Records a keystroke sent to the node.
    fn sent(&mut self, seq: u64) {
        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        if seq >= self.acked {
            self.quiet_since = None;
        }
    }

    /// Whether every keystroke sent so far was acknowledged at least the
    /// grace period ago, so the screen shows their outcome.
    pub(super) fn quiet(&self, now: Instant) -> bool {
        let Some(last) = self.last_seq else {
            return true;
        };
        let grace = self.triggers.grace();
        last < self.acked && self.quiet_since.is_some_and(|since| now >= since + grace)
    }
}

/// The cursor where the screen has it.
fn here(screen: &Screen, stamp: Stamp) -> CursorGuess {
    let (col, row, _) = screen.cursor();
    CursorGuess { col, row, stamp }
}
