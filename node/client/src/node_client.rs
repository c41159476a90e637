//! An admitted connection to a node ([`NodeClient`]): typed calls on its control stream.

use crate::dial::Target;
use crate::error::{describe_close, recv_error, send_error, ClientError};
use crate::wire::{FramedRecv, FramedSend, RecvError};
use cmdop_certs::Fingerprint;
use cmdop_proto::{close_code, Call, Reply, Request};

/// An admitted connection with its control stream.
#[derive(Debug)]
pub struct NodeClient {
    /// The QUIC connection (attach streams are opened on it).
    pub connection: quinn::Connection,
    pub(crate) send: FramedSend,
    pub(crate) recv: FramedRecv,
    /// The node's host name.
    pub host: String,
    /// The node's key.
    pub fingerprint: Fingerprint,
    /// The target dialed.
    pub target: Target,
    /// For a relayed connection: where the meeting node sees the node, to punch a hole to.
    pub punch_to: Option<std::net::SocketAddr>,
}

impl NodeClient {
    /// Makes one typed call: the node's error reply becomes [`ClientError::Rejected`], any
    /// other reply that is not the call's [`ClientError::Unexpected`].
    pub async fn call<C: Call>(&mut self, call: C) -> Result<C::Reply, ClientError> {
        let request = call.into_request();
        let reply = self.request(&request).await?;
        C::take_reply(reply).map_err(|reply| match *reply {
            Reply::Error(error) => ClientError::Rejected(error),
            other => ClientError::Unexpected {
                name: self.target.name.clone(),
                reply: format!("{other:?}").chars().take(200).collect(),
            },
        })
    }

    /// Sends a call without waiting for its reply, which is never read: only as the last call
    /// on this control stream (the live terminal's [`cmdop_proto::Punch`] before it attaches).
    pub async fn send_last<C: Call>(&mut self, call: C) -> Result<(), ClientError> {
        self.send
            .send(&call.into_request())
            .await
            .map_err(|e| send_error(&self.target.name, &self.connection, e))
    }

    /// Sends one request and waits for its reply, whatever it is (tests use this to send
    /// requests a node must refuse).
    pub async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let name = &self.target.name;
        self.send
            .send(request)
            .await
            .map_err(|e| send_error(name, &self.connection, e))?;
        match self.recv.recv::<Reply>().await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(recv_error(name, &self.connection, RecvError::Truncated)),
            Err(e) => Err(recv_error(name, &self.connection, e)),
        }
    }

    /// Writes raw bytes on the control stream, bypassing framing. Only for tests that play a
    /// misbehaving client.
    pub async fn danger_send_raw_control(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send
            .stream()
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::connection(&self.target.name, e))
    }

    /// The control stream, to carry something other than requests (after [`cmdop_proto::Relay`]).
    pub fn into_streams(self) -> (FramedSend, FramedRecv) {
        (self.send, self.recv)
    }

    /// Waits until the connection closes and describes why.
    pub async fn closed(&self) -> ClientError {
        describe_close(&self.target.name, self.connection.closed().await)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.connection.close(close_code::DONE.into(), b"bye");
    }
}
