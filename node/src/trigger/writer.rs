//! The trigger store's writes, off the runtime's thread: the node runs on a current-thread
//! runtime, so an fsync there would stall every terminal session. One thread takes the jobs
//! in the order they were queued (the service queues them under its lock, in the order of the
//! changes), so the latest write of a file wins and no file goes back to an older state.
//! Each job answers when done; the service waits for the answer where it needs the write on
//! disk first (a fire's mark before the run starts, a new trigger before the reply).

use crate::trigger::store::Store;
use std::io;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// A write for the store.
#[derive(Debug)]
pub enum Job {
    /// A trigger's record file.
    Record {
        /// The trigger.
        name: String,
        /// Its encoded record.
        bytes: Vec<u8>,
    },
    /// One finished run's output file.
    Output {
        /// The trigger.
        name: String,
        /// The run.
        run: u64,
        /// The encoded output.
        bytes: Vec<u8>,
    },
    /// The output files of runs that left the history.
    DeleteOutputs {
        /// The trigger.
        name: String,
        /// The runs.
        runs: Vec<u64>,
    },
    /// Every file of a removed trigger.
    Delete {
        /// The trigger.
        name: String,
    },
    /// Nothing: answers once every job queued before it is done.
    Flush,
}

impl Job {
    fn what(&self) -> String {
        match self {
            Job::Record { name, .. } => format!("trigger '{name}'"),
            Job::Output { name, run, .. } => format!("the output of run {run} of trigger '{name}'"),
            Job::DeleteOutputs { name, .. } => format!("(delete) old outputs of trigger '{name}'"),
            Job::Delete { name } => format!("(delete) the files of trigger '{name}'"),
            Job::Flush => "nothing".into(),
        }
    }

    fn run(self, store: &Store) -> io::Result<()> {
        match self {
            Job::Record { name, bytes } => store.write(&name, &bytes),
            Job::Output { name, run, bytes } => store.write_output(&name, run, &bytes),
            Job::DeleteOutputs { name, runs } => store.delete_outputs(&name, &runs),
            Job::Delete { name } => store.delete(&name),
            Job::Flush => Ok(()),
        }
    }
}

type Queued = (Job, oneshot::Sender<io::Result<()>>);

/// Queues jobs for the writer thread.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    queue: Option<mpsc::Sender<Queued>>,
}

impl Writer {
    /// A writer for `store` with a thread of its own (if no thread can be made, the writes are
    /// done inline, in order, and an error is logged).
    pub fn new(store: Store) -> Writer {
        let (queue, jobs) = mpsc::channel::<Queued>();
        let thread_store = store.clone();
        let spawned = std::thread::Builder::new()
            .name("cmdop-trigger-store".into())
            .spawn(move || {
                for (job, done) in jobs {
                    let what = job.what();
                    // No one waits for it: say here that it failed.
                    if let Err(Err(e)) = done.send(job.run(&thread_store)) {
                        tracing::error!("cannot store {what}: {e}");
                    }
                }
            });
        let queue = match spawned {
            Ok(_) => Some(queue),
            Err(e) => {
                tracing::error!("cannot start the trigger store's thread ({e}); writing on the runtime's thread");
                None
            }
        };
        Writer { store, queue }
    }

    /// Queues `job`; the receiver answers when it is done. Call it under the service's lock so
    /// the order of the jobs is the order of the changes.
    pub fn queue(&self, job: Job) -> oneshot::Receiver<io::Result<()>> {
        let (done, answer) = oneshot::channel();
        let job = match &self.queue {
            Some(queue) => match queue.send((job, done)) {
                Ok(()) => return answer,
                Err(mpsc::SendError((job, done))) => {
                    let _ = done.send(job.run(&self.store));
                    return answer;
                }
            },
            None => job,
        };
        let _ = done.send(job.run(&self.store));
        answer
    }
}

/// Waits for a queued job's answer.
pub async fn done(answer: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
    answer
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the trigger store's thread stopped")))
}
