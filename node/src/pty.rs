//! The PTY seam: a small trait over "spawn a program on a pseudo-terminal", with the real
//! implementation on portable-pty. Sessions only see [`SpawnedPty`], so tests can substitute a
//! fake and the rest of the node never touches file descriptors.

use crate::proto::WinSize;
use std::io::{self, Read, Write};

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
    /// Output of the program (blocking reads; returns 0 or an error when it is gone).
    pub reader: Box<dyn Read + Send>,
    /// Input to the program (blocking writes).
    pub writer: Box<dyn Write + Send>,
    /// Resize, foreground process, hang-up.
    pub control: Box<dyn PtyControl>,
    /// The program's exit status, once it has one.
    pub child: Box<dyn ChildWaiter>,
    /// The program's process id (also its process group and session id).
    pub pid: Option<u32>,
}

/// Control of the PTY itself.
pub trait PtyControl: Send {
    /// Changes the window size (the program gets SIGWINCH).
    fn resize(&self, size: WinSize) -> io::Result<()>;
    /// The process group leader in the PTY's foreground, if known.
    fn foreground_pid(&self) -> Option<u32>;
}

/// The program's exit.
pub trait ChildWaiter: Send {
    /// The exit code (128 + signal if killed) if the program has exited, reaping it; None while
    /// it runs. Never blocks.
    fn try_wait(&mut self) -> io::Result<Option<i32>>;
}

/// Something that spawns programs on PTYs.
pub trait PtySpawner: Send + Sync {
    /// Starts `spec` on a new PTY.
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty>;
}

/// Sends SIGHUP (then SIGCONT, so stopped jobs see it) to the process group `pid`.
pub fn hang_up_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: killpg has no memory-safety preconditions; a stale group only yields ESRCH.
    unsafe {
        libc::killpg(pid, libc::SIGHUP);
        libc::killpg(pid, libc::SIGCONT);
    }
}

/// Sends SIGKILL to the process group `pid`.
pub fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: as in `hang_up_group`.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

/// The working directory of process `pid`, read from `/proc` (Linux).
pub fn process_cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The real PTYs of this operating system.
#[derive(Debug, Default)]
pub struct NativePty;

struct NativeControl(Box<dyn portable_pty::MasterPty + Send>);

impl PtyControl for NativeControl {
    fn resize(&self, size: WinSize) -> io::Result<()> {
        self.0
            .resize(portable_pty::PtySize {
                rows: size.rows,
                cols: size.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(io::Error::other)
    }

    fn foreground_pid(&self) -> Option<u32> {
        self.0
            .process_group_leader()
            .and_then(|pid| u32::try_from(pid).ok())
    }
}

struct NativeChild(Box<dyn portable_pty::Child + Send + Sync>);

impl ChildWaiter for NativeChild {
    fn try_wait(&mut self) -> io::Result<Option<i32>> {
        let Some(status) = self.0.try_wait()? else {
            return Ok(None);
        };
        if let Some(signal) = status.signal() {
            return Ok(Some(128 + signal_number(signal)));
        }
        Ok(Some(i32::try_from(status.exit_code()).unwrap_or(i32::MAX)))
    }
}

/// portable-pty reports signals by name; map the common ones back to numbers.
fn signal_number(name: &str) -> i32 {
    let name = name.to_ascii_lowercase();
    [
        ("hangup", libc::SIGHUP),
        ("interrupt", libc::SIGINT),
        ("quit", libc::SIGQUIT),
        ("killed", libc::SIGKILL),
        ("terminated", libc::SIGTERM),
        ("segmentation", libc::SIGSEGV),
        ("abort", libc::SIGABRT),
    ]
    .iter()
    .find(|(word, _)| name.contains(word))
    .map(|(_, n)| *n)
    .unwrap_or(0)
}

impl PtySpawner for NativePty {
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty> {
        let system = portable_pty::native_pty_system();
        let pair = system
            .openpty(portable_pty::PtySize {
                rows: spec.size.rows,
                cols: spec.size.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(io::Error::other)?;
        let mut command = portable_pty::CommandBuilder::new(&spec.program);
        command.cwd(&spec.cwd);
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let child = pair
            .slave
            .spawn_command(command)
            .map_err(io::Error::other)?;
        // The child holds its own copy of the slave; ours must close so reads end at exit.
        drop(pair.slave);
        let pid = child.process_id();
        let reader = pair.master.try_clone_reader().map_err(io::Error::other)?;
        let writer = pair.master.take_writer().map_err(io::Error::other)?;
        Ok(SpawnedPty {
            reader,
            writer,
            control: Box::new(NativeControl(pair.master)),
            child: Box::new(NativeChild(child)),
            pid,
        })
    }
}
