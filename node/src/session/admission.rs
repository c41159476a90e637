//! Who may attach to a session, and how: the pure decision ([`decide`]) over the session's
//! attachments and the request, and its application under the session lock
//! ([`Session::admit`]).
//!
//! - at most `max_attachments` live attachments per session, viewers included;
//! - read-only viewers are always admitted (within that limit) and never type;
//! - one interactive client, the *holder*, types and resizes. Another interactive client is
//!   refused unless it asks to take over (the holder is kicked with
//!   [`DetachReason::TakenOver`]), or it is the holder itself resuming its keystroke stream after
//!   a network change (the stale attachment is kicked with [`DetachReason::Replaced`]).

use crate::session::{now_ms, Session};
use cmdop_certs::Fingerprint;
use cmdop_proto::{AttachMode, AttachRequest, DetachReason, ErrorKind, ErrorReply};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The client on the other end of an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's key.
    pub fingerprint: Fingerprint,
    /// Where it connects from.
    pub addr: SocketAddr,
}

/// The client holding a session's input.
#[derive(Debug)]
pub struct Holder {
    /// Identifies this attachment (to release only our own hold).
    pub attachment: u64,
    /// The client.
    pub peer: Peer,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// The holder's keystroke stream.
    pub input_stream: u64,
    /// Tells the holder's attachment to end, with a reason for its user.
    pub kick: Option<oneshot::Sender<DetachReason>>,
}

/// What admission looks at in a session.
#[derive(Debug, Clone, Copy)]
pub struct Occupancy<'a> {
    /// The session.
    pub session: Uuid,
    /// Its live attachments.
    pub attachments: usize,
    /// The most it may have.
    pub max_attachments: usize,
    /// Who holds its input.
    pub holder: Option<&'a Holder>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refused, with the reason for the client.
    Refuse(ErrorReply),
    /// Admitted.
    Admit {
        /// The new attachment becomes the holder.
        hold: bool,
        /// The holder's attachment ends, told why.
        kick: Option<DetachReason>,
    },
}

/// Decides whether `peer` may attach as `request` asks.
pub fn decide(seen: Occupancy<'_>, peer: &Peer, request: &AttachRequest) -> Decision {
    let replaces_itself = request.mode == AttachMode::Interactive
        && seen
            .holder
            .is_some_and(|holder| resumes_own_hold(holder, peer, request));
    // A client replacing its own stale hold (after a network change, or moving to a direct
    // path) does not add an attachment.
    if seen.attachments >= seen.max_attachments && !replaces_itself {
        return Decision::Refuse(ErrorReply {
            kind: ErrorKind::Limit,
            message: format!(
                "session {} already has {} attachments (max_attachments in config.yaml); detach one first",
                seen.session, seen.attachments
            ),
        });
    }
    if request.mode == AttachMode::ReadOnly {
        return Decision::Admit {
            hold: false,
            kick: None,
        };
    }
    let Some(holder) = seen.holder else {
        return Decision::Admit {
            hold: true,
            kick: None,
        };
    };
    let same_client = holder.peer.fingerprint == peer.fingerprint;
    if !request.takeover && !replaces_itself {
        return Decision::Refuse(ErrorReply {
            kind: ErrorKind::BadRequest,
            message: format!(
                "session {} is held by client {} from {} since {}; use --takeover to take it, or --read-only to watch",
                seen.session,
                holder.peer.fingerprint,
                holder.peer.addr,
                cmdop_proto::units::rfc3339_seconds(holder.since_ms)
            ),
        });
    }
    let reason = if same_client && !request.takeover {
        DetachReason::Replaced
    } else {
        DetachReason::TakenOver {
            by: peer.fingerprint.clone(),
            from: peer.addr.to_string(),
        }
    };
    Decision::Admit {
        hold: true,
        kick: Some(reason),
    }
}

/// Whether `request` is `holder`'s own client resuming the same keystroke stream: it replaces
/// its stale hold.
fn resumes_own_hold(holder: &Holder, peer: &Peer, request: &AttachRequest) -> bool {
    request.resume_from.is_some()
        && holder.peer.fingerprint == peer.fingerprint
        && holder.input_stream == request.input_stream
}

/// An admitted attachment's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The next input sequence number the session expects.
    pub input_seq: u64,
    /// The client's keystroke stream is not the one that typed last: it renumbers.
    pub input_reset: bool,
}

impl Session {
    /// Admits attachment number `attachment` of `peer` (or refuses it): kicks a replaced holder,
    /// records the new one with `kick` to end it later, and counts the attachment.
    pub fn admit(
        &self,
        max_attachments: usize,
        peer: &Peer,
        request: &AttachRequest,
        attachment: u64,
        kick: oneshot::Sender<DetachReason>,
    ) -> Result<Admitted, ErrorReply> {
        let mut core = self.lock();
        let seen = Occupancy {
            session: self.id,
            attachments: core.live_attachments,
            max_attachments,
            holder: core.holder.as_ref(),
        };
        let (hold, replaced) = match decide(seen, peer, request) {
            Decision::Refuse(refusal) => return Err(refusal),
            Decision::Admit { hold, kick } => (hold, kick),
        };
        if let Some(reason) = replaced {
            if let Some(old_kick) = core.holder.as_mut().and_then(|h| h.kick.take()) {
                let _ = old_kick.send(reason);
            }
        }
        let now = now_ms();
        let mut input_reset = false;
        if hold {
            // Sequence numbers count one keystroke stream; a holder from another stream
            // numbers its input from the session's counter on.
            input_reset = core.input.attach(request.input_stream);
            core.holder = Some(Holder {
                attachment,
                peer: peer.clone(),
                since_ms: now,
                input_stream: request.input_stream,
                kick: Some(kick),
            });
        }
        core.live_attachments += 1;
        core.last_active_ms = now;
        Ok(Admitted {
            input_seq: core.input.next_seq(),
            input_reset,
        })
    }

    /// Ends attachment number `attachment`: releases its hold, if it still has it.
    pub fn release(&self, attachment: u64) {
        let mut core = self.lock();
        core.live_attachments = core.live_attachments.saturating_sub(1);
        core.last_active_ms = now_ms();
        if core
            .holder
            .as_ref()
            .is_some_and(|h| h.attachment == attachment)
        {
            core.holder = None;
        }
    }

    /// Whether attachment number `attachment` holds the input.
    pub fn is_held_by(&self, attachment: u64) -> bool {
        self.lock()
            .holder
            .as_ref()
            .is_some_and(|h| h.attachment == attachment)
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
