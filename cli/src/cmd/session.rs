//! `cmdop session …`: create, list, show, attach, detach, send, destroy.

use crate::context::Context;
use crate::resolve::{find_session, list_hosts};
use crate::table::{ago, print_table, rfc3339, short_ids};
use anyhow::{anyhow, bail};
use clap::Subcommand;
use cmdop_node::proto::{CreateSession, Reply, Request, SessionInfo, SessionState, WinSize};
use cmdop_node::units::HumanDuration;
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
            Err(cmdop_node::client::ClientError::Offline { .. })
                if host.is_none() && listing.target.name == crate::context::LOCAL_HOST => {}
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
            Err(cmdop_node::client::ClientError::Offline { .. })
                if host.is_none() && target.name == crate::context::LOCAL_HOST =>
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
