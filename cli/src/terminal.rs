//! The interactive terminal: raw mode on the local terminal, keystrokes up, output down.
//!
//! The connection work (sequence numbers, roaming, reconnect and resync) is the node library's
//! [`Attachment`]; this module is the terminal around it:
//! - a **stdin thread** reads keys and hands them to the attachment at once (never behind
//!   output), watching for the detach key: Ctrl+D by default, `Ctrl+]` then Ctrl+D sends a
//!   literal Ctrl+D, and `Ctrl+]` twice a literal `Ctrl+]`;
//! - the **main loop** writes output to stdout, a gap marker where the node's ringbuffer
//!   overflowed, and a one-line status (top row, like mosh) while the link is down;
//! - window-size changes are forwarded; raw mode is restored on every exit path, panics included.
//!
//! `CMDOP_TRANSCRIPT=FILE` copies every session byte shown into FILE (tests compare it with what
//! the session printed).

use crate::context::Context;
use anyhow::{anyhow, bail};
use cmdop_node::attachment::{AttachSpec, Attachment, End, Event, LinkState};
use cmdop_node::client::NodeClient;
use cmdop_node::proto::{AttachMode, SessionInfo, WinSize};
use cmdop_node::units::format_bytes;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::OnceLock;

/// How to attach.
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// Interactive or read-only.
    pub mode: AttachMode,
    /// Force-detach the current holder.
    pub takeover: bool,
}

/// The byte that prefixes a literal detach key.
const ESCAPE_PREFIX: u8 = 0x1d;
/// The local terminal's size, if stdin or stdout is a terminal.
pub fn window_size() -> Option<WinSize> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some(WinSize {
                rows: size.ws_row,
                cols: size.ws_col,
            });
        }
    }
    None
}

static ORIGINAL_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

fn restore_terminal() {
    if let Some(original) = ORIGINAL_TERMIOS.get() {
        // SAFETY: tcsetattr reads the termios we saved from this same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, original);
        }
    }
}

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: isatty/tcgetattr/tcsetattr on stdin with structs we own.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return None;
            }
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut termios) != 0 {
                return None;
            }
            let _ = ORIGINAL_TERMIOS.set(termios);
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
            let mut raw = termios;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw);
        }
        Some(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Parses `ctrl-d`-style key names.
pub fn parse_key(name: &str) -> anyhow::Result<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let letter = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix('^'))
        .filter(|rest| rest.len() == 1)
        .and_then(|rest| rest.bytes().next())
        .filter(|b| b.is_ascii_lowercase() || *b == b'\\');
    match letter {
        Some(b) => Ok(b & 0x1f),
        None => bail!("client.detach_key '{name}' in config.yaml is not a key like ctrl-d (ctrl-a to ctrl-z or ctrl-\\)"),
    }
}

/// What a typed chunk means.
#[derive(Debug, PartialEq, Eq)]
struct Typed {
    /// Bytes to send.
    send: Vec<u8>,
    /// The detach key was pressed (after `send`).
    detach: bool,
}

/// Filters typed bytes for the detach key and the literal prefix; `escaped` carries a pending
/// prefix across chunks.
fn scan_typed(bytes: &[u8], detach_key: u8, escaped: &mut bool) -> Typed {
    let mut send = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if *escaped {
            *escaped = false;
            if b != detach_key && b != ESCAPE_PREFIX {
                send.push(ESCAPE_PREFIX);
            }
            send.push(b);
        } else if b == ESCAPE_PREFIX {
            *escaped = true;
        } else if b == detach_key {
            return Typed { send, detach: true };
        } else {
            send.push(b);
        }
    }
    Typed {
        send,
        detach: false,
    }
}

/// Attaches to `session` over `client`'s connection and runs the terminal until detach, exit
/// or takeover; the attachment reconnects as often as the network needs.
pub async fn run(
    context: &Context,
    client: NodeClient,
    session: SessionInfo,
    options: AttachOptions,
) -> anyhow::Result<ExitCode> {
    let detach_key = parse_key(&context.config.client.detach_key)?;
    let target = client.target.clone();
    let spec = AttachSpec {
        session: session.id,
        mode: options.mode,
        takeover: options.takeover,
        scrollback_bytes: context.config.client.attach_scrollback.0,
        size: window_size().unwrap_or_default(),
    };
    let mut attachment = Attachment::open(context.dialer()?, client, spec).await?;
    let info = attachment.info.clone();
    // "deploy (01a21a57)" for a named session, "01a21a57-8295" for an unnamed one.
    let id = info.id.to_string();
    let label = match &info.name {
        Some(name) => format!("{name} ({})", &id[..8]),
        None => id[..13].to_string(),
    };
    let reattach_arg = info.name.clone().unwrap_or_else(|| info.id.to_string());
    let mut transcript = match std::env::var_os("CMDOP_TRANSCRIPT") {
        // It holds everything the terminal showed: owner-only, like the rest of cmdop's secrets.
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)?,
        ),
        None => None,
    };

    let raw = RawMode::enter();
    let handle = attachment.handle();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut escaped = false;
            loop {
                let n = match stdin.read(&mut buf) {
                    // stdin closed: leave the session running.
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let typed = scan_typed(&buf[..n], detach_key, &mut escaped);
                if !typed.send.is_empty() {
                    handle.input(typed.send);
                }
                if typed.detach {
                    break;
                }
            }
            handle.detach();
        })?;
    let resize_handle = attachment.handle();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = window_size() {
                resize_handle.resize(size);
            }
        }
    });

    let mut status = StatusLine::default();
    let end = loop {
        let Some(event) = attachment.next_event().await else {
            break End::Gone("the attachment ended unexpectedly".into());
        };
        let mut out = std::io::stdout().lock();
        match event {
            Event::Output(bytes) => {
                out.write_all(&bytes)?;
                out.flush()?;
                if let Some(file) = transcript.as_mut() {
                    file.write_all(&bytes)?;
                }
            }
            Event::Gap(lost) => {
                write!(
                    out,
                    "\r\n[cmdop: {} of output skipped]\r\n",
                    format_bytes(lost)
                )?;
                out.flush()?;
            }
            Event::Link(LinkState::Up) => status.clear(&mut out),
            Event::Link(LinkState::Silent { secs, peer }) => status.show(
                &mut out,
                &format!(
                    "cmdop: no contact with {} ({peer}) for {secs} s (Ctrl+D detaches)",
                    target.name
                ),
            ),
            Event::Link(LinkState::Reconnecting { secs }) => status.show(
                &mut out,
                &format!(
                    "cmdop: reconnecting to {}, last contact {secs} s ago (Ctrl+D detaches)",
                    target.name
                ),
            ),
            Event::End(end) => {
                status.clear(&mut out);
                break end;
            }
        }
    };
    drop(raw);
    if std::env::var_os("CMDOP_DEBUG").is_some() {
        eprintln!("\r\ncmdop: {:?}", attachment.stats());
    }
    match end {
        End::Detached => {
            eprintln!(
                "\r\ndetached from session {label}; reattach with: cmdop connect {} --session {reattach_arg}",
                target.name
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

/// A one-line status on the top row (reverse video), like mosh's; cleared when the link is up.
#[derive(Default)]
struct StatusLine {
    shown: Option<String>,
}

impl StatusLine {
    fn show(&mut self, out: &mut impl Write, text: &str) {
        if self.shown.as_deref() == Some(text) {
            return;
        }
        let _ = write!(out, "\x1b7\x1b[1;1H\x1b[7m {text} \x1b[0m\x1b[K\x1b8");
        let _ = out.flush();
        self.shown = Some(text.to_string());
    }

    fn clear(&mut self, out: &mut impl Write) {
        if self.shown.take().is_some() {
            let _ = write!(out, "\x1b7\x1b[1;1H\x1b[2K\x1b8");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn detach_key_and_literal_prefix() {
        let mut escaped = false;
        assert_eq!(
            scan_typed(b"ls\r", 4, &mut escaped),
            Typed {
                send: b"ls\r".to_vec(),
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"ab\x04cd", 4, &mut escaped),
            Typed {
                send: b"ab".to_vec(),
                detach: true
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x04x", 4, &mut escaped),
            Typed {
                send: b"\x04x".to_vec(),
                detach: false
            }
        );
        // A prefix split across reads still works.
        assert_eq!(
            scan_typed(b"\x1d", 4, &mut escaped),
            Typed {
                send: vec![],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x04", 4, &mut escaped),
            Typed {
                send: vec![4],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x1d", 4, &mut escaped),
            Typed {
                send: vec![0x1d],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1dq", 4, &mut escaped),
            Typed {
                send: vec![0x1d, b'q'],
                detach: false
            }
        );
    }

    #[test]
    fn key_names() {
        assert_eq!(parse_key("ctrl-d").unwrap(), 4);
        assert_eq!(parse_key("Ctrl+A").unwrap(), 1);
        assert_eq!(parse_key("^q").unwrap(), 17);
        assert!(parse_key("meta-x").is_err());
    }
}
