//! The terminal's output, written through the runtime: a non-blocking copy of stdout (its own
//! file description, so the shell's stays blocking) that the runtime polls. A terminal that
//! stops reading holds up only the output, never the keystrokes, the connection's
//! acknowledgements or its keep-alives. A regular file takes plain writes (they never wait
//! long); anything else that cannot be polled (a terminal of another user after `su`, a socket)
//! is written by a blocking-pool thread, so a stall there still holds up nothing else.

use std::fs::File;
use std::io::{self, Write};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Where the terminal's output goes.
pub enum Stdout {
    /// A terminal, pipe or FIFO, polled by the runtime.
    Polled(AsyncFd<File>),
    /// A regular file: plain writes.
    Direct,
    /// Anything else: blocking writes on the runtime's blocking pool, one at a time and in
    /// order.
    Offloaded,
}

impl Stdout {
    /// Stdout, polled where it can be. A regular file is never reopened: a new description
    /// would not share the shell's offset.
    pub fn open() -> Self {
        use rustix::fs::FileType;
        let kind =
            rustix::fs::fstat(io::stdout()).map(|stat| FileType::from_raw_mode(stat.st_mode));
        match kind {
            Ok(FileType::RegularFile) => Stdout::Direct,
            Ok(FileType::CharacterDevice | FileType::Fifo) => {
                let polled = super::polled::reopen(1, std::fs::OpenOptions::new().write(true));
                polled.map_or(Stdout::Offloaded, Stdout::Polled)
            }
            _ => Stdout::Offloaded,
        }
    }

    /// Writes all of `bytes`, waiting (without holding up other tasks) while the terminal does
    /// not take them.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let fd = match self {
            Stdout::Polled(fd) => fd,
            Stdout::Direct => return write_blocking(bytes),
            Stdout::Offloaded => return write_offloaded(bytes).await,
        };
        while !bytes.is_empty() {
            let written = fd
                .async_io(Interest::WRITABLE, |mut file| file.write(bytes))
                .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[written..];
        }
        Ok(())
    }
}

/// Writes `bytes` to stdout, waiting as long as it takes.
fn write_blocking(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Writes `bytes` to stdout on a blocking-pool thread and waits for it there.
async fn write_offloaded(bytes: &[u8]) -> io::Result<()> {
    let owned = bytes.to_vec();
    tokio::task::spawn_blocking(move || write_blocking(&owned))
        .await
        .map_err(io::Error::other)?
}
