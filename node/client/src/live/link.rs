//! One connection's part of an attachment: opening the attach stream ([`open_link`]) and
//! reading the session's output from it ([`downlink`]).

use super::{lock, End, Event};
use crate::dial::describe_close;
use crate::wire::{FramedRecv, FramedSend, RecvError};
use cmdop_proto::resync::Resync;
use cmdop_proto::{close_code, AttachOutput, AttachRequest, ErrorKind, SessionInfo};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// One attach stream on one connection.
pub(super) struct Link {
    pub connection: quinn::Connection,
    pub send: FramedSend,
    pub recv: FramedRecv,
    /// The node's count of keystrokes applied so far.
    pub input_seq: u64,
    /// The output offset the node resumes from.
    pub offset: u64,
    /// The session as it was when attached.
    pub info: SessionInfo,
    /// The node forgot this attachment's keystroke stream.
    pub input_reset: bool,
    /// For a relayed link: where the meeting node sees the node, to try a direct path.
    pub punch_to: Option<std::net::SocketAddr>,
    /// A direct link that hole punching opened (to a node behind NAT).
    pub punched: bool,
}

/// Why an attach attempt failed.
pub(super) enum AttachFailure {
    /// For good.
    Final(End),
    /// Worth retrying after a pause.
    Retry(String),
    /// No answer within the attempt's timeout: worth retrying at once.
    NoAnswer,
}

impl AttachFailure {
    /// The failure in words.
    pub fn into_reason(self) -> String {
        match self {
            AttachFailure::Final(End::Gone(reason)) | AttachFailure::Retry(reason) => reason,
            AttachFailure::Final(end) => format!("{end:?}"),
            AttachFailure::NoAnswer => "no answer".into(),
        }
    }
}

/// What ended one link.
pub(super) enum LinkEnd {
    /// The attachment is over.
    Done(End),
    /// The connection is lost; worth reconnecting.
    Lost(String),
    /// The attachment moved to this link on a direct path.
    Switched(Box<Link>),
}

/// Opens an attach stream on `connection` and reads the node's first frame.
pub(super) async fn open_link(
    connection: quinn::Connection,
    name: &str,
    request: AttachRequest,
) -> Result<Link, AttachFailure> {
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| AttachFailure::Retry(describe_close(name, e).to_string()))?;
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, cmdop_proto::frame::DEFAULT_MAX_FRAME);
    send.send(&request)
        .await
        .map_err(|e| AttachFailure::Retry(e.to_string()))?;
    let first = match recv.recv::<AttachOutput>().await {
        Ok(Some(first)) => first,
        Ok(None) => {
            return Err(AttachFailure::Retry(
                "the node closed the attachment".into(),
            ))
        }
        Err(e) => return Err(AttachFailure::Retry(recv_failure(name, &connection, e))),
    };
    match first {
        AttachOutput::Attached {
            session,
            offset,
            input_seq,
            input_reset,
        } => Ok(Link {
            connection,
            send,
            recv,
            input_seq,
            offset,
            info: session,
            input_reset,
            punch_to: None,
            punched: false,
        }),
        AttachOutput::Error(e)
            if e.kind == ErrorKind::NotFound && request.resume_from.is_some() =>
        {
            Err(AttachFailure::Final(End::Gone(format!(
                "session {} is gone from {name}: the node restarted, and the session's processes ended with it",
                request.session
            ))))
        }
        AttachOutput::Error(e) => Err(AttachFailure::Final(End::Gone(e.message))),
        other => Err(AttachFailure::Retry(format!(
            "unexpected first frame from the node: {other:?}"
        ))),
    }
}

fn recv_failure(name: &str, connection: &quinn::Connection, error: RecvError) -> String {
    match connection.close_reason() {
        Some(close) => describe_close(name, close).to_string(),
        None => error.to_string(),
    }
}

/// Why the output stream failed: a node shutting down ends the attachment, anything else is
/// worth a reconnect.
fn downlink_failure(connection: &quinn::Connection, error: RecvError) -> LinkEnd {
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == close_code::SHUTDOWN.into() =>
        {
            LinkEnd::Done(End::Gone(
                "the node shut down, and the session's processes ended with it".into(),
            ))
        }
        _ => LinkEnd::Lost(error.to_string()),
    }
}

/// Reads the session's output and the node's acknowledgements until the link ends, handing
/// each byte to `events` exactly once; wakes `shown` whenever more output was handed over (the
/// driver reports it to the node, which paces what it sends by it).
pub(super) async fn downlink(
    mut recv: FramedRecv,
    connection: quinn::Connection,
    resync: Arc<Mutex<Resync>>,
    events: mpsc::Sender<Event>,
    shown: Arc<Notify>,
) -> LinkEnd {
    loop {
        let frame = match recv.recv::<AttachOutput>().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return LinkEnd::Lost("the node ended the attachment".into()),
            Err(e) => return downlink_failure(&connection, e),
        };
        let event = match frame {
            AttachOutput::Output { offset, data } => {
                // Room in the channel first: `shown` may only move once the bytes are handed
                // over, or a link aborted while waiting would skip them on resume.
                let Ok(permit) = events.reserve().await else {
                    return LinkEnd::Done(End::Detached);
                };
                let fresh = lock(&resync).output(offset, &data).to_vec();
                if !fresh.is_empty() {
                    permit.send(Event::Output(fresh));
                }
                shown.notify_one();
                continue;
            }
            AttachOutput::Screen(frame) => {
                let Ok(permit) = events.reserve().await else {
                    return LinkEnd::Done(End::Detached);
                };
                if lock(&resync).screen(frame.offset, frame.skipped) {
                    permit.send(Event::Screen(frame));
                }
                shown.notify_one();
                continue;
            }
            AttachOutput::EchoAck { seq } => Event::EchoAck(lock(&resync).typed_before(seq)),
            AttachOutput::InputAck { seq } => {
                lock(&resync).acknowledge(seq);
                continue;
            }
            AttachOutput::Exited { code } => return LinkEnd::Done(End::Exited(code)),
            AttachOutput::Detached(reason) => return LinkEnd::Done(End::Kicked(reason)),
            AttachOutput::Error(e) => return LinkEnd::Done(End::Gone(e.message)),
            AttachOutput::Attached { .. } => continue,
        };
        if events.send(event).await.is_err() {
            return LinkEnd::Done(End::Detached);
        }
    }
}
