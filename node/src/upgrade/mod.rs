//! Upgrading the node in place: the binary is executed again (`execve`, same pid) and every
//! session carries on, its shell still running on the same PTY.
//!
//! `cmdop-node upgrade` ([`cmdop_proto::Upgrade`]) and SIGUSR2 both come here:
//! 1. [`prepare`]: one upgrade at a time; the binary now at the node's path runs dry
//!    ([`reexec::CHECK_COMMAND`]): it must read a preview of the state and name its version.
//!    Nothing has stopped yet, so a binary that fails here costs nothing;
//! 2. [`perform`], on the node's run loop (which accepts nothing meanwhile): trigger runs are
//!    held back ([`crate::trigger::Triggers::hold`]; an upgrade is refused while runs are going,
//!    unless asked to wait for them: [`crate::trigger::Triggers::hold_once_runs_end`] in
//!    [`prepare`]),
//!    the registry is frozen and creates under way end, refused, their programs hung up
//!    ([`crate::session::registry::Registry::creates_ended`]),
//!    every session's PTY tasks stop with nothing lost ([`crate::session::Session::halt_io`]),
//!    every connection is closed with [`close_code::UPGRADING`] (clients reconnect by themselves
//!    and resync by offset, as after roaming);
//! 3. the state ([`state::NodeState`]: sessions, rings, screens, deadlines, keystrokes not yet
//!    written) goes to a memfd and the binary is executed with the PTY masters, the UDP socket,
//!    the memfd and a descriptor on the old binary kept open ([`reexec`]);
//! 4. the new binary rebuilds the node ([`crate::server::Node::resume`]) and serves again; the
//!    outcome (versions, pause, sessions) answers [`cmdop_proto::LastUpgrade`].
//!
//! If `execve` fails, everything is started again in this process. If the new binary starts but
//! cannot read the state, it executes the old binary again with the same state and the reason
//! ([`reexec::Handed::give_back`]), which resumes and reports the failure.

pub mod by_signal;
pub mod reexec;
pub mod state;

use crate::server::Node;
use crate::session::handover::HaltedIo;
use crate::session::Session;
use cmdop_proto::{close_code, ErrorKind, ErrorReply, UpgradeOutcome, UpgradePlan};
use reexec::Reexec;
use state::{NodeState, SessionState};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// This binary's version, as upgrades report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the close frames get to leave before `execve`.
const CLOSE_GRACE: Duration = Duration::from_millis(5);

/// How long an upgrade waits for creates under way (a fork takes milliseconds) before it goes
/// on without them.
const CREATES_PATIENCE: Duration = Duration::from_secs(5);

/// The node's upgrades in place: how to execute the next binary, and how the last one went.
pub struct Upgrades {
    reexec: Arc<dyn Reexec>,
    /// Upgrades in place since the node started (attempts included).
    generation: AtomicU64,
    last: Mutex<Option<UpgradeOutcome>>,
    starts: mpsc::UnboundedSender<UpgradePlan>,
    started: Mutex<Option<mpsc::UnboundedReceiver<UpgradePlan>>>,
    /// An upgrade is being prepared or carried out.
    busy: AtomicBool,
}

impl std::fmt::Debug for Upgrades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrades")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

impl Upgrades {
    /// The upgrades of a node that has had `generation` of them; `last` is how the latest went.
    pub fn new(reexec: Arc<dyn Reexec>, generation: u64, last: Option<UpgradeOutcome>) -> Self {
        let (starts, started) = mpsc::unbounded_channel();
        Upgrades {
            reexec,
            generation: AtomicU64::new(generation),
            last: Mutex::new(last),
            starts,
            started: Mutex::new(Some(started)),
            busy: AtomicBool::new(false),
        }
    }

    /// How the last upgrade went, if there was one since the node started.
    pub fn last(&self) -> Option<UpgradeOutcome> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The upgrades [`start`]ed, for the node's run loop (once).
    pub(crate) fn take_started(&self) -> Option<mpsc::UnboundedReceiver<UpgradePlan>> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn record(&self, outcome: UpgradeOutcome) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }
}

fn refusal(message: String) -> ErrorReply {
    ErrorReply {
        kind: ErrorKind::Internal,
        message,
    }
}

/// An upgrade that passed its checks, not handed to the run loop yet: dropped unstarted, it lets
/// the next one be prepared, and lets trigger runs start again if it held them back.
pub struct Prepared<'a> {
    /// What it will do.
    pub plan: UpgradePlan,
    busy: &'a AtomicBool,
    /// The triggers, when waiting for their runs to end left new runs held back.
    holding: Option<&'a crate::trigger::Triggers>,
    started: bool,
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if !self.started {
            if let Some(triggers) = self.holding {
                triggers.release();
            }
            self.busy.store(false, Ordering::Release);
        }
    }
}

/// Checks that an upgrade may start and that the new binary passes its dry run. Nothing stops,
/// except that with a `wait_for_runs` new trigger runs are held back while the runs going end.
pub async fn prepare(node: &Node, wait_for_runs: Duration) -> Result<Prepared<'_>, ErrorReply> {
    let upgrades = &node.upgrades;
    if upgrades.busy.swap(true, Ordering::AcqRel) {
        return Err(refusal(format!(
            "an upgrade of {} is already under way; wait for it to finish",
            node.host
        )));
    }
    let mut prepared = Prepared {
        plan: UpgradePlan {
            generation: upgrades.generation.load(Ordering::Acquire) + 1,
            from_version: VERSION.into(),
            to_version: String::new(),
            exe: upgrades.reexec.exe().display().to_string(),
        },
        busy: &upgrades.busy,
        holding: None,
        started: false,
    };
    if wait_for_runs.is_zero() {
        node.triggers.may_hold().map_err(refusal)?;
    } else {
        let waited = node.triggers.hold_once_runs_end(wait_for_runs).await;
        waited.map_err(|going| refusal(format!("after {wait_for_runs:?}, {going}")))?;
        prepared.holding = Some(&node.triggers);
    }
    let check = upgrades.reexec.check(upgrades.reexec.exe(), preview(node));
    match check.await {
        Ok(to_version) => {
            prepared.plan.to_version = to_version;
            Ok(prepared)
        }
        Err(why) => Err(refusal(format!(
            "{why}; {} keeps running version {VERSION}",
            node.host
        ))),
    }
}

/// Hands a prepared upgrade to the node's run loop.
pub fn start(node: &Node, mut prepared: Prepared<'_>) {
    if node.upgrades.starts.send(prepared.plan.clone()).is_ok() {
        prepared.started = true;
    }
}

/// The state the dry run reads: every session's metadata, without their bytes.
fn preview(node: &Node) -> Vec<u8> {
    let sessions = node
        .registry
        .all()
        .iter()
        .map(|s| s.info())
        .map(|info| SessionState::preview(&info))
        .collect();
    let state = NodeState {
        node_version: VERSION.into(),
        generation: node.upgrades.generation.load(Ordering::Acquire) + 1,
        paused_at_ns: 0,
        socket_fd: -1,
        sessions,
        reaping: Vec::new(),
    };
    let mut bytes = Vec::new();
    // Writing to memory fails only if the encoder does; the dry run then says so.
    let _ = state::write(&state, &mut bytes);
    bytes
}

/// Carries a prepared upgrade out. Returns only if it failed, with every session running as
/// before and the failure recorded for [`cmdop_proto::LastUpgrade`].
pub(crate) async fn perform(node: &Arc<Node>, plan: UpgradePlan) {
    let paused_at = monotonic_ns();
    node.upgrades
        .generation
        .store(plan.generation, Ordering::Release);
    tracing::info!(from = %plan.from_version, to = %plan.to_version, exe = %plan.exe, "upgrading in place");
    let (error, paused_ms) = match node.triggers.hold().await {
        Ok(()) => {
            node.registry.freeze(true);
            // A create whose fork was under way ends now (refused): its program is hung up
            // and reaped, never left behind unknown to the next binary.
            let _ = tokio::time::timeout(CREATES_PATIENCE, node.registry.creates_ended()).await;
            let error = hand_over(node, &plan, paused_at).await;
            node.registry.freeze(false);
            node.triggers.release();
            (error, elapsed_ms(paused_at))
        }
        // Nothing was stopped.
        Err(e) => (e, 0),
    };
    tracing::error!("upgrade in place failed, still running {VERSION}: {error}");
    node.upgrades.record(UpgradeOutcome {
        generation: plan.generation,
        from_version: VERSION.into(),
        to_version: VERSION.into(),
        paused_ms,
        sessions: node.registry.all().len() as u32,
        error: Some(error),
    });
    node.upgrades.busy.store(false, Ordering::Release);
}

/// Closes the connections, stops the sessions' PTY tasks and executes the new binary; if that
/// fails, starts the tasks again and returns why.
async fn hand_over(node: &Arc<Node>, plan: &UpgradePlan, paused_at: u64) -> String {
    // No request or keystroke arrives from here on: the snapshot below is the last word.
    // A client dialing meanwhile is told at once to try again, rather than left to find out
    // after a handshake timeout that its first packet died with this process.
    let refusing = tokio::spawn(refuse_connections(node.endpoint.clone()));
    let reason = b"cmdop-node is upgrading in place; reconnecting";
    let closed = node.live.close_all(close_code::UPGRADING, reason);
    // Nodes registered here for relaying dial again at once.
    node.registered.close_all(close_code::UPGRADING, reason);
    let sessions = node.registry.all();
    let mut halted = Vec::with_capacity(sessions.len());
    for session in &sessions {
        halted.push(session.halt_io().await);
    }
    if closed > 0 {
        // The close frames leave before the process is replaced.
        tokio::time::sleep(CLOSE_GRACE).await;
    }
    // No await from here to execve: the task never runs again.
    refusing.abort();
    let error = exec(node, plan, paused_at, &sessions, &mut halted);
    for (session, halted) in sessions.iter().zip(halted) {
        session.resume_io(halted);
    }
    error
}

/// Refuses every connection attempt until aborted.
async fn refuse_connections(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        incoming.refuse();
    }
}

/// Writes the state down and executes the new binary; returns only on failure, with why, and
/// every session as it was.
fn exec(
    node: &Node,
    plan: &UpgradePlan,
    paused_at: u64,
    sessions: &[Arc<Session>],
    halted: &mut [HaltedIo],
) -> String {
    let mut state = NodeState {
        node_version: VERSION.into(),
        generation: plan.generation,
        paused_at_ns: paused_at,
        socket_fd: node.socket.as_raw_fd(),
        sessions: Vec::with_capacity(sessions.len()),
        reaping: crate::session::reaping(),
    };
    let error = write_down_and_exec(node, plan, &mut state, sessions, halted);
    // Called off: the ringbuffers go back to their sessions.
    for (session, exported) in sessions.iter().zip(state.sessions) {
        session.take_back(exported);
    }
    error
}

fn write_down_and_exec(
    node: &Node,
    plan: &UpgradePlan,
    state: &mut NodeState,
    sessions: &[Arc<Session>],
    halted: &mut [HaltedIo],
) -> String {
    let mut keep = vec![state.socket_fd];
    for (session, halted) in sessions.iter().zip(halted.iter_mut()) {
        match session.export(halted) {
            Ok(exported) => {
                keep.push(exported.pty_fd);
                state.sessions.push(exported);
            }
            Err(e) => return format!("cannot hand session {} over: {e}", session.id),
        }
    }
    let error = node
        .upgrades
        .reexec
        .exec(Path::new(&plan.exe), state, &keep);
    format!("cannot execute {}: {error}", plan.exe)
}

/// Nanoseconds of `CLOCK_MONOTONIC` (one clock for the whole boot, so across `execve` too).
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Milliseconds since `since` (from [`monotonic_ns`]).
pub fn elapsed_ms(since: u64) -> u64 {
    monotonic_ns().saturating_sub(since) / 1_000_000
}

/// How an upgrade that handed `state` down went, seen from the binary that took it up.
pub fn outcome(state: &NodeState, sessions: u32, failure: Option<String>) -> UpgradeOutcome {
    UpgradeOutcome {
        generation: state.generation,
        from_version: state.node_version.clone(),
        to_version: VERSION.into(),
        paused_ms: elapsed_ms(state.paused_at_ns),
        sessions,
        error: failure,
    }
}
