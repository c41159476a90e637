//! Frames over QUIC streams: the thin I/O glue between quinn's streams and the sans-IO
//! [`cmdop_proto::frame`] codec.

use cmdop_proto::frame::{self, FrameDecoder, FrameError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a frame could not be received.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed.
    #[error("{0}")]
    Stream(#[from] quinn::ReadError),
    /// The peer finished the stream in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed.
    #[error("{0}")]
    Stream(#[from] quinn::WriteError),
}

/// Receives frames from a QUIC stream.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FramedRecv {
    /// Wraps `stream`, refusing frames over `max_frame` bytes.
    pub fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        FramedRecv {
            stream,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The stream and the bytes read from it but not decoded yet (when the stream goes on to
    /// carry something other than frames).
    pub fn into_parts(mut self) -> (quinn::RecvStream, Vec<u8>) {
        let buffered = self.decoder.take_buffered();
        (self.stream, buffered)
    }

    /// Changes the largest frame accepted from now on.
    pub fn set_max_frame(&mut self, max: usize) {
        self.decoder.set_max(max);
    }

    /// The next message, or None when the peer finished the stream cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RecvError> {
        loop {
            if let Some(message) = self.decoder.next_frame()? {
                return Ok(Some(message));
            }
            match self.stream.read(&mut self.buf).await? {
                Some(n) => self.decoder.push(&self.buf[..n]),
                None if self.decoder.needed()? == frame::HEADER_LEN => return Ok(None),
                None => return Err(RecvError::Truncated),
            }
        }
    }
}

/// Sends frames on a QUIC stream.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    buf: Vec<u8>,
}

impl FramedSend {
    /// Wraps `stream`.
    pub fn new(stream: quinn::SendStream) -> Self {
        FramedSend {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends one message.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), SendError> {
        self.send_all(std::slice::from_ref(message)).await
    }

    /// Sends several messages in one write (one packet when they fit).
    pub async fn send_all<T: Serialize>(&mut self, messages: &[T]) -> Result<(), SendError> {
        self.buf.clear();
        for message in messages {
            frame::encode(message, &mut self.buf)?;
        }
        self.stream.write_all(&self.buf).await?;
        Ok(())
    }

    /// Finishes the stream (no more frames).
    pub fn finish(&mut self) {
        let _ = self.stream.finish();
    }

    /// The stream, to carry something other than frames.
    pub fn into_inner(self) -> quinn::SendStream {
        self.stream
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }
}
