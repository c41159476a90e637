//! The terminal's output, written through the runtime: a non-blocking copy of stdout (its own
//! file description, so the shell's stays blocking) that the runtime polls. A terminal that
//! stops reading holds up only the output, never the keystrokes, the connection's
//! acknowledgements or its keep-alives. Where stdout cannot be polled (a file, `/dev/null`) the
//! writes are plain blocking ones, which never wait long there.

use std::fs::File;
use std::io::{self, Write};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Where the terminal's output goes.
pub enum Stdout {
    /// A terminal, pipe or FIFO, polled by the runtime.
    Polled(AsyncFd<File>),
    /// Anything else, written with blocking writes.
    Blocking,
}

impl Stdout {
    /// Stdout, polled where it can be.
    pub fn open() -> Self {
        polled_stdout().map_or(Stdout::Blocking, Stdout::Polled)
    }

    /// Writes all of `bytes`, waiting (without holding up other tasks) while the terminal does
    /// not take them.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let fd = match self {
            Stdout::Polled(fd) => fd,
            Stdout::Blocking => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                return out.flush();
            }
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

/// Stdout opened anew and registered with the runtime, when it is a terminal or a pipe. A
/// regular file is never reopened: a new description would not share the shell's offset.
fn polled_stdout() -> Option<AsyncFd<File>> {
    use rustix::fs::FileType;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(io::stdout()).ok()?.st_mode);
    if !matches!(kind, FileType::CharacterDevice | FileType::Fifo) {
        return None;
    }
    super::polled::reopen(1, std::fs::OpenOptions::new().write(true))
}
