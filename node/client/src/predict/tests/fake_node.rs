//! A scripted node for the property test: a tiny shell with a line editor
//! that echoes (inserting, as readline does), and a password prompt that
//! does not. It turns a scripted [`Action`] into the keystroke bytes the
//! user typed and the output the node writes for them.
//!
//! Typed text comes from lower-case letters and a few other characters;
//! at the password prompt it comes from upper-case ASCII only, which the
//! node never prints, so an upper-case letter in an overlay is a password
//! character drawn by mistake.

/// Characters typed at the shell prompt.
pub(super) const TEXT: [char; 12] = ['a', 'b', 'c', 'x', 'y', 'z', ' ', '.', '-', 'é', 'ж', 'ß'];

/// Whether `ch` could only have come from typing a password.
pub(super) fn from_password(ch: char) -> bool {
    ch.is_ascii_uppercase()
}

/// What the shell does after Enter at its prompt.
#[derive(Debug, Clone, Copy)]
pub(super) enum Next {
    Prompt,
    /// Prints some lines of output first.
    Output(u8),
    /// Clears the screen first.
    Clear,
    /// Asks for a password (no echo until Enter).
    Password,
}

/// One user action.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// Up to a few characters typed at once (indexes into the alphabet).
    Chars(Vec<u8>),
    /// DEL when true, BS when false.
    Backspace(bool),
    /// `ESC O D` when true, `ESC [ D` when false.
    Left(bool),
    Right(bool),
    Enter(Next),
    CtrlC,
    CtrlL,
    Tab,
    /// A paste of this many characters (at least 100).
    Paste(usize),
}

/// The shell's state.
#[derive(Debug)]
pub(super) struct FakeNode {
    cols: usize,
    password: bool,
    prompt: usize,
    line: Vec<char>,
    pos: usize,
}

impl FakeNode {
    /// A shell at its prompt; the second value is its first output.
    pub(super) fn new(cols: u16) -> (Self, Vec<u8>) {
        let node = Self {
            cols: usize::from(cols),
            password: false,
            prompt: 2,
            line: Vec::new(),
            pos: 0,
        };
        (node, b"$ ".to_vec())
    }

    /// Whether the password prompt is up.
    pub(super) fn password(&self) -> bool {
        self.password
    }

    /// The bytes typed for `action` and what the node writes for them.
    pub(super) fn press(&mut self, action: &Action) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::new();
        let typed = match action {
            Action::Chars(indexes) => {
                let text: String = indexes.iter().map(|&i| self.char_at(i)).collect();
                text.chars().for_each(|ch| self.insert(ch, &mut out));
                text.into_bytes()
            }
            Action::Paste(len) => {
                let text: String = (0..*len).map(|i| self.char_at(i as u8)).collect();
                text.chars().for_each(|ch| self.insert(ch, &mut out));
                text.into_bytes()
            }
            Action::Backspace(del) => {
                self.backspace(&mut out);
                vec![if *del { 0x7f } else { 0x08 }]
            }
            Action::Left(ss3) => {
                self.left(&mut out);
                arrow(*ss3, b'D')
            }
            Action::Right(ss3) => {
                self.right(&mut out);
                arrow(*ss3, b'C')
            }
            Action::Enter(next) => {
                self.enter(*next, &mut out);
                b"\r".to_vec()
            }
            Action::CtrlC => {
                self.prompt_again(b"^c\r\n", &mut out);
                vec![0x03]
            }
            Action::CtrlL => {
                self.redraw(&mut out);
                vec![0x0c]
            }
            Action::Tab => {
                out.push(0x07);
                vec![0x09]
            }
        };
        (typed, out)
    }

    fn char_at(&self, index: u8) -> char {
        if self.password {
            char::from(b'A' + index % 26)
        } else {
            TEXT[usize::from(index) % TEXT.len()]
        }
    }

    fn insert(&mut self, ch: char, out: &mut Vec<u8>) {
        if self.password {
            return;
        }
        // Keep the line off the last two columns: no wrapping.
        if self.prompt + self.line.len() + 2 >= self.cols {
            out.push(0x07);
            return;
        }
        self.line.insert(self.pos, ch);
        self.pos += 1;
        let tail: String = self.line[self.pos - 1..].iter().collect();
        out.extend_from_slice(tail.as_bytes());
        back(out, self.line.len() - self.pos);
    }

    fn backspace(&mut self, out: &mut Vec<u8>) {
        if self.password || self.pos == 0 {
            return;
        }
        self.pos -= 1;
        self.line.remove(self.pos);
        let tail: String = self.line[self.pos..].iter().collect();
        out.push(0x08);
        out.extend_from_slice(tail.as_bytes());
        out.push(b' ');
        back(out, self.line.len() - self.pos + 1);
    }

    fn left(&mut self, out: &mut Vec<u8>) {
        if !self.password && self.pos > 0 {
            self.pos -= 1;
            out.push(0x08);
        }
    }

    fn right(&mut self, out: &mut Vec<u8>) {
        if !self.password && self.pos < self.line.len() {
            let mut buf = [0; 4];
            out.extend_from_slice(self.line[self.pos].encode_utf8(&mut buf).as_bytes());
            self.pos += 1;
        }
    }

    fn enter(&mut self, next: Next, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        if self.password {
            return self.prompt_again(b"", out);
        }
        match next {
            Next::Prompt => {}
            Next::Output(lines) => {
                (0..lines % 8).for_each(|_| out.extend_from_slice(b"out put\r\n"));
            }
            Next::Clear => out.extend_from_slice(b"\x1b[H\x1b[2J"),
            Next::Password => {
                self.line.clear();
                self.pos = 0;
                self.password = true;
                self.prompt = 10;
                out.extend_from_slice(b"password: ");
                return;
            }
        }
        self.prompt_again(b"", out);
    }

    /// Writes `before`, then a fresh prompt with an empty line.
    fn prompt_again(&mut self, before: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(before);
        out.extend_from_slice(b"$ ");
        self.password = false;
        self.prompt = 2;
        self.line.clear();
        self.pos = 0;
    }

    /// Ctrl-L: clear the screen and draw the prompt and line again.
    fn redraw(&mut self, out: &mut Vec<u8>) {
        if self.password {
            return;
        }
        let line: String = self.line.iter().collect();
        out.extend_from_slice(b"\x1b[H\x1b[2J$ ");
        out.extend_from_slice(line.as_bytes());
        back(out, self.line.len() - self.pos);
    }
}

fn arrow(ss3: bool, last: u8) -> Vec<u8> {
    vec![0x1b, if ss3 { b'O' } else { b'[' }, last]
}

/// Moves the cursor `n` cells left.
fn back(out: &mut Vec<u8>, n: usize) {
    out.extend(std::iter::repeat_n(0x08, n));
}
