//! A session's screen: what a terminal showing every byte the PTY printed would display now,
//! and the output offset it stands for. The pump sends it in place of a backlog a client cannot
//! take in time ([`cmdop_proto::ScreenFrame`]); `cmdop session show --screen` prints it.
//!
//! It keeps no scrollback (the ringbuffer is the one scrollback) and follows the PTY's size,
//! clamped to what [`cmdop_screen`] accepts.
//!
//! Parsing costs about as much as the PTY's own output (a terminal emulator reads at some
//! 25 MB/s here), so the reader does not parse a flood as it comes: it parses inline within a
//! budget ([`INLINE_RATE`]); an attachment whose link is the bottleneck (the screen will
//! soon be wanted) has it caught up in the background, and whoever needs the screen catches it
//! up from the ringbuffer first. A backlog larger than [`CATCH_UP_TAIL`] is skipped to its
//! last part, from a line start: exact for everything but a flood that changes modes or draws
//! in place in the skipped part, and never more than some 40 ms of work.
//!
//! A model of 80x24 takes some 40 KiB. A session nobody watches lets it sleep
//! ([`SessionScreen::sleep`]): the model becomes its dump (the bytes that redraw it exactly, a
//! few hundred for a shell prompt) and wakes, rebuilt from them, when output or a reader comes.

use cmdop_proto::WinSize;
use cmdop_screen::Screen;
use std::time::Instant;

/// Bytes a second the reader may parse inline; output beyond it waits for a catch-up.
pub const INLINE_RATE: f64 = 6e6;

/// The most the inline budget can save up.
const INLINE_BURST: f64 = 512.0 * 1024.0;

/// A backlog longer than this is skipped to its last this-many bytes.
pub const CATCH_UP_TAIL: u64 = 1 << 20;

/// How far into the kept tail to look for a line start.
const LINE_SEARCH: usize = 4096;

/// The screen model of one session and how far into the output it has read.
#[derive(Debug)]
pub struct SessionScreen {
    model: Model,
    /// One past the last output byte fed.
    offset: u64,
    /// Bytes the reader may still parse inline, and when that was last topped up.
    allowance: f64,
    topped_up: Instant,
}

/// The model, awake or asleep.
#[derive(Debug)]
enum Model {
    Awake(Box<Screen>),
    /// The bytes that redraw it on a blank screen of its size.
    Asleep {
        dump: Vec<u8>,
        size: WinSize,
    },
}

/// Where a catch-up reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The first offset to read.
    pub from: u64,
    /// The screen skips the bytes before `from`: start at the next line start.
    pub skips: bool,
}

/// The screen at one moment (an upgrade in place hands it down as this).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScreenShot {
    /// The output offset it stands for.
    pub offset: u64,
    /// Its size.
    pub size: WinSize,
    /// Bytes that redraw it on a freshly reset terminal of that size.
    #[serde(with = "serde_bytes")]
    pub dump: Vec<u8>,
}

/// A window size the screen model accepts: absurd sizes are clamped, never refused.
pub fn clamp(size: WinSize) -> WinSize {
    let (cols, rows) = cmdop_screen::clamp_size(size.cols, size.rows);
    WinSize { rows, cols }
}

impl SessionScreen {
    /// An empty screen of `size`, standing for the output below `offset` (already printed
    /// bytes are fed with [`SessionScreen::feed`]).
    pub fn new(size: WinSize, offset: u64) -> Self {
        SessionScreen {
            // A blank screen costs nothing until output comes.
            model: Model::Asleep {
                dump: Vec::new(),
                size: clamp(size),
            },
            offset,
            allowance: INLINE_BURST,
            topped_up: Instant::now(),
        }
    }

    /// One past the last output byte the screen has taken in.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the reader may parse `len` more bytes inline at `now` (and if so, spends them).
    pub fn may_parse(&mut self, len: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.topped_up).as_secs_f64();
        self.allowance = (self.allowance + elapsed * INLINE_RATE).min(INLINE_BURST);
        self.topped_up = now;
        if (len as f64) > self.allowance {
            return false;
        }
        self.allowance -= len as f64;
        true
    }

    /// Where to read to catch up with output held in `start..end`, or None when caught up.
    pub fn resume(&self, start: u64, end: u64) -> Option<Resume> {
        if self.offset >= end {
            return None;
        }
        let tail = end.saturating_sub(CATCH_UP_TAIL).max(start);
        if self.offset < tail {
            return Some(Resume {
                from: tail,
                skips: true,
            });
        }
        Some(Resume {
            from: self.offset,
            skips: false,
        })
    }

    /// Feeds bytes read from `from` after a skip: from the first line start near the front,
    /// else from the first escape sequence (never from the middle of one), else all of them.
    pub fn feed_after_skip(&mut self, bytes: &[u8], from: u64) {
        let front = &bytes[..bytes.len().min(LINE_SEARCH)];
        let start = front
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| at + 1)
            .or_else(|| front.iter().position(|&b| b == 0x1b))
            .unwrap_or(0);
        self.feed(&bytes[start..], from + bytes.len() as u64);
    }

    /// Feeds output that ends at offset `end`.
    pub fn feed(&mut self, bytes: &[u8], end: u64) {
        self.awake().feed(bytes);
        self.offset = end;
    }

    /// Follows the PTY's size.
    pub fn resize(&mut self, size: WinSize) {
        let size = clamp(size);
        self.awake().resize(size.cols, size.rows);
    }

    /// The screen now.
    pub fn shot(&mut self) -> ScreenShot {
        let offset = self.offset;
        let screen = self.awake();
        let (cols, rows) = screen.size();
        ScreenShot {
            offset,
            size: WinSize { rows, cols },
            dump: screen.dump(),
        }
    }

    /// The screen as it stands, without waking a sleeping model or catching up (an upgrade in
    /// place hands it down as this).
    pub fn export(&self) -> ScreenShot {
        let (dump, size) = match &self.model {
            Model::Awake(screen) => {
                let (cols, rows) = screen.size();
                (screen.dump(), WinSize { rows, cols })
            }
            Model::Asleep { dump, size } => (dump.clone(), *size),
        };
        ScreenShot {
            offset: self.offset,
            size,
            dump,
        }
    }

    /// A sleeping screen made from an [`SessionScreen::export`].
    pub fn imported(shot: ScreenShot) -> Self {
        SessionScreen {
            model: Model::Asleep {
                dump: shot.dump,
                size: clamp(shot.size),
            },
            offset: shot.offset,
            allowance: INLINE_BURST,
            topped_up: Instant::now(),
        }
    }

    /// The screen model itself, for text views.
    pub fn screen(&mut self) -> &Screen {
        self.awake()
    }

    /// Puts the model to sleep: it keeps only the bytes that redraw it.
    pub fn sleep(&mut self) {
        if let Model::Awake(screen) = &self.model {
            let (cols, rows) = screen.size();
            self.model = Model::Asleep {
                dump: screen.dump(),
                size: WinSize { rows, cols },
            };
        }
    }

    /// Whether the model is asleep.
    pub fn is_asleep(&self) -> bool {
        matches!(self.model, Model::Asleep { .. })
    }

    /// The model, woken (rebuilt from its dump) if it slept.
    fn awake(&mut self) -> &mut Screen {
        if let Model::Asleep { dump, size } = &self.model {
            let mut screen = Screen::new(size.cols, size.rows);
            screen.feed(dump);
            self.model = Model::Awake(Box::new(screen));
        }
        match &mut self.model {
            Model::Awake(screen) => screen,
            Model::Asleep { .. } => unreachable!("woken just above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shot_stands_for_the_offset_fed_and_redraws_the_text() {
        let mut screen = SessionScreen::new(WinSize { rows: 4, cols: 20 }, 100);
        assert_eq!(screen.shot().offset, 100);
        screen.feed(b"hello\r\nworld", 112);
        let shot = screen.shot();
        assert_eq!(shot.offset, 112);
        let mut fresh = Screen::new(20, 4);
        fresh.feed(&shot.dump);
        assert_eq!(fresh.rows_text()[..2], ["hello", "world"]);
    }

    #[test]
    fn a_short_backlog_resumes_where_it_stopped_and_a_long_one_from_its_tail() {
        let screen = SessionScreen::new(WinSize::default(), 1_000);
        assert_eq!(screen.resume(0, 1_000), None);
        assert_eq!(
            screen.resume(0, 5_000),
            Some(Resume {
                from: 1_000,
                skips: false
            })
        );
        let end = 1_000 + CATCH_UP_TAIL + 1;
        assert_eq!(
            screen.resume(0, end),
            Some(Resume {
                from: end - CATCH_UP_TAIL,
                skips: true
            })
        );
        // Bytes that left the ringbuffer are skipped too.
        assert_eq!(
            screen.resume(2_000, 3_000),
            Some(Resume {
                from: 2_000,
                skips: true
            })
        );
    }

    #[test]
    fn after_a_skip_the_screen_starts_at_a_line_start() {
        let mut screen = SessionScreen::new(WinSize { rows: 3, cols: 10 }, 0);
        screen.feed_after_skip(b"tial line\nwhole\n", 500);
        assert_eq!(screen.offset(), 516);
        assert_eq!(screen.screen().rows_text()[0], "whole");
    }

    #[test]
    fn the_inline_budget_refills_with_time() {
        let now = Instant::now();
        let mut screen = SessionScreen::new(WinSize::default(), 0);
        let burst = INLINE_BURST as u64;
        assert!(screen.may_parse(burst - 1_000, now));
        assert!(!screen.may_parse(2_000, now), "a flood outruns the budget");
        let later = now + std::time::Duration::from_millis(10);
        let refilled = (INLINE_RATE / 100.0) as u64;
        assert!(screen.may_parse(refilled, later), "refilled at INLINE_RATE");
        assert!(!screen.may_parse(refilled, later));
    }

    #[test]
    fn a_sleeping_screen_wakes_cell_for_cell() {
        let mut screen = SessionScreen::new(WinSize { rows: 5, cols: 20 }, 0);
        assert!(screen.is_asleep(), "blank until output comes");
        let output = b"\x1b[?1049h\x1b[2;3H\x1b[1;31mred\x1b[0m plain\r\nnext\x1b[?25l";
        screen.feed(output, output.len() as u64);
        let awake = screen.shot();
        screen.sleep();
        assert!(screen.is_asleep());
        assert_eq!(screen.shot(), awake);
        assert!(!screen.is_asleep());
        let mut fresh = Screen::new(20, 5);
        fresh.feed(output);
        assert_eq!(screen.screen().compare(&fresh), Ok(()));
    }

    #[test]
    fn absurd_sizes_are_clamped() {
        let mut zero = SessionScreen::new(WinSize { rows: 0, cols: 0 }, 0);
        assert_eq!(zero.shot().size, WinSize { rows: 1, cols: 1 });
        let mut huge = SessionScreen::new(WinSize::default(), 0);
        huge.resize(WinSize {
            rows: u16::MAX,
            cols: u16::MAX,
        });
        let size = huge.shot().size;
        assert!(size.rows <= cmdop_screen::MAX_ROWS && size.cols <= cmdop_screen::MAX_COLS);
    }
}
