//! Where a session is in its life: running, exited (with or without its last output read), or
//! destroyed. Pure: the session's threads and the registry report events, attachments read the
//! state.
//!
//! The program's exit and the end of its PTY output are two events that come in either order:
//! the exit is seen on SIGCHLD, the end of output when the reader thread has read the last byte
//! (every process holding the PTY is gone). An attachment reports the exit only once the output
//! is drained, so that the exit never overtakes the last output.

use cmdop_proto::SessionState;

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Lifecycle {
    /// The program runs. `drained`: its PTY output already ended (its exit is on its way).
    Running {
        /// Every byte the PTY will ever print is in the ringbuffer.
        drained: bool,
    },
    /// The program exited with `code`.
    Exited {
        /// Exit code (128 + signal if killed).
        code: i32,
        /// Every byte the PTY will ever print is in the ringbuffer.
        drained: bool,
    },
    /// The session was destroyed: attachments end (an exit seen before is still reported).
    Destroyed {
        /// The exit code recorded before the destruction, if any.
        code: Option<i32>,
        /// Every byte the PTY will ever print is in the ringbuffer.
        drained: bool,
    },
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::Running { drained: false }
    }
}

impl Lifecycle {
    /// The program exited with `code` (ignored once destroyed or exited).
    pub fn exited(&mut self, code: i32) {
        if let Lifecycle::Running { drained } = *self {
            *self = Lifecycle::Exited { code, drained };
        }
    }

    /// The PTY's output reached its end.
    pub fn drained(&mut self) {
        match self {
            Lifecycle::Running { drained }
            | Lifecycle::Exited { drained, .. }
            | Lifecycle::Destroyed { drained, .. } => *drained = true,
        }
    }

    /// The session is destroyed.
    pub fn destroy(&mut self) {
        *self = Lifecycle::Destroyed {
            code: self.exit_code(),
            drained: self.is_drained(),
        };
    }

    /// Whether every byte the PTY will ever print is in the ringbuffer.
    pub fn is_drained(&self) -> bool {
        match *self {
            Lifecycle::Running { drained }
            | Lifecycle::Exited { drained, .. }
            | Lifecycle::Destroyed { drained, .. } => drained,
        }
    }

    /// The exit code, once the program has exited.
    pub fn exit_code(&self) -> Option<i32> {
        match *self {
            Lifecycle::Running { .. } => None,
            Lifecycle::Exited { code, .. } => Some(code),
            Lifecycle::Destroyed { code, .. } => code,
        }
    }

    /// Whether the session was destroyed.
    pub fn is_destroyed(&self) -> bool {
        matches!(self, Lifecycle::Destroyed { .. })
    }

    /// The state clients see.
    pub fn state(&self) -> SessionState {
        match self.exit_code() {
            None => SessionState::Running,
            Some(code) => SessionState::Exited { code },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_and_end_of_output_in_either_order() {
        let mut exit_first = Lifecycle::default();
        exit_first.exited(3);
        assert_eq!(
            exit_first,
            Lifecycle::Exited {
                code: 3,
                drained: false
            }
        );
        exit_first.drained();
        let mut output_first = Lifecycle::default();
        output_first.drained();
        assert_eq!(output_first, Lifecycle::Running { drained: true });
        output_first.exited(3);
        assert_eq!(exit_first, output_first);
        // A second exit report does not change the code.
        output_first.exited(4);
        assert_eq!(output_first.exit_code(), Some(3));
    }

    #[test]
    fn destruction_keeps_the_exit_code() {
        let mut running = Lifecycle::default();
        running.destroy();
        running.exited(1);
        assert_eq!(
            running,
            Lifecycle::Destroyed {
                code: None,
                drained: false
            }
        );
        assert_eq!(running.state(), SessionState::Running);
        let mut exited = Lifecycle::default();
        exited.exited(2);
        exited.drained();
        exited.destroy();
        assert!(exited.is_destroyed() && exited.is_drained());
        assert_eq!(exited.state(), SessionState::Exited { code: 2 });
    }
}
