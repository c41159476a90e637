//! In-process tests of the daemon: a registry on the fake PTY ([`crate::os::fake`]), attachments
//! driven over `tokio::io::duplex`, no process spawned and no socket opened.
//!
//! - [`admission`]: the holder, takeover and read-only viewers, and every limit;
//! - [`input`]: keystrokes applied once across a reconnect, a takeover and a stalled program;
//! - [`output`]: the gap when a reader falls off the ringbuffer, the exit after the last output;
//! - [`expiry`]: idle expiry on a clock the test moves;
//! - [`trigger`]: the trigger service on a fake runner and a fake clock;
//! - [`upgrade`]: a session halted, written down and adopted again, as an upgrade in place does.
//!
//! Waits are on events (a frame, a byte typed, an output offset reached), never on sleeps; the
//! timeouts only turn a hang into a failure.

#![allow(clippy::unwrap_used)]

mod admission;
mod create;
mod expiry;
mod input;
mod output;
mod trigger;
mod upgrade;

use crate::os::fake::{FakeProgram, FakePty};
use crate::server::attach::{attach, OnMalformed};
use crate::server::framed::{FrameReader, FrameSink, FrameSource, FrameWriter};
use crate::session::admission::Peer;
use crate::session::registry::Registry;
use crate::session::Session;
use cmdop_certs::Fingerprint;
use cmdop_proto::config::NodeConfig;
use cmdop_proto::{
    AttachInput, AttachMode, AttachOutput, AttachRequest, CreateSession, ErrorKind, WinSize,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The window size sessions start with.
const SIZE: WinSize = WinSize { rows: 24, cols: 80 };

/// A hang becomes a failure after this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// A request for a session of [`SIZE`], named `name`.
fn new_session(name: Option<&str>) -> CreateSession {
    CreateSession {
        name: name.map(str::to_owned),
        size: SIZE,
        term: None,
        cwd: None,
        env: Vec::new(),
    }
}

/// Awaits `f`, failing the test if it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until the session's ringbuffer has taken in `end` bytes.
pub(super) async fn printed(session: &Session, end: u64) {
    let mut changes = session.subscribe();
    within("output", async {
        while session.lock().ring.end() < end {
            changes.changed().await.unwrap();
        }
    })
    .await;
}

/// A registry on fake PTYs.
struct Harness {
    registry: Arc<Registry>,
    pty: Arc<FakePty>,
    shutdown: CancellationToken,
    /// What the attachments reported as malformed.
    malformed: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = NodeConfig::default();
        configure(&mut config);
        let pty = FakePty::new();
        Harness {
            registry: Arc::new(Registry::new(pty.clone(), "testhost".into(), config)),
            pty,
            shutdown: CancellationToken::new(),
            malformed: Arc::default(),
        }
    }

    /// Creates a session; returns it and its program.
    async fn create(&self) -> (Arc<Session>, FakeProgram) {
        let session = self.registry.create(new_session(None), &[]).await.unwrap();
        (session, self.pty.last().unwrap())
    }

    /// Starts creating a session named `name` in a task of its own (its spawn may be held).
    fn create_apart(
        &self,
        name: Option<&'static str>,
    ) -> tokio::task::JoinHandle<Result<Arc<Session>, cmdop_proto::ErrorReply>> {
        let registry = self.registry.clone();
        tokio::spawn(async move { registry.create(new_session(name), &[]).await })
    }

    /// A new session with an interactive client attached: the session, its program, the client.
    async fn typing(&self) -> (Arc<Session>, FakeProgram, Client) {
        let (session, program) = self.create().await;
        let mut client = self
            .attach(&peer(1), request(&session, AttachMode::Interactive))
            .await;
        client.attached().await;
        (session, program, client)
    }

    /// Opens an attach stream pair for `peer` and sends `request` on it.
    async fn attach(&self, peer: &Peer, request: AttachRequest) -> Client {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (far_read, far_write) = tokio::io::split(far);
        let malformed = self.malformed.clone();
        let on_malformed: OnMalformed =
            Arc::new(move |e| malformed.lock().unwrap().push(e.to_string()));
        let task = tokio::spawn(attach(
            self.registry.clone(),
            peer.clone(),
            FrameWriter::new(far_write),
            FrameReader::new(far_read, 1 << 20),
            on_malformed,
            Arc::new(|| Duration::from_millis(1)),
            self.shutdown.clone(),
        ));
        let (near_read, near_write) = tokio::io::split(near);
        let mut client = Client {
            send: FrameWriter::new(near_write),
            recv: FrameReader::new(near_read, 16 << 20),
            task,
        };
        client.send(&request).await;
        client
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Ends the fake programs, so that the sessions' threads end too.
        self.shutdown.cancel();
        self.registry.destroy_all();
    }
}

/// A client key and address.
fn peer(key: u8) -> Peer {
    Peer {
        fingerprint: Fingerprint::of_spki(&[key]),
        addr: SocketAddr::from(([192, 0, 2, key], 40_000 + u16::from(key))),
    }
}

/// A request to attach to `session`.
fn request(session: &Session, mode: AttachMode) -> AttachRequest {
    AttachRequest {
        session: session.id,
        mode,
        takeover: false,
        resume_from: None,
        scrollback_bytes: 64 << 10,
        size: SIZE,
        input_stream: 1,
    }
}

/// The client end of an attachment.
struct Client {
    send: FrameWriter<WriteHalf<DuplexStream>>,
    recv: FrameReader<ReadHalf<DuplexStream>>,
    task: JoinHandle<()>,
}

/// What [`AttachOutput::Attached`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attached {
    offset: u64,
    input_seq: u64,
    input_reset: bool,
}

impl Client {
    async fn send<T: serde::Serialize + Sync>(&mut self, message: &T) {
        self.send.send(message).await.unwrap();
    }

    /// Types `data` numbered from `seq`.
    async fn type_at(&mut self, seq: u64, data: &[u8]) {
        let input = AttachInput::Input {
            seq,
            data: data.to_vec(),
        };
        self.send(&input).await;
    }

    /// The next frame, or None when the node ended the stream. Like the real client, it
    /// reports output as shown as soon as it arrives (the node paces output by that).
    async fn next(&mut self) -> Option<AttachOutput> {
        let frame = within("a frame", self.recv.recv::<AttachOutput>())
            .await
            .unwrap();
        let shown = match &frame {
            Some(AttachOutput::Output { offset, data }) => Some(offset + data.len() as u64),
            Some(AttachOutput::Screen(screen)) => Some(screen.offset),
            _ => None,
        };
        if let Some(offset) = shown {
            // The node may have stopped reading already (the attachment is ending).
            let _ = self.send.send(&AttachInput::Shown { offset }).await;
        }
        frame
    }

    /// The next frame, which must be there.
    async fn frame(&mut self) -> AttachOutput {
        self.next().await.expect("the stream ended")
    }

    /// Expects the attachment to be admitted.
    async fn attached(&mut self) -> Attached {
        match self.frame().await {
            AttachOutput::Attached {
                offset,
                input_seq,
                input_reset,
                ..
            } => Attached {
                offset,
                input_seq,
                input_reset,
            },
            other => panic!("expected Attached, got {other:?}"),
        }
    }

    /// Expects a refusal of `kind`, then the end of the stream; returns the message.
    async fn refused(mut self, kind: ErrorKind) -> String {
        let message = match self.frame().await {
            AttachOutput::Error(e) if e.kind == kind => e.message,
            other => panic!("expected a {kind:?} refusal, got {other:?}"),
        };
        self.ended().await;
        message
    }

    /// Reads frames until an acknowledgement of at least `seq`; returns the one acknowledged.
    async fn acked(&mut self, seq: u64) -> u64 {
        loop {
            match self.frame().await {
                AttachOutput::InputAck { seq: acked } if acked >= seq => return acked,
                AttachOutput::InputAck { .. }
                | AttachOutput::EchoAck { .. }
                | AttachOutput::Output { .. } => {}
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
    }

    /// Reads frames until one that ends the attachment; returns it.
    async fn last(&mut self) -> AttachOutput {
        loop {
            match self.frame().await {
                AttachOutput::InputAck { .. }
                | AttachOutput::EchoAck { .. }
                | AttachOutput::Output { .. } => {}
                end => return end,
            }
        }
    }

    /// Expects the node to have ended the stream and the attachment's task to be over (its
    /// attachment released).
    async fn ended(mut self) {
        assert_eq!(self.next().await, None);
        within("the attachment's end", &mut self.task)
            .await
            .unwrap();
    }
}
