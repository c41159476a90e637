//! The program each soak session runs: numbered lines with a checksum, at a steady rate, and
//! an echo of every typed line. Terminal echo is turned off so typed text appears only once,
//! in the `IN` line.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The checksum of line `n` (FNV-1a of its decimal digits).
pub fn checksum(n: u64) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in n.to_string().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Line `n` of the stream.
pub fn line(n: u64) -> String {
    format!("L{n} {:08x}\n", checksum(n))
}

fn echo_off() {
    // SAFETY: tcgetattr/tcsetattr on stdin with a struct we own; failure leaves echo on.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut termios) == 0 {
            termios.c_lflag &= !(libc::ECHO | libc::ECHONL);
            libc::tcsetattr(0, libc::TCSANOW, &termios);
        }
    }
}

pub fn run(rate: u32) -> ExitCode {
    echo_off();
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let echo_out = stdout.clone();
    std::thread::spawn(move || {
        for typed in std::io::stdin().lock().lines() {
            let Ok(typed) = typed else { break };
            let mut out = echo_out.lock().unwrap();
            let _ = out.write_all(format!("IN {typed}\n").as_bytes());
            let _ = out.flush();
        }
    });
    let interval = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    for n in 1.. {
        {
            let mut out = stdout.lock().unwrap();
            if out
                .write_all(line(n).as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                break;
            }
        }
        let next = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    ExitCode::SUCCESS
}
