//! Terminal modes that avt does not model but a redrawn terminal must keep.
//!
//! avt tracks the modes that change what the screen looks like (cursor keys,
//! origin, auto-wrap, insert, alternate screen, margins, charsets) and drops
//! the rest. Several of the dropped ones change how the *client's* terminal
//! encodes input: mouse reporting, bracketed paste, focus events, the
//! application keypad, xterm's modifyOtherKeys. Others change presentation:
//! cursor shape and blink, reverse video. A client that reattaches to a
//! running vim must get them back, so [`ModeTracker`] watches the same
//! characters avt parses and [`ModeTracker::restore`] re-emits them.
//!
//! The tracker is a small escape-sequence recogniser that mirrors avt's
//! parser transitions closely enough to stay in step (C1 controls, CAN/SUB,
//! strings ended by BEL or ST). Tracked DEC modes are independent flags and
//! are replayed in ascending order, so the last mouse protocol set wins on
//! terminals (xterm) where those modes are mutually exclusive.

/// DEC private modes replayed with `CSI ? n h`, in ascending order.
const DEC_MODES: [u16; 13] = [
    5,    // DECSCNM reverse video
    9,    // X10 mouse
    12,   // cursor blink
    1000, // mouse: button events
    1002, // mouse: button motion
    1003, // mouse: any motion
    1004, // focus in/out events
    1005, // mouse: UTF-8 coordinates
    1006, // mouse: SGR coordinates
    1007, // alternate scroll
    1015, // mouse: urxvt coordinates
    1016, // mouse: SGR pixel coordinates
    2004, // bracketed paste
];

/// DECNKM, the DEC-mode spelling of the application keypad (`ESC =`).
const DECNKM: u16 = 66;

/// Parameters kept per control sequence; later ones are dropped.
const MAX_PARAMS: usize = 16;

/// The tracked mode values; what [`ModeTracker::restore`] replays.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtraModes {
    /// Bit `i` set means `DEC_MODES[i]` is enabled.
    dec: u16,
    /// Application keypad (DECKPAM / DECNKM).
    keypad_app: bool,
    /// DECSCUSR cursor style, 0 = the terminal's default.
    cursor_style: u16,
    /// xterm modifyOtherKeys level (`CSI > 4 ; n m`), 0 = off.
    modify_other_keys: u16,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    Escape,
    EscapeIntermediate,
    Csi,
    /// OSC, DCS, SOS, PM or APC payload: skipped until BEL or ST.
    String,
}

/// A control sequence being collected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sequence {
    private: Option<char>,
    intermediate: Option<char>,
    params: [u16; MAX_PARAMS],
    count: usize,
    ignore: bool,
}

/// Follows a character stream and records the modes avt drops.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ModeTracker {
    modes: ExtraModes,
    state: State,
    seq: Sequence,
}

impl ModeTracker {
    pub(crate) fn modes(&self) -> ExtraModes {
        self.modes
    }

    pub(crate) fn feed_str(&mut self, text: &str) {
        for ch in text.chars() {
            self.feed(ch);
        }
    }

    fn feed(&mut self, ch: char) {
        // avt treats everything from U+00A0 up like 'A' inside sequences.
        let c = if ch >= '\u{a0}' { 'A' } else { ch };

        match c {
            '\u{1b}' => self.state = State::Escape,
            '\u{18}' | '\u{1a}' | '\u{9c}' => self.state = State::Ground,
            '\u{9b}' => self.start_csi(),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => self.state = State::String,
            '\u{80}'..='\u{9f}' => self.state = State::Ground,
            _ => match self.state {
                State::Ground => {}
                State::Escape => self.escape(c),
                State::EscapeIntermediate => self.escape_intermediate(c),
                State::Csi => self.csi(c),
                State::String => {
                    if c == '\u{07}' {
                        self.state = State::Ground;
                    }
                }
            },
        }
    }

    fn escape(&mut self, c: char) {
        self.state = match c {
            '[' => {
                self.start_csi();
                return;
            }
            ']' | 'P' | 'X' | '^' | '_' => State::String,
            '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
            '=' => {
                self.modes.keypad_app = true;
                State::Ground
            }
            '>' => {
                self.modes.keypad_app = false;
                State::Ground
            }
            'c' => {
                self.modes = ExtraModes::default();
                State::Ground
            }
            '\u{30}'..='\u{7e}' => State::Ground,
            _ => State::Escape,
        };
    }

    fn escape_intermediate(&mut self, c: char) {
        if ('\u{30}'..='\u{7e}').contains(&c) {
            self.state = State::Ground;
        }
    }

    fn start_csi(&mut self) {
        self.state = State::Csi;
        self.seq = Sequence::default();
    }

    fn csi(&mut self, c: char) {
        let seq = &mut self.seq;

        match c {
            '0'..='9' if seq.intermediate.is_none() => {
                if seq.count == 0 {
                    seq.count = 1;
                }

                if let Some(param) = seq.params.get_mut(seq.count - 1) {
                    let digit = u16::from(c as u8 - b'0');
                    *param = param.saturating_mul(10).saturating_add(digit);
                }
            }
            ';' if seq.intermediate.is_none() => {
                seq.count = (seq.count.max(1) + 1).min(MAX_PARAMS + 1)
            }
            '<'..='?' if seq.count == 0 && seq.private.is_none() && seq.intermediate.is_none() => {
                seq.private = Some(c);
            }
            '\u{20}'..='\u{2f}' => seq.intermediate = Some(c),
            '\u{30}'..='\u{3f}' => seq.ignore = true,
            '\u{40}'..='\u{7e}' => {
                self.state = State::Ground;
                self.dispatch(c);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, fin: char) {
        let seq = self.seq;

        if seq.ignore {
            return;
        }

        let params = &seq.params[..seq.count.min(MAX_PARAMS)];
        let first = params.first().copied().unwrap_or(0);

        match (seq.private, seq.intermediate, fin) {
            (Some('?'), None, 'h') => params.iter().for_each(|&m| self.set_dec(m, true)),
            (Some('?'), None, 'l') => params.iter().for_each(|&m| self.set_dec(m, false)),
            (None, Some(' '), 'q') => self.modes.cursor_style = first,
            (None, Some('!'), 'p') => self.modes.keypad_app = false,
            (Some('>'), None, 'm') if first == 4 => {
                self.modes.modify_other_keys = params.get(1).copied().unwrap_or(0);
            }
            _ => {}
        }
    }

    fn set_dec(&mut self, mode: u16, on: bool) {
        if mode == DECNKM {
            self.modes.keypad_app = on;
        } else if let Some(bit) = DEC_MODES.iter().position(|&m| m == mode) {
            if on {
                self.modes.dec |= 1 << bit;
            } else {
                self.modes.dec &= !(1 << bit);
            }
        }
    }

    /// The control sequence being collected when it has both parameters and
    /// an intermediate, rendered as 7-bit text. avt's own dump of that state
    /// keeps only the intermediate, which would lose e.g. the `2` of a
    /// half-received `CSI 2 SP q` (cursor style).
    pub(crate) fn pending_intermediate_csi(&self) -> Option<String> {
        let seq = &self.seq;
        let intermediate = seq.intermediate?;

        if self.state != State::Csi || seq.count == 0 || seq.ignore {
            return None;
        }

        let mut out = String::from("\x1b[");
        out.extend(seq.private);
        push_params(&mut out, &seq.params[..seq.count.min(MAX_PARAMS)]);
        out.push(intermediate);
        Some(out)
    }
}

impl ExtraModes {
    /// Sequences that switch these modes on in a freshly reset terminal.
    pub(crate) fn restore(&self, out: &mut Vec<u8>) {
        for (bit, mode) in DEC_MODES.iter().enumerate() {
            if self.dec & (1 << bit) != 0 {
                out.extend_from_slice(format!("\x1b[?{mode}h").as_bytes());
            }
        }

        if self.keypad_app {
            out.extend_from_slice(b"\x1b=");
        }

        if self.cursor_style != 0 {
            out.extend_from_slice(format!("\x1b[{} q", self.cursor_style).as_bytes());
        }

        if self.modify_other_keys != 0 {
            out.extend_from_slice(format!("\x1b[>4;{}m", self.modify_other_keys).as_bytes());
        }
    }

    /// Whether DEC private mode `mode` is among the tracked ones and set.
    pub fn dec_mode(&self, mode: u16) -> bool {
        DEC_MODES
            .iter()
            .position(|&m| m == mode)
            .is_some_and(|bit| self.dec & (1 << bit) != 0)
    }

    /// Application keypad mode (DECKPAM `ESC =` or DECNKM `CSI ? 66 h`).
    pub fn keypad_app(&self) -> bool {
        self.keypad_app
    }

    /// DECSCUSR cursor style; 0 is the terminal's default.
    pub fn cursor_style(&self) -> u16 {
        self.cursor_style
    }

    /// xterm modifyOtherKeys level; 0 is off.
    pub fn modify_other_keys(&self) -> u16 {
        self.modify_other_keys
    }
}

fn push_params(out: &mut String, params: &[u16]) {
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }

        out.push_str(&param.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::ModeTracker;

    fn track(text: &str) -> ModeTracker {
        let mut tracker = ModeTracker::default();
        tracker.feed_str(text);
        tracker
    }

    #[test]
    fn tracks_and_restores_modes() {
        let modes = track("\x1b[?1000;1006h\x1b[?2004h\x1b=\x1b[4 q\x1b[>4;2m").modes();
        assert!(modes.dec_mode(1000) && modes.dec_mode(1006) && modes.dec_mode(2004));
        assert!(modes.keypad_app());
        let mut out = Vec::new();
        modes.restore(&mut out);
        let expected = "\x1b[?1000h\x1b[?1006h\x1b[?2004h\x1b=\x1b[4 q\x1b[>4;2m";
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(track(expected).modes(), modes);
    }

    #[test]
    fn resets_and_strings_are_respected() {
        assert_eq!(track("\x1b[?2004h\x1b[?2004l").modes(), Default::default());
        assert_eq!(track("\x1b[?1000h\x1bc").modes(), Default::default());
        // ESC ends a string (as in avt); other bytes are payload.
        assert!(track("\x1b]0;\x1b[?1000h").modes().dec_mode(1000));
        assert_eq!(track("\x1b]0;[?1000h").modes(), Default::default());
        assert_eq!(
            track("\x1b]0;t\x07\x1b[?66h\x1b>").modes(),
            Default::default()
        );
        assert!(track("\x1bP+q\x1b\\\x1b[?1004h").modes().dec_mode(1004));
        assert!(!track("\x1b[?1004\x18h").modes().dec_mode(1004));
    }

    #[test]
    fn pending_intermediate_keeps_parameters() {
        let tracker = track("\x1b[5 ");
        assert_eq!(
            tracker.pending_intermediate_csi().as_deref(),
            Some("\x1b[5 ")
        );
        assert_eq!(track("\x1b[ ").pending_intermediate_csi(), None);
    }
}
