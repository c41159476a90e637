//! `cmdop connect`: a live terminal on a host, or (`--list`) every known host with its status.

use crate::context::Context;
use crate::output::print_host_status;
use crate::resolve::{find_session, probe_hosts};
use crate::terminal::AttachOptions;
use anyhow::{anyhow, bail};
use cmdop_client::dial::{ClientError, Dialer, NodeClient};
use cmdop_proto::config::Predict;
use cmdop_proto::{AttachMode, CreateSession, ListSessions, Punch, SessionInfo, SessionState};
use std::process::ExitCode;
use std::sync::Arc;
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
    /// Show keystrokes before the node echoes them: adaptive (on slow links, the default from
    /// client.predict in config.yaml), always, or never.
    #[arg(long, value_name = "MODE")]
    predict: Option<Predict>,
}

/// Runs `cmdop connect`.
pub async fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    if args.list {
        return list(context).await;
    }
    let Some(host) = &args.host else {
        bail!("give a host, or --list")
    };
    let target = context.target(host)?;
    let session = match &args.session {
        Some(query) => Some(find_session(context, query, Some(host)).await?.session),
        None => None,
    };
    let mut client = context.connect(&target).await?;
    let session = match session {
        Some(session) => session,
        None => reuse_or_create(&mut client, &args).await?,
    };
    let options = AttachOptions {
        mode: if args.read_only {
            AttachMode::ReadOnly
        } else {
            AttachMode::Interactive
        },
        takeover: args.takeover,
        predict: args.predict.unwrap_or(context.config.client.predict),
    };
    crate::terminal::run(context, client, session, options).await
}

/// The most recently active detached session (with the name asked for, if any), unless
/// `--new`; else a new session.
async fn reuse_or_create(client: &mut NodeClient, args: &Args) -> anyhow::Result<SessionInfo> {
    if !args.new {
        let reusable = client
            .call(ListSessions)
            .await?
            .into_iter()
            .filter(|s| !s.attached && s.state == SessionState::Running)
            .filter(|s| args.name.is_none() || s.name == args.name)
            .max_by_key(|s| s.last_active_ms);
        if let Some(session) = reusable {
            return Ok(session);
        }
    }
    let create = CreateSession {
        name: args.name.clone(),
        size: crate::terminal::window_size().unwrap_or_default(),
        term: std::env::var("TERM").ok(),
        ..CreateSession::default()
    };
    client
        .call(create)
        .await
        .map_err(|e| anyhow!("Cannot create session: {e}"))
}

/// A probed host's round trip and name; a relayed one is tried directly too, as a live
/// terminal would, and says which way it answered.
async fn answer_of(
    dialer: Arc<Dialer>,
    mut client: NodeClient,
    timeout: Duration,
) -> Result<(Duration, String), ClientError> {
    let rtt = client.connection.rtt();
    let host = client.host.clone();
    let punch_to = client.punch_to;
    let direct = match punch_to {
        Some(seen) if client.call(Punch).await.is_ok() => {
            let punch = dialer.punch(&client.target, seen, rtt);
            tokio::time::timeout(timeout, punch).await.ok().flatten()
        }
        _ => None,
    };
    let relayed = client.target.via.is_some();
    client.close().await;
    Ok(match direct {
        Some(direct) => {
            let rtt = direct.connection.rtt();
            direct.close().await;
            (rtt, format!("{host}, direct after hole punching"))
        }
        None if relayed => (rtt, format!("{host}, relayed")),
        None => (rtt, host),
    })
}

/// Prints every known host with its status, probing them in parallel.
async fn list(context: &Context) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(1500).min(context.config.client.connect_timeout.0);
    let dialer = context.dialer()?;
    let answer = move |client| answer_of(dialer.clone(), client, timeout);
    let hosts = probe_hosts(context, context.targets(), timeout, answer).await;
    print_host_status(hosts);
    Ok(ExitCode::SUCCESS)
}
