//! A fake PTY for tests: an in-memory program, driven by the test instead of by an OS.
//!
//! [`FakePty`] spawns [`FakeProgram`]s and keeps a handle to each. Through the handle a test:
//! - makes the program print ([`FakeProgram::print`]), holds its output back
//!   ([`FakeProgram::hold_output`]) and lets it go ([`FakeProgram::release_output`]);
//! - reads what was typed into it ([`FakeProgram::input`], [`FakeProgram::wait_input`]);
//! - makes it stop reading its input ([`FakeProgram::refuse_input`]), as a program that never
//!   reads does, so the node's input queue fills;
//! - makes it exit ([`FakeProgram::exit`]): its output ends after what it printed, and its exit
//!   code is there for the next [`Child::try_wait`];
//! - sees the hang-ups, kills and resizes it received.
//!
//! The spawner itself can hold spawns back ([`FakePty::hold_spawns`]), as a fork that takes
//! long does, until the test lets them go.
//!
//! A hang-up makes the program exit with 129, as a shell does; a kill, with 137.

use crate::os::{Child, PtyHandover, PtySpawner, SpawnSpec, SpawnedPty, Terminal};
use cmdop_proto::WinSize;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

/// The longest a held spawn waits to be let go.
const SPAWN_HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Spawns fake programs.
#[derive(Debug, Default)]
pub struct FakePty {
    programs: Mutex<Vec<FakeProgram>>,
    /// Spawns wait while this is true (for at most [`SPAWN_HOLD_LIMIT`]).
    held: Mutex<bool>,
    released: Condvar,
    /// Told when a spawn starts waiting.
    spawn_held: Notify,
}

impl FakePty {
    /// A spawner that has spawned nothing yet.
    pub fn new() -> Arc<FakePty> {
        Arc::new(FakePty::default())
    }

    /// The programs spawned so far, oldest first.
    pub fn programs(&self) -> Vec<FakeProgram> {
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The program spawned last.
    pub fn last(&self) -> Option<FakeProgram> {
        self.programs().pop()
    }

    /// Makes spawns wait until [`FakePty::release_spawns`] (or ten seconds at most), blocking
    /// the thread that spawns, as a slow fork does.
    pub fn hold_spawns(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Lets held spawns go.
    pub fn release_spawns(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.released.notify_all();
    }

    /// Waits until a spawn is held.
    pub async fn spawn_waiting(&self) {
        self.spawn_held.notified().await;
    }

    /// Blocks while spawns are held.
    fn wait_if_held(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !*held {
            return;
        }
        self.spawn_held.notify_one();
        drop(
            self.released
                .wait_timeout_while(held, SPAWN_HOLD_LIMIT, |held| *held),
        );
    }
}

impl PtySpawner for FakePty {
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty> {
        self.wait_if_held();
        let mut programs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        let pid = 100_000 + programs.len() as u32;
        let (typed, _) = watch::channel(0);
        let program = FakeProgram(Arc::new(Shared {
            state: Mutex::new(State {
                spec: spec.clone(),
                pid,
                output: VecDeque::new(),
                output_held: false,
                output_ended: false,
                input: Vec::new(),
                input_refused: false,
                exit: None,
                hang_ups: 0,
                kills: 0,
                resizes: Vec::new(),
                cwd: spec.cwd.clone(),
                reading: None,
                writing: None,
            }),
            typed,
        }));
        programs.push(program.clone());
        Ok(program.spawned())
    }

    /// Finds the program by pid (its fake descriptor is its pid too).
    fn adopt(&self, handover: PtyHandover) -> io::Result<SpawnedPty> {
        let program = self
            .programs()
            .into_iter()
            .find(|p| p.pid() == handover.pid && handover.fd == handover.pid as i32)
            .ok_or_else(|| io::Error::other("no such fake program"))?;
        Ok(program.spawned())
    }

    /// The program of that pid (one never spawned stands for an exited one).
    fn child(&self, pid: u32) -> Box<dyn Child> {
        match self.programs().into_iter().find(|p| p.pid() == pid) {
            Some(program) => Box::new(program),
            None => Box::new(Exited),
        }
    }
}

/// A program that has exited and been reaped.
struct Exited;

impl Child for Exited {
    fn try_wait(&mut self) -> io::Result<Option<i32>> {
        Ok(Some(0))
    }

    fn hang_up(&self) {}

    fn kill(&self) {}

    fn cwd(&self) -> Option<String> {
        None
    }
}

/// One fake program: the test's handle, and also the PTY and child the session holds.
#[derive(Debug, Clone)]
pub struct FakeProgram(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The number of bytes typed so far.
    typed: watch::Sender<usize>,
}

#[derive(Debug)]
struct State {
    spec: SpawnSpec,
    pid: u32,
    output: VecDeque<u8>,
    output_held: bool,
    output_ended: bool,
    input: Vec<u8>,
    input_refused: bool,
    exit: Option<i32>,
    hang_ups: u32,
    kills: u32,
    resizes: Vec<WinSize>,
    cwd: String,
    /// The session's reader, waiting for output.
    reading: Option<Waker>,
    /// The session's writer, waiting for the program to read.
    writing: Option<Waker>,
}

impl FakeProgram {
    /// The program as the session holds it.
    fn spawned(&self) -> SpawnedPty {
        SpawnedPty {
            reader: Box::pin(self.clone()),
            writer: Box::pin(self.clone()),
            terminal: Box::new(self.clone()),
            child: Box::new(self.clone()),
            pid: Some(self.pid()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and wakes the session's reader and writer.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state();
        let result = f(&mut state);
        let wakers = [state.reading.take(), state.writing.take()];
        drop(state);
        wakers.into_iter().flatten().for_each(Waker::wake);
        result
    }

    /// What the program was started as.
    pub fn spec(&self) -> SpawnSpec {
        self.state().spec.clone()
    }

    /// The fake process id.
    pub fn pid(&self) -> u32 {
        self.state().pid
    }

    /// The program prints `bytes`.
    pub fn print(&self, bytes: &[u8]) {
        self.update(|s| s.output.extend(bytes));
    }

    /// Output stays with the program (unread by the node) until [`FakeProgram::release_output`].
    pub fn hold_output(&self) {
        self.update(|s| s.output_held = true);
    }

    /// Lets held output go.
    pub fn release_output(&self) {
        self.update(|s| s.output_held = false);
    }

    /// The program exits with `code`: its output ends after what it printed so far.
    pub fn exit(&self, code: i32) {
        self.update(|s| s.end(code));
    }

    /// The program stops reading its input (`true`) or reads it again (`false`).
    pub fn refuse_input(&self, refused: bool) {
        self.update(|s| s.input_refused = refused);
    }

    /// Every byte typed into the program so far.
    pub fn input(&self) -> Vec<u8> {
        self.state().input.clone()
    }

    /// Waits until at least `len` bytes were typed; returns all of them.
    pub async fn wait_input(&self, len: usize) -> Vec<u8> {
        let mut typed = self.0.typed.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = typed.wait_for(|&n| n >= len).await;
        self.input()
    }

    /// Hang-ups received.
    pub fn hang_ups(&self) -> u32 {
        self.state().hang_ups
    }

    /// Kills received.
    pub fn kills(&self) -> u32 {
        self.state().kills
    }

    /// Window sizes set, in order.
    pub fn resizes(&self) -> Vec<WinSize> {
        self.state().resizes.clone()
    }

    /// Whether the program has exited.
    pub fn exited(&self) -> Option<i32> {
        self.state().exit
    }

    /// The program changes directory.
    pub fn chdir(&self, cwd: &str) {
        self.update(|s| s.cwd = cwd.to_string());
    }
}

impl State {
    fn end(&mut self, code: i32) {
        if self.exit.is_none() {
            self.exit = Some(code);
        }
        self.output_ended = true;
    }
}

impl AsyncRead for FakeProgram {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.state();
        if !state.output_held {
            if !state.output.is_empty() {
                let n = buf.remaining().min(state.output.len());
                let bytes: Vec<u8> = state.output.drain(..n).collect();
                buf.put_slice(&bytes);
                return Poll::Ready(Ok(()));
            }
            if state.output_ended {
                return Poll::Ready(Ok(()));
            }
        }
        state.reading = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for FakeProgram {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        if state.exit.is_some() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if state.input_refused {
            state.writing = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.input.extend_from_slice(buf);
        let typed = state.input.len();
        drop(state);
        self.0.typed.send_replace(typed);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Terminal for FakeProgram {
    fn resize(&self, size: WinSize) -> io::Result<()> {
        self.update(|s| s.resizes.push(size));
        Ok(())
    }

    fn foreground_cwd(&self) -> Option<String> {
        None
    }

    fn hand_over(&self) -> io::Result<i32> {
        Ok(self.pid() as i32)
    }
}

impl Child for FakeProgram {
    fn try_wait(&mut self) -> io::Result<Option<i32>> {
        Ok(self.state().exit)
    }

    fn hang_up(&self) {
        self.update(|s| {
            s.hang_ups += 1;
            s.end(128 + 1);
        });
    }

    fn kill(&self) {
        self.update(|s| {
            s.kills += 1;
            s.end(128 + 9);
        });
    }

    fn cwd(&self) -> Option<String> {
        Some(self.state().cwd.clone())
    }
}
