//! The operating-system side of an upgrade in place: the dry run of the new binary, the
//! `execve` that hands the state down, and, in the next binary, taking it up (or giving it
//! back).
//!
//! - [`Reexec`] is the seam the upgrade sequence ([`crate::upgrade`]) calls: [`NativeReexec`]
//!   is the real one; tests use a fake that keeps the state instead of executing anything.
//! - The state travels in a memfd (no size limit, never on disk). Kept open across `execve`:
//!   the memfd, the descriptors the sequence names (PTY masters, the UDP socket) and a
//!   descriptor on the running binary (`/proc/self/exe`, opened at start, so it survives the
//!   file being replaced). Every other descriptor is close-on-exec, as Rust opens them.
//! - The next binary finds them through [`STATE_FD`] and [`RETURN_FD`] ([`Handed::take`]).
//!   If it cannot read the state it executes the binary behind [`RETURN_FD`] again with the
//!   same state and the reason in [`FAILED`] ([`Handed::give_back`]): the old version resumes.

use crate::upgrade::state::{self, NodeState, StateError};
use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::io::{self, Seek};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

/// The environment variable that names the state's memfd in the next binary.
pub const STATE_FD: &str = "CMDOP_UPGRADE_STATE_FD";
/// The environment variable that names a descriptor on the binary that handed the state down.
pub const RETURN_FD: &str = "CMDOP_UPGRADE_RETURN_FD";
/// Set when a new binary gave the state back: why.
pub const FAILED: &str = "CMDOP_UPGRADE_FAILED";
/// The path the node was first started from, carried across upgrades (the next binary is the
/// one installed there, whatever the running one was executed as).
pub const EXE: &str = "CMDOP_UPGRADE_EXE";

/// Debug builds only: a binary started by an upgrade with this set refuses the state, as one
/// that cannot read its format would (the tests of the way back use it).
pub const TEST_REFUSE: &str = "CMDOP_TEST_REFUSE_UPGRADE_STATE";

/// The hidden subcommand of the dry run: reads a state on stdin, prints the binary's version.
pub const CHECK_COMMAND: &str = "__upgrade-check";

/// How long the new binary's dry run may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a dry run may answer.
pub type CheckResult = Result<String, String>;

/// A dry run in progress.
pub type Check = Pin<Box<dyn Future<Output = CheckResult> + Send>>;

/// Executing another binary in this process.
pub trait Reexec: Send + Sync + std::fmt::Debug {
    /// The binary an upgrade executes: the one now found at the path the node started from.
    fn exe(&self) -> PathBuf;
    /// Runs `exe` dry: it reads `preview` (a state without the bytes) and answers its version,
    /// or why it cannot take the state over.
    fn check(&self, exe: PathBuf, preview: Vec<u8>) -> Check;
    /// Replaces this process with `exe`, handing down `state` and the descriptors in `keep`;
    /// returns only if that failed, with everything as it was.
    fn exec(&self, exe: &Path, state: &NodeState, keep: &[RawFd]) -> io::Error;
}

/// How this process was started, to start the next binary the same way.
#[derive(Debug)]
pub struct NativeReexec {
    /// The binary's path when the node started.
    exe: PathBuf,
    /// The command line after the program name.
    args: Vec<OsString>,
    /// The program name (argv\[0\]).
    arg0: OsString,
    /// The running binary, even once its file was replaced.
    running: Option<OwnedFd>,
}

impl NativeReexec {
    /// Records how this process was started: from `exe` if an upgrade carried the path down,
    /// else from the path it was invoked by (symbolic links not resolved: a link moved to a
    /// new version is the new version).
    pub fn from_process(exe: Option<PathBuf>) -> NativeReexec {
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "cmdop-node".into());
        let exe = exe.unwrap_or_else(|| invoked_path(&arg0));
        let running = File::open("/proc/self/exe").map(OwnedFd::from).ok();
        NativeReexec {
            exe,
            args: args.collect(),
            arg0,
            running,
        }
    }

    fn try_exec(&self, exe: &Path, state: &NodeState, keep: &[RawFd]) -> io::Result<()> {
        let mut memfd = File::from(rustix::fs::memfd_create(
            "cmdop-node-state",
            rustix::fs::MemfdFlags::CLOEXEC,
        )?);
        state::write(state, &memfd).map_err(io::Error::other)?;
        memfd.rewind()?;
        let mut handed: Vec<RawFd> = keep.to_vec();
        handed.push(memfd.as_raw_fd());
        let mut command = std::process::Command::new(exe);
        command
            .arg0(&self.arg0)
            .args(&self.args)
            .env(STATE_FD, memfd.as_raw_fd().to_string())
            .env(EXE, &self.exe)
            .env_remove(FAILED)
            // The stand-in for an older binary is this process, not the next one.
            .env_remove(crate::server::PROTOCOL_VERSION_ENV);
        match &self.running {
            Some(running) => {
                handed.push(running.as_raw_fd());
                command.env(RETURN_FD, running.as_raw_fd().to_string());
            }
            None => {
                command.env_remove(RETURN_FD);
            }
        }
        if let Err(e) = set_inherited(&handed, true) {
            let _ = set_inherited(&handed, false);
            return Err(e);
        }
        let error = exec_ignoring_usr2(&mut command);
        set_inherited(&handed, false)?;
        Err(error)
    }
}

impl Reexec for NativeReexec {
    fn exe(&self) -> PathBuf {
        self.exe.clone()
    }

    fn check(&self, exe: PathBuf, preview: Vec<u8>) -> Check {
        Box::pin(dry_run(exe, preview))
    }

    fn exec(&self, exe: &Path, state: &NodeState, keep: &[RawFd]) -> io::Error {
        match self.try_exec(exe, state, keep) {
            Ok(()) => io::Error::other("execve returned without an error"),
            Err(e) => e,
        }
    }
}

/// Executes `command` with SIGUSR2 ignored across `execve`: another upgrade signal arriving
/// before the next binary handles it must not end the process (its default action). Restores
/// the handler if `execve` fails.
fn exec_ignoring_usr2(command: &mut std::process::Command) -> io::Error {
    // SAFETY: sigaction with a zeroed action set to SIG_IGN, and a valid out-pointer for the
    // previous action, which is put back unchanged.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        let mut previous: libc::sigaction = std::mem::zeroed();
        let saved = libc::sigaction(libc::SIGUSR2, &ignore, &mut previous) == 0;
        let error = command.exec();
        if saved {
            libc::sigaction(libc::SIGUSR2, &previous, std::ptr::null_mut());
        }
        error
    }
}

/// The path this process was invoked by, made absolute but not resolved: `argv[0]` if it names
/// a path, else the first match on `PATH`, else the running binary.
fn invoked_path(arg0: &std::ffi::OsStr) -> PathBuf {
    let named = Path::new(arg0);
    if named.components().count() > 1 {
        return std::env::current_dir()
            .map(|cwd| cwd.join(named))
            .unwrap_or_else(|_| named.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(named))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| named.to_path_buf())
}

/// Makes the descriptors `fds` survive `execve` (`inherited`) or close with it again.
fn set_inherited(fds: &[RawFd], inherited: bool) -> io::Result<()> {
    let flags = if inherited {
        rustix::io::FdFlags::empty()
    } else {
        rustix::io::FdFlags::CLOEXEC
    };
    for &fd in fds {
        // SAFETY: each descriptor is open and owned elsewhere in this process for the duration
        // of this call; it is only borrowed to change its flags.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(fd, flags)?;
    }
    Ok(())
}

/// Runs `exe CHECK_COMMAND` with `preview` on its stdin; its first line of output names its
/// version.
async fn dry_run(exe: PathBuf, preview: Vec<u8>) -> CheckResult {
    use tokio::io::AsyncWriteExt;
    let shown = exe.display().to_string();
    let mut command = tokio::process::Command::new(&exe);
    command
        .arg(CHECK_COMMAND)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn_when_written(&mut command)
        .await
        .map_err(|e| format!("cannot run the new binary {shown}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Written beside the wait: a binary that never reads must not hold the node up. One
        // that exits at once closes its stdin, and its exit status says more.
        tokio::spawn(async move { stdin.write_all(&preview).await });
    }
    let output = tokio::time::timeout(CHECK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!("the new binary {shown} did not finish its dry run within {CHECK_TIMEOUT:?}")
        })?
        .map_err(|e| format!("cannot run the new binary {shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let version = stdout
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cmdop-node "))
        .map(str::to_owned);
    match (output.status.success(), version) {
        (true, Some(version)) => Ok(version),
        (true, None) => Err(format!(
            "the new binary {shown} does not answer as a cmdop-node able to upgrade in place (it printed {:?})",
            stdout.lines().next().unwrap_or("")
        )),
        (false, _) => Err(format!(
            "the new binary {shown} failed its dry run ({}){}",
            output.status,
            last_line(&stderr).map(|l| format!(": {l}")).unwrap_or_default()
        )),
    }
}

/// Spawns `command`; a binary still open for writing somewhere (ETXTBSY: an installer finishing,
/// or any process between fork and exec holding its descriptor) is tried again for a second.
async fn spawn_when_written(
    command: &mut tokio::process::Command,
) -> io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            spawned => return spawned,
        }
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().find(|l| !l.trim().is_empty())
}

/// What a binary started by an upgrade in place found: the state's memfd and the way back.
#[derive(Debug)]
pub struct Handed {
    state: File,
    /// The binary that handed the state down.
    back: Option<OwnedFd>,
    /// Set when this process is that binary again, given the state back: why.
    pub failure: Option<String>,
    /// The path the node was first started from.
    pub exe: Option<PathBuf>,
    /// Refuse the state (debug builds, see [`TEST_REFUSE`]).
    refuse: bool,
}

impl Handed {
    /// Takes up what an upgrade handed down, if this process was started by one, and clears
    /// the variables (the shells started from here must not see them). Call first in `main`,
    /// before any thread starts.
    pub fn take() -> Option<Handed> {
        let state_fd = take_var(STATE_FD)?;
        let back = take_var(RETURN_FD);
        let failure = take_var(FAILED);
        let exe = take_var(EXE).map(PathBuf::from);
        let refuse = take_var(TEST_REFUSE).is_some() && cfg!(debug_assertions);
        let state = owned_fd(&state_fd)?;
        Some(Handed {
            state: File::from(state),
            back: back.as_deref().and_then(owned_fd),
            failure,
            exe,
            refuse,
        })
    }

    /// Reads the state.
    pub fn read(&mut self) -> Result<NodeState, StateError> {
        if self.refuse {
            return Err(StateError::Corrupt(format!("{TEST_REFUSE} is set")));
        }
        self.state.rewind()?;
        state::read(&self.state)
    }

    /// Gives the state back to the binary that handed it down, with `reason`; returns only if
    /// that is impossible. A binary that was itself given the state back never gives it on.
    pub fn give_back(self, reason: &str) -> io::Error {
        if self.failure.is_some() {
            return io::Error::other("this binary was already given the state back");
        }
        let Some(back) = self.back else {
            return io::Error::other("the binary that handed the state down left no way back");
        };
        let fds = [self.state.as_raw_fd(), back.as_raw_fd()];
        if let Err(e) = set_inherited(&fds, true) {
            return e;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "cmdop-node".into());
        let mut command =
            std::process::Command::new(format!("/proc/self/fd/{}", back.as_fd().as_raw_fd()));
        command
            .arg0(arg0)
            .args(args)
            .env(STATE_FD, self.state.as_raw_fd().to_string())
            // Named so that the old binary takes it over and closes it.
            .env(RETURN_FD, back.as_raw_fd().to_string())
            .env(FAILED, reason);
        if let Some(exe) = &self.exe {
            command.env(EXE, exe);
        }
        let error = exec_ignoring_usr2(&mut command);
        let _ = set_inherited(&fds, false);
        error
    }
}

/// A copy of the UDP socket a previous binary handed down as descriptor `fd`; the descriptor
/// itself stays open (for a way back) until [`close_inherited`].
pub fn inherited_socket(fd: RawFd) -> io::Result<std::net::UdpSocket> {
    if fd < 0 {
        return Err(io::Error::other(format!("descriptor {fd} is not open")));
    }
    // SAFETY: borrowed only to duplicate it; it stays open in this process meanwhile.
    let handed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let copy = rustix::io::fcntl_dupfd_cloexec(handed, 0)?;
    Ok(std::net::UdpSocket::from(copy))
}

/// Closes a descriptor handed down and taken over by copy.
pub fn close_inherited(fd: RawFd) {
    if let Some(owned) = owned_fd(&fd.to_string()) {
        drop(owned);
    }
}

/// Reads and removes an environment variable.
fn take_var(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    std::env::remove_var(name);
    value
}

/// The descriptor named by `text`, taken over (made close-on-exec again).
fn owned_fd(text: &str) -> Option<OwnedFd> {
    let fd: RawFd = text.parse().ok().filter(|&fd| fd > 2)?;
    // Only take a descriptor that is open; it was handed down for this process alone.
    // SAFETY: borrowed for one fcntl, to check it is open.
    rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).ok()?;
    // SAFETY: the previous binary kept `fd` open across execve for this process and names it
    // nowhere else: this is its only owner from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).ok()?;
    Some(owned)
}
