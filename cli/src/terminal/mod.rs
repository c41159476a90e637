//! The interactive terminal: raw mode on the local terminal, keystrokes up, output down.
//!
//! The connection work (sequence numbers, roaming, reconnect and resync) is the client
//! library's [`Attachment`](cmdop_client::live::Attachment); this module is the terminal around
//! it:
//! - a **stdin reader** (a task on the runtime, polling a non-blocking copy of stdin; a
//!   thread only where stdin cannot be polled) hands keys to the attachment at once (never
//!   behind output), watching for the detach key: Ctrl+D by default, `Ctrl+]` then Ctrl+D sends a
//!   literal Ctrl+D, and `Ctrl+]` twice a literal `Ctrl+]` ([`keys`]);
//! - the **main loop** writes output to stdout, the screen the node sends where it skipped
//!   output, and a one-line status (top row, like mosh) while the link is down
//!   ([`main_loop`], [`status`]);
//! - keystrokes are also shown before the node echoes them, on slow links ([`echo`]: the
//!   client's prediction engine over a screen model, drawn without giving up the scrollback);
//! - window-size changes are forwarded; raw mode is restored on every exit path, panics
//!   included ([`raw`]).
//!
//! `CMDOP_TRANSCRIPT=FILE` copies every session byte shown into FILE (tests compare it with what
//! the session printed).

mod echo;
mod keys;
mod main_loop;
mod polled;
mod raw;
mod status;
mod stdout;

pub use main_loop::run;
pub use raw::window_size;

use cmdop_proto::AttachMode;

/// How to attach.
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// Interactive or read-only.
    pub mode: AttachMode,
    /// Force-detach the current holder.
    pub takeover: bool,
    /// Predictive local echo.
    pub predict: cmdop_proto::config::Predict,
}
