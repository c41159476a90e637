//! The real PTYs and processes of this operating system: portable-pty opens the PTY and starts
//! the program (in its own session and process group); from then on the node holds only the
//! PTY's master, non-blocking under tokio's `AsyncFd` (reads and writes happen on the runtime,
//! with no thread per session), and the program's pid: rustix sets the window size, reads the
//! foreground process group, waits for the program and signals its group; working directories
//! are read from `/proc` (Linux; elsewhere they are unknown).

use crate::os::{Child, PtyHandover, PtySpawner, SpawnSpec, SpawnedPty, Terminal};
use cmdop_proto::WinSize;
use rustix::process::{kill_process_group, waitpid, Pid, Signal, WaitOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The real PTYs of this operating system.
#[derive(Debug, Default)]
pub struct NativePty;

/// Spawns run one at a time: they run on tokio's blocking pool, several threads, and
/// portable-pty's command builder may call `getpwuid`, which is not thread-safe.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl PtySpawner for NativePty {
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty> {
        let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|p| p.into_inner());
        let system = portable_pty::native_pty_system();
        let pair = system
            .openpty(pty_size(spec.size))
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
        let pid = child
            .process_id()
            .ok_or_else(|| io::Error::other("no pid"))?;
        // From here on the pid is waited for directly; portable-pty's handle is not needed.
        drop(child);
        let fd = pair
            .master
            .as_raw_fd()
            .ok_or_else(|| io::Error::other("the PTY has no file descriptor"))?;
        // SAFETY: the master PTY's descriptor is open while `pair.master` lives (to the end of
        // this function); it is only borrowed here, to duplicate it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let master = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)
            .map_err(io::Error::from)
            .inspect_err(|_| abandon(pid))?;
        adopt(master, pid).inspect_err(|_| abandon(pid))
    }

    fn adopt(&self, handover: PtyHandover) -> io::Result<SpawnedPty> {
        if handover.fd < 0 {
            return Err(io::Error::other("not a descriptor"));
        }
        // SAFETY: the previous binary of this process kept `fd` open across execve for us and
        // names it nowhere else; from here on this `OwnedFd` is its only owner.
        let master = unsafe { OwnedFd::from_raw_fd(handover.fd) };
        rustix::io::fcntl_setfd(&master, rustix::io::FdFlags::CLOEXEC)
            .map_err(io::Error::from)
            .and_then(|()| adopt(master, handover.pid))
            .inspect_err(|_| abandon(handover.pid))
    }

    fn child(&self, pid: u32) -> Box<dyn Child> {
        Box::new(NativeChild { pid })
    }
}

/// Takes over a PTY master and the program running on it (whose parent this process is).
pub fn adopt(master: OwnedFd, pid: u32) -> io::Result<SpawnedPty> {
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: an `OwnedFd` stays open and names the same descriptor for as long as it is owned,
    // and the `AsyncFd` owns it from here on.
    let master = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
    let master = Arc::new(master);
    Ok(SpawnedPty {
        reader: Box::pin(PtyMaster(master.clone())),
        writer: Box::pin(PtyMaster(master.clone())),
        terminal: Box::new(NativeTerminal(master)),
        child: Box::new(NativeChild { pid }),
        pid: Some(pid),
    })
}

/// The master side of a PTY, as a non-blocking byte stream both ways.
struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux says EIO once the program and everything it started closed the PTY:
                // the end of its output.
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.0.poll_write_ready(cx))?;
            match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), buf)?)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn pty_size(size: WinSize) -> portable_pty::PtySize {
    portable_pty::PtySize {
        rows: size.rows,
        cols: size.cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// The PTY's master, for its size and foreground process group.
struct NativeTerminal(Arc<AsyncFd<OwnedFd>>);

impl Terminal for NativeTerminal {
    fn resize(&self, size: WinSize) -> io::Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Ok(rustix::termios::tcsetwinsize(
            self.0.get_ref().as_fd(),
            size,
        )?)
    }

    fn foreground_cwd(&self) -> Option<String> {
        let group = rustix::termios::tcgetpgrp(self.0.get_ref().as_fd()).ok()?;
        process_cwd(group.as_raw_nonzero().get().unsigned_abs())
    }

    fn hand_over(&self) -> io::Result<i32> {
        Ok(self.0.get_ref().as_raw_fd())
    }
}

/// The program, known by its pid (this process is its parent).
struct NativeChild {
    pid: u32,
}

impl Child for NativeChild {
    fn try_wait(&mut self) -> io::Result<Option<i32>> {
        let Some(pid) = pid_of(self.pid) else {
            return Err(io::Error::other("not a process id"));
        };
        let Some((_, status)) = waitpid(Some(pid), WaitOptions::NOHANG)? else {
            return Ok(None);
        };
        if let Some(signal) = status.terminating_signal() {
            return Ok(Some(128 + signal));
        }
        Ok(Some(status.exit_status().unwrap_or(-1)))
    }

    fn hang_up(&self) {
        signal_group(self.pid, Signal::HUP);
        signal_group(self.pid, Signal::CONT);
    }

    fn kill(&self) {
        signal_group(self.pid, Signal::KILL);
    }

    fn cwd(&self) -> Option<String> {
        process_cwd(self.pid)
    }
}

/// `pid` as a process id that can be signalled or waited for: never 0 or 1 (to kill(2), group 1
/// would mean "every process we may signal").
fn pid_of(pid: u32) -> Option<Pid> {
    Some(pid)
        .filter(|&pid| pid > 1)
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
}

/// Ends a program the node could not take charge of: its group is killed and it is reaped, so
/// nothing of it runs on unseen.
fn abandon(pid: u32) {
    signal_group(pid, Signal::KILL);
    if let Some(pid) = pid_of(pid) {
        // SIGKILL cannot be caught: the wait is short.
        let _ = waitpid(Some(pid), WaitOptions::empty());
    }
}

/// Sends `signal` to the process group `pid`. A stale group only yields ESRCH, ignored.
fn signal_group(pid: u32, signal: Signal) {
    if let Some(pid) = pid_of(pid) {
        let _ = kill_process_group(pid, signal);
    }
}

/// The working directory of process `pid`, read from `/proc`.
fn process_cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}
