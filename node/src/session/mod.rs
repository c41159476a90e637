//! A session: a program on a PTY, the ringbuffer of everything it printed, and the bookkeeping
//! that decides when it is idle.
//!
//! Data flow:
//! - a reader task on the runtime moves PTY output into the ringbuffer (and the screen model)
//!   and bumps a `watch` counter, which wakes every attachment; nothing is queued per client, so
//!   a slow client never blocks the reader. It reads into a buffer of the worker thread, so an
//!   idle session holds no read buffer;
//! - a writer task drains a bounded channel of input into the PTY; a program that stops
//!   reading leaves only that task waiting (no thread, nothing else blocked);
//! - the exit is noticed without a thread of its own: the registry's SIGCHLD watcher asks every
//!   session ([`Session::poll_exit`]), which records the exit code and bumps the same counter.
//!
//! Inside: [`lifecycle`] (running, exited, destroyed), [`admission`] (who may attach, the
//! holder), [`ringbuf`] (the scrollback), [`registry`] (every session) and [`expiry`] (when an
//! idle session goes).

pub mod admission;
pub mod expiry;
pub(crate) mod handover;
pub mod lifecycle;
pub mod registry;
pub mod ringbuf;
pub mod screen;

use crate::os::{Child, SpawnSpec, SpawnedPty, Terminal};
use crate::session::admission::Holder;
use crate::session::lifecycle::Lifecycle;
use crate::session::ringbuf::RingBuffer;
use crate::session::screen::{ScreenShot, SessionScreen};
use cmdop_proto::resync::InputLedger;
use cmdop_proto::{SessionInfo, WinSize};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
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
    /// Running, exited, destroyed.
    pub lifecycle: Lifecycle,
    /// Last input, output or attachment change (Unix ms).
    pub last_active_ms: u64,
    /// Marked attached by a metadata-only `session attach`.
    pub marked_attached: bool,
    /// Live interactive or read-only attachments.
    pub live_attachments: usize,
    /// The interactive client holding the input, if any.
    pub holder: Option<Holder>,
    /// The keystrokes applied so far.
    pub input: InputLedger,
    /// Window size changes the screen model has not followed yet, each with the output offset
    /// it came at (output before it was printed at the old size), oldest first.
    pub resizes: VecDeque<(u64, WinSize)>,
}

impl SessionCore {
    /// Whether the session counts as attached (by a live attachment or the metadata mark).
    pub fn attached(&self) -> bool {
        self.marked_attached || self.live_attachments > 0
    }
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
    /// What the output draws on a terminal now.
    screen: Mutex<SessionScreen>,
    /// A background catch-up of the screen is running.
    warming: std::sync::atomic::AtomicBool,
    changed: watch::Sender<u64>,
    input: mpsc::Sender<Vec<u8>>,
    terminal: Mutex<Box<dyn Terminal>>,
    /// The program until it has been reaped.
    child: Mutex<Option<Box<dyn Child>>>,
    /// The PTY's reader and writer tasks (an upgrade stops them and hands the PTY over).
    io: Mutex<Option<PtyIo>>,
}

/// How a session's PTY stands when the session is assembled: as new, or as an upgrade in place
/// handed it down.
struct Carry {
    /// Typed but not written to the PTY yet.
    pending_input: Vec<u8>,
    /// The PTY's output has not ended.
    reading: bool,
    /// The PTY still takes input.
    writing: bool,
    /// The program has not been reaped.
    child_running: bool,
}

impl Carry {
    fn fresh() -> Carry {
        Carry {
            pending_input: Vec::new(),
            reading: true,
            writing: true,
            child_running: true,
        }
    }
}

/// What a session is, beyond its state: fixed at its start.
struct About {
    id: Uuid,
    host: String,
    shell: String,
    start_cwd: String,
    env: Vec<(String, String)>,
    created_ms: u64,
}

/// The PTY's output, as the reader task reads it.
type PtyReader = Pin<Box<dyn AsyncRead + Send>>;

/// The running reader and writer tasks of a session's PTY, and what stops them.
struct PtyIo {
    halt: CancellationToken,
    /// Ends with the reader when halted, with None when the PTY's output ended.
    reader: Option<tokio::task::JoinHandle<Option<PtyReader>>>,
    /// Ends with the writer when halted, with None when the PTY stopped taking input.
    writer: Option<tokio::task::JoinHandle<Option<HaltedWriter>>>,
}

/// A stopped writer task: the PTY's input side, the queue of keystrokes, and the bytes taken
/// from the queue but not written yet.
struct HaltedWriter {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    input: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Keystroke batches queued for the PTY before typing waits.
const INPUT_QUEUE: usize = 64;

/// How much a reader task reads at once, into its worker thread's buffer (one per thread, not
/// per session).
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The ringbuffer just after output was pushed, as the screen's inline parse needs it.
struct RingAfter {
    /// One past the last byte.
    end: u64,
    /// Half its capacity.
    half: u64,
    /// Size changes wait for the screen: these bytes came after them.
    resizing: bool,
    /// Someone watches the session.
    watched: bool,
}

/// A screen model nobody watches sleeps this long after the last output.
const SCREEN_SLEEP_AFTER: Duration = Duration::from_secs(5);

/// Output a resize may parse on the runtime thread before the screen follows the new size.
const RESIZE_INLINE_BACKLOG: u64 = 16 * 1024;

/// Size changes the screen model keeps apart while it lags; beyond, the latest replaces the
/// last kept.
const MAX_PENDING_RESIZES: usize = 16;

/// Bytes parsed per step when the screen catches up from the ringbuffer.
const CATCH_UP_CHUNK: usize = 64 * 1024;

impl Session {
    /// Starts a session around a spawned PTY; spawns its reader and writer tasks (inside the
    /// tokio runtime).
    pub fn start(
        spec: &SpawnSpec,
        spawned: SpawnedPty,
        name: Option<String>,
        host: String,
        ring_capacity: usize,
        preload: &[u8],
    ) -> Arc<Session> {
        let mut ring = RingBuffer::new(ring_capacity);
        ring.push(preload);
        let now = now_ms();
        let about = About {
            id: Uuid::now_v7(),
            host,
            shell: spec.program.clone(),
            start_cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            created_ms: now,
        };
        let core = SessionCore {
            name,
            ring,
            size: spec.size,
            lifecycle: Lifecycle::default(),
            last_active_ms: now,
            marked_attached: false,
            live_attachments: 0,
            holder: None,
            input: InputLedger::new(),
            resizes: VecDeque::new(),
        };
        // A restored scrollback is parsed when the screen is first needed.
        let screen = SessionScreen::new(spec.size, 0);
        Session::assemble(about, core, screen, spawned, Carry::fresh())
    }

    /// A session from its parts, its reader and writer tasks running.
    fn assemble(
        about: About,
        core: SessionCore,
        screen: SessionScreen,
        spawned: SpawnedPty,
        carry: Carry,
    ) -> Arc<Session> {
        let SpawnedPty {
            reader,
            writer,
            terminal,
            child,
            pid,
        } = spawned;
        let (changed, _) = watch::channel(0);
        let (input, input_rx) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
        let session = Arc::new(Session {
            id: about.id,
            host: about.host,
            shell: about.shell,
            start_cwd: about.start_cwd,
            env: about.env,
            created_ms: about.created_ms,
            pid,
            core: Mutex::new(core),
            screen: Mutex::new(screen),
            warming: std::sync::atomic::AtomicBool::new(false),
            changed,
            input,
            terminal: Mutex::new(terminal),
            child: Mutex::new(carry.child_running.then_some(child)),
            io: Mutex::new(None),
        });
        let writer = HaltedWriter {
            writer,
            input: input_rx,
            pending: carry.pending_input,
        };
        session.run_io(
            carry.reading.then_some(reader),
            carry.writing.then_some(writer),
        );
        session
    }

    /// Starts the PTY's reader and writer tasks (those given).
    fn run_io(self: &Arc<Self>, reader: Option<PtyReader>, writer: Option<HaltedWriter>) {
        let halt = CancellationToken::new();
        let reader = reader
            .map(|reader| tokio::spawn(read_output(reader, Arc::downgrade(self), halt.clone())));
        let writer = writer.map(|w| tokio::spawn(write_input(w, halt.clone())));
        *self.io.lock().unwrap_or_else(|p| p.into_inner()) = Some(PtyIo {
            halt,
            reader,
            writer,
        });
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
        self.lock().lifecycle.exited(code);
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

    /// Takes in output; returns whether anyone watches the session.
    fn append_output(self: &Arc<Self>, bytes: &[u8]) -> bool {
        let ring = {
            let mut core = self.lock();
            core.ring.push(bytes);
            core.last_active_ms = now_ms();
            RingAfter {
                end: core.ring.end(),
                half: core.ring.capacity() as u64 / 2,
                watched: core.live_attachments > 0,
                resizing: !core.resizes.is_empty(),
            }
        };
        self.parse_inline(bytes, &ring);
        self.bump();
        ring.watched
    }

    /// Parses output as it comes while that stays cheap (within the screen's budget); a flood
    /// is left for [`Session::caught_up_screen`]. It never waits for the screen (this runs on
    /// the node's one runtime thread): a catch-up holding it takes these bytes from the ring.
    fn parse_inline(self: &Arc<Self>, bytes: &[u8], ring: &RingAfter) {
        let end = ring.end;
        let Some(mut screen) = self.try_screen() else {
            return;
        };
        let backlog = end - screen.offset();
        // Nobody watches a sleeping model: let output gather (a shell's prompt never wakes it)
        // and parse it in one go well before the ring or the catch-up would drop any of it.
        let gather = (screen::CATCH_UP_TAIL / 4).min(ring.half);
        if !ring.watched && screen.is_asleep() && backlog < gather {
            return;
        }
        if !screen.may_parse(backlog, std::time::Instant::now()) {
            return;
        }
        if backlog == bytes.len() as u64 && !ring.resizing {
            screen.feed(bytes, end);
        } else if backlog <= gather + bytes.len() as u64 {
            // What gathered while the model slept: a bounded parse, before the ring drops it.
            self.catch_up(&mut screen);
        } else {
            drop(screen);
            self.warm_screen();
        }
    }

    /// The screen, unless someone else holds it now.
    fn try_screen(&self) -> Option<MutexGuard<'_, SessionScreen>> {
        match self.screen.try_lock() {
            Ok(screen) => Some(screen),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn screen(&self) -> MutexGuard<'_, SessionScreen> {
        self.screen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The screen, caught up with every byte in the ringbuffer (a long backlog from its tail).
    fn caught_up_screen(&self) -> MutexGuard<'_, SessionScreen> {
        let mut screen = self.screen();
        self.catch_up(&mut screen);
        screen
    }

    /// Feeds `screen` every byte of the ringbuffer it has not taken in yet (a long backlog from
    /// its last [`screen::CATCH_UP_TAIL`] bytes), following each window size change where it
    /// came in the output.
    fn catch_up(&self, screen: &mut SessionScreen) {
        loop {
            let (due, next) = {
                let mut core = self.lock();
                let resume = screen.resume(core.ring.start(), core.ring.end());
                // Size changes that came before what is left to parse (where the screen stands,
                // or in output the catch-up skips; all of them once caught up) apply first.
                let from = resume.as_ref().map_or(u64::MAX, |r| r.from);
                let count = core
                    .resizes
                    .iter()
                    .take_while(|&&(at, _)| at <= from)
                    .count();
                let due: Vec<WinSize> = core.resizes.drain(..count).map(|(_, s)| s).collect();
                // Then the output up to the next size change, which comes after `from`.
                let next = resume.map(|resume| {
                    let upto = core.resizes.front().map_or(core.ring.end(), |&(at, _)| at);
                    let want = usize::try_from(upto.saturating_sub(resume.from))
                        .map_or(CATCH_UP_CHUNK, |n| n.min(CATCH_UP_CHUNK));
                    (resume, core.ring.read_from(resume.from, want))
                });
                (due, next)
            };
            due.into_iter().for_each(|size| screen.resize(size));
            let Some((resume, chunk)) = next else {
                break;
            };
            let Some(chunk) = chunk.ok().filter(|c| !c.data.is_empty()) else {
                break;
            };
            if resume.skips {
                screen.feed_after_skip(&chunk.data, chunk.offset);
            } else {
                screen.feed(&chunk.data, chunk.offset + chunk.data.len() as u64);
            }
        }
    }

    /// Catches the screen up in the background (one catch-up at a time), so that it is ready
    /// when an attachment that cannot keep up needs it.
    pub fn warm_screen(self: &Arc<Self>) {
        if self.warming.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let session = self.clone();
        tokio::task::spawn_blocking(move || {
            drop(session.caught_up_screen());
            session
                .warming
                .store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Lets the screen model sleep (keeping only its dump) while no attachment is live.
    pub fn rest_screen(&self) {
        if self.lock().live_attachments > 0 {
            return;
        }
        // A screen busy catching up is left awake; it sleeps after the next output.
        if let Some(mut screen) = self.try_screen() {
            screen.sleep();
        }
    }

    /// The screen now, and the output offset it stands for.
    pub fn screen_shot(&self) -> ScreenShot {
        self.caught_up_screen().shot()
    }

    /// Reads the screen model (for text views of it).
    pub fn with_screen<R>(&self, read: impl FnOnce(&cmdop_screen::Screen) -> R) -> R {
        read(self.caught_up_screen().screen())
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

    /// Room in the PTY's input queue, if there is some now (and the session is not gone).
    pub fn try_reserve_input(&self) -> Option<mpsc::Permit<'_, Vec<u8>>> {
        self.input.try_reserve().ok()
    }

    /// Changes the window size. The screen model follows at once when that is cheap, else in
    /// the background: output printed at the old size is parsed at the old size, and a long
    /// backlog is never parsed here (this runs on the node's one runtime thread).
    pub fn resize(self: &Arc<Self>, size: WinSize) {
        // A client may ask for anything (0x0, 65535x65535): the PTY gets a size it can hold.
        let size = screen::clamp(size);
        {
            let mut core = self.lock();
            core.size = size;
            let at = core.ring.end();
            let full = core.resizes.len() >= MAX_PENDING_RESIZES;
            match core.resizes.back_mut() {
                // Nothing printed in between, or a client resizing faster than the screen
                // keeps up: the latest size stands for the run.
                Some(last) if last.0 == at || full => *last = (at, size),
                _ => core.resizes.push_back((at, size)),
            }
        }
        let terminal = self.terminal.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = terminal.resize(size) {
            tracing::debug!(session = %self.id, "resize failed: {e}");
        }
        drop(terminal);
        self.follow_resizes();
    }

    /// Applies pending size changes to the screen here if little output stands before them,
    /// else has the background catch-up do it.
    fn follow_resizes(self: &Arc<Self>) {
        if let Some(mut screen) = self.try_screen() {
            let behind = self.lock().ring.end().saturating_sub(screen.offset());
            if behind <= RESIZE_INLINE_BACKLOG {
                self.catch_up(&mut screen);
                return;
            }
        }
        self.warm_screen();
    }

    /// The foreground process's working directory (else the program's, else where it started).
    pub fn cwd(&self) -> String {
        let foreground = self
            .terminal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .foreground_cwd();
        foreground
            .or_else(|| {
                let child = self.child.lock().unwrap_or_else(|p| p.into_inner());
                child.as_ref().and_then(|child| child.cwd())
            })
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
            attached: core.attached(),
            pid: self.pid,
            size: core.size,
            state: core.lifecycle.state(),
            output_bytes: core.ring.end(),
        }
    }

    /// When the session becomes idle-expired under `ttl`, or None while attached.
    pub fn expires_at_ms(&self, ttl: Duration) -> Option<u64> {
        expiry::expires_at_ms(&self.lock(), ttl)
    }

    /// Marks the session destroyed (its attachments end) and hangs up the program's whole
    /// process group; kills it if it is still there shortly after.
    pub fn hang_up(&self) {
        let exited = {
            let mut core = self.lock();
            core.lifecycle.destroy();
            core.lifecycle.exit_code().is_some()
        };
        self.notify();
        if exited {
            return;
        }
        let Some(child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        child.hang_up();
        // The session is gone from the registry, so nothing else will reap the program.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reap(child, self.pid))),
            // Outside the runtime (the node is going away): no time to wait for it.
            Err(_) => child.kill(),
        }
    }
}

/// The reader task: PTY output into the ringbuffer until the PTY's output ends (None) or
/// `halt` (the reader back). A while after the last output of a session nobody watches it lets
/// the screen model sleep (a watched one is put to sleep when its last viewer leaves).
async fn read_output(
    mut reader: PtyReader,
    session: Weak<Session>,
    halt: CancellationToken,
) -> Option<PtyReader> {
    let mut rest_at = None;
    loop {
        let read = std::future::poll_fn(|cx| read_some(reader.as_mut(), cx, &session));
        let read = tokio::select! {
            biased;
            // Output not read yet stays in the PTY for whoever takes it over.
            _ = halt.cancelled() => return Some(reader),
            read = read => read,
            _ = sleep_until(rest_at) => {
                rest_at = None;
                if let Some(session) = session.upgrade() {
                    session.rest_screen();
                }
                continue;
            }
        };
        let Some(watched) = read else {
            break;
        };
        rest_at = (!watched).then(|| tokio::time::Instant::now() + SCREEN_SLEEP_AFTER);
        // A flooding program yields to the other tasks now and then.
        tokio::task::consume_budget().await;
    }
    if let Some(session) = session.upgrade() {
        session.lock().lifecycle.drained();
        session.bump();
    }
    None
}

/// Sleeps until `at` (forever when None).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads what the PTY has into this thread's buffer and appends it to the session: Ready(Some(
/// whether the session is watched)) after some output, Ready(None) at the end (or when the
/// session is gone).
fn read_some(
    reader: Pin<&mut (dyn AsyncRead + Send)>,
    cx: &mut std::task::Context<'_>,
    session: &Weak<Session>,
) -> Poll<Option<bool>> {
    READ_BUFFER.with_borrow_mut(|buffer| {
        let mut read = ReadBuf::new(buffer);
        match reader.poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                Poll::Ready(session.upgrade().map(|s| s.append_output(read.filled())))
            }
        }
    })
}

/// The writer task: queued input into the PTY until the session or the PTY goes (None), or
/// `halt` (the writer back, with what it had not written).
async fn write_input(mut io: HaltedWriter, halt: CancellationToken) -> Option<HaltedWriter> {
    loop {
        while !io.pending.is_empty() {
            // A write either happens or not: cancelling one loses nothing.
            let written = tokio::select! {
                biased;
                _ = halt.cancelled() => return Some(io),
                written = io.writer.write(&io.pending) => written,
            };
            match written {
                Ok(0) | Err(_) => return None,
                Ok(n) => drop(io.pending.drain(..n)),
            }
        }
        tokio::select! {
            biased;
            _ = halt.cancelled() => return Some(io),
            bytes = io.input.recv() => io.pending = bytes?,
        }
    }
}

/// Programs hung up and not reaped yet, by pid: an upgrade in place hands them down, and the
/// next binary finishes reaping them ([`reap`]).
static REAPING: Mutex<std::collections::BTreeSet<u32>> =
    Mutex::new(std::collections::BTreeSet::new());

/// The pids of the programs being reaped now.
pub fn reaping() -> Vec<u32> {
    let reaping = REAPING.lock().unwrap_or_else(|p| p.into_inner());
    reaping.iter().copied().collect()
}

/// Gives a hung-up program's group two seconds to leave, then insists; reaps the program either
/// way. The pid counts as being reaped ([`reaping`]) from this call on, before the returned
/// future first runs: an upgrade writing the state down meanwhile hands it down.
pub fn reap(mut child: Box<dyn Child>, pid: Option<u32>) -> impl Future<Output = ()> + Send {
    async fn gone(child: &mut Box<dyn Child>) -> bool {
        for _ in 0..40 {
            if !matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
    let reaping = || REAPING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pid) = pid {
        reaping().insert(pid);
    }
    async move {
        if !gone(&mut child).await {
            child.kill();
            gone(&mut child).await;
        }
        if let Some(pid) = pid {
            reaping().remove(&pid);
        }
    }
}

/// The session's program is gone; its PTY takes no more input.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the session's program has exited")]
pub struct SessionGone;
