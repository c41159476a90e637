//! Keys typed into the live terminal: the detach key (from `client.detach_key`), and the
//! `Ctrl+]` prefix that sends the next key literally.

use anyhow::bail;
use cmdop_client::live::AttachmentHandle;
use std::io::Read;

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

/// Starts the thread that reads stdin and hands keystrokes to `handle` at once, until the
/// detach key or the end of stdin; either way it detaches.
pub fn spawn_stdin_reader(
    handle: AttachmentHandle,
    detach_key: u8,
    keys: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut escaped = false;
            loop {
                let n = match stdin.read(&mut buf) {
                    // stdin closed: leave the session running.
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let typed = scan_typed(&buf[..n], detach_key, &mut escaped);
                if !typed.send.is_empty() {
                    // To the node first; then a copy for the local echo.
                    handle.input(typed.send.clone());
                    let _ = keys.send(typed.send);
                }
                if typed.detach {
                    break;
                }
            }
            handle.detach();
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
