//! A session: a program on a PTY, the ringbuffer of everything it printed, and the bookkeeping
//! that decides when it is idle.
//!
//! Data flow:
//! - a dedicated reader thread moves PTY output into the ringbuffer and bumps a `watch`
//!   counter, which wakes every attachment; nothing is queued per client, so a slow client
//!   never blocks the reader;
//! - a dedicated writer thread drains a bounded channel of input into the PTY;
//! - the exit is noticed without a thread of its own: the registry's SIGCHLD watcher asks every
//!   session ([`Session::poll_exit`]), which records the exit code and bumps the same counter.

use crate::proto::{SessionInfo, SessionState, WinSize};
use crate::pty::{
    hang_up_group, kill_group, process_cwd, ChildWaiter, PtyControl, SpawnSpec, SpawnedPty,
};
use crate::ringbuf::RingBuffer;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Mutable state of a session, behind one lock.
#[derive(Debug)]
pub struct SessionCore {
    /// Optional unique name.
    pub name: Option<String>,
    /// The scrollback.
    pub ring: RingBuffer,
    /// Window size.
    pub size: WinSize,
    /// Exit code once the program has exited.
    pub exit_code: Option<i32>,
    /// Last input, output or attachment change (Unix ms).
    pub last_active_ms: u64,
    /// Marked attached by a metadata-only `session attach`.
    pub marked_attached: bool,
    /// Live interactive or read-only attachments.
    pub live_attachments: usize,
    /// Next input sequence number expected from an interactive client.
    pub next_input_seq: u64,
    /// The interactive client holding the input, if any.
    pub holder: Option<crate::attach::Holder>,
    /// Set when the session is destroyed, so attachments end.
    pub destroyed: bool,
    /// The PTY's output reached its end (every process holding it is gone): once the exit code
    /// is known too, nothing more will be printed.
    pub output_closed: bool,
    /// The keystroke stream ([`crate::proto::AttachRequest::input_stream`]) that
    /// `next_input_seq` counts.
    pub input_stream: u64,
}

/// One session.
pub struct Session {
    /// UUID v7.
    pub id: Uuid,
    /// The node's host name.
    pub host: String,
    /// The program run.
    pub shell: String,
    /// The working directory it started in.
    pub start_cwd: String,
    /// Environment it was started with (beyond the node's).
    pub env: Vec<(String, String)>,
    /// Creation time (Unix ms).
    pub created_ms: u64,
    /// The program's pid (and process group).
    pub pid: Option<u32>,
    core: Mutex<SessionCore>,
    changed: watch::Sender<u64>,
    input: mpsc::Sender<Vec<u8>>,
    control: Mutex<Box<dyn PtyControl>>,
    /// The program until it has been reaped.
    child: Mutex<Option<Box<dyn ChildWaiter>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

/// How much the reader thread reads at once. A PTY hands out at most a few KiB per read, and
/// this buffer lives as long as the session: keep it small (1,000 idle sessions should cost
/// little).
const READ_CHUNK: usize = 8 * 1024;

impl Session {
    /// Starts a session around a spawned PTY; spawns its reader, writer and waiter threads.
    pub fn start(
        spec: &SpawnSpec,
        spawned: SpawnedPty,
        name: Option<String>,
        host: String,
        ring_capacity: usize,
        preload: &[u8],
    ) -> Arc<Session> {
        let SpawnedPty {
            mut reader,
            mut writer,
            control,
            child,
            pid,
        } = spawned;
        let mut ring = RingBuffer::new(ring_capacity);
        ring.push(preload);
        let now = now_ms();
        let (changed, _) = watch::channel(0);
        let (input, mut input_rx) = mpsc::channel::<Vec<u8>>(64);
        let session = Arc::new(Session {
            id: Uuid::now_v7(),
            host,
            shell: spec.program.clone(),
            start_cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            created_ms: now,
            pid,
            core: Mutex::new(SessionCore {
                name,
                ring,
                size: spec.size,
                exit_code: None,
                last_active_ms: now,
                marked_attached: false,
                live_attachments: 0,
                next_input_seq: 0,
                holder: None,
                destroyed: false,
                output_closed: false,
                input_stream: 0,
            }),
            changed,
            input,
            control: Mutex::new(control),
            child: Mutex::new(Some(child)),
        });

        let weak = Arc::downgrade(&session);
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            if let Err(e) = std::thread::Builder::new().name(name).spawn(f) {
                tracing::error!("cannot start a session thread: {e}");
            }
        };
        let reader_session = weak.clone();
        spawn(
            format!("pty-read-{}", session.id),
            Box::new(move || {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let Some(session) = reader_session.upgrade() else {
                        break;
                    };
                    session.append_output(&buf[..n]);
                }
                if let Some(session) = reader_session.upgrade() {
                    session.lock().output_closed = true;
                    session.bump();
                }
            }),
        );
        spawn(
            format!("pty-write-{}", session.id),
            Box::new(move || {
                while let Some(bytes) = input_rx.blocking_recv() {
                    if writer
                        .write_all(&bytes)
                        .and_then(|_| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }),
        );
        drop(weak);
        session
    }

    /// Records the program's exit if it has exited (reaping it). Called on SIGCHLD for every
    /// session; cheap when nothing changed.
    pub fn poll_exit(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let Some(waiter) = child.as_mut() else { return };
        let code = match waiter.try_wait() {
            Ok(None) => return,
            Ok(Some(code)) => code,
            Err(_) => -1,
        };
        *child = None;
        drop(child);
        self.lock().exit_code = Some(code);
        self.bump();
    }

    /// The session's mutable state.
    pub fn lock(&self) -> MutexGuard<'_, SessionCore> {
        // A panic while holding this lock would be a bug in this module; the state is still
        // consistent field by field, so keep serving rather than poison every later request.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on output, exit, and attachment changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes every subscriber (after a change made under [`Session::lock`]).
    pub fn notify(&self) {
        self.bump();
    }

    fn append_output(&self, bytes: &[u8]) {
        {
            let mut core = self.lock();
            core.ring.push(bytes);
            core.last_active_ms = now_ms();
        }
        self.bump();
    }

    /// Queues bytes for the PTY, as if typed. Waits while the program is not reading input.
    pub async fn write_input(&self, bytes: Vec<u8>) -> Result<(), SessionGone> {
        self.lock().last_active_ms = now_ms();
        self.input.send(bytes).await.map_err(|_| SessionGone)
    }

    /// Waits for room in the PTY's input queue. Reserving first, then deciding what to send
    /// under the session lock, keeps sequence numbers and the bytes queued in step even if the
    /// waiting task is cancelled.
    pub async fn reserve_input(&self) -> Result<mpsc::Permit<'_, Vec<u8>>, SessionGone> {
        self.input.reserve().await.map_err(|_| SessionGone)
    }

    /// Changes the window size.
    pub fn resize(&self, size: WinSize) {
        self.lock().size = size;
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = control.resize(size) {
            tracing::debug!(session = %self.id, "resize failed: {e}");
        }
    }

    /// The foreground process's working directory (the shell's, or where it started).
    pub fn cwd(&self) -> String {
        let foreground = self.control.lock().ok().and_then(|c| c.foreground_pid());
        foreground
            .or(self.pid)
            .and_then(process_cwd)
            .unwrap_or_else(|| self.start_cwd.clone())
    }

    /// The session's metadata.
    pub fn info(&self) -> SessionInfo {
        let cwd = self.cwd();
        let core = self.lock();
        SessionInfo {
            id: self.id,
            name: core.name.clone(),
            host: self.host.clone(),
            shell: self.shell.clone(),
            cwd,
            created_ms: self.created_ms,
            last_active_ms: core.last_active_ms,
            attached: core.marked_attached || core.live_attachments > 0,
            pid: self.pid,
            size: core.size,
            state: match core.exit_code {
                None => SessionState::Running,
                Some(code) => SessionState::Exited { code },
            },
            output_bytes: core.ring.end(),
        }
    }

    /// When the session becomes idle-expired under `ttl`, or None while attached.
    pub fn expires_at_ms(&self, ttl: Duration) -> Option<u64> {
        let core = self.lock();
        if core.marked_attached || core.live_attachments > 0 {
            return None;
        }
        Some(core.last_active_ms.saturating_add(ttl.as_millis() as u64))
    }

    /// Hangs up the program's whole process group; kills it if it is still there shortly after.
    pub fn hang_up(&self) {
        self.lock().destroyed = true;
        self.notify();
        let Some(pid) = self.pid else { return };
        if self.lock().exit_code.is_some() {
            return;
        }
        hang_up_group(pid);
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = std::thread::Builder::new()
            .name("pty-reap".into())
            .spawn(move || {
                // Give the group two seconds to leave on SIGHUP, then insist; reap the shell
                // either way (the session is gone from the registry, so nothing else will).
                let Some(mut child) = child else { return };
                for _ in 0..40 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                kill_group(pid);
                for _ in 0..40 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
    }
}

/// The session's program is gone; its PTY takes no more input.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the session's program has exited")]
pub struct SessionGone;
