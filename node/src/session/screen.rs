//! A session's screen: what a terminal showing every byte the PTY printed would display now,
//! and the output offset it stands for. The pump sends it in place of a backlog a client cannot
//! take in time ([`cmdop_proto::ScreenFrame`]); `cmdop session show --screen` prints it.
//!
//! It keeps no scrollback (the ringbuffer is the one scrollback) and follows the PTY's size,
//! clamped to what [`cmdop_screen`] accepts.

use cmdop_proto::WinSize;
use cmdop_screen::Screen;

/// The screen model of one session and how far into the output it has read.
#[derive(Debug)]
pub struct SessionScreen {
    screen: Screen,
    /// One past the last output byte fed.
    offset: u64,
}

/// The screen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenShot {
    /// The output offset it stands for.
    pub offset: u64,
    /// Its size.
    pub size: WinSize,
    /// Bytes that redraw it on a freshly reset terminal of that size.
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
        let size = clamp(size);
        SessionScreen {
            screen: Screen::new(size.cols, size.rows),
            offset,
        }
    }

    /// Feeds output that ends at offset `end`.
    pub fn feed(&mut self, bytes: &[u8], end: u64) {
        self.screen.feed(bytes);
        self.offset = end;
    }

    /// Follows the PTY's size.
    pub fn resize(&mut self, size: WinSize) {
        let size = clamp(size);
        self.screen.resize(size.cols, size.rows);
    }

    /// The screen now.
    pub fn shot(&self) -> ScreenShot {
        let (cols, rows) = self.screen.size();
        ScreenShot {
            offset: self.offset,
            size: WinSize { rows, cols },
            dump: self.screen.dump(),
        }
    }

    /// The screen model itself, for text views.
    pub fn screen(&self) -> &Screen {
        &self.screen
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
    fn absurd_sizes_are_clamped() {
        let zero = SessionScreen::new(WinSize { rows: 0, cols: 0 }, 0);
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
