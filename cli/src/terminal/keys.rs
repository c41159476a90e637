//! Keys typed into the live terminal: the detach key (from `client.detach_key`), and the
//! `Ctrl+]` prefix that sends the next key literally.

use anyhow::bail;
use cmdop_client::live::AttachmentHandle;
use std::fs::File;
use std::io::Read;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The byte that prefixes a literal detach key.
const ESCAPE_PREFIX: u8 = 0x1d;

/// Parses `ctrl-d`-style key names.
pub fn parse_key(name: &str) -> anyhow::Result<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let letter = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix('^'))
        .filter(|rest| rest.len() == 1)
        .and_then(|rest| rest.bytes().next())
        .filter(|b| b.is_ascii_lowercase() || *b == b'\\');
    match letter {
        Some(b) => Ok(b & 0x1f),
        None => bail!("client.detach_key '{name}' in config.yaml is not a key like ctrl-d (ctrl-a to ctrl-z or ctrl-\\)"),
    }
}

/// What a typed chunk means.
#[derive(Debug, PartialEq, Eq)]
struct Typed {
    /// Bytes to send.
    send: Vec<u8>,
    /// The detach key was pressed (after `send`).
    detach: bool,
}

/// Filters typed bytes for the detach key and the literal prefix; `escaped` carries a pending
/// prefix across chunks.
fn scan_typed(bytes: &[u8], detach_key: u8, escaped: &mut bool) -> Typed {
    let mut send = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if *escaped {
            *escaped = false;
            if b != detach_key && b != ESCAPE_PREFIX {
                send.push(ESCAPE_PREFIX);
            }
            send.push(b);
        } else if b == ESCAPE_PREFIX {
            *escaped = true;
        } else if b == detach_key {
            return Typed { send, detach: true };
        } else {
            send.push(b);
        }
    }
    Typed {
        send,
        detach: false,
    }
}

/// Where typed keys go: the attachment (at once) and the local echo.
struct KeySink {
    handle: AttachmentHandle,
    detach_key: u8,
    escaped: bool,
    keys: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl KeySink {
    /// Hands a chunk of typed bytes on; false once the detach key was pressed.
    fn typed(&mut self, bytes: &[u8]) -> bool {
        let typed = scan_typed(bytes, self.detach_key, &mut self.escaped);
        if !typed.send.is_empty() {
            // To the node first; then a copy for the local echo.
            self.handle.input(typed.send.clone());
            let _ = self.keys.send(typed.send);
        }
        !typed.detach
    }
}

/// Reads stdin and hands keystrokes to `handle` at once, until the detach key or the end of
/// stdin; either way it detaches. Stdin is read on the runtime when it can be polled (a
/// terminal or a pipe: no thread, one wake-up less per keystroke), else on a thread of its own.
pub fn spawn_stdin_reader(
    handle: AttachmentHandle,
    detach_key: u8,
    keys: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> std::io::Result<()> {
    let sink = KeySink {
        handle,
        detach_key,
        escaped: false,
        keys,
    };
    match polled_stdin() {
        Some(stdin) => {
            tokio::spawn(read_polled(stdin, sink));
            Ok(())
        }
        None => read_on_a_thread(sink),
    }
}

/// Stdin opened anew (its own file description, so making it non-blocking leaves the shell's
/// untouched) and registered with the runtime; None where it cannot be polled (a file).
fn polled_stdin() -> Option<AsyncFd<File>> {
    super::polled::reopen(0, std::fs::OpenOptions::new().read(true))
}

async fn read_polled(stdin: AsyncFd<File>, mut sink: KeySink) {
    let mut buf = [0u8; 4096];
    loop {
        let read = stdin
            .async_io(Interest::READABLE, |mut file| file.read(&mut buf))
            .await;
        match read {
            // stdin closed: leave the session running.
            Ok(0) | Err(_) => break,
            Ok(n) if !sink.typed(&buf[..n]) => break,
            Ok(_) => {}
        }
    }
    sink.handle.detach();
}

fn read_on_a_thread(mut sink: KeySink) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) if !sink.typed(&buf[..n]) => break,
                    Ok(_) => {}
                }
            }
            sink.handle.detach();
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn detach_key_and_literal_prefix() {
        let mut escaped = false;
        assert_eq!(
            scan_typed(b"ls\r", 4, &mut escaped),
            Typed {
                send: b"ls\r".to_vec(),
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"ab\x04cd", 4, &mut escaped),
            Typed {
                send: b"ab".to_vec(),
                detach: true
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x04x", 4, &mut escaped),
            Typed {
                send: b"\x04x".to_vec(),
                detach: false
            }
        );
        // A prefix split across reads still works.
        assert_eq!(
            scan_typed(b"\x1d", 4, &mut escaped),
            Typed {
                send: vec![],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x04", 4, &mut escaped),
            Typed {
                send: vec![4],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x1d", 4, &mut escaped),
            Typed {
                send: vec![0x1d],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1dq", 4, &mut escaped),
            Typed {
                send: vec![0x1d, b'q'],
                detach: false
            }
        );
    }

    #[test]
    fn key_names() {
        assert_eq!(parse_key("ctrl-d").unwrap(), 4);
        assert_eq!(parse_key("Ctrl+A").unwrap(), 1);
        assert_eq!(parse_key("^q").unwrap(), 17);
        assert!(parse_key("meta-x").is_err());
    }
}
