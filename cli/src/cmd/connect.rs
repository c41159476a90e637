//! `cmdop connect`: a live terminal on a host, or (`--list`) every known host with its status.

use crate::context::Context;
use crate::resolve::{find_session, futures_join_all};
use crate::table::print_table;
use crate::terminal::AttachOptions;
use anyhow::bail;
use cmdop_node::proto::{AttachMode, CreateSession, Reply, Request, SessionState};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host ('local' for this machine; its node is started if none runs).
    #[arg(required_unless_present = "list")]
    host: Option<String>,
    /// List known hosts with online/offline and round-trip time.
    #[arg(long, conflicts_with_all = ["new", "session"])]
    list: bool,
    /// Always create a new session.
    #[arg(long, conflicts_with = "session")]
    new: bool,
    /// Attach to this session (id, id prefix or name) instead of the most recently detached.
    #[arg(long)]
    session: Option<String>,
    /// Name for a new session.
    #[arg(long)]
    name: Option<String>,
    /// Force-detach the client that holds the session's input.
    #[arg(long)]
    takeover: bool,
    /// Watch without typing or resizing.
    #[arg(long, conflicts_with = "takeover")]
    read_only: bool,
}

pub async fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    if args.list {
        return list(context).await;
    }
    let Some(host) = args.host else {
        bail!("give a host, or --list")
    };
    let target = context.target(&host)?;
    let session = match &args.session {
        Some(query) => Some(find_session(context, query, Some(&host)).await?.session),
        None => None,
    };
    let mut client = context.connect(&target).await?;
    let session = match session {
        Some(session) => session,
        None => {
            let reusable = if args.new {
                None
            } else {
                match client.request(&Request::List).await? {
                    Reply::Sessions(sessions) => sessions
                        .into_iter()
                        .filter(|s| !s.attached && s.state == SessionState::Running)
                        .filter(|s| args.name.is_none() || s.name == args.name)
                        .max_by_key(|s| s.last_active_ms),
                    _ => None,
                }
            };
            match reusable {
                Some(session) => session,
                None => {
                    let request = Request::Create(CreateSession {
                        name: args.name.clone(),
                        size: crate::terminal::window_size().unwrap_or_default(),
                        term: std::env::var("TERM").ok(),
                        ..CreateSession::default()
                    });
                    match client.request(&request).await? {
                        Reply::Session(session) => session,
                        Reply::Error(e) => bail!("Cannot create session: {}", e.message),
                        other => bail!("unexpected reply from the node: {other:?}"),
                    }
                }
            }
        }
    };
    let options = AttachOptions {
        mode: if args.read_only {
            AttachMode::ReadOnly
        } else {
            AttachMode::Interactive
        },
        takeover: args.takeover,
    };
    crate::terminal::run(context, client, session, options).await
}

async fn list(context: &Context) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(1500).min(context.config.client.connect_timeout.0);
    let probes = context.targets().into_iter().map(|target| async move {
        let result = context.probe(&target, timeout).await;
        (target, result)
    });
    let mut rows = Vec::new();
    for (target, result) in futures_join_all(probes).await {
        let (status, rtt, note) = match result {
            Ok(client) => {
                let rtt = client.connection.rtt();
                let host = client.host.clone();
                client.close().await;
                (
                    "online".to_string(),
                    format!("{:.1} ms", rtt.as_secs_f64() * 1000.0),
                    host,
                )
            }
            Err(cmdop_node::client::ClientError::Offline { .. }) => {
                ("offline".into(), "-".into(), "no answer".into())
            }
            Err(e) => ("error".into(), "-".into(), e.to_string()),
        };
        rows.push(vec![target.name, target.addr, status, rtt, note]);
    }
    print_table(&["NAME", "ADDRESS", "STATUS", "RTT", "NODE"], &rows);
    Ok(ExitCode::SUCCESS)
}
