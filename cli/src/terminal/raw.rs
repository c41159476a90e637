//! The local terminal: its size, and raw mode for as long as a [`RawMode`] lives (restored on
//! every exit path, panics included).

use cmdop_proto::WinSize;
use rustix::termios::{self, OptionalActions, Termios};
use std::sync::OnceLock;

/// The local terminal's size, if stdin or stdout is a terminal.
pub fn window_size() -> Option<WinSize> {
    let sizes = [
        termios::tcgetwinsize(std::io::stdin()),
        termios::tcgetwinsize(std::io::stdout()),
    ];
    sizes
        .into_iter()
        .flatten()
        .find(|size| size.ws_row > 0 && size.ws_col > 0)
        .map(|size| WinSize {
            rows: size.ws_row,
            cols: size.ws_col,
        })
}

/// The terminal settings from before raw mode.
static ORIGINAL_TERMIOS: OnceLock<Termios> = OnceLock::new();

fn restore_terminal() {
    if let Some(original) = ORIGINAL_TERMIOS.get() {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, original);
    }
}

/// Raw mode for as long as it lives.
pub struct RawMode;

impl RawMode {
    /// Puts stdin in raw mode; None if stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !termios::isatty(&stdin) {
            return None;
        }
        let original = termios::tcgetattr(&stdin).ok()?;
        let mut raw = original.clone();
        let _ = ORIGINAL_TERMIOS.set(original);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, &raw);
        Some(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}
