//! The real PTYs and processes of this operating system: portable-pty opens the PTY and starts
//! the program (in its own session and process group); rustix sends signals to that group;
//! working directories are read from `/proc` (Linux; elsewhere they are unknown).

use crate::os::{Child, PtySpawner, SpawnSpec, SpawnedPty, Terminal};
use cmdop_proto::WinSize;
use rustix::process::{kill_process_group, Pid, Signal};
use std::io;

/// The real PTYs of this operating system.
#[derive(Debug, Default)]
pub struct NativePty;

impl PtySpawner for NativePty {
    fn spawn(&self, spec: &SpawnSpec) -> io::Result<SpawnedPty> {
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
        let pid = child.process_id();
        let reader = pair.master.try_clone_reader().map_err(io::Error::other)?;
        let writer = pair.master.take_writer().map_err(io::Error::other)?;
        Ok(SpawnedPty {
            reader,
            writer,
            terminal: Box::new(NativeTerminal(pair.master)),
            child: Box::new(NativeChild { child, pid }),
            pid,
        })
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

/// The master side of a PTY.
struct NativeTerminal(Box<dyn portable_pty::MasterPty + Send>);

impl Terminal for NativeTerminal {
    fn resize(&self, size: WinSize) -> io::Result<()> {
        self.0.resize(pty_size(size)).map_err(io::Error::other)
    }

    fn foreground_cwd(&self) -> Option<String> {
        let leader = self.0.process_group_leader()?;
        process_cwd(u32::try_from(leader).ok()?)
    }
}

struct NativeChild {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    pid: Option<u32>,
}

impl Child for NativeChild {
    fn try_wait(&mut self) -> io::Result<Option<i32>> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(None);
        };
        if let Some(signal) = status.signal() {
            return Ok(Some(128 + signal_number(signal)));
        }
        Ok(Some(i32::try_from(status.exit_code()).unwrap_or(i32::MAX)))
    }

    fn hang_up(&self) {
        signal_group(self.pid, Signal::HUP);
        signal_group(self.pid, Signal::CONT);
    }

    fn kill(&self) {
        signal_group(self.pid, Signal::KILL);
    }

    fn cwd(&self) -> Option<String> {
        process_cwd(self.pid?)
    }
}

/// Sends `signal` to the process group `pid`. A stale group only yields ESRCH, ignored.
fn signal_group(pid: Option<u32>, signal: Signal) {
    // Group 1 would mean "every process we may signal" to kill(2): never a session's group.
    let Some(pid) = pid
        .filter(|&pid| pid > 1)
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    let _ = kill_process_group(pid, signal);
}

/// The working directory of process `pid`, read from `/proc`.
fn process_cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// portable-pty reports signals by name; map the common ones back to numbers.
fn signal_number(name: &str) -> i32 {
    let name = name.to_ascii_lowercase();
    [
        ("hangup", Signal::HUP),
        ("interrupt", Signal::INT),
        ("quit", Signal::QUIT),
        ("killed", Signal::KILL),
        ("terminated", Signal::TERM),
        ("segmentation", Signal::SEGV),
        ("abort", Signal::ABORT),
    ]
    .iter()
    .find(|(word, _)| name.contains(word))
    .map(|(_, signal)| signal.as_raw())
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_map_to_numbers() {
        assert_eq!(signal_number("Hangup"), 1);
        assert_eq!(signal_number("Killed"), 9);
        assert_eq!(signal_number("Terminated"), 15);
        assert_eq!(signal_number("Segmentation fault"), 11);
        assert_eq!(signal_number("User defined signal 1"), 0);
    }
}
