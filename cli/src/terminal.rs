//! The interactive terminal: raw mode on the local terminal, keystrokes up, output down.
//!
//! - The **uplink** task reads stdin (on a dedicated thread) and window-size changes and sends
//!   them at once, numbered with input sequence numbers. It never waits for output, so Ctrl+C
//!   reaches the session while output floods.
//! - The **downlink** task writes output frames to stdout and remembers the highest offset
//!   shown; a gap marker says how much output was skipped.
//! - Ctrl+D (configurable) detaches; `Ctrl+]` then Ctrl+D sends a literal Ctrl+D, and `Ctrl+]`
//!   twice sends a literal `Ctrl+]`.
//! - Raw mode is restored on every exit path: normal return, error, and panic.

use crate::context::Context;
use anyhow::{anyhow, bail};
use cmdop_node::client::{describe_close, NodeClient};
use cmdop_node::proto::{
    AttachInput, AttachMode, AttachOutput, AttachRequest, SessionInfo, WinSize,
};
use cmdop_node::units::format_bytes;
use cmdop_node::wire::{FramedRecv, FramedSend, RecvError};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

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

/// What ended an attachment.
enum Outcome {
    Detached,
    Exited(i32),
    Kicked(String),
}

/// What the uplink saw in a chunk of typed bytes.
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
/// or takeover.
pub async fn run(
    context: &Context,
    client: NodeClient,
    session: SessionInfo,
    options: AttachOptions,
) -> anyhow::Result<ExitCode> {
    let detach_key = parse_key(&context.config.client.detach_key)?;
    let size = window_size().unwrap_or_default();
    let name = client.target.name.clone();
    let (send, recv) = client
        .connection
        .open_bi()
        .await
        .map_err(|e| anyhow!("{}", describe_close(&name, e)))?;
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, cmdop_node::frame::DEFAULT_MAX_FRAME);
    send.send(&AttachRequest {
        session: session.id,
        mode: options.mode,
        takeover: options.takeover,
        resume_from: None,
        scrollback_bytes: context.config.client.attach_scrollback.0,
        size,
    })
    .await?;
    let (info, input_seq) = match recv.recv::<AttachOutput>().await {
        Ok(Some(AttachOutput::Attached {
            session, input_seq, ..
        })) => (session, input_seq),
        Ok(Some(AttachOutput::Error(e))) => bail!("{}", e.message),
        Ok(Some(other)) => bail!("unexpected first frame from the node: {other:?}"),
        Ok(None) => bail!("the node closed the attachment"),
        Err(e) => bail!("{}", recv_failure(&name, &client.connection, e)),
    };
    let label = info
        .name
        .clone()
        .unwrap_or_else(|| info.id.to_string()[..8].to_string());
    let short = info.id.to_string()[..8].to_string();
    let reattach_arg = info.name.clone().unwrap_or_else(|| info.id.to_string());

    let raw = RawMode::enter();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;

    let detaching = Arc::new(AtomicBool::new(false));
    let mut uplink = tokio::spawn(uplink(
        send,
        stdin_rx,
        options.mode,
        detach_key,
        input_seq,
        detaching.clone(),
    ));
    let connection = client.connection.clone();
    let downlink_name = name.clone();
    let mut downlink =
        tokio::spawn(async move { downlink(recv, &connection, &downlink_name, &detaching).await });
    let outcome = tokio::select! {
        up = &mut uplink => {
            // Detach requested (or stdin closed): stop showing output.
            downlink.abort();
            up.unwrap_or(Ok(Outcome::Detached))
        }
        down = &mut downlink => {
            uplink.abort();
            down.unwrap_or_else(|e| Err(anyhow!("output task failed: {e}")))
        }
    };
    drop(raw);
    client.connection.close(0u32.into(), b"detached");
    match outcome? {
        Outcome::Detached => {
            eprintln!(
                "\r\ndetached from session {label} ({short}); reattach with: cmdop connect {name} --session {reattach_arg}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Exited(code) => {
            eprintln!("\r\nsession {label} ({short}) ended: the shell exited with code {code}");
            Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ))
        }
        Outcome::Kicked(reason) => {
            eprintln!("\r\ndetached from session {label} ({short}): {reason}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn recv_failure(name: &str, connection: &quinn::Connection, error: RecvError) -> String {
    match connection.close_reason() {
        Some(close) => describe_close(name, close).to_string(),
        None => error.to_string(),
    }
}

async fn uplink(
    mut send: FramedSend,
    mut stdin: mpsc::Receiver<Vec<u8>>,
    mode: AttachMode,
    detach_key: u8,
    mut next_seq: u64,
    detaching: Arc<AtomicBool>,
) -> anyhow::Result<Outcome> {
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut escaped = false;
    loop {
        tokio::select! {
            bytes = stdin.recv() => {
                let Some(bytes) = bytes else {
                    // stdin closed: leave the session running.
                    detaching.store(true, Ordering::Release);
                    let _ = send.send(&AttachInput::Detach).await;
                    send.finish();
                    return Ok(Outcome::Detached);
                };
                let typed = scan_typed(&bytes, detach_key, &mut escaped);
                if !typed.send.is_empty() && mode == AttachMode::Interactive {
                    let len = typed.send.len() as u64;
                    send.send(&AttachInput::Input { seq: next_seq, data: typed.send }).await?;
                    next_seq += len;
                }
                if typed.detach {
                    detaching.store(true, Ordering::Release);
                    send.send(&AttachInput::Detach).await?;
                    send.finish();
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), send.stream().stopped()).await;
                    return Ok(Outcome::Detached);
                }
            }
            _ = winch.recv() => {
                if mode == AttachMode::Interactive {
                    if let Some(size) = window_size() {
                        send.send(&AttachInput::Resize(size)).await?;
                    }
                }
            }
        }
    }
}

async fn downlink(
    mut recv: FramedRecv,
    connection: &quinn::Connection,
    name: &str,
    detaching: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let mut shown: u64 = 0;
    loop {
        let frame = match recv.recv::<AttachOutput>().await {
            Ok(Some(frame)) => frame,
            // The node ends the stream in answer to our detach.
            _ if detaching.load(Ordering::Acquire) => return Ok(Outcome::Detached),
            Ok(None) => bail!("the node ended the attachment"),
            Err(e) => bail!("{}", recv_failure(name, connection, e)),
        };
        match frame {
            AttachOutput::Output { offset, data } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
                shown = offset + data.len() as u64;
            }
            AttachOutput::Gap { lost } => {
                let mut out = std::io::stdout().lock();
                write!(
                    out,
                    "\r\n[cmdop: {} of output skipped]\r\n",
                    format_bytes(lost)
                )?;
                out.flush()?;
            }
            AttachOutput::InputAck { .. } => {}
            AttachOutput::Exited { code } => return Ok(Outcome::Exited(code)),
            AttachOutput::Detached { reason } => return Ok(Outcome::Kicked(reason)),
            AttachOutput::Error(e) => bail!("{}", e.message),
            AttachOutput::Attached { .. } => {}
        }
        let _ = shown;
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
