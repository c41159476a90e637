//! The operating-system seam: everything the node asks of the OS about the programs it runs.
//!
//! - [`PtySpawner`] starts a program on a new pseudo-terminal and hands back a [`SpawnedPty`]:
//!   the PTY's output and input as asynchronous byte streams (on the runtime: no thread per
//!   session), the [`Terminal`] (resize, the foreground process's working directory) and the
//!   [`Child`] (wait, hang up, kill, working directory);
//! - [`native`] is the real implementation (portable-pty starts the program; the PTY's master
//!   is non-blocking under tokio's `AsyncFd`; rustix for sizes, waits and signals);
//! - [`fake`] is an in-memory program for tests: the test reads what was typed into it, makes it
//!   print and exit, and sees the hang-ups, kills and resizes it received.
//!
//! The rest of the node never touches a file descriptor, a pid or a signal.

pub mod fake;
pub mod native;

pub use native::NativePty;

use cmdop_proto::WinSize;
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The program (a shell).
    pub program: String,
    /// Its working directory.
    pub cwd: String,
    /// Extra environment variables (on top of the node's).
    pub env: Vec<(String, String)>,
    /// Initial window size.
    pub size: WinSize,
}

/// A running program on a PTY.
pub struct SpawnedPty {
    /// Output of the program (ends, or fails, when it is gone).
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Input to the program (pending while the program does not read).
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// The PTY itself: size and foreground process.
    pub terminal: Box<dyn Terminal>,
    /// The program.
    pub child: Box<dyn Child>,
    /// The program's process id (also its process group and session id), for display.
    pub pid: Option<u32>,
}

/// The PTY a program runs on.
pub trait Terminal: Send {
    /// Changes the window size (the program gets SIGWINCH).
    fn resize(&self, size: WinSize) -> io::Result<()>;
    /// The working directory of the process group in the PTY's foreground, if known.
    fn foreground_cwd(&self) -> Option<String>;
    /// The PTY master's descriptor number, for an upgrade in place to keep open across
    /// `execve` and name to the next binary.
    fn hand_over(&self) -> io::Result<i32>;
}

/// A PTY handed down across an upgrade in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyHandover {
    /// The master's descriptor number, open in this process.
    pub fd: i32,
    /// The program on it (a child of this process).
    pub pid: u32,
}

/// The program started on a PTY, with its process group.
pub trait Child: Send {
    /// The exit code (128 + signal if killed) if the program has exited, reaping it; None while
    /// it runs. Never blocks.
    fn try_wait(&mut self) -> io::Result<Option<i32>>;
    /// Hangs up the program's process group (SIGHUP, then SIGCONT so stopped jobs see it). Only
    /// call while the program has not been reaped: a reaped group id may be reused.
    fn hang_up(&self);
    /// Kills the program's process group (SIGKILL). Same caveat as [`Child::hang_up`].
    fn kill(&self);
    /// The program's working directory, if known.
    fn cwd(&self) -> Option<String>;
}

/// Something that spawns programs on PTYs.
pub trait PtySpawner: Send + Sync {
    /// Starts `spec` on a new PTY. Runs inside the tokio runtime (the PTY registers with it).
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty>;
    /// Takes over a PTY a previous binary of this process handed down. Runs inside the runtime.
    fn adopt(&self, handover: PtyHandover) -> io::Result<SpawnedPty>;
    /// A program a previous binary of this process was reaping (hung up, not waited for yet).
    fn child(&self, pid: u32) -> Box<dyn Child>;
}
