//! Why talking to a node failed: [`ClientError`], and turning a connection's end into one.
//!
//! Each error's text is a whole sentence for the user, the underlying error's words included;
//! the underlying error is also kept as its [`source`](std::error::Error::source), for
//! programs. Printers of error chains therefore stop at a [`ClientError`] (the `cmdop` CLI
//! does), or the cause would be printed twice.

use crate::wire::{RecvError, SendError};
use cmdop_certs::Fingerprint;
use cmdop_proto::{close_code, ErrorReply};
use std::time::Duration;

/// Any error, as the source of a [`ClientError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not resolve.
    #[error("cannot resolve {addr} for host {name}: {source} (check it with 'cmdop host list')")]
    Resolve {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{name} ({addr}) is offline: no answer within {} ms (is cmdop-node running there? check with 'cmdop connect --list')", .timeout.as_millis())]
    Offline {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The node's key differs from the pin.
    #[error("NODE KEY CHANGED for {name} ({addr}): pinned {pinned}, but the node presented {presented}; someone may be impersonating it, or its key was replaced. If you expected this, reset the pin with 'cmdop host reset-pin {name}'")]
    KeyChanged {
        /// Host name.
        name: String,
        /// Address.
        addr: String,
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The fingerprint presented.
        presented: Fingerprint,
    },
    /// The node refused us (not authorized, limit).
    #[error("{0}")]
    Refused(String),
    /// The node speaks another [`cmdop_proto::PROTOCOL_VERSION`] (the node's sentence says
    /// which side is older).
    #[error("{0}")]
    VersionMismatch(String),
    /// The connection failed or closed.
    #[error("connection to {name} failed: {reason}")]
    Connection {
        /// Host name.
        name: String,
        /// What happened.
        reason: String,
        /// The connection's or stream's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The node refused the handshake for now: too many in progress, or it is shutting down
    /// (worth another try, unlike [`ClientError::Refused`]).
    #[error("{name} refused the connection: too many handshakes in progress (max_handshakes on the node), or it is shutting down; try again shortly")]
    Busy {
        /// Host name.
        name: String,
    },
    /// The meeting node has no node registered under the name (it may be registering again,
    /// so a live terminal keeps trying).
    #[error(
        "no node named {name} is registered at {via}; is its node.rendezvous set and is it online?"
    )]
    Unregistered {
        /// The name asked for.
        name: String,
        /// The meeting node.
        via: String,
    },
    /// The node answered the request with an error.
    #[error("{0}")]
    Rejected(ErrorReply),
    /// The node answered with a reply that does not belong to the request.
    #[error(
        "{name} answered with an unexpected reply ({reply}); are both ends the same cmdop version?"
    )]
    Unexpected {
        /// Host name.
        name: String,
        /// The start of the reply, for a bug report.
        reply: String,
    },
    /// Local set-up failed.
    #[error("{message}")]
    Setup {
        /// What failed, as a sentence.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
}

impl ClientError {
    /// A failed connection to `name`, caused by `source` (whose text is the reason).
    pub fn connection(name: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        ClientError::Connection {
            name: name.to_string(),
            reason: source.to_string(),
            source: Some(source),
        }
    }

    /// A local set-up failure with no underlying error.
    pub fn setup(message: impl Into<String>) -> Self {
        ClientError::Setup {
            message: message.into(),
            source: None,
        }
    }

    /// A local set-up failure: `context`, a colon, and the words of `source`.
    pub fn setup_from(context: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        ClientError::Setup {
            message: format!("{context}: {source}"),
            source: Some(source),
        }
    }
}

/// Whether a node's application close code means it refused us.
fn is_refusal(code: quinn::VarInt) -> bool {
    [close_code::UNAUTHORIZED, close_code::LIMIT]
        .into_iter()
        .any(|refusal| code == refusal.into())
}

/// Turns a connection's end into a sentence, preferring the node's own reason.
pub fn describe_close(name: &str, error: quinn::ConnectionError) -> ClientError {
    let reason = match &error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            if close.error_code == close_code::VERSION_MISMATCH.into() {
                return ClientError::VersionMismatch(reason);
            }
            if is_refusal(close.error_code) {
                return ClientError::Refused(reason);
            }
            reason
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn_proto::TransportErrorCode::CONNECTION_REFUSED =>
        {
            return ClientError::Busy {
                name: name.to_string(),
            };
        }
        quinn::ConnectionError::ConnectionClosed(close) if close.reason.is_empty() => {
            format!("closed by the node ({})", close.error_code)
        }
        other => other.to_string(),
    };
    ClientError::Connection {
        name: name.to_string(),
        reason,
        source: Some(error.into()),
    }
}

/// A failed receive on `connection`: its close, if it closed, else the stream's error.
pub(crate) fn recv_error(
    name: &str,
    connection: &quinn::Connection,
    error: RecvError,
) -> ClientError {
    if let Some(close) = connection.close_reason() {
        return describe_close(name, close);
    }
    match error {
        RecvError::Stream(quinn::ReadError::ConnectionLost(e)) => describe_close(name, e),
        other => ClientError::connection(name, other),
    }
}

/// A failed send on `connection`: its close, if it closed, else the stream's error.
pub(crate) fn send_error(
    name: &str,
    connection: &quinn::Connection,
    error: SendError,
) -> ClientError {
    if let Some(close) = connection.close_reason() {
        return describe_close(name, close);
    }
    ClientError::connection(name, error)
}
