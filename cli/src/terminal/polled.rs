//! Polled copies of the standard streams: opened anew through `/proc/self/fd` (a file
//! description of their own, so making them non-blocking leaves the shell's untouched) and
//! registered with the runtime.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use tokio::io::unix::AsyncFd;

/// Standard stream `fd` (0, 1 or 2) opened anew with `options`, non-blocking and registered
/// with the runtime; None where that fails (a file or `/dev/null`: nothing to poll; a terminal
/// that belongs to another user, after `su`; a socket).
pub fn reopen(fd: u8, options: &mut OpenOptions) -> Option<AsyncFd<File>> {
    // O_NOCTTY: reopening a terminal must never make it this process's controlling one.
    // O_NONBLOCK from the start: opening a FIFO nobody reads, or a tty waiting for carrier, must
    // not hang.
    let file = options
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
        .ok()?;
    // SAFETY: a `File` keeps its descriptor open and unchanged while it is owned, and the
    // `AsyncFd` owns it from here on.
    unsafe { AsyncFd::register(file) }.ok()
}
