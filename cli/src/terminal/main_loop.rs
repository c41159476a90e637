//! The live terminal's main loop: attach, start the stdin reader and the resize watcher, then
//! show the attachment's events until it ends.

use super::echo::LocalEcho;
use super::keys::{parse_key, spawn_stdin_reader};
use super::raw::{window_size, RawMode};
use super::status::{Attached, ScreenPainter, StatusLine};
use super::stdout::Stdout;
use super::AttachOptions;
use crate::context::Context;
use cmdop_client::dial::NodeClient;
use cmdop_client::live::{AttachSpec, Attachment, AttachmentHandle, End, Event};
use cmdop_proto::{AttachMode, SessionInfo, WinSize};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Attaches to `session` over `client`'s connection and runs the terminal until detach, exit
/// or takeover; the attachment reconnects as often as the network needs.
pub async fn run(
    context: &Context,
    client: NodeClient,
    session: SessionInfo,
    options: AttachOptions,
) -> anyhow::Result<ExitCode> {
    let detach_key = parse_key(&context.config.client.detach_key)?;
    let host = client.target.name.clone();
    let spec = AttachSpec {
        session: session.id,
        mode: options.mode,
        takeover: options.takeover,
        scrollback_bytes: context.config.client.attach_scrollback.0,
        size: window_size().unwrap_or_default(),
    };
    let attachment = Attachment::open(context.dialer()?, client, spec).await?;
    let attached = Arc::new(Attached::new(&attachment.info, &host));
    let transcript = open_transcript()?;

    let size = window_size().unwrap_or_default();
    let echo = match options.mode {
        AttachMode::Interactive => LocalEcho::new(options.predict, size),
        AttachMode::ReadOnly => None,
    };
    let raw = RawMode::enter();
    if echo.is_some() {
        // The screen model starts blank with the cursor home: make the terminal match, keeping
        // what it showed in its scrollback.
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[{};1H", size.rows)?;
        out.write_all(&vec![b'\n'; usize::from(size.rows)])?;
        out.write_all(b"\x1b[H\x1b[2J")?;
        out.flush()?;
    }
    let (keys_tx, keys) = mpsc::unbounded_channel();
    let (sizes_tx, sizes) = mpsc::unbounded_channel();
    spawn_stdin_reader(attachment.handle(), detach_key, keys_tx)?;
    forward_resizes(attachment.handle(), sizes_tx)?;
    let shown = Shown {
        attached: attached.clone(),
        transcript,
        status: StatusLine::default(),
        painter: ScreenPainter::default(),
        echo,
        stdout: Stdout::open(),
        pending: Vec::new(),
    };
    // A task of its own: woken by the output task, it writes before anything else runs (the
    // future `block_on` polls only runs once every woken task has).
    let (attachment, end) = tokio::spawn(show_events(attachment, shown, Local { keys, sizes }))
        .await
        .map_err(|e| anyhow::anyhow!("the terminal task failed: {e}"))?;
    drop(raw);
    if std::env::var_os("CMDOP_DEBUG").is_some() {
        eprintln!("\r\ncmdop: {:?}", attachment.stats());
    }
    attached.report_end(end?)
}

/// The file `CMDOP_TRANSCRIPT` names, if set. It holds everything the terminal showed:
/// owner-only, like the rest of cmdop's secrets.
fn open_transcript() -> std::io::Result<Option<File>> {
    let Some(path) = std::env::var_os("CMDOP_TRANSCRIPT") else {
        return Ok(None);
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map(Some)
}

/// Forwards the local terminal's size whenever it changes (to the node, and to `sizes`).
fn forward_resizes(
    handle: AttachmentHandle,
    sizes: mpsc::UnboundedSender<WinSize>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = window_size() {
                handle.resize(size);
                let _ = sizes.send(size);
            }
        }
    });
    Ok(())
}

/// What the main loop hears besides the attachment: keystrokes (already sent) and size
/// changes, for the local echo.
struct Local {
    keys: mpsc::UnboundedReceiver<Vec<u8>>,
    sizes: mpsc::UnboundedReceiver<WinSize>,
}

/// The terminal's state across events.
struct Shown {
    attached: Arc<Attached>,
    transcript: Option<File>,
    status: StatusLine,
    painter: ScreenPainter,
    echo: Option<LocalEcho>,
    stdout: Stdout,
    /// What the last event drew, not written to stdout yet.
    pending: Vec<u8>,
}

/// Writes the attachment's output (and a copy to the transcript), screens, the status line and
/// the local echo, until the attachment ends; hands the attachment back.
async fn show_events(
    mut attachment: Attachment,
    mut shown: Shown,
    local: Local,
) -> (Attachment, anyhow::Result<End>) {
    let end = show_until_end(&mut attachment, &mut shown, local).await;
    (attachment, end)
}

async fn show_until_end(
    attachment: &mut Attachment,
    shown: &mut Shown,
    mut local: Local,
) -> anyhow::Result<End> {
    loop {
        let deadline = shown.echo.as_ref().and_then(LocalEcho::deadline);
        let event = tokio::select! {
            event = attachment.next_event() => event,
            Some(keys) = local.keys.recv() => {
                if let Some(echo) = shown.echo.as_mut() {
                    // The keystroke is on its way out: let the connection send it before the
                    // predictions are worked out (they cost as much as the send, cold).
                    tokio::task::yield_now().await;
                    echo.set_rtt(attachment.rtt());
                    echo.keystroke(&mut shown.pending, &keys)?;
                }
                shown.flush().await?;
                continue;
            }
            Some(size) = local.sizes.recv() => {
                if let Some(echo) = shown.echo.as_mut() {
                    echo.resize(&mut shown.pending, size)?;
                }
                shown.flush().await?;
                continue;
            }
            _ = sleep_until(deadline) => {
                if let Some(echo) = shown.echo.as_mut() {
                    echo.tick(&mut shown.pending)?;
                }
                shown.flush().await?;
                continue;
            }
        };
        let Some(event) = event else {
            return Ok(End::Gone("the attachment ended unexpectedly".into()));
        };
        let end = shown.event(event)?;
        shown.flush().await?;
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Shown {
    /// Writes what the last event drew.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.stdout.write_all(&self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Draws one event into `pending`; the end, if it is one.
    fn event(&mut self, event: Event) -> anyhow::Result<Option<End>> {
        let out = &mut self.pending;
        match event {
            Event::Output(bytes) => {
                match self.echo.as_mut() {
                    Some(echo) => echo.output(out, &bytes)?,
                    None => out.write_all(&bytes)?,
                }
                if let Some(file) = self.transcript.as_mut() {
                    file.write_all(&bytes)?;
                }
            }
            Event::Screen(frame) => {
                if let Some(echo) = self.echo.as_mut() {
                    echo.clear(out)?;
                }
                let rows = window_size().unwrap_or_default().rows;
                let mut drawn = Vec::new();
                let hint = self.attached.skip_hint();
                self.painter.draw(&mut drawn, &frame, rows, &hint)?;
                out.write_all(&drawn)?;
                if let Some(echo) = self.echo.as_mut() {
                    echo.redrawn(&drawn);
                }
            }
            Event::EchoAck(typed) => {
                if let Some(echo) = self.echo.as_mut() {
                    echo.echo_ack(out, typed)?;
                }
            }
            Event::Link(state) => self.status.link(out, &state, self.attached.host()),
            Event::Direct(_) => {}
            Event::End(end) => {
                if let Some(echo) = self.echo.as_mut() {
                    echo.finish(out)?;
                }
                self.status.clear(out);
                return Ok(Some(end));
            }
        }
        Ok(None)
    }
}
