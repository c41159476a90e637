//! The live terminal's main loop: attach, start the stdin reader and the resize watcher, then
//! show the attachment's events until it ends.

use super::keys::{parse_key, spawn_stdin_reader};
use super::raw::{window_size, RawMode};
use super::status::{write_gap, Attached, ScreenPainter, StatusLine};
use super::AttachOptions;
use crate::context::Context;
use cmdop_client::dial::NodeClient;
use cmdop_client::live::{AttachSpec, Attachment, AttachmentHandle, End, Event};
use cmdop_proto::SessionInfo;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

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
    let mut attachment = Attachment::open(context.dialer()?, client, spec).await?;
    let attached = Attached::new(&attachment.info, &host);
    let mut transcript = open_transcript()?;

    let raw = RawMode::enter();
    spawn_stdin_reader(attachment.handle(), detach_key)?;
    forward_resizes(attachment.handle())?;
    let end = show_events(&mut attachment, &attached, transcript.as_mut()).await?;
    drop(raw);
    if std::env::var_os("CMDOP_DEBUG").is_some() {
        eprintln!("\r\ncmdop: {:?}", attachment.stats());
    }
    attached.report_end(end)
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

/// Forwards the local terminal's size whenever it changes.
fn forward_resizes(handle: AttachmentHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = window_size() {
                handle.resize(size);
            }
        }
    });
    Ok(())
}

/// Writes the attachment's output (and a copy to the transcript), gap markers and the status
/// line, until the attachment ends.
async fn show_events(
    attachment: &mut Attachment,
    attached: &Attached,
    mut transcript: Option<&mut File>,
) -> anyhow::Result<End> {
    let mut status = StatusLine::default();
    let mut painter = ScreenPainter::default();
    loop {
        let Some(event) = attachment.next_event().await else {
            return Ok(End::Gone("the attachment ended unexpectedly".into()));
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
            Event::Gap(lost) => write_gap(&mut out, lost)?,
            Event::Screen(frame) => {
                let rows = window_size().unwrap_or_default().rows;
                painter.draw(&mut out, &frame, rows, &attached.skip_hint())?;
            }
            Event::EchoAck(_) => {}
            Event::Link(state) => status.link(&mut out, &state, attached.host()),
            Event::End(end) => {
                status.clear(&mut out);
                return Ok(end);
            }
        }
    }
}
