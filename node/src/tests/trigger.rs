//! The trigger service in process: a fake runner (no process spawned) and a fake clock the
//! test moves; the requests as the control stream sends them; the store in a temporary home.
//!
//! Covered: a scheduled run with no client, its output and exit in `logs`; `disable` stopping
//! the schedule; everything surviving a restart (a new service on the same home); `replace`
//! signalling the old run; a duplicate name and bad input creating nothing; a run that cannot
//! start recorded as a failure.

use super::within;
use crate::trigger::clock::fake::FakeClock;
use crate::trigger::output::OutputRing;
use crate::trigger::runner::{RunControl, Runner, Started};
use crate::trigger::scheduler::StopSignal;
use crate::trigger::tests_support::{spec, utc};
use crate::trigger::Triggers;
use cmdop_proto::{
    AddTrigger, Concurrency, ErrorKind, ExitStatus, ListTriggers, Outcome, RemoveTrigger, Reply,
    Request, RunInfo, RunTrigger, SetTriggerEnabled, ShowTrigger, TriggerHistory, TriggerLogs,
    TriggerSpec,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A run the fake runner started: the test writes its output and ends it.
struct FakeRun {
    shell: String,
    /// The trigger's `handled_until_ms` on disk when the run started.
    stored_mark: Option<u64>,
    output: Arc<Mutex<OutputRing>>,
    exit: oneshot::Sender<ExitStatus>,
    signals: Arc<Mutex<Vec<StopSignal>>>,
}

impl FakeRun {
    fn finish(self, output: &[u8], exit: ExitStatus) {
        self.output.lock().unwrap().push(output);
        self.exit.send(exit).unwrap();
    }
}

/// Hands every start to the test over a channel; `fail_with` makes starts fail.
struct FakeRunner {
    home: PathBuf,
    started: mpsc::UnboundedSender<FakeRun>,
    fail_with: Mutex<Option<String>>,
}

struct FakeControl(Arc<Mutex<Vec<StopSignal>>>);

impl RunControl for FakeControl {
    fn signal(&self, signal: StopSignal) {
        self.0.lock().unwrap().push(signal);
    }
}

impl Runner for FakeRunner {
    fn start(&self, spec: &TriggerSpec, output: Arc<Mutex<OutputRing>>) -> Result<Started, String> {
        if let Some(reason) = self.fail_with.lock().unwrap().clone() {
            return Err(reason);
        }
        let (exit_tx, exit) = oneshot::channel();
        let signals = Arc::new(Mutex::new(Vec::new()));
        let file = self.home.join(format!("triggers/{}.json", spec.name));
        let stored_mark = std::fs::read(file).ok().and_then(|bytes| {
            let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            value["record"]["handled_until_ms"].as_u64()
        });
        let run = FakeRun {
            shell: spec.shell.clone(),
            stored_mark,
            output,
            exit: exit_tx,
            signals: signals.clone(),
        };
        self.started.send(run).map_err(|e| e.to_string())?;
        Ok(Started {
            control: Box::new(FakeControl(signals)),
            exit,
        })
    }
}

/// A service on a fake runner and clock, in its own home.
struct Bench {
    home: PathBuf,
    clock: FakeClock,
    runner: Arc<FakeRunner>,
    started: mpsc::UnboundedReceiver<FakeRun>,
    triggers: Arc<Triggers>,
    shutdown: CancellationToken,
}

impl Bench {
    fn new(tag: &str, now: u64) -> Bench {
        let home = std::env::temp_dir().join(format!("cmdop-trig-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        Bench::open(home, FakeClock::new(now))
    }

    fn open(home: PathBuf, clock: FakeClock) -> Bench {
        let (tx, started) = mpsc::unbounded_channel();
        let runner = Arc::new(FakeRunner {
            home: home.clone(),
            started: tx,
            fail_with: Mutex::new(None),
        });
        let triggers = Triggers::open(
            &home,
            "testhost".into(),
            runner.clone(),
            Arc::new(clock.clone()),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(triggers.clone().run(shutdown.clone()));
        Bench {
            home,
            clock,
            runner,
            started,
            triggers,
            shutdown,
        }
    }

    /// Stops this service and starts another on the same home (a node restart).
    async fn restart(self, now: u64) -> Bench {
        self.shutdown.cancel();
        self.triggers.flush().await;
        let home = self.home.clone();
        drop(self);
        Bench::open(home, FakeClock::new(now))
    }

    async fn call(&self, request: Request) -> Reply {
        self.triggers
            .handle(request)
            .await
            .unwrap_or_else(Reply::Error)
    }

    async fn next_start(&mut self) -> FakeRun {
        within("a run to start", self.started.recv()).await.unwrap()
    }

    async fn history(&self, name: &str) -> Vec<RunInfo> {
        match self
            .call(Request::TriggerHistory(TriggerHistory {
                name: name.into(),
                limit: None,
            }))
            .await
        {
            Reply::TriggerRuns(rows) => rows,
            other => panic!("{other:?}"),
        }
    }

    /// Waits until the newest row of `name` is no longer running.
    async fn settled(&self, name: &str) -> RunInfo {
        within("the run to be recorded", async {
            loop {
                let rows = self.history(name).await;
                if let Some(row) = rows.first().filter(|r| r.outcome != Outcome::Running) {
                    return row.clone();
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }

    async fn add(&self, spec: TriggerSpec) -> Reply {
        self.call(Request::AddTrigger(AddTrigger { spec })).await
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_scheduled_run_is_logged_stops_when_disabled_and_survives_a_restart() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut bench = Bench::new("sched", t0);
    assert!(matches!(
        bench.add(spec("every", "* * * * *")).await,
        Reply::Trigger(_)
    ));
    // Nothing runs until the minute; then the driver, asleep, is woken by the clock.
    bench.clock.set(utc(2025, 1, 1, 12, 1));
    let run = bench.next_start().await;
    assert_eq!(run.shell, "echo hi");
    run.finish(b"hi\n", ExitStatus::Code(3));
    let row = bench.settled("every").await;
    assert_eq!(row.outcome, Outcome::Fail);
    assert_eq!((row.exit, row.bytes_total), (Some(ExitStatus::Code(3)), 3));
    assert_eq!(row.scheduled_ms, utc(2025, 1, 1, 12, 1));
    async fn logs(bench: &Bench) -> cmdop_proto::TriggerLog {
        match bench
            .call(Request::TriggerLogs(TriggerLogs {
                name: "every".into(),
                run: None,
                from: 0,
            }))
            .await
        {
            Reply::TriggerLog(log) => log,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(logs(&bench).await.data, b"hi\n");

    // Disabled: the next minutes pass without a run.
    bench
        .call(Request::SetTriggerEnabled(SetTriggerEnabled {
            name: "every".into(),
            enabled: false,
        }))
        .await;
    bench.clock.set(utc(2025, 1, 1, 12, 5));
    assert!(
        matches!(bench.call(Request::ListTriggers(ListTriggers)).await, Reply::Triggers(t) if t.len() == 1 && !t[0].enabled)
    );
    // A manual run is the proof the driver went round: the scheduled ones would come first.
    bench
        .call(Request::RunTrigger(RunTrigger {
            name: "every".into(),
        }))
        .await;
    let manual = bench.next_start().await;
    manual.finish(b"manual\n", ExitStatus::Code(0));
    let row = bench.settled("every").await;
    assert!(row.manual && row.outcome == Outcome::Ok, "{row:?}");
    assert_eq!(
        bench.history("every").await.len(),
        2,
        "no scheduled run while disabled"
    );

    // Restart: spec, state, history and output are back.
    let bench = bench.restart(utc(2025, 1, 1, 12, 6)).await;
    let Reply::Trigger(info) = bench
        .call(Request::ShowTrigger(ShowTrigger {
            name: "every".into(),
            fires: 5,
        }))
        .await
    else {
        panic!("trigger lost in the restart");
    };
    assert!(!info.enabled && info.next_fires.is_empty());
    assert_eq!(bench.history("every").await.len(), 2);
    assert_eq!(logs(&bench).await.data, b"manual\n");
    assert_eq!(info.consecutive_fails, 0);
    let _ = std::fs::remove_dir_all(&bench.home);
}

#[tokio::test]
async fn replace_signals_the_old_run_and_kills_it_after_the_grace() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut bench = Bench::new("replace", t0);
    bench
        .add(TriggerSpec {
            concurrency: Concurrency::Replace,
            ..spec("r", "* * * * *")
        })
        .await;
    bench.clock.set(utc(2025, 1, 1, 12, 1));
    let old = bench.next_start().await;
    bench.clock.set(utc(2025, 1, 1, 12, 2));
    let new = bench.next_start().await;
    assert_eq!(*old.signals.lock().unwrap(), [StopSignal::Term]);
    bench.clock.set(utc(2025, 1, 1, 12, 2) + 10_000);
    within("SIGKILL", async {
        while old.signals.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        *old.signals.lock().unwrap(),
        [StopSignal::Term, StopSignal::Kill]
    );
    assert!(new.signals.lock().unwrap().is_empty());
    old.finish(b"", ExitStatus::Signal(9));
    let rows = within("the replaced row", async {
        loop {
            let rows = bench.history("r").await;
            if rows.iter().any(|r| r.outcome == Outcome::Replaced) {
                return rows;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(rows[0].outcome, Outcome::Running, "the new run goes on");
    assert_eq!(rows[1].exit, Some(ExitStatus::Signal(9)));
    let _ = std::fs::remove_dir_all(&bench.home);
}

#[tokio::test]
async fn bad_input_creates_nothing_and_a_start_failure_is_a_failed_run() {
    let t0 = utc(2025, 1, 1, 12, 0);
    let bench = Bench::new("bad", t0);
    let refused = |reply: Reply, kind: ErrorKind, text: &str| match reply {
        Reply::Error(e) => {
            assert_eq!(e.kind, kind);
            assert!(e.message.contains(text), "{}", e.message);
        }
        other => panic!("{other:?}"),
    };
    refused(
        bench.add(spec("x", "61 * * * *")).await,
        ErrorKind::BadRequest,
        "minute '61'",
    );
    refused(
        bench
            .add(TriggerSpec {
                zone: Some("Atlantis/Capital".into()),
                ..spec("x", "* * * * *")
            })
            .await,
        ErrorKind::BadRequest,
        "unknown time zone",
    );
    assert!(
        matches!(bench.call(Request::ListTriggers(ListTriggers)).await, Reply::Triggers(t) if t.is_empty())
    );
    assert!(!bench.home.join("triggers/x.json").exists());
    bench.add(spec("x", "0 3 * * *")).await;
    refused(
        bench.add(spec("x", "0 4 * * *")).await,
        ErrorKind::NameTaken,
        "already exists",
    );
    refused(
        bench
            .call(Request::RunTrigger(RunTrigger {
                name: "nope".into(),
            }))
            .await,
        ErrorKind::NotFound,
        "no trigger named 'nope'",
    );
    *bench.runner.fail_with.lock().unwrap() = Some("cannot start /bin/sh in /gone".into());
    let Reply::TriggerRun(row) = bench
        .call(Request::RunTrigger(RunTrigger { name: "x".into() }))
        .await
    else {
        panic!("no run row");
    };
    assert_eq!(row.outcome, Outcome::Fail);
    assert_eq!(row.note.as_deref(), Some("cannot start /bin/sh in /gone"));
    assert!(matches!(
        bench
            .call(Request::RemoveTrigger(RemoveTrigger { name: "x".into() }))
            .await,
        Reply::Trigger(_)
    ));
    assert!(!bench.home.join("triggers/x.json").exists());
    let _ = std::fs::remove_dir_all(&bench.home);
}

#[tokio::test]
async fn a_trigger_that_cannot_be_stored_is_not_created() {
    let bench = Bench::new("unstorable", utc(2025, 1, 1, 12, 0));
    // A file where the directory should be: every write fails.
    std::fs::write(bench.home.join("triggers"), b"in the way").unwrap();
    let Reply::Error(error) = bench.add(spec("x", "0 3 * * *")).await else {
        panic!("created without being stored");
    };
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("nothing was created"),
        "{}",
        error.message
    );
    assert!(
        matches!(bench.call(Request::ListTriggers(ListTriggers)).await, Reply::Triggers(t) if t.is_empty())
    );
    let _ = std::fs::remove_dir_all(&bench.home);
}

#[tokio::test]
async fn a_fire_is_stored_before_it_runs_and_not_run_if_it_cannot_be() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut bench = Bench::new("mark", t0);
    bench.add(spec("m", "* * * * *")).await;
    bench.clock.set(utc(2025, 1, 1, 12, 1));
    let run = bench.next_start().await;
    // A crash from here on cannot run the 12:01 fire again: its mark is on disk.
    assert_eq!(run.stored_mark, Some(utc(2025, 1, 1, 12, 1)));
    run.finish(b"", ExitStatus::Code(0));
    bench.settled("m").await;
    bench.triggers.flush().await;
    // The store breaks: the next fire is recorded as failed, not run unstored.
    let dir = bench.home.join("triggers");
    std::fs::rename(&dir, bench.home.join("triggers.away")).unwrap();
    std::fs::write(&dir, b"in the way").unwrap();
    bench.clock.set(utc(2025, 1, 1, 12, 2));
    let row = within("the failed fire", async {
        loop {
            let rows = bench.history("m").await;
            if rows.len() == 2 && rows[0].outcome != Outcome::Running {
                return rows[0].clone();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(row.outcome, Outcome::Fail);
    assert!(row.note.as_deref().unwrap().contains("not run"), "{row:?}");
    assert!(bench.started.try_recv().is_err(), "it ran unstored");
    let _ = std::fs::remove_dir_all(&bench.home);
}

#[tokio::test]
async fn a_wall_clock_step_does_not_time_a_run_out() {
    let t0 = utc(2025, 1, 1, 12, 0) + 30_000;
    let mut bench = Bench::new("step", t0);
    bench
        .add(TriggerSpec {
            timeout_ms: Some(30 * 60_000),
            ..spec("s", "0 0 1 1 *")
        })
        .await;
    bench
        .call(Request::RunTrigger(RunTrigger { name: "s".into() }))
        .await;
    let run = bench.next_start().await;
    // NTP steps the wall clock an hour ahead: no time passed, no timeout.
    bench.clock.step(t0 + 3_600_000);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        run.signals.lock().unwrap().is_empty(),
        "timed out by a step"
    );
    // Thirty minutes pass: now it times out.
    bench.clock.set(t0 + 3_600_000 + 30 * 60_000);
    within("SIGTERM", async {
        while run.signals.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(*run.signals.lock().unwrap(), [StopSignal::Term]);
    let _ = std::fs::remove_dir_all(&bench.home);
}
