//! `cmdop session …`: create, list, show, attach, detach, send, save, restore, migrate,
//! destroy.

use crate::context::Context;
use crate::resolve::{find_session, list_hosts};
use crate::table::{ago, print_table, rfc3339, short_ids};
use anyhow::{anyhow, bail};
use clap::Subcommand;
use cmdop_node::proto::{CreateSession, Reply, Request, SessionInfo, SessionState, WinSize};
use cmdop_node::snapshot::Snapshot;
use cmdop_node::units::HumanDuration;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a session on a host without attaching to it.
    Create {
        /// The host ('local' for this machine).
        host: String,
        /// A name, unique on that host, to refer to the session by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List sessions on every known host (unreachable hosts are reported, not fatal).
    List {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Machine-readable output (format documented in README.md).
        #[arg(long)]
        json: bool,
    },
    /// Show a session's metadata and, with --tail, its recent scrollback, without attaching.
    Show {
        /// Session id, unique id prefix, or name.
        session: String,
        /// Also print the last N lines of scrollback.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Mark a session attached and print its metadata; with --interactive, open its live terminal.
    Attach {
        /// Session id, unique id prefix, or name.
        session: String,
        /// Open the live terminal (Ctrl+D detaches).
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Force-detach the client that holds the session's input.
        #[arg(long, requires = "interactive")]
        takeover: bool,
        /// Watch without typing or resizing.
        #[arg(long, requires = "interactive", conflicts_with = "takeover")]
        read_only: bool,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Clear a session's attached mark.
    Detach {
        /// Session id, unique id prefix, or name.
        session: String,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Type text into a session, like tmux send-keys (escapes: \n \r \t \e \\ \xNN).
    Send {
        /// Session id, unique id prefix, or name.
        session: String,
        /// The text; "\n" presses Enter.
        text: String,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Save a session's scrollback and metadata to a JSON file (processes are not saved).
    ///
    /// The file (mode 0600) holds the last N lines of scrollback, the name, working directory, environment,
    /// window size, host and node key. Running processes are not saved: a restored session
    /// starts a new shell.
    Save {
        /// Session id, unique id prefix, or name.
        session: String,
        /// The snapshot file to write.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Lines of scrollback to keep [default: client.save_lines in config.yaml].
        #[arg(long, value_name = "N")]
        lines: Option<u32>,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Create a session from a snapshot: old scrollback, then a new shell (processes do not move).
    ///
    /// The new session starts in the saved working directory with the saved size and
    /// environment, under the saved name. Processes do not move: the shell is a new one, and
    /// programs that ran in the saved session are not running in the restored one.
    Restore {
        /// The snapshot file ('cmdop session save' writes one).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The host to restore on [default: the host the snapshot was saved on].
        #[arg(long)]
        host: Option<String>,
        /// A name instead of the saved one (e.g. when it is taken there).
        #[arg(long)]
        name: Option<String>,
    },
    /// Move a session's scrollback and metadata to another host (processes do not move).
    ///
    /// The original is destroyed once the target has it. The source node dials the target directly with its own key, checked against the key this
    /// client pinned for the target; the target admits it with a one-time ticket this client
    /// fetches. Scrollback, name, working directory, environment and size move. Processes do
    /// not: the running shell and its programs end, and the target starts a new shell. On any
    /// failure the session stays where it was.
    Migrate {
        /// Session id, unique id prefix, or name.
        session: String,
        /// The host to move it to.
        #[arg(long, value_name = "HOST")]
        to: String,
        /// A name on the target instead of the current one.
        #[arg(long)]
        name: Option<String>,
        /// Look for the session only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Destroy a session (hangs up its processes, drops its scrollback), or all idle ones.
    Destroy {
        /// Session id, unique id prefix, or name.
        #[arg(required_unless_present = "idle", conflicts_with = "idle")]
        session: Option<String>,
        /// Destroy every session unattached and idle for longer than this (e.g. 24h).
        #[arg(long, value_name = "DURATION")]
        idle: Option<HumanDuration>,
        /// Only on this host.
        #[arg(long)]
        host: Option<String>,
    },
}

pub async fn run(command: Command, context: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create { host, name } => {
            let target = context.target(&host)?;
            let mut client = context
                .connect(&target)
                .await
                .map_err(|e| anyhow!("Cannot create session: {e:#}"))?;
            let request = Request::Create(CreateSession {
                name,
                size: crate::terminal::window_size().unwrap_or_default(),
                ..CreateSession::default()
            });
            let session = expect_session(client.request(&request).await?)?;
            client.close().await;
            println!(
                "created session {}{} on {}",
                session.id,
                label(&session),
                target.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { host, json } => list(context, host, json).await,
        Command::Show {
            session,
            tail,
            host,
            json,
        } => {
            let found = find_session(context, &session, host.as_deref()).await?;
            let mut client = context.connect(&found.target).await?;
            let reply = client
                .request(&Request::Show {
                    session: found.session.id,
                    tail,
                })
                .await?;
            client.close().await;
            let (info, scrollback) = match reply {
                Reply::Shown { session, tail } => (session, tail),
                Reply::Error(e) => bail!("{}", e.message),
                other => bail!("unexpected reply from the node: {other:?}"),
            };
            if json {
                let mut value = session_json(&found.target.name, &info);
                if tail.is_some() {
                    value["tail"] = serde_json::Value::String(
                        String::from_utf8_lossy(&scrollback).into_owned(),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_metadata(&found.target.name, &info);
                if tail.is_some() {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "--- last {} lines ---", tail.unwrap_or(0))?;
                    out.write_all(&scrollback)?;
                    if !scrollback.ends_with(b"\n") && !scrollback.is_empty() {
                        writeln!(out)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach {
            session,
            interactive,
            takeover,
            read_only,
            host,
        } => {
            let found = find_session(context, &session, host.as_deref()).await?;
            let mut client = context.connect(&found.target).await?;
            if interactive {
                let options = crate::terminal::AttachOptions {
                    mode: if read_only {
                        cmdop_node::proto::AttachMode::ReadOnly
                    } else {
                        cmdop_node::proto::AttachMode::Interactive
                    },
                    takeover,
                };
                return crate::terminal::run(context, client, found.session, options).await;
            }
            let info = expect_session(
                client
                    .request(&Request::Attach {
                        session: found.session.id,
                    })
                    .await?,
            )?;
            client.close().await;
            print_metadata(&found.target.name, &info);
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { session, host } => {
            let found = find_session(context, &session, host.as_deref()).await?;
            let mut client = context.connect(&found.target).await?;
            let info = expect_session(
                client
                    .request(&Request::Detach {
                        session: found.session.id,
                    })
                    .await?,
            )?;
            client.close().await;
            println!(
                "detached session {}{} on {}",
                info.id,
                label(&info),
                found.target.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            session,
            text,
            host,
        } => {
            let data = crate::escapes::unescape(&text).map_err(|e| anyhow!("cannot send: {e}"))?;
            let found = find_session(context, &session, host.as_deref()).await?;
            let mut client = context.connect(&found.target).await?;
            match client
                .request(&Request::Send {
                    session: found.session.id,
                    data,
                })
                .await?
            {
                Reply::Done => {}
                Reply::Error(e) => bail!("{}", e.message),
                other => bail!("unexpected reply from the node: {other:?}"),
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Destroy {
            session: Some(session),
            host,
            ..
        } => {
            let found = find_session(context, &session, host.as_deref()).await?;
            let mut client = context.connect(&found.target).await?;
            match client
                .request(&Request::Destroy {
                    session: found.session.id,
                })
                .await?
            {
                Reply::Destroyed(_) => {}
                Reply::Error(e) => bail!("{}", e.message),
                other => bail!("unexpected reply from the node: {other:?}"),
            }
            client.close().await;
            println!(
                "destroyed session {}{} on {}",
                found.session.id,
                label(&found.session),
                found.target.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Save {
            session,
            to,
            lines,
            host,
        } => save(context, &session, &to, lines, host).await,
        Command::Restore { from, host, name } => restore(context, &from, host, name).await,
        Command::Migrate {
            session,
            to,
            name,
            host,
        } => migrate(context, &session, &to, name, host).await,
        Command::Destroy {
            session: None,
            idle,
            host,
        } => {
            let idle = idle.ok_or_else(|| anyhow!("give a session or --idle DURATION"))?;
            destroy_idle(context, idle, host).await
        }
    }
}

fn expect_session(reply: Reply) -> anyhow::Result<SessionInfo> {
    match reply {
        Reply::Session(info) => Ok(info),
        Reply::Error(e) => bail!("{}", e.message),
        other => bail!("unexpected reply from the node: {other:?}"),
    }
}

fn label(session: &SessionInfo) -> String {
    session
        .name
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}

fn state_text(state: SessionState) -> String {
    match state {
        SessionState::Running => "running".into(),
        SessionState::Exited { code } => format!("exited ({code})"),
    }
}

fn print_metadata(host: &str, info: &SessionInfo) {
    let rows = [
        ("id", info.id.to_string()),
        ("name", info.name.clone().unwrap_or_else(|| "-".into())),
        ("host", format!("{host} ({})", info.host)),
        ("state", state_text(info.state)),
        ("attached", if info.attached { "yes" } else { "no" }.into()),
        ("shell", info.shell.clone()),
        ("cwd", info.cwd.clone()),
        (
            "pid",
            info.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("size", format!("{}x{}", info.size.cols, info.size.rows)),
        (
            "created",
            format!("{} ({})", rfc3339(info.created_ms), ago(info.created_ms)),
        ),
        (
            "last active",
            format!(
                "{} ({})",
                rfc3339(info.last_active_ms),
                ago(info.last_active_ms)
            ),
        ),
        ("output", cmdop_node::units::format_bytes(info.output_bytes)),
    ];
    for (key, value) in rows {
        println!("{:<12} {value}", format!("{key}:"));
    }
}

/// The stable JSON form of a session (documented in README.md).
pub fn session_json(host: &str, info: &SessionInfo) -> serde_json::Value {
    let (state, exit_code) = match info.state {
        SessionState::Running => ("running", None),
        SessionState::Exited { code } => ("exited", Some(code)),
    };
    let WinSize { rows, cols } = info.size;
    serde_json::json!({
        "id": info.id.to_string(),
        "name": info.name,
        "host": host,
        "node_hostname": info.host,
        "state": state,
        "exit_code": exit_code,
        "attached": info.attached,
        "shell": info.shell,
        "cwd": info.cwd,
        "pid": info.pid,
        "rows": rows,
        "cols": cols,
        "created": rfc3339(info.created_ms),
        "last_active": rfc3339(info.last_active_ms),
        "output_bytes": info.output_bytes,
    })
}

async fn list(context: &Context, host: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let targets = match &host {
        Some(name) => vec![context.target(name)?],
        None => context.targets(),
    };
    let listings = list_hosts(context, targets).await;
    let mut sessions = Vec::new();
    let mut offline = Vec::new();
    for listing in listings {
        match listing.result {
            Ok(list) => sessions.extend(list.into_iter().map(|s| (listing.target.name.clone(), s))),
            // Without a local node there is nothing local to list; that is not worth a warning
            // unless the user asked for that host.
            Err(cmdop_node::client::ClientError::Offline { timeout, .. })
                if timeout.is_zero()
                    && host.is_none()
                    && listing.target.name == crate::context::LOCAL_HOST => {}
            Err(e) => offline.push((listing.target.name.clone(), e.to_string())),
        }
    }
    if let (Some(host), Some((_, error))) = (&host, offline.first()) {
        bail!("cannot list sessions on {host}: {error}");
    }
    if json {
        let value = serde_json::json!({
            "sessions": sessions.iter().map(|(host, s)| session_json(host, s)).collect::<Vec<_>>(),
            "unreachable": offline.iter().map(|(host, error)| serde_json::json!({"host": host, "error": error})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        if sessions.is_empty() {
            println!(
                "no sessions (create one with 'cmdop session create HOST' or 'cmdop connect HOST')"
            );
        } else {
            let ids = short_ids(&sessions.iter().map(|(_, s)| s.id).collect::<Vec<_>>());
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .zip(ids)
                .map(|((host, s), id)| {
                    vec![
                        host.clone(),
                        id,
                        s.name.clone().unwrap_or_else(|| "-".into()),
                        state_text(s.state),
                        if s.attached { "yes" } else { "no" }.into(),
                        ago(s.last_active_ms),
                        s.cwd.clone(),
                    ]
                })
                .collect();
            print_table(
                &["HOST", "ID", "NAME", "STATE", "ATTACHED", "ACTIVE", "CWD"],
                &rows,
            );
        }
        for (host, error) in &offline {
            eprintln!("cmdop: {host} unreachable: {error}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn destroy_idle(
    context: &Context,
    idle: HumanDuration,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let targets = match &host {
        Some(name) => vec![context.target(name)?],
        None => context.targets(),
    };
    let idle_ms = u64::try_from(idle.0.as_millis()).unwrap_or(u64::MAX);
    let mut destroyed = 0;
    for target in targets {
        let mut client = match context
            .probe(&target, context.config.client.connect_timeout.0)
            .await
        {
            Ok(client) => client,
            Err(cmdop_node::client::ClientError::Offline { timeout, .. })
                if timeout.is_zero()
                    && host.is_none()
                    && target.name == crate::context::LOCAL_HOST =>
            {
                continue
            }
            Err(e) => {
                eprintln!("cmdop: {} unreachable: {e}", target.name);
                continue;
            }
        };
        match client.request(&Request::DestroyIdle { idle_ms }).await? {
            Reply::Destroyed(ids) => {
                for id in &ids {
                    println!("destroyed session {id} on {}", target.name);
                }
                destroyed += ids.len();
            }
            Reply::Error(e) => eprintln!("cmdop: {}: {}", target.name, e.message),
            other => bail!("unexpected reply from the node: {other:?}"),
        }
        client.close().await;
    }
    if destroyed == 0 {
        println!("no session has been idle for more than {idle}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn save(
    context: &Context,
    query: &str,
    path: &Path,
    lines: Option<u32>,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let found = find_session(context, query, host.as_deref()).await?;
    let mut client = context.connect(&found.target).await?;
    let lines = lines.unwrap_or(context.config.client.save_lines);
    let reply = client
        .request(&Request::Snapshot {
            session: found.session.id,
            lines: Some(lines),
        })
        .await?;
    client.close().await;
    let snapshot = match reply {
        Reply::Snapshot(snapshot) => snapshot,
        Reply::Error(e) => bail!("{}", e.message),
        other => bail!("unexpected reply from the node: {other:?}"),
    };
    cmdop_certs::files::write_atomic(path, snapshot.to_json().as_bytes(), 0o600).map_err(|e| {
        anyhow!(
            "cannot write the snapshot to {}: {e}; check that its directory exists and is writable",
            path.display()
        )
    })?;
    println!(
        "saved session {}{} on {} to {}: {} of scrollback (last {lines} lines at most), cwd {}; processes are not saved",
        found.session.id,
        label(&found.session),
        found.target.name,
        path.display(),
        cmdop_node::units::format_bytes(snapshot.scrollback.len() as u64),
        snapshot.cwd
    );
    Ok(ExitCode::SUCCESS)
}

/// The host a snapshot came from: the known host whose pinned key is the snapshot's node key.
fn snapshot_host(context: &Context, snapshot: &Snapshot) -> Option<cmdop_node::client::Target> {
    let known = cmdop_certs::KnownNodes::load(&context.home.join("known_nodes")).ok()?;
    context.targets().into_iter().find(|target| {
        known
            .pin(&cmdop_node::client::with_default_port(&target.addr))
            .is_some_and(|pin| pin.as_str() == snapshot.node_fingerprint)
    })
}

async fn restore(
    context: &Context,
    path: &Path,
    host: Option<String>,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow!("cannot read the snapshot {shown}: {e}; check the path given to --from")
    })?;
    let snapshot =
        Snapshot::from_json(&bytes).map_err(|e| anyhow!("cannot restore from {shown}: {e}"))?;
    let target = match host {
        Some(host) => context.target(&host)?,
        None => snapshot_host(context, &snapshot).ok_or_else(|| {
            anyhow!(
                "cannot restore from {shown}: it was saved on {} (key {}), which is none of this client's known hosts; choose one with --host",
                snapshot.host,
                snapshot.node_fingerprint
            )
        })?,
    };
    let total = snapshot.scrollback.len() as u64;
    let mut client = context
        .connect(&target)
        .await
        .map_err(|e| anyhow!("Cannot restore session: {e:#}"))?;
    let reply = client.request(&Request::Restore { snapshot, name }).await?;
    client.close().await;
    let (info, dropped) = match reply {
        Reply::Restored { session, dropped } => (session, dropped),
        Reply::Error(e) => bail!("cannot restore from {shown}: {}", e.message),
        other => bail!("unexpected reply from the node: {other:?}"),
    };
    println!(
        "restored session {}{} on {} from {}, in {}; the shell is new (processes do not move)",
        info.id,
        label(&info),
        target.name,
        shown,
        info.cwd
    );
    print_dropped(&target.name, total, dropped);
    Ok(ExitCode::SUCCESS)
}

fn print_dropped(host: &str, total: u64, dropped: u64) {
    use cmdop_node::units::format_bytes;
    if dropped > 0 {
        eprintln!(
            "cmdop: the snapshot's scrollback ({}) is larger than {host}'s ringbuffer: kept the newest {}, dropped the oldest {}",
            format_bytes(total),
            format_bytes(total.saturating_sub(dropped)),
            format_bytes(dropped)
        );
    }
}

async fn migrate(
    context: &Context,
    query: &str,
    to: &str,
    name: Option<String>,
    host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let destination = context.target(to)?;
    let found = find_session(context, query, host.as_deref()).await?;
    let source = &found.target;
    let same = |a: &str, b: &str| {
        cmdop_node::client::with_default_port(a) == cmdop_node::client::with_default_port(b)
    };
    if source.name == destination.name || same(&source.addr, &destination.addr) {
        bail!(
            "session {}{} is already on {}; pick another host with --to",
            found.session.id,
            label(&found.session),
            destination.name
        );
    }
    // The ticket comes from the target over a connection whose key this client has checked
    // against its pin; that key is what the source must find when it dials.
    let mut target_client = context.connect(&destination).await.map_err(|e| {
        anyhow!(
            "Cannot migrate session: {e:#}; the session stays on {}",
            source.name
        )
    })?;
    let fingerprint = target_client.fingerprint.clone();
    let ticket = match target_client.request(&Request::MigrationTicket).await? {
        Reply::Ticket { token, .. } => token,
        Reply::Error(e) => bail!(
            "cannot get a migration ticket from {}: {}; the session stays on {}",
            destination.name,
            e.message,
            source.name
        ),
        other => bail!("unexpected reply from the node: {other:?}"),
    };
    target_client.close().await;
    let mut client = context.connect(source).await?;
    let reply = client
        .request(&Request::Migrate {
            session: found.session.id,
            to_name: destination.name.clone(),
            to_addr: destination.addr.clone(),
            to_fingerprint: fingerprint.to_string(),
            ticket,
            name,
        })
        .await?;
    client.close().await;
    let (info, dropped) = match reply {
        Reply::Migrated { session, dropped } => (session, dropped),
        Reply::Error(e) => bail!("{}", e.message),
        other => bail!("unexpected reply from the node: {other:?}"),
    };
    println!(
        "moved session {}{} from {} to {} as {}, in {}; scrollback, name, cwd, environment and size moved, processes did not (a new shell runs there)",
        found.session.id,
        label(&found.session),
        source.name,
        destination.name,
        info.id,
        info.cwd
    );
    if dropped > 0 {
        eprintln!(
            "cmdop: {}'s ringbuffer is smaller than the session's scrollback: kept the newest part, dropped the oldest {}",
            destination.name,
            cmdop_node::units::format_bytes(dropped)
        );
    }
    Ok(ExitCode::SUCCESS)
}
