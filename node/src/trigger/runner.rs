//! Starting a run's process: the seam between the scheduler's driver and the operating system.
//!
//! [`NativeRunner`] runs the command with `/bin/sh -c` in a process group of its own, as the
//! node's user, with the trigger's environment and directory, stdin from `/dev/null`, and
//! stdout and stderr merged into one pipe read on the runtime (no thread per run) into the
//! run's [`OutputRing`]. Signals go to the whole group, also after the shell itself exited
//! (Linux does not reuse a pid while a process group of that id has members), so `--timeout`
//! and `replace` stop what the command started too. A run that was being stopped, or whose
//! output pipe stayed open after the shell exited, gets SIGKILL on its whole group before its
//! end is reported: nothing of it outlives its row. Tests use a fake runner
//! (`crate::tests::trigger`).

use crate::trigger::output::OutputRing;
use crate::trigger::scheduler::StopSignal;
use cmdop_proto::{ExitStatus, TriggerSpec};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// After the process exits, how long the output pipe may stay open (a child left in the
/// background holding it) before the group is killed and the run recorded anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// After the SIGKILL of a lingering group, how long the last output may take to arrive.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);

/// A started run: how to signal it and when it ends.
pub struct Started {
    /// Signals the run's process group.
    pub control: Box<dyn RunControl>,
    /// Resolves with the exit status once the process ended and its output was read.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Signals a running process group.
pub trait RunControl: Send + Sync {
    /// Sends `signal` to the group (nothing once the run's end was reported).
    fn signal(&self, signal: StopSignal);
}

/// Starts processes for runs.
pub trait Runner: Send + Sync + 'static {
    /// Starts `spec`'s command; its output goes into `output`. An error is a sentence that
    /// says why it could not start.
    fn start(&self, spec: &TriggerSpec, output: Arc<Mutex<OutputRing>>) -> Result<Started, String>;
}

/// Real processes (see the module doc). Needs a tokio runtime.
#[derive(Debug, Default)]
pub struct NativeRunner;

struct GroupControl {
    pgid: u32,
    /// A signal was sent: the run is being stopped.
    stopping: Arc<AtomicBool>,
    /// The end was reported: the group is gone (killed if it lingered); the id may be reused.
    reported: Arc<AtomicBool>,
}

fn kill_group(pgid: u32, signal: rustix::process::Signal) {
    let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, signal) {
        tracing::debug!(pgid, "cannot signal a trigger run: {e}");
    }
}

impl RunControl for GroupControl {
    fn signal(&self, signal: StopSignal) {
        if self.reported.load(Ordering::Acquire) {
            return;
        }
        self.stopping.store(true, Ordering::Release);
        let signal = match signal {
            StopSignal::Term => rustix::process::Signal::TERM,
            StopSignal::Kill => rustix::process::Signal::KILL,
        };
        kill_group(self.pgid, signal);
    }
}

impl Runner for NativeRunner {
    fn start(&self, spec: &TriggerSpec, output: Arc<Mutex<OutputRing>>) -> Result<Started, String> {
        let pipe_error = |e: std::io::Error| format!("cannot create a pipe: {e}");
        let (writer, reader) = tokio::net::unix::pipe::pipe().map_err(pipe_error)?;
        let writer = writer.into_blocking_fd().map_err(pipe_error)?;
        let writer2 = writer.try_clone().map_err(pipe_error)?;
        let cwd = spec
            .cwd
            .clone()
            .or_else(|| std::env::var("HOME").ok())
            .unwrap_or_else(|| "/".into());
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&spec.shell)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .process_group(0);
        let spawned = command.spawn();
        // The command holds the pipe's write ends: drop it so the reader sees the end.
        drop(command);
        let mut child = spawned.map_err(|e| format!("cannot start /bin/sh in {cwd}: {e}"))?;
        let pgid = child.id().unwrap_or(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let reported = Arc::new(AtomicBool::new(false));
        let mut reading = tokio::spawn(read_output(reader, output));
        let (send_exit, exit) = oneshot::channel();
        let (stopping2, reported2) = (stopping.clone(), reported.clone());
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => exit_status(status),
                Err(_) => ExitStatus::Code(-1),
            };
            let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading)
                .await
                .is_ok();
            if stopping2.load(Ordering::Acquire) || !drained {
                // Stopped (timeout, replace) or still holding the pipe: nothing of the run
                // may outlive its row.
                kill_group(pgid, rustix::process::Signal::KILL);
                if !drained {
                    let _ = tokio::time::timeout(DRAIN_AFTER_KILL, &mut reading).await;
                }
            }
            // A process that left the group (setsid) and still holds the pipe is not read.
            reading.abort();
            reported2.store(true, Ordering::Release);
            let _ = send_exit.send(status);
        });
        Ok(Started {
            control: Box::new(GroupControl {
                pgid,
                stopping,
                reported,
            }),
            exit,
        })
    }
}

/// Reads the pipe into `output` until its end.
async fn read_output(mut reader: tokio::net::unix::pipe::Receiver, output: Arc<Mutex<OutputRing>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => match output.lock() {
                Ok(mut ring) => ring.push(&buf[..n]),
                Err(_) => break,
            },
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        (None, None) => ExitStatus::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    //! The native runner with real processes: exit codes, a missing command, a flood, the
    //! environment and directory, and a signal reaching the whole process group.

    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::trigger::tests_support::spec;

    /// Runs `shell` to its end; returns the exit status and the output ring.
    async fn run(spec: TriggerSpec) -> (ExitStatus, OutputRing) {
        let output = Arc::new(Mutex::new(OutputRing::new(spec.keep_output)));
        let started = NativeRunner.start(&spec, output.clone()).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(20), started.exit)
            .await
            .unwrap()
            .unwrap();
        let ring = output.lock().unwrap().clone();
        (exit, ring)
    }

    fn shell(command: &str) -> TriggerSpec {
        TriggerSpec {
            shell: command.into(),
            ..spec("t", "* * * * *")
        }
    }

    #[tokio::test]
    async fn output_is_merged_and_the_exit_code_kept() {
        let (exit, ring) = run(shell("echo out; echo err >&2; exit 3")).await;
        assert_eq!(exit, ExitStatus::Code(3));
        assert_eq!(ring.kept(), b"out\nerr\n");
    }

    #[tokio::test]
    async fn a_missing_command_exits_127() {
        let (exit, ring) = run(shell("no-such-command-cmdop-test")).await;
        assert_eq!(exit, ExitStatus::Code(127));
        assert!(String::from_utf8_lossy(&ring.kept()).contains("not found"));
    }

    #[tokio::test]
    async fn a_flood_is_capped_and_counted() {
        let spec = TriggerSpec {
            keep_output: 1024,
            ..shell("head -c 3000000 /dev/zero; echo end")
        };
        let (exit, ring) = run(spec).await;
        assert_eq!(exit, ExitStatus::Code(0));
        assert_eq!((ring.total(), ring.kept_len()), (3_000_004, 1024));
        assert!(ring.kept().ends_with(b"end\n"));
    }

    #[tokio::test]
    async fn environment_and_directory_are_applied() {
        let spec = TriggerSpec {
            env: vec![("CMDOP_TRIGGER_TEST".into(), "v42".into())],
            cwd: Some("/tmp".into()),
            ..shell("echo $CMDOP_TRIGGER_TEST; pwd")
        };
        let (_, ring) = run(spec).await;
        assert_eq!(ring.kept(), b"v42\n/tmp\n");
        let error = NativeRunner
            .start(
                &TriggerSpec {
                    cwd: Some("/no/such/dir".into()),
                    ..shell("true")
                },
                Arc::default(),
            )
            .err()
            .unwrap();
        assert!(error.contains("/no/such/dir"), "{error}");
    }

    #[tokio::test]
    async fn a_signal_stops_the_whole_group() {
        // The shell waits on a background child: both must go for the pipe to close.
        let output = Arc::new(Mutex::new(OutputRing::new(1024)));
        let started = NativeRunner
            .start(&shell("sleep 60 & echo started; wait"), output.clone())
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while output.lock().unwrap().total() == 0 {
            assert!(std::time::Instant::now() < deadline, "no output");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let begun = std::time::Instant::now();
        started.control.signal(StopSignal::Term);
        let exit = tokio::time::timeout(Duration::from_secs(10), started.exit)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ExitStatus::Signal(15));
        // Well before DRAIN_AFTER_EXIT: the background sleep died too and closed the pipe.
        assert!(
            begun.elapsed() < Duration::from_millis(1500),
            "{:?}",
            begun.elapsed()
        );
    }

    /// Whether process `pid` is gone (or a zombie waiting for its new parent).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    async fn assert_gone(pid: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !gone(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} outlived its run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `shell`, which prints a pid first; returns the run and that pid.
    async fn start_with_pid(shell_text: &str) -> (Started, Arc<Mutex<OutputRing>>, i32) {
        let output = Arc::new(Mutex::new(OutputRing::new(1024)));
        let started = NativeRunner
            .start(&shell(shell_text), output.clone())
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8_lossy(&output.lock().unwrap().kept()).into_owned();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                return (started, output.clone(), line.trim().parse().unwrap());
            }
            assert!(std::time::Instant::now() < deadline, "no pid");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_stopped_run_leaves_nothing_behind_after_the_shell_exits() {
        // The shell exits on SIGTERM; its child ignores SIGTERM and does not hold the pipe.
        let (started, _, pid) = start_with_pid(
            "(trap '' TERM; exec sleep 60) >/dev/null 2>&1 & echo $!; trap 'exit 0' TERM; wait",
        )
        .await;
        started.control.signal(StopSignal::Term);
        let exit = tokio::time::timeout(Duration::from_secs(10), started.exit)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ExitStatus::Code(0));
        assert_gone(pid).await;
    }

    #[tokio::test]
    async fn a_child_left_holding_the_output_is_killed_when_the_run_is_recorded() {
        let (started, _, pid) = start_with_pid("sleep 60 & echo $!").await;
        let exit = tokio::time::timeout(Duration::from_secs(10), started.exit)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ExitStatus::Code(0));
        assert_gone(pid).await;
    }
}
