//! The node's triggers as a service: the [`Scheduler`] behind a lock, driven by a task on a
//! [`Clock`], starting runs through a [`Runner`], storing every change, and answering the
//! control requests.
//!
//! - the driver task polls the scheduler, carries out its actions (start, signal), stores the
//!   triggers that changed, then sleeps until the scheduler's next wake-up (a fire, a
//!   deadline, or at most 60 s) or until a request or a run's end wakes it;
//! - each started run has a task that awaits its exit and records it;
//! - files are encoded under the lock and queued to the store's writer thread (see
//!   [`crate::trigger::writer`]) before the lock is released, so they are written in the order
//!   of the changes, off the runtime's thread;
//! - a fire's record (its new `handled_until`) is on disk before its run starts, so a crash
//!   cannot run it twice; if it cannot be stored the fire is recorded as failed, not run;
//! - a run's kept output is written once, to its own file, when the run ends.

use crate::trigger::clock::Clock;
use crate::trigger::output::OutputRing;
use crate::trigger::runner::{RunControl, Runner};
use crate::trigger::scheduler::{Action, Ended, Scheduler, Trigger};
use crate::trigger::store::Store;
use crate::trigger::writer::{self, Job, Writer};
use cmdop_proto::{ErrorKind, ErrorReply, ExitStatus, RunInfo, TriggerInfo};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often a held driver looks again (a release wakes it sooner).
const HELD_RECHECK_MS: u64 = 60_000;

/// How often an upgrade waiting for trigger runs to end looks again.
const RUNS_END_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Most fire times a `show` returns.
const MAX_FIRES: u32 = 100;

/// Releases the runs held back when dropped (a wait for runs to end that did not succeed).
struct HoldUntilDone<'a>(&'a Triggers);

impl Drop for HoldUntilDone<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The node's triggers.
pub struct Triggers {
    inner: Mutex<Inner>,
    writer: Writer,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    wake: Notify,
    /// No run starts while held (an upgrade in place is under way).
    held: std::sync::atomic::AtomicBool,
    /// Taken for each turn of the driver (poll, store, start), so a hold waits for one to end.
    pub(crate) turn: tokio::sync::Mutex<()>,
    /// The node's host name, for messages.
    pub(crate) host: String,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("host", &self.host)
            .finish()
    }
}

/// What the lock guards.
#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) scheduler: Scheduler,
    /// Trigger name to run id to output.
    outputs: HashMap<String, BTreeMap<u64, Arc<Mutex<OutputRing>>>>,
    controls: HashMap<(String, u64), Box<dyn RunControl>>,
}

impl Triggers {
    /// Loads the triggers stored under `home`; bad files are logged and set aside.
    pub fn open(
        home: &Path,
        host: String,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Triggers> {
        let store = Store::new(home);
        let now = clock.now_ms();
        let (loaded, errors) = store.load_all(now);
        for error in errors {
            tracing::error!("{error}");
        }
        let writer = Writer::new(store);
        let mut inner = Inner::default();
        for trigger in loaded {
            let name = trigger.record.spec.name.clone();
            if trigger.migrate {
                // A version 1 file: its outputs go to their own files (the record is
                // rewritten by the first save, after these).
                for (run, output) in &trigger.outputs {
                    let bytes = Store::encode_output(output);
                    let (name, run) = (name.clone(), *run);
                    drop(writer.queue(Job::Output { name, run, bytes }));
                }
            }
            match inner.scheduler.restore(trigger.record, now) {
                Ok(_) => {
                    let outputs = trigger.outputs.into_iter();
                    let outputs = outputs.map(|(id, o)| (id, Arc::new(Mutex::new(o))));
                    inner.outputs.insert(name, outputs.collect());
                }
                Err(e) => tracing::error!("cannot schedule a stored trigger, left as it is: {e}"),
            }
        }
        let count = inner.scheduler.iter().count();
        tracing::info!(triggers = count, "triggers loaded");
        Arc::new(Triggers {
            inner: Mutex::new(inner),
            writer,
            runner,
            clock,
            wake: Notify::new(),
            held: std::sync::atomic::AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
            host,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Now on the trigger clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The trigger clock's monotonic reading, for run deadlines.
    pub(crate) fn mono(&self) -> u64 {
        self.clock.mono_ms()
    }

    /// Wakes the driver to poll again.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Drives the scheduler until `shutdown`; then signals the runs going (their rows are
    /// closed as interrupted at the next start if they do not end in time).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // Restored triggers changed (interrupted runs closed): store them once.
        let names: Vec<String> = self
            .lock()
            .scheduler
            .iter()
            .map(|t| t.record.spec.name.clone())
            .collect();
        self.save(&names).await;
        loop {
            let wake_at = self.turn().await;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = self.clock.sleep_until(wake_at) => {}
            }
        }
        self.stop_all();
        // What was queued reaches the disk before the node exits.
        self.flush().await;
    }

    /// One turn of the driver: polls the scheduler, stores what changed, starts the runs due
    /// (nothing while held); returns when to poll again.
    async fn turn(self: &Arc<Self>) -> u64 {
        let _turn = self.turn.lock().await;
        let (now, mono) = (self.now(), self.clock.mono_ms());
        if self.is_held() {
            // The release wakes the driver.
            return mono.saturating_add(HELD_RECHECK_MS);
        }
        let (actions, changed, wake_at) = {
            let mut inner = self.lock();
            let (actions, changed) = inner.scheduler.poll_at(now, mono);
            (actions, changed, inner.scheduler.next_wakeup_at(now, mono))
        };
        // The fires' marks on disk first: a crash after a start must not run it again.
        let failed = self.save(&changed).await;
        self.apply_stored(actions, &failed);
        wake_at
    }

    /// Whether runs are held back (see [`Triggers::hold`]).
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Holds every run back for an upgrade in place: waits for the driver's turn in progress,
    /// then for every write queued. Refuses (and holds nothing) while runs are going: their
    /// processes would not survive the upgrade.
    pub async fn hold(&self) -> Result<(), String> {
        self.held.store(true, std::sync::atomic::Ordering::Release);
        drop(self.turn.lock().await);
        if let Err(going) = self.may_hold() {
            self.release();
            return Err(going);
        }
        self.flush().await;
        Ok(())
    }

    /// Holds every new run back and waits up to `patience` for the runs going to end, for an
    /// upgrade asked to wait for them. Refuses, releasing the hold, if some are still going
    /// then (say which). Once it returns `Ok`, runs stay held until [`Triggers::release`].
    pub async fn hold_once_runs_end(&self, patience: std::time::Duration) -> Result<(), String> {
        self.held.store(true, std::sync::atomic::Ordering::Release);
        // Released unless it returns Ok, also if the caller gives up waiting.
        let hold = HoldUntilDone(self);
        // A turn under way may still start runs: wait for it, as `hold` does.
        drop(self.turn.lock().await);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.may_hold() {
                Ok(()) => {
                    std::mem::forget(hold);
                    return Ok(());
                }
                Err(going) if tokio::time::Instant::now() >= deadline => return Err(going),
                Err(_) => tokio::time::sleep(RUNS_END_POLL).await,
            }
        }
    }

    /// Whether runs could be held back now: not while runs are going (say which).
    pub fn may_hold(&self) -> Result<(), String> {
        let going: Vec<String> = self
            .lock()
            .controls
            .keys()
            .map(|(name, run)| format!("{name} (run {run})"))
            .collect();
        if going.is_empty() {
            return Ok(());
        }
        Err(format!(
            "trigger runs are in progress on {}: {}; upgrade once they end",
            self.host,
            going.join(", ")
        ))
    }

    /// Lets runs start again after [`Triggers::hold`].
    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::Release);
        self.wake();
    }

    /// Waits until every write queued so far is done.
    pub async fn flush(&self) {
        let _ = writer::done(self.writer.queue(Job::Flush)).await;
    }

    /// Sends SIGTERM to every run going (the node is shutting down). Their rows stay
    /// `running` and are closed as interrupted when the node starts again.
    pub fn stop_all(&self) {
        for control in self.lock().controls.values() {
            control.signal(crate::trigger::scheduler::StopSignal::Term);
        }
    }

    /// Carries out the scheduler's actions after their triggers were stored; the starts of
    /// the triggers in `failed` (not stored) are recorded as failed instead of run.
    pub(crate) fn apply_stored(
        self: &Arc<Self>,
        actions: Vec<Action>,
        failed: &[(String, String)],
    ) {
        let (mut run, mut refused) = (Vec::new(), Vec::new());
        for action in actions {
            match &action {
                Action::Start { trigger, run: id } => {
                    match failed.iter().find(|(name, _)| name == trigger) {
                        Some((_, error)) => refused.push((trigger.clone(), *id, error.clone())),
                        None => run.push(action),
                    }
                }
                Action::Signal { .. } => run.push(action),
            }
        }
        self.apply(run);
        for (trigger, id, error) in refused {
            let Some(created) = self
                .lock()
                .scheduler
                .get(&trigger)
                .map(|t| t.record.created_ms)
            else {
                continue;
            };
            tracing::error!(
                trigger,
                run = id,
                "not running a fire that could not be stored: {error}"
            );
            let note = format!("not run: cannot store that this fire was handled ({error}), so a restart could have run it again");
            self.finished(&trigger, created, id, None, Some(note));
        }
    }

    /// Carries out the scheduler's actions.
    fn apply(self: &Arc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start { trigger, run } => self.start(trigger, run),
                Action::Signal {
                    trigger,
                    run,
                    signal,
                } => {
                    if let Some(control) = self.lock().controls.get(&(trigger, run)) {
                        control.signal(signal);
                    }
                }
            }
        }
    }

    /// Starts run `run` of `trigger`, and a task that records its end.
    fn start(self: &Arc<Self>, trigger: String, run: u64) {
        let (spec, ring, created) = {
            let mut inner = self.lock();
            let Some(t) = inner.scheduler.get(&trigger) else {
                return;
            };
            let (spec, created) = (t.record.spec.clone(), t.record.created_ms);
            let ring = Arc::new(Mutex::new(OutputRing::new(spec.keep_output)));
            let outputs = inner.outputs.entry(trigger.clone()).or_default();
            outputs.insert(run, ring.clone());
            (spec, ring, created)
        };
        tracing::info!(trigger, run, "trigger run starts");
        match self.runner.start(&spec, ring) {
            Ok(started) => {
                self.lock()
                    .controls
                    .insert((trigger.clone(), run), started.control);
                let triggers = self.clone();
                tokio::spawn(async move {
                    let exit = started.exit.await.ok();
                    triggers.finished(&trigger, created, run, exit, None);
                });
            }
            Err(note) => self.finished(&trigger, created, run, None, Some(note)),
        }
    }

    /// Records the end of a run of the trigger `trigger` created at `created` (not of another
    /// one added under the same name since), stores it and wakes the driver.
    fn finished(
        &self,
        trigger: &str,
        created: u64,
        run: u64,
        exit: Option<ExitStatus>,
        note: Option<String>,
    ) {
        let now = self.now();
        let row = {
            let mut inner = self.lock();
            let same =
                (inner.scheduler.get(trigger)).is_some_and(|t| t.record.created_ms == created);
            if !same {
                return;
            }
            inner.controls.remove(&(trigger.to_string(), run));
            let ring = inner
                .outputs
                .get(trigger)
                .and_then(|o| o.get(&run))
                .cloned();
            let ring_for_file = ring.clone();
            let (bytes_total, bytes_kept) = ring.map_or((0, 0), |ring| {
                let ring = ring.lock().unwrap_or_else(|e| e.into_inner());
                (ring.total(), ring.kept_len())
            });
            let end = Ended {
                exit,
                bytes_total,
                bytes_kept,
                note,
            };
            let row = inner.scheduler.finished(trigger, run, end, now);
            if row.is_some() {
                // The output once, to its own file, before the record that says it ended.
                let kept = inner
                    .scheduler
                    .get(trigger)
                    .is_some_and(|t| t.record.run(run).is_some());
                if let Some(ring) = ring_for_file.filter(|_| kept) {
                    let bytes =
                        Store::encode_output(&ring.lock().unwrap_or_else(|e| e.into_inner()));
                    let (name, run) = (trigger.to_string(), run);
                    self.queue_logged(Job::Output { name, run, bytes });
                }
                if let Err(e) = self.queue_save(&mut inner, trigger) {
                    tracing::error!(trigger, "cannot store the trigger: {e}");
                }
            }
            row
        };
        if let Some(row) = row {
            let outcome = row.outcome.as_str();
            tracing::info!(trigger, run, outcome, exit = ?row.exit, bytes = row.bytes_total, "trigger run ended");
        }
        self.wake();
    }

    /// Stores the triggers named (removed ones are skipped) and waits until they are on disk.
    /// Returns those that could not be stored, with why.
    pub(crate) async fn save(&self, names: &[String]) -> Vec<(String, String)> {
        let mut waits = Vec::new();
        let mut failed = Vec::new();
        {
            let mut inner = self.lock();
            for name in names {
                match self.queue_save(&mut inner, name) {
                    Ok(Some(answer)) => waits.push((name.clone(), answer)),
                    Ok(None) => {}
                    Err(e) => failed.push((name.clone(), e.to_string())),
                }
            }
        }
        for (name, answer) in waits {
            if let Err(e) = writer::done(answer).await {
                failed.push((name, e.to_string()));
            }
        }
        for (name, e) in &failed {
            tracing::error!(trigger = %name, "cannot store the trigger: {e}");
        }
        failed
    }

    /// Stores one trigger (nothing when it was removed) and waits until it is on disk.
    pub(crate) async fn save_one(&self, name: &str) -> std::io::Result<()> {
        let answer = self.queue_save(&mut self.lock(), name)?;
        match answer {
            Some(answer) => writer::done(answer).await,
            None => Ok(()),
        }
    }

    /// Under the lock: drops the outputs of runs that left the history (and queues the
    /// deletion of their files), encodes the trigger's record and queues its write.
    fn queue_save(
        &self,
        inner: &mut Inner,
        name: &str,
    ) -> std::io::Result<Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>> {
        let Some(trigger) = inner.scheduler.get(name) else {
            return Ok(None);
        };
        let bytes = Store::encode(&trigger.record)?;
        let gone = prune_outputs(inner, name);
        let answer = self.writer.queue(Job::Record {
            name: name.to_string(),
            bytes,
        });
        if !gone.is_empty() {
            self.queue_logged(Job::DeleteOutputs {
                name: name.to_string(),
                runs: gone,
            });
        }
        Ok(Some(answer))
    }

    /// Queues a job no one waits for; the writer thread logs its failure.
    fn queue_logged(&self, job: Job) {
        drop(self.writer.queue(job));
    }

    /// Removes a trigger: kills its runs, drops its outputs and deletes its file, all before
    /// another request can add one of the same name. Returns what it was.
    pub(crate) async fn forget(&self, name: &str) -> Result<TriggerInfo, ErrorReply> {
        let (info, answer) = self.forget_locked(name)?;
        writer::done(answer).await.map_err(|e| ErrorReply {
            kind: ErrorKind::Internal,
            message: format!("removed trigger '{name}' but cannot delete its file: {e}"),
        })?;
        Ok(info)
    }

    /// [`Self::forget`] under the lock: returns the info and the deletion's answer.
    #[allow(clippy::type_complexity)]
    fn forget_locked(
        &self,
        name: &str,
    ) -> Result<
        (
            TriggerInfo,
            tokio::sync::oneshot::Receiver<std::io::Result<()>>,
        ),
        ErrorReply,
    > {
        let mut inner = self.lock();
        let info = {
            let trigger = inner
                .scheduler
                .get(name)
                .ok_or_else(|| self.not_found(name))?;
            self.info(trigger, 0)
        };
        let kills = inner
            .scheduler
            .remove(name)
            .map(|(_, k)| k)
            .unwrap_or_default();
        for kill in kills {
            if let Action::Signal { run, signal, .. } = kill {
                if let Some(control) = inner.controls.get(&(name.to_string(), run)) {
                    control.signal(signal);
                }
            }
        }
        inner.outputs.remove(name);
        inner.controls.retain(|(trigger, _), _| trigger != name);
        let answer = self.writer.queue(Job::Delete {
            name: name.to_string(),
        });
        Ok((info, answer))
    }

    /// A run's output ring, if it has one.
    pub(crate) fn output(&self, name: &str, run: u64) -> Option<Arc<Mutex<OutputRing>>> {
        self.lock().outputs.get(name)?.get(&run).cloned()
    }

    /// A trigger's info with its next `fires` fire times.
    pub(crate) fn info(&self, trigger: &Trigger, fires: u32) -> TriggerInfo {
        let now = self.now();
        TriggerInfo {
            spec: trigger.record.spec.clone(),
            zone: trigger.schedule().zone_name().to_string(),
            enabled: trigger.record.enabled,
            created_ms: trigger.record.created_ms,
            next_fires: trigger.next_fires(now, fires.min(MAX_FIRES) as usize),
            last_run: trigger.record.history.back().cloned(),
            consecutive_fails: trigger.record.consecutive_fails,
            running: trigger.running() as u32,
        }
    }

    /// The not-found sentence.
    pub(crate) fn not_found(&self, name: &str) -> ErrorReply {
        ErrorReply {
            kind: ErrorKind::NotFound,
            message: format!(
                "no trigger named '{name}' on {} (list them with 'cmdop trigger list')",
                self.host
            ),
        }
    }

    /// A history row, or the not-found sentence.
    pub(crate) fn row(&self, name: &str, run: Option<u64>) -> Result<RunInfo, ErrorReply> {
        let inner = self.lock();
        let trigger = inner
            .scheduler
            .get(name)
            .ok_or_else(|| self.not_found(name))?;
        let row = match run {
            Some(id) => trigger.record.run(id),
            None => trigger.record.last_started(),
        };
        row.cloned().ok_or_else(|| ErrorReply {
            kind: ErrorKind::NotFound,
            message: match run {
                Some(id) => format!("trigger '{name}' has no run {id} in its history (see 'cmdop trigger history {name}')"),
                None => format!("trigger '{name}' has not run yet (start it with 'cmdop trigger run {name}')"),
            },
        })
    }
}

/// Drops the outputs of runs that left the history; returns their ids.
fn prune_outputs(inner: &mut Inner, name: &str) -> Vec<u64> {
    let Inner {
        scheduler, outputs, ..
    } = inner;
    let (Some(trigger), Some(outputs)) = (scheduler.get(name), outputs.get_mut(name)) else {
        return Vec::new();
    };
    let gone: Vec<u64> = (outputs.keys())
        .filter(|id| trigger.record.run(**id).is_none())
        .copied()
        .collect();
    for id in &gone {
        outputs.remove(id);
    }
    gone
}
