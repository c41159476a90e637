//! What the live terminal says besides the session's output: a one-line status while the link
//! is down, a marker where output was skipped, and a sentence when the attachment ends.

use anyhow::anyhow;
use cmdop_client::live::{End, LinkState};
use cmdop_proto::{ScreenFrame, SessionInfo, SkipReason};
use std::io::Write;
use std::process::ExitCode;

/// A one-line status on the top row (reverse video), like mosh's; cleared when the link is up.
#[derive(Default)]
pub struct StatusLine {
    shown: Option<String>,
}

impl StatusLine {
    /// Shows the status for `state` (talking about `host`), or clears it when the link is up.
    pub fn link(&mut self, out: &mut impl Write, state: &LinkState, host: &str) {
        match state {
            LinkState::Up => self.clear(out),
            LinkState::Silent { secs, peer } => self.show(
                out,
                &format!("cmdop: no contact with {host} ({peer}) for {secs} s (Ctrl+D detaches)"),
            ),
            LinkState::Reconnecting { secs } => self.show(
                out,
                &format!(
                    "cmdop: reconnecting to {host}, last contact {secs} s ago (Ctrl+D detaches)"
                ),
            ),
        }
    }

    fn show(&mut self, out: &mut impl Write, text: &str) {
        if self.shown.as_deref() == Some(text) {
            return;
        }
        let _ = write!(out, "\x1b7\x1b[1;1H\x1b[7m {text} \x1b[0m\x1b[K\x1b8");
        let _ = out.flush();
        self.shown = Some(text.to_string());
    }

    /// Removes the status, if one is shown.
    pub fn clear(&mut self, out: &mut impl Write) {
        if self.shown.take().is_some() {
            let _ = write!(out, "\x1b7\x1b[1;1H\x1b[2K\x1b8");
            let _ = out.flush();
        }
    }
}

/// Brings a terminal to the state a screen dump expects: main screen, no mouse reporting or
/// bracketed paste, soft reset (pen, margins, modes, charsets), screen cleared, cursor home.
const SOFT_RESET: &[u8] =
    b"\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[!p\x1b[H\x1b[2J";

/// How long without a skip before the next one is news again (worth a marker line).
const SKIP_EPISODE: std::time::Duration = std::time::Duration::from_secs(5);

/// Draws screen frames, and marks in the terminal's scrollback where output was skipped: once
/// per episode of skipping, not once per frame (a flood on a slow link sends one every few
/// round trips).
#[derive(Default)]
pub struct ScreenPainter {
    last_skip: Option<std::time::Instant>,
}

impl ScreenPainter {
    /// Draws `frame` in place of the output it skipped; `rows` is the terminal's height, and
    /// `hint` says how to see the skipped output.
    pub fn draw(
        &mut self,
        out: &mut impl Write,
        frame: &ScreenFrame,
        rows: u16,
        hint: &str,
    ) -> std::io::Result<()> {
        let now = std::time::Instant::now();
        let news = self
            .last_skip
            .is_none_or(|at| now.duration_since(at) >= SKIP_EPISODE);
        self.last_skip = Some(now);
        if news {
            let why = match frame.reason {
                SkipReason::SlowLink => "on a slow link",
                SkipReason::Typed => "to show your keystroke",
                SkipReason::Overwritten => "that the node no longer holds",
            };
            let skipped = crate::output::bytes(frame.skipped);
            let hint = match frame.reason {
                SkipReason::Overwritten => String::new(),
                SkipReason::SlowLink | SkipReason::Typed => format!("; {hint}"),
            };
            write!(
                out,
                "\r\n[cmdop: skipped {skipped} of output {why}{hint}]\r\n"
            )?;
        }
        // Push what the screen shows into the scrollback, then redraw from a reset terminal: a
        // soft reset and a cleared screen (a full reset, RIS, clears the scrollback too in some
        // terminals), leaving the alternate screen and the modes a dump does not switch off.
        write!(out, "\x1b[{rows};1H")?;
        out.write_all(&vec![b'\n'; usize::from(rows)])?;
        out.write_all(SOFT_RESET)?;
        out.write_all(&frame.dump)?;
        out.flush()
    }
}

/// The session the terminal shows, as the closing sentence names it.
pub struct Attached {
    /// "deploy (01a21a57)" for a named session, "01a21a57-8295" for an unnamed one.
    label: String,
    /// What `--session` takes to come back: the name, else the id.
    reattach_arg: String,
    /// The host's name.
    host: String,
}

impl Attached {
    /// The session `info` on `host`.
    pub fn new(info: &SessionInfo, host: &str) -> Self {
        let id = info.id.to_string();
        let label = match &info.name {
            Some(name) => format!("{name} ({})", &id[..8]),
            None => id[..13].to_string(),
        };
        Attached {
            label,
            reattach_arg: info.name.clone().unwrap_or(id),
            host: host.to_string(),
        }
    }

    /// The host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How to see skipped output without attaching.
    pub fn skip_hint(&self) -> String {
        format!(
            "see it with: cmdop session show {} --host {} --tail 2000",
            self.reattach_arg, self.host
        )
    }

    /// Says how the attachment ended (on stderr, after raw mode) and gives the exit code: the
    /// shell's when it exited.
    pub fn report_end(&self, end: End) -> anyhow::Result<ExitCode> {
        let Attached {
            label,
            reattach_arg,
            host,
        } = self;
        match end {
            End::Detached => {
                eprintln!(
                    "\r\ndetached from session {label}; reattach with: cmdop connect {host} --session {reattach_arg}"
                );
                Ok(ExitCode::SUCCESS)
            }
            End::Exited(code) => {
                eprintln!("\r\nsession {label} ended: the shell exited with code {code}");
                Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
            }
            End::Kicked(reason) => {
                eprintln!("\r\ndetached from session {label}: {reason}");
                Ok(ExitCode::SUCCESS)
            }
            End::Gone(message) => Err(anyhow!("{message}")),
        }
    }
}
