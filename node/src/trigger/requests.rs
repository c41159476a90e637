//! The trigger requests of the control stream: each checks its input, asks the service, and
//! answers with a reply or an [`ErrorReply`] that names what to change.

use crate::trigger::service::Triggers;
use crate::trigger::spec;
use cmdop_proto::{
    AddTrigger, ErrorKind, ErrorReply, Reply, Request, RunTrigger, SetTriggerEnabled, ShowTrigger,
    TriggerHistory, TriggerLog, TriggerLogs,
};
use std::sync::Arc;

/// Most output bytes in one logs reply, well below the client's frame limit (8 MiB); the CLI
/// asks again from where the reply ended until it gets an empty one.
pub const MAX_LOG_CHUNK: usize = 1024 * 1024;

impl Triggers {
    /// Answers a trigger request; any other request is refused.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Reply, ErrorReply> {
        match request {
            Request::AddTrigger(AddTrigger { spec }) => self.add(spec).await,
            Request::ListTriggers(_) => {
                let inner = self.lock();
                let infos = inner.scheduler.iter().map(|t| self.info(t, 1)).collect();
                Ok(Reply::Triggers(infos))
            }
            Request::ShowTrigger(ShowTrigger { name, fires }) => {
                let inner = self.lock();
                let trigger = inner
                    .scheduler
                    .get(&name)
                    .ok_or_else(|| self.not_found(&name))?;
                Ok(Reply::Trigger(Box::new(self.info(trigger, fires))))
            }
            Request::SetTriggerEnabled(SetTriggerEnabled { name, enabled }) => {
                self.set_enabled(&name, enabled).await
            }
            Request::RunTrigger(RunTrigger { name }) => self.run_now(&name).await,
            Request::TriggerHistory(TriggerHistory { name, limit }) => {
                let inner = self.lock();
                let trigger = inner
                    .scheduler
                    .get(&name)
                    .ok_or_else(|| self.not_found(&name))?;
                let rows = trigger.record.history.iter().rev().cloned();
                let limit = limit.map_or(usize::MAX, |l| l as usize);
                Ok(Reply::TriggerRuns(rows.take(limit).collect()))
            }
            Request::TriggerLogs(logs) => self.logs(logs),
            Request::RemoveTrigger(remove) => self.remove(&remove.name).await,
            _ => Err(ErrorReply {
                kind: ErrorKind::BadRequest,
                message: "not a trigger request".into(),
            }),
        }
    }

    async fn add(self: &Arc<Self>, spec: cmdop_proto::TriggerSpec) -> Result<Reply, ErrorReply> {
        let schedule = spec::check(&spec)?;
        let name = spec.name.clone();
        let info = {
            let mut inner = self.lock();
            if inner.scheduler.get(&name).is_some() {
                return Err(ErrorReply {
                    kind: ErrorKind::NameTaken,
                    message: format!(
                        "a trigger named '{name}' already exists on {}; remove it first or choose another name",
                        self.host
                    ),
                });
            }
            let trigger = inner.scheduler.add(spec, schedule, self.now());
            self.info(trigger, 5)
        };
        if let Err(e) = self.save_one(&name).await {
            // Not stored, not created: it would be lost at the next restart.
            self.lock().scheduler.remove(&name);
            return Err(ErrorReply {
                kind: ErrorKind::Internal,
                message: format!(
                    "cannot store trigger '{name}' on {} ({e}); nothing was created (check $CMDOP_HOME/triggers there)",
                    self.host
                ),
            });
        }
        tracing::info!(trigger = %name, schedule = %info.spec.schedule, zone = %info.zone, "trigger added");
        self.wake();
        Ok(Reply::Trigger(Box::new(info)))
    }

    async fn set_enabled(self: &Arc<Self>, name: &str, enabled: bool) -> Result<Reply, ErrorReply> {
        let info = {
            let mut inner = self.lock();
            let now = self.now();
            let trigger = (inner.scheduler.set_enabled(name, enabled, now))
                .ok_or_else(|| self.not_found(name))?;
            self.info(trigger, 5)
        };
        self.save(&[name.to_string()]).await;
        self.wake();
        Ok(Reply::Trigger(Box::new(info)))
    }

    async fn run_now(self: &Arc<Self>, name: &str) -> Result<Reply, ErrorReply> {
        let _turn = self.turn.lock().await;
        if self.is_held() {
            return Err(ErrorReply {
                kind: ErrorKind::Limit,
                message: format!(
                    "{} is upgrading in place; run '{name}' again in a moment",
                    self.host
                ),
            });
        }
        let (row, actions) = {
            let mut inner = self.lock();
            let (now, mono) = (self.now(), self.mono());
            inner
                .scheduler
                .run_now_at(name, now, mono)
                .ok_or_else(|| self.not_found(name))?
        };
        // Stored before it starts, as a scheduled fire.
        let failed = self.save(&[name.to_string()]).await;
        self.apply_stored(actions, &failed);
        self.wake();
        // The run may have ended already (a command that could not start).
        let row = self.row(name, Some(row.id)).unwrap_or(row);
        Ok(Reply::TriggerRun(row))
    }

    fn logs(&self, logs: TriggerLogs) -> Result<Reply, ErrorReply> {
        // The row first, then the output: a run recorded as ended has all its output in the
        // ring, so a follower that sees the end has every byte.
        let run = self.row(&logs.name, logs.run)?;
        let read = match self.output(&logs.name, run.id) {
            Some(ring) => ring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_at_most(logs.from, MAX_LOG_CHUNK),
            None => crate::trigger::output::OutputRing::new(0).read_from(logs.from),
        };
        Ok(Reply::TriggerLog(TriggerLog {
            run,
            from: read.from,
            skipped: read.skipped,
            data: read.data,
        }))
    }

    async fn remove(self: &Arc<Self>, name: &str) -> Result<Reply, ErrorReply> {
        let info = self.forget(name).await?;
        tracing::info!(trigger = %name, "trigger removed");
        Ok(Reply::Trigger(Box::new(info)))
    }
}
