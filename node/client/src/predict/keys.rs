//! Turns the bytes the user types into the few keys the prediction engine
//! understands.
//!
//! A [`KeyDecoder`] keeps its state between calls, so an escape sequence or
//! a UTF-8 character split across two reads is still recognised (and the
//! tail of `ESC [ C` is never mistaken for the text `[C`). Everything it
//! does not know how to predict comes out as [`Key::Control`].

/// One decoded keystroke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A printable character one cell wide.
    Print(char),
    /// DEL (0x7f) or BS (0x08).
    Backspace,
    /// `ESC [ D` or `ESC O D`.
    Left,
    /// `ESC [ C` or `ESC O C`.
    Right,
    /// Anything else: Enter, other control bytes, other escape sequences,
    /// wide or zero-width characters, invalid UTF-8.
    Control,
}

/// Where the decoder is inside a multi-byte key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    /// A UTF-8 character: the bytes so far and how many it has in all.
    Utf8 { buf: [u8; 4], len: u8, total: u8 },
    /// After ESC.
    Esc,
    /// After `ESC [`; `plain` while no parameter or intermediate byte came.
    Csi { plain: bool },
    /// After `ESC O` (cursor keys in application mode).
    Ss3,
}

const ESC: u8 = 0x1b;

/// Decodes keystroke bytes into [`Key`]s, carrying partial keys over.
#[derive(Debug, Default)]
pub(crate) struct KeyDecoder {
    state: State,
}

impl KeyDecoder {
    /// The keys completed by `bytes`.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Vec<Key> {
        let mut keys = Vec::new();
        for &byte in bytes {
            self.push(byte, &mut keys);
        }
        keys
    }

    fn push(&mut self, byte: u8, keys: &mut Vec<Key>) {
        match self.state {
            State::Ground => self.ground(byte, keys),
            State::Utf8 { buf, len, total } => self.utf8(buf, len, total, byte, keys),
            State::Esc => self.escape(byte, keys),
            State::Csi { plain } => self.csi(plain, byte, keys),
            State::Ss3 => {
                self.state = State::Ground;
                keys.push(match byte {
                    b'C' => Key::Right,
                    b'D' => Key::Left,
                    _ => Key::Control,
                });
            }
        }
    }

    fn ground(&mut self, byte: u8, keys: &mut Vec<Key>) {
        let total = match byte {
            ESC => {
                self.state = State::Esc;
                return;
            }
            0x7f | 0x08 => return keys.push(Key::Backspace),
            0x20..=0x7e => return keys.push(Key::Print(char::from(byte))),
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            // Other control bytes, stray continuation bytes, invalid leads.
            _ => return keys.push(Key::Control),
        };
        let mut buf = [0; 4];
        buf[0] = byte;
        self.state = State::Utf8 { buf, len: 1, total };
    }

    fn utf8(&mut self, mut buf: [u8; 4], len: u8, total: u8, byte: u8, keys: &mut Vec<Key>) {
        if !(0x80..=0xbf).contains(&byte) {
            // A broken character: report it, then read this byte afresh.
            self.state = State::Ground;
            keys.push(Key::Control);
            return self.ground(byte, keys);
        }
        buf[usize::from(len)] = byte;
        let len = len + 1;
        if len < total {
            self.state = State::Utf8 { buf, len, total };
            return;
        }
        self.state = State::Ground;
        let decoded = std::str::from_utf8(&buf[..usize::from(len)])
            .ok()
            .and_then(|text| text.chars().next());
        keys.push(match decoded {
            Some(ch) if one_cell(ch) => Key::Print(ch),
            _ => Key::Control,
        });
    }

    fn escape(&mut self, byte: u8, keys: &mut Vec<Key>) {
        self.state = match byte {
            b'[' => State::Csi { plain: true },
            b'O' => State::Ss3,
            ESC => {
                // ESC ESC: the first one is a key of its own.
                keys.push(Key::Control);
                State::Esc
            }
            _ => {
                // Alt+key and other two-byte sequences.
                keys.push(Key::Control);
                State::Ground
            }
        };
    }

    fn csi(&mut self, plain: bool, byte: u8, keys: &mut Vec<Key>) {
        match byte {
            // Parameter and intermediate bytes.
            0x20..=0x3f => self.state = State::Csi { plain: false },
            // The final byte.
            0x40..=0x7e => {
                self.state = State::Ground;
                keys.push(match byte {
                    b'C' if plain => Key::Right,
                    b'D' if plain => Key::Left,
                    _ => Key::Control,
                });
            }
            // A broken sequence: report it, then read this byte afresh.
            _ => {
                self.state = State::Ground;
                keys.push(Key::Control);
                self.ground(byte, keys);
            }
        }
    }
}

/// Whether `ch` is certainly one cell wide in any terminal: printable
/// ASCII, Latin-1 and Latin Extended, spacing modifiers, Greek and Cyrillic
/// (combining marks excluded). Other characters are not predicted: a wrong
/// width would misplace every later prediction on the line.
pub(crate) fn one_cell(ch: char) -> bool {
    matches!(
        u32::from(ch),
        0x20..=0x7e | 0xa0..=0xac | 0xae..=0x2ff | 0x370..=0x482 | 0x48a..=0x52f
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<Key> {
        KeyDecoder::default().decode(bytes)
    }

    #[test]
    fn printable_backspace_and_arrows() {
        assert_eq!(
            decode(b"a \x7f\x08\x1b[C\x1b[D\x1bOC\x1bOD"),
            [
                Key::Print('a'),
                Key::Print(' '),
                Key::Backspace,
                Key::Backspace,
                Key::Right,
                Key::Left,
                Key::Right,
                Key::Left,
            ]
        );
    }

    #[test]
    fn control_keys_and_other_sequences() {
        let keys = decode(b"\r\n\t\x03\x1b[1;5C\x1b[A\x1bOA\x1bx\x1b[200~");
        assert_eq!(keys, [Key::Control; 9]);
    }

    #[test]
    fn utf8_and_widths() {
        assert_eq!(decode("éж".as_bytes()), [Key::Print('é'), Key::Print('ж')]);
        // Wide, zero-width (combining acute) and invalid input are not predicted.
        assert_eq!(decode("中".as_bytes()), [Key::Control]);
        assert_eq!(decode("\u{301}".as_bytes()), [Key::Control]);
        assert_eq!(
            decode(b"\xc3a\xff"),
            [Key::Control, Key::Print('a'), Key::Control]
        );
    }

    #[test]
    fn keys_split_across_calls() {
        let mut decoder = KeyDecoder::default();
        assert_eq!(decoder.decode(b"\x1b"), []);
        assert_eq!(decoder.decode(b"["), []);
        assert_eq!(decoder.decode(b"C"), [Key::Right]);
        assert_eq!(decoder.decode(&"é".as_bytes()[..1]), []);
        assert_eq!(decoder.decode(&"é".as_bytes()[1..]), [Key::Print('é')]);
        assert_eq!(decoder.decode(b"\x1b"), []);
        assert_eq!(decoder.decode(b"[1"), []);
        assert_eq!(decoder.decode(b"~x"), [Key::Control, Key::Print('x')]);
    }

    #[test]
    fn broken_sequences_keep_the_next_byte() {
        assert_eq!(decode(b"\x1b[\x7f"), [Key::Control, Key::Backspace]);
        assert_eq!(decode(b"\x1b\x1b[C"), [Key::Control, Key::Right]);
    }
}
