//! The node's sessions: creation (within `max_sessions`, names unique), lookup, destruction,
//! exits and idle expiry.
//!
//! Expiry wakes once per deadline, not once per session per tick: the reaper sleeps until the
//! earliest expiry among unattached sessions (or until something changes), so a thousand idle
//! sessions cost no wake-ups. The decisions are pure functions of the clock
//! ([`crate::session::expiry`]).

use crate::os::{PtySpawner, SpawnSpec, SpawnedPty};
use crate::session::expiry::{self, Idleness};
use crate::session::{now_ms, Session};
use cmdop_proto::config::NodeConfig;
use cmdop_proto::{CreateSession, ErrorKind, ErrorReply, SessionInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every session on this node.
pub struct Registry {
    sessions: Mutex<BTreeMap<Uuid, Arc<Session>>>,
    changed: Notify,
    spawner: Arc<dyn PtySpawner>,
    host: String,
    config: NodeConfig,
    /// No session is created or destroyed (an upgrade in place is writing them down).
    frozen: std::sync::atomic::AtomicBool,
    /// The names of the creates under way (their spawn runs apart, so they may outlast a
    /// freeze); they count against `max_sessions` and hold their names until they end.
    creating: watch::Sender<Vec<Option<String>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .finish()
    }
}

/// One create under way, listed in [`Registry::creating`] until it ends, however it ends.
struct Creating<'a> {
    creating: &'a watch::Sender<Vec<Option<String>>>,
    name: Option<String>,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.creating.send_modify(|names| {
            if let Some(at) = names.iter().position(|n| *n == self.name) {
                names.swap_remove(at);
            }
        });
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        kind,
        message: message.into(),
    }
}

/// Hangs up and reaps a program whose create was dropped while it was being spawned.
fn abandon(spawned: SpawnedPty) {
    spawned.child.hang_up();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(crate::session::reap(spawned.child, spawned.pid)));
    }
}

/// The shell to run: `$SHELL`, or `/bin/sh`.
pub fn default_shell() -> String {
    std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty() && std::path::Path::new(s).exists())
        .unwrap_or_else(|| "/bin/sh".into())
}

impl Registry {
    /// An empty registry.
    pub fn new(spawner: Arc<dyn PtySpawner>, host: String, config: NodeConfig) -> Self {
        Registry {
            sessions: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            spawner,
            host,
            config,
            frozen: std::sync::atomic::AtomicBool::new(false),
            creating: watch::Sender::new(Vec::new()),
        }
    }

    /// Refuses (`true`) or allows again (`false`) creating and destroying sessions, while an
    /// upgrade in place writes them down.
    pub fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::Release);
    }

    /// Waits until no create is under way: after a freeze, every create that began before it
    /// has then either inserted its session or hung its program up.
    pub async fn creates_ended(&self) {
        let mut creating = self.creating.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = creating.wait_for(|names| names.is_empty()).await;
    }

    fn refuse_if_frozen(&self) -> Result<(), ErrorReply> {
        if self.frozen.load(std::sync::atomic::Ordering::Acquire) {
            return Err(error(
                ErrorKind::Limit,
                format!("{} is upgrading in place; try again in a moment", self.host),
            ));
        }
        Ok(())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, Arc<Session>>> {
        // No code panics while holding this lock; recover the map rather than fail forever.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The host name sessions report.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Creates a session; `preload` becomes the start of its scrollback.
    pub async fn create(
        &self,
        request: CreateSession,
        preload: &[u8],
    ) -> Result<Arc<Session>, ErrorReply> {
        if let Some(name) = &request.name {
            validate_name(name)?;
        }
        let home = cmdop_client::home::user_home()
            .to_string_lossy()
            .into_owned();
        let cwd = match request.cwd {
            Some(cwd) if std::path::Path::new(&cwd).is_dir() => cwd,
            Some(cwd) => {
                return Err(error(
                    ErrorKind::BadRequest,
                    format!(
                        "working directory {cwd} does not exist on {}; pick another",
                        self.host
                    ),
                ))
            }
            None => home,
        };
        let mut env = request.env;
        env.push((
            "TERM".into(),
            request.term.unwrap_or_else(|| "xterm-256color".into()),
        ));
        let spec = SpawnSpec {
            program: default_shell(),
            cwd,
            env,
            size: crate::session::screen::clamp(request.size),
        };
        // Check, spawn without the lock and off the runtime's thread (a fork must not stall
        // every other session), then check again while inserting, so two creates of one name
        // cannot both win and an upgrade that began meanwhile keeps its sessions as frozen.
        let _creating = self.reserve(request.name.as_deref())?;
        let spawned = self.spawn_apart(&spec).await?;
        let capacity = usize::try_from(self.config.ringbuffer.0).unwrap_or(usize::MAX);
        let name = request.name.clone();
        let session = Session::start(
            &spec,
            spawned,
            request.name,
            self.host.clone(),
            capacity,
            preload,
        );
        {
            let mut map = self.map();
            // The creates still under way (this one among them) were counted at `reserve`.
            let room = self
                .refuse_if_frozen()
                .and_then(|()| Self::room_in(&map, &[], &self.config, &self.host, name.as_deref()));
            if let Err(e) = room {
                drop(map);
                session.hang_up();
                return Err(e);
            }
            map.insert(session.id, session.clone());
        }
        // A shell that died before it was registered sent its SIGCHLD too early to be seen.
        session.poll_exit();
        tracing::info!(session = %session.id, pid = ?session.pid, "session created");
        self.changed.notify_one();
        Ok(session)
    }

    /// Starts `spec` on tokio's blocking pool: the fork and the wait for the program's exec take
    /// milliseconds, which every other session's keystrokes would otherwise wait out. A create
    /// dropped meanwhile (the node shutting down) leaves no program behind: it is hung up and
    /// reaped.
    async fn spawn_apart(&self, spec: &SpawnSpec) -> Result<SpawnedPty, ErrorReply> {
        let spawner = self.spawner.clone();
        let owned = spec.clone();
        let (give, take) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(abandoned)) = give.send(spawner.spawn(&owned)) {
                abandon(abandoned);
            }
        });
        let spawned = take
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawn was cut short")));
        spawned.map_err(|e| {
            error(
                ErrorKind::Internal,
                format!("cannot start {} on {}: {e}", spec.program, self.host),
            )
        })
    }

    /// Checks for room for one more session named `name`, counting the creates under way,
    /// and lists this one among them until the returned guard goes.
    fn reserve(&self, name: Option<&str>) -> Result<Creating<'_>, ErrorReply> {
        self.refuse_if_frozen()?;
        let map = self.map();
        let mut room = Ok(());
        self.creating.send_if_modified(|creating| {
            room = Self::room_in(&map, creating, &self.config, &self.host, name);
            if room.is_ok() {
                creating.push(name.map(str::to_owned));
            }
            room.is_ok()
        });
        room.map(|()| Creating {
            creating: &self.creating,
            name: name.map(str::to_owned),
        })
    }

    /// Whether `map`, with the creates under way named in `creating`, has room for one more
    /// session named `name`.
    fn room_in(
        map: &BTreeMap<Uuid, Arc<Session>>,
        creating: &[Option<String>],
        config: &NodeConfig,
        host: &str,
        name: Option<&str>,
    ) -> Result<(), ErrorReply> {
        if map.len() + creating.len() >= config.max_sessions {
            return Err(error(
                ErrorKind::Limit,
                format!(
                    "{host} already runs {} sessions (max_sessions in config.yaml); destroy some first",
                    config.max_sessions
                ),
            ));
        }
        if let Some(name) = name {
            let taken = map.values().any(|s| s.lock().name.as_deref() == Some(name))
                || creating.iter().any(|n| n.as_deref() == Some(name));
            if taken {
                return Err(error(
                    ErrorKind::NameTaken,
                    format!("a session named '{name}' already exists on {host}; pick another name"),
                ));
            }
        }
        Ok(())
    }

    /// A session by id.
    pub fn get(&self, id: Uuid) -> Result<Arc<Session>, ErrorReply> {
        self.map()
            .get(&id)
            .cloned()
            .ok_or_else(|| self.not_found(id))
    }

    fn not_found(&self, id: Uuid) -> ErrorReply {
        error(
            ErrorKind::NotFound,
            format!(
                "no session {id} on {}; list them with 'cmdop session list'",
                self.host
            ),
        )
    }

    /// Every session's metadata, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<_> = self.map().values().cloned().collect();
        sessions.iter().map(|s| s.info()).collect()
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }

    /// Takes in a session an upgrade in place handed down (its id is already unique here).
    pub fn adopt(&self, session: Arc<Session>) {
        self.map().insert(session.id, session.clone());
        session.poll_exit();
        self.changed.notify_one();
    }

    /// Destroys a session: hangs up its processes and drops its scrollback.
    pub fn destroy(&self, id: Uuid) -> Result<(), ErrorReply> {
        self.refuse_if_frozen()?;
        let session = self.map().remove(&id).ok_or_else(|| self.not_found(id))?;
        session.hang_up();
        tracing::info!(session = %id, "session destroyed");
        self.changed.notify_one();
        Ok(())
    }

    /// How idle each session is.
    fn idleness(&self) -> Vec<Idleness> {
        self.all()
            .iter()
            .map(|s| expiry::idleness(s.id, &s.lock()))
            .collect()
    }

    /// Destroys every session unattached and idle for longer than `idle` at `now_ms`; returns
    /// their ids.
    pub fn destroy_idle(&self, idle: Duration, now_ms: u64) -> Vec<Uuid> {
        if self.refuse_if_frozen().is_err() {
            return Vec::new();
        }
        let expired = expiry::expired(&self.idleness(), idle, now_ms);
        for id in &expired {
            let _ = self.destroy(*id);
        }
        expired
    }

    /// Destroys every session (node shutdown).
    pub fn destroy_all(&self) {
        let sessions: Vec<_> = std::mem::take(&mut *self.map()).into_values().collect();
        for session in sessions {
            session.hang_up();
        }
    }

    /// Call after a change that may move an expiry (detach, TTL-relevant activity).
    pub fn touch(&self) {
        self.changed.notify_one();
    }

    /// Notices programs' exits until `shutdown`: on every SIGCHLD, each running session checks
    /// its own child (one task for the node instead of a thread per session).
    pub async fn run_child_watcher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut children =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!("cannot watch for exiting shells: {e}");
                    return;
                }
            };
        loop {
            // First for the exits no handler saw (before it was installed, as across an upgrade
            // in place), then once per SIGCHLD.
            self.poll_exits();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                signal = children.recv() => if signal.is_none() { return },
            }
        }
    }

    /// Records the exit of every session's program that has exited (what a SIGCHLD means).
    pub fn poll_exits(&self) {
        for session in self.all() {
            session.poll_exit();
        }
    }

    /// Expires idle sessions until `shutdown`: sleeps until the earliest deadline.
    pub async fn run_reaper(self: Arc<Self>, shutdown: CancellationToken) {
        let ttl = self.config.idle_ttl.0;
        loop {
            let now = now_ms();
            let expired = self.destroy_idle(ttl, now);
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), "expired idle sessions");
            }
            let wait = expiry::next_wake(&self.idleness(), ttl, now);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Names are short, printable and never look like an id flag.
fn validate_name(name: &str) -> Result<(), ErrorReply> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(error(
            ErrorKind::BadRequest,
            format!(
                "'{name}' is not a valid session name; use up to 64 letters, digits and - _ . @ +"
            ),
        ))
    }
}
