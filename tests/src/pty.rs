//! Driving `cmdop connect` in a pseudo-terminal, as a person would: type keys, read the screen's
//! byte stream, wait for text to appear.

use portable_pty::{CommandBuilder, PtySize};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program running in a PTY.
pub struct Terminal {
    writer: Box<dyn Write + Send>,
    output: Arc<Mutex<Vec<u8>>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    master: Box<dyn portable_pty::MasterPty + Send>,
    /// The terminal stopped reading (a frozen terminal emulator).
    paused: Arc<AtomicBool>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish()
    }
}

impl Terminal {
    /// Runs `program args` with `CMDOP_HOME=home` in a `rows`x`cols` PTY.
    pub fn spawn(program: &Path, args: &[&str], home: &Path, rows: u16, cols: u16) -> Terminal {
        Self::spawn_with_env(program, args, home, rows, cols, &[])
    }

    /// As [`Terminal::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        program: &Path,
        args: &[&str],
        home: &Path,
        rows: u16,
        cols: u16,
        env: &[(&str, &str)],
    ) -> Terminal {
        let system = portable_pty::native_pty_system();
        let pair = system
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.env("CMDOP_HOME", home);
        command.env("SHELL", "/bin/sh");
        command.env("TERM", "xterm");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).expect("spawn in pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let paused = Arc::new(AtomicBool::new(false));
        let held = paused.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                while held.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let Ok(n) = reader.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            writer,
            output,
            child,
            master: pair.master,
            paused,
        }
    }

    /// Stops reading what the program prints, like a frozen terminal emulator: once the PTY's
    /// buffer is full, the program's writes wait.
    pub fn pause_reading(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Reads again after [`Terminal::pause_reading`].
    pub fn resume_reading(&self) {
        self.paused.store(false, Ordering::Release);
    }

    /// Types bytes.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("type into pty");
        self.writer.flush().expect("flush pty");
    }

    /// Types a line and presses Enter.
    pub fn type_line(&mut self, line: &str) {
        self.type_bytes(format!("{line}\r").as_bytes());
    }

    /// Everything the program printed so far.
    pub fn output(&self) -> Vec<u8> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything printed so far, as lossy text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Waits until the output contains `needle`; panics with the output if it does not.
    pub fn expect(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out waiting for {needle:?}; output so far:\n{}",
            self.text()
        );
    }

    /// Waits until the output contains `needle` at least `count` times.
    pub fn expect_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out waiting for {count}x {needle:?}; output so far:\n{}",
            self.text()
        );
    }

    /// Changes the terminal's size (the program gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("resize pty");
    }

    /// Waits for the program to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.exit_code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // The reader thread ends with the PTY, once it reads again.
        self.resume_reading();
    }
}
