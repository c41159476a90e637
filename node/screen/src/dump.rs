//! Serialising a [`Screen`] as bytes that redraw it in a reset terminal.
//!
//! The dump is built from three parts, in this order:
//!
//! 1. the modes avt does not model ([`crate::ExtraModes`]): mouse
//!    reporting, bracketed paste, focus events, keypad, cursor style...;
//!    they are independent of screen content, so they go first;
//! 2. avt's own dump: both screens, saved cursors, scroll region, modes,
//!    charsets, tab stops, pen, cursor and, last, a half-parsed escape
//!    sequence;
//! 3. the bytes of a half-received UTF-8 character, if any.
//!
//! avt spells the half-parsed sequence with 8-bit C1 introducers (U+009B
//! for CSI, U+009D for OSC...). Those reach the wire as two-byte UTF-8 that
//! many terminals print instead of obeying, so every C1 control is rewritten
//! to its 7-bit `ESC x` form, which avt's parser treats identically. When
//! the sequence has already collected an intermediate byte, avt keeps only
//! that byte; the tracker's fuller copy (with parameters) is used instead.
//!
//! Two more rewrites make the body safe for any terminal, not just avt:
//! avt compresses runs of a character with REP (`CSI n b`), which several
//! terminals (Terminal.app among them) do not implement, so runs are
//! expanded; and avt writes 256-colour and RGB SGR parameters with colons
//! (`38:5:n`), which is rewritten to the more widely understood semicolon
//! form (`38;5;n`). avt reads both forms back identically.

use crate::Screen;

/// Reset sent before a dump: RIS, a full reset of the receiving terminal.
pub const RESTORE_PREFIX: &[u8] = b"\x1bc";

impl Screen {
    /// Bytes that, written to a freshly reset terminal of the same size,
    /// reproduce this screen: both screens, cursor, modes, pen and any
    /// half-received escape sequence or UTF-8 character. Send
    /// [`RESTORE_PREFIX`] first, or use [`Screen::frame`].
    pub fn dump(&self) -> Vec<u8> {
        let vt_dump = self.vt.dump();
        let mut out = Vec::with_capacity(vt_dump.len() + 64);
        self.tracker.modes().restore(&mut out);

        let split = vt_dump
            .char_indices()
            .find(|&(_, c)| ('\u{80}'..='\u{9f}').contains(&c))
            .map_or(vt_dump.len(), |(i, _)| i);
        let (body, suffix) = vt_dump.split_at(split);
        push_portable(&mut out, body);

        match self.tracker.pending_intermediate_csi() {
            Some(csi) if is_bare_intermediate_csi(suffix) => out.extend_from_slice(csi.as_bytes()),
            _ => push_7bit(&mut out, suffix),
        }

        out.extend_from_slice(self.utf8.pending());
        out
    }

    /// A complete frame: [`RESTORE_PREFIX`] followed by [`Screen::dump`].
    /// Writing it to any terminal of the same size draws this screen.
    pub fn frame(&self) -> Vec<u8> {
        let mut out = RESTORE_PREFIX.to_vec();
        out.extend_from_slice(&self.dump());
        out
    }
}

/// avt's dump of a CSI that has seen an intermediate: U+009B and that byte.
fn is_bare_intermediate_csi(suffix: &str) -> bool {
    let mut chars = suffix.chars();
    chars.next() == Some('\u{9b}')
        && chars
            .next()
            .is_some_and(|c| ('\u{20}'..='\u{2f}').contains(&c))
        && chars.next().is_none()
}

/// Appends the complete sequences of avt's dump with REP expanded and SGR
/// colons turned into semicolons (see the module docs).
fn push_portable(out: &mut Vec<u8>, body: &str) {
    let mut rest = body;

    while !rest.is_empty() {
        let text_end = rest.find('\x1b').unwrap_or(rest.len());
        let (text, after_text) = rest.split_at(text_end);
        push_7bit(out, text);
        // avt's REP always directly follows the character it repeats.
        let last_printed = text
            .chars()
            .next_back()
            .filter(|&c| c >= ' ' && c != '\u{7f}');

        if after_text.is_empty() {
            break;
        }

        let Some(after) = after_text.strip_prefix("\x1b[") else {
            // An ESC sequence that is not a CSI: ESC, intermediates, final.
            let tail = &after_text[1..];
            let intermediates = tail
                .find(|c: char| !('\u{20}'..='\u{2f}').contains(&c))
                .unwrap_or(tail.len());
            let fin = tail[intermediates..]
                .chars()
                .next()
                .map_or(0, char::len_utf8);
            let len = 1 + intermediates + fin;
            out.extend_from_slice(&after_text.as_bytes()[..len]);
            rest = &after_text[len..];
            continue;
        };

        let end = after
            .find(|c: char| ('\u{40}'..='\u{7e}').contains(&c))
            .unwrap_or(after.len());
        let (params, fin) = (&after[..end], after[end..].chars().next());
        push_csi(out, params, fin, last_printed);
        rest = &after[(end + 1).min(after.len())..];
    }
}

/// Appends `CSI params fin`, rewriting REP and SGR for portability.
fn push_csi(out: &mut Vec<u8>, params: &str, fin: Option<char>, last: Option<char>) {
    let repeat = params.bytes().all(|b| b.is_ascii_digit());

    match (fin, last) {
        (Some('b'), Some(ch)) if repeat => {
            let count = params.parse::<usize>().unwrap_or(1).max(1);
            let mut buf = [0; 4];
            let ch = ch.encode_utf8(&mut buf).as_bytes();
            (0..count).for_each(|_| out.extend_from_slice(ch));
        }
        (Some('m'), _) => {
            out.extend_from_slice(b"\x1b[");
            out.extend(params.bytes().map(|b| if b == b':' { b';' } else { b }));
            out.push(b'm');
        }
        _ => {
            out.extend_from_slice(b"\x1b[");
            out.extend_from_slice(params.as_bytes());
            fin.into_iter()
                .for_each(|c| push_7bit(out, c.encode_utf8(&mut [0; 4])));
        }
    }
}

/// Appends `text` as UTF-8 with C1 controls spelled `ESC` + 7-bit byte.
fn push_7bit(out: &mut Vec<u8>, text: &str) {
    let mut start = 0;

    for (i, c) in text.char_indices() {
        if ('\u{80}'..='\u{9f}').contains(&c) {
            out.extend_from_slice(&text.as_bytes()[start..i]);
            out.push(0x1b);
            out.push(c as u8 - 0x40);
            start = i + c.len_utf8();
        }
    }

    out.extend_from_slice(&text.as_bytes()[start..]);
}

#[cfg(test)]
mod tests {
    use super::{push_7bit, push_portable};

    #[test]
    fn rep_is_expanded_and_sgr_uses_semicolons() {
        let mut out = Vec::new();
        push_portable(
            &mut out,
            "a:b\x1b[38:5:196;48:2:1:2:3m-\x1b[5b界\x1b[2b\x1b[2;3H",
        );
        let expected = "a:b\x1b[38;5;196;48;2;1;2;3m------界界界\x1b[2;3H";
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[test]
    fn c1_controls_become_escape_sequences() {
        let mut out = Vec::new();
        push_7bit(&mut out, "a\u{9b}?1;2\u{9d}x\u{90}é");
        assert_eq!(out, "a\x1b[?1;2\x1b]x\x1bPé".as_bytes());
    }
}
