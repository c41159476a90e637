//! A session handed from one binary to the next by an upgrade in place ([`crate::upgrade`]).
//!
//! Its PTY tasks stop ([`Session::halt_io`]) with nothing lost: output not read yet stays in
//! the PTY for the next binary to read, keystrokes taken from the queue but not written yet are
//! carried. Its state is written down ([`Session::export`]), the PTY's master is kept open
//! across `execve`, and the next binary builds the session again around the same PTY and program
//! ([`Session::adopt`]). An upgrade called off starts the tasks again ([`Session::resume_io`]).

use crate::os::SpawnedPty;
use crate::session::ringbuf::RingBuffer;
use crate::session::screen::SessionScreen;
use crate::session::{now_ms, About, Carry, HaltedWriter, PtyReader, Session, SessionCore};
use crate::upgrade::state::SessionState;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

/// A session's stopped PTY tasks: what they held, to start again or hand over.
pub struct HaltedIo {
    reader: Option<PtyReader>,
    writer: Option<HaltedWriter>,
}

impl Session {
    /// Stops the PTY's reader and writer tasks; the keystrokes still queued are moved to the
    /// writer's pending bytes, in order.
    pub async fn halt_io(&self) -> HaltedIo {
        let io = self.io.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(io) = io else {
            return HaltedIo {
                reader: None,
                writer: None,
            };
        };
        io.halt.cancel();
        let reader = match io.reader {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        let mut writer = match io.writer {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        if let Some(writer) = writer.as_mut() {
            while let Ok(bytes) = writer.input.try_recv() {
                writer.pending.extend_from_slice(&bytes);
            }
        }
        HaltedIo { reader, writer }
    }

    /// Starts the tasks [`Session::halt_io`] stopped again, where they stopped.
    pub fn resume_io(self: &Arc<Self>, halted: HaltedIo) {
        self.run_io(halted.reader, halted.writer);
    }

    /// The session's whole state, its PTY's master kept open across the next `execve`. Call
    /// after [`Session::halt_io`], with what it returned, with nothing awaited in between this
    /// and the `execve` (keystrokes queued meanwhile are taken in here). The ringbuffer's bytes
    /// move into the state; [`Session::take_back`] returns them if the upgrade is called off.
    pub fn export(&self, halted: &mut HaltedIo) -> io::Result<SessionState> {
        if let Some(writer) = halted.writer.as_mut() {
            while let Ok(bytes) = writer.input.try_recv() {
                writer.pending.extend_from_slice(&bytes);
            }
        }
        let pty_fd = self
            .terminal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hand_over()?;
        let child_running = self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        // Not caught up: the next binary catches the screen up from the ring when needed.
        let screen = self.screen().export();
        let mut core = self.lock();
        let capacity = core.ring.capacity();
        let ring = std::mem::replace(&mut core.ring, RingBuffer::new(capacity)).into_contents();
        Ok(SessionState {
            id: self.id,
            name: core.name.clone(),
            host: self.host.clone(),
            shell: self.shell.clone(),
            start_cwd: self.start_cwd.clone(),
            env: self.env.clone(),
            created_ms: self.created_ms,
            pid: self.pid,
            pty_fd,
            child_running,
            reading: halted.reader.is_some(),
            writing: halted.writer.is_some(),
            size: core.size,
            lifecycle: core.lifecycle,
            last_active_ms: core.last_active_ms,
            marked_attached: core.marked_attached,
            watched: core.live_attachments > 0,
            ring_capacity: core.ring.capacity() as u64,
            ring_start: ring.offset,
            ring: ring.data,
            input: core.input.clone(),
            pending_input: halted
                .writer
                .as_ref()
                .map(|w| w.pending.clone())
                .unwrap_or_default(),
            screen,
            resizes: core.resizes.iter().copied().collect(),
        })
    }

    /// Takes back the ringbuffer [`Session::export`] moved into `state` (the upgrade was called
    /// off).
    pub fn take_back(&self, state: SessionState) {
        let capacity = usize::try_from(state.ring_capacity).unwrap_or(usize::MAX);
        self.lock().ring = RingBuffer::resumed(capacity, state.ring_start, state.ring);
    }

    /// The session `state` describes, around the PTY and program it names (already adopted as
    /// `spawned`); its tasks start at once.
    pub fn adopt(state: SessionState, spawned: SpawnedPty) -> Arc<Session> {
        let about = About {
            id: state.id,
            host: state.host,
            shell: state.shell,
            start_cwd: state.start_cwd,
            env: state.env,
            created_ms: state.created_ms,
        };
        let capacity = usize::try_from(state.ring_capacity).unwrap_or(usize::MAX);
        let mut core = SessionCore {
            name: state.name,
            ring: RingBuffer::resumed(capacity, state.ring_start, state.ring),
            size: state.size,
            lifecycle: state.lifecycle,
            // Its viewers were cut off just now: their idle time starts now, as at a detach.
            last_active_ms: if state.watched {
                now_ms()
            } else {
                state.last_active_ms
            },
            marked_attached: state.marked_attached,
            live_attachments: 0,
            holder: None,
            input: state.input,
            resizes: VecDeque::from(state.resizes),
        };
        let carry = Carry {
            pending_input: state.pending_input,
            reading: state.reading,
            writing: state.writing,
            child_running: state.child_running,
        };
        // A state from a binary that did not carry the pending size changes: a size the screen
        // had not followed is followed from the end of the output handed down.
        let last_size = core
            .resizes
            .back()
            .map_or(state.screen.size, |&(_, size)| size);
        if last_size != core.size {
            let at = core.ring.end();
            core.resizes.push_back((at, core.size));
        }
        let screen = SessionScreen::imported(state.screen);
        Session::assemble(about, core, screen, spawned, carry)
    }
}
