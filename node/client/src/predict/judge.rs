//! Checking guesses against the screen (mosh's `cull`): each guess is
//! pending, correct (confirms its epoch), correct without credit, or
//! wrong (resets).

use super::{CellGuess, CursorGuess, PredictMode, Predictor};
use cmdop_screen::Screen;
use std::time::{Duration, Instant};

/// The outcome of checking one guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not acknowledged yet, or still within the grace period.
    Pending,
    /// The node drew what was guessed: the epoch is confirmed.
    Correct,
    /// Finished, but proves nothing (a blank, or what the cell held before).
    NoCredit,
    /// The node did not draw what was guessed.
    Wrong,
}

impl Predictor {
    /// Checks the guesses against `screen`. Call it after feeding node
    /// output into `screen`, after [`echo_ack`](Self::echo_ack), and when
    /// [`deadline`](Self::deadline) passes.
    pub fn output(&mut self, screen: &Screen, now: Instant) {
        if self.mode == PredictMode::Never {
            return;
        }
        self.check_size(screen);
        self.triggers.update(self.active());

        let grace = self.triggers.grace();
        let verdicts: Vec<Verdict> = self
            .cells
            .iter()
            .map(|cell| judge_cell(cell, screen, now, grace))
            .collect();
        let cursor = self
            .cursor
            .map(|cursor| judge_cursor(&cursor, screen, now, grace));

        let confirmed = self.confirmed_epoch;
        let wrong_epochs = self
            .cells
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| **verdict == Verdict::Wrong)
            .map(|(cell, _)| cell.stamp.epoch);
        let mut kill = None;
        for epoch in wrong_epochs {
            if epoch <= confirmed {
                // A shown guess was wrong: start over (mosh does too).
                return self.reset();
            }
            kill = Some(kill.map_or(epoch, |kill: u64| kill.min(epoch)));
        }
        if cursor == Some(Verdict::Wrong) {
            return self.reset();
        }

        self.settle(verdicts, kill.unwrap_or(u64::MAX), now);
        if cursor == Some(Verdict::Correct) {
            self.cursor = None;
        }
        if kill.is_some() {
            // An unconfirmed epoch guessed wrong: drop it and what followed.
            self.become_tentative();
        }
        self.triggers.update(self.active());
    }

    /// Removes the finished guesses and those of epoch `kill` and later,
    /// confirming epochs and feeding the glitch trigger on the way.
    fn settle(&mut self, verdicts: Vec<Verdict>, kill: u64, now: Instant) {
        let cells = std::mem::take(&mut self.cells);
        for (cell, verdict) in cells.into_iter().zip(verdicts) {
            if cell.stamp.epoch >= kill {
                continue;
            }
            match verdict {
                Verdict::Pending => {
                    self.triggers.pending(cell.stamp.made, now);
                    self.cells.push(cell);
                }
                Verdict::Correct => {
                    self.confirmed_epoch = self.confirmed_epoch.max(cell.stamp.epoch);
                    self.triggers.confirmed(cell.stamp.made, now);
                }
                Verdict::NoCredit | Verdict::Wrong => {}
            }
        }
        if self.cursor.is_some_and(|cursor| cursor.stamp.epoch >= kill) {
            self.cursor = None;
        }
    }
}

/// A cell is judged once its keystroke is acknowledged: a match is correct
/// at once, a mismatch is wrong after the grace period. A guessed blank is
/// never wrong (too easy to get wrong for harmless reasons; mosh agrees).
fn judge_cell(cell: &CellGuess, screen: &Screen, now: Instant, grace: Duration) -> Verdict {
    let Some(shown) = screen.cell_char(cell.col, cell.row) else {
        return Verdict::Wrong;
    };
    let Some(acked) = cell.stamp.acked else {
        return Verdict::Pending;
    };
    if shown == cell.ch {
        if cell.ch == ' ' || cell.originals.contains(&cell.ch) {
            return Verdict::NoCredit;
        }
        return Verdict::Correct;
    }
    if now < acked + grace {
        return Verdict::Pending;
    }
    if cell.ch == ' ' {
        return Verdict::NoCredit;
    }
    Verdict::Wrong
}

/// The cursor is judged once the grace period after the acknowledgement of
/// the latest predicted keystroke has passed: it must be where guessed.
fn judge_cursor(cursor: &CursorGuess, screen: &Screen, now: Instant, grace: Duration) -> Verdict {
    let (cols, rows) = screen.size();
    if cursor.col >= cols || cursor.row >= rows {
        return Verdict::Wrong;
    }
    match cursor.stamp.acked {
        Some(acked) if now >= acked + grace => {
            let (col, row, _) = screen.cursor();
            if (col, row) == (cursor.col, cursor.row) {
                Verdict::Correct
            } else {
                Verdict::Wrong
            }
        }
        _ => Verdict::Pending,
    }
}
