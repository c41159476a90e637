//! Framed streams as the node's protocol code sees them: [`FrameSink`] sends messages,
//! [`FrameSource`] receives them, whatever carries the bytes.
//!
//! Two carriers implement them:
//! - QUIC streams, through the client crate's adapter ([`FramedSend`], [`FramedRecv`]);
//! - any tokio [`AsyncRead`] / [`AsyncWrite`] ([`FrameWriter`], [`FrameReader`]), which is how
//!   in-process tests drive an attachment over `tokio::io::duplex`.
//!
//! Both use the sans-IO codec of [`cmdop_proto::frame`].

use cmdop_client::wire::{self, FramedRecv, FramedSend};
use cmdop_proto::frame::{self, FrameDecoder, FrameError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be received.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The bytes were not a valid frame: the peer is not to be trusted any more.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed, or ended in the middle of a frame.
    #[error("{0}")]
    Stream(String),
}

/// The stream or the connection failed while sending.
#[derive(Debug, thiserror::Error)]
#[error("cannot send: {0}")]
pub struct SendError(pub String);

/// Sends frames.
pub trait FrameSink: Send {
    /// Sends one message.
    fn send<T: Serialize + Sync>(
        &mut self,
        message: &T,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Ends the stream (no more frames), then waits at most `linger` until the peer has it all.
    fn finish(&mut self, linger: Duration) -> impl Future<Output = ()> + Send;
}

/// Receives frames.
pub trait FrameSource: Send {
    /// The next message, or None when the peer ended the stream cleanly between frames.
    fn recv<T: DeserializeOwned>(
        &mut self,
    ) -> impl Future<Output = Result<Option<T>, RecvError>> + Send;
}

impl FrameSink for FramedSend {
    async fn send<T: Serialize + Sync>(&mut self, message: &T) -> Result<(), SendError> {
        FramedSend::send(self, message)
            .await
            .map_err(|e| SendError(e.to_string()))
    }

    async fn finish(&mut self, linger: Duration) {
        FramedSend::finish(self);
        let _ = tokio::time::timeout(linger, self.stream().stopped()).await;
    }
}

impl FrameSource for FramedRecv {
    async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RecvError> {
        FramedRecv::recv(self).await.map_err(|e| match e {
            wire::RecvError::Frame(e) => RecvError::Frame(e),
            other => RecvError::Stream(other.to_string()),
        })
    }
}

/// Sends frames on any byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin + Send> FrameWriter<W> {
    /// Wraps `io`.
    pub fn new(io: W) -> Self {
        FrameWriter {
            io,
            buf: Vec::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> FrameSink for FrameWriter<W> {
    async fn send<T: Serialize + Sync>(&mut self, message: &T) -> Result<(), SendError> {
        self.buf.clear();
        frame::encode(message, &mut self.buf).map_err(|e| SendError(e.to_string()))?;
        self.io
            .write_all(&self.buf)
            .await
            .map_err(|e| SendError(e.to_string()))
    }

    async fn finish(&mut self, linger: Duration) {
        let _ = tokio::time::timeout(linger, self.io.shutdown()).await;
    }
}

/// Receives frames from any byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin + Send> FrameReader<R> {
    /// Wraps `io`, refusing frames over `max_frame` bytes.
    pub fn new(io: R, max_frame: usize) -> Self {
        FrameReader {
            io,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; 16 * 1024],
        }
    }
}

impl<R: AsyncRead + Unpin + Send> FrameSource for FrameReader<R> {
    async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RecvError> {
        loop {
            if let Some(message) = self.decoder.next_frame()? {
                return Ok(Some(message));
            }
            let n = self
                .io
                .read(&mut self.buf)
                .await
                .map_err(|e| RecvError::Stream(e.to_string()))?;
            if n > 0 {
                self.decoder.push(&self.buf[..n]);
            } else if self.decoder.needed()? == frame::HEADER_LEN {
                return Ok(None);
            } else {
                return Err(RecvError::Stream(
                    "stream ended in the middle of a frame".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cmdop_proto::AttachInput;

    #[tokio::test]
    async fn frames_cross_a_duplex_and_end_cleanly() {
        let (a, b) = tokio::io::duplex(64);
        let mut send = FrameWriter::new(a);
        let mut recv = FrameReader::new(b, 1024);
        let big = AttachInput::Input {
            seq: 9,
            data: vec![7; 300],
        };
        let sender = tokio::spawn(async move {
            send.send(&AttachInput::Probe).await.unwrap();
            send.send(&big).await.unwrap();
            send.finish(Duration::from_secs(1)).await;
        });
        assert_eq!(recv.recv().await.unwrap(), Some(AttachInput::Probe));
        let got: Option<AttachInput> = recv.recv().await.unwrap();
        assert!(matches!(got, Some(AttachInput::Input { seq: 9, data }) if data == vec![7; 300]));
        assert_eq!(recv.recv::<AttachInput>().await.unwrap(), None);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (a, b) = tokio::io::duplex(1024);
        let mut send = FrameWriter::new(a);
        let mut recv = FrameReader::new(b, 8);
        send.send(&AttachInput::Input {
            seq: 0,
            data: vec![0; 32],
        })
        .await
        .unwrap();
        assert!(matches!(
            recv.recv::<AttachInput>().await,
            Err(RecvError::Frame(FrameError::Oversized { max: 8, .. }))
        ));
        let (mut a, b) = tokio::io::duplex(1024);
        let mut recv = FrameReader::new(b, 1024);
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        assert!(matches!(
            recv.recv::<AttachInput>().await,
            Err(RecvError::Stream(_))
        ));
    }
}
