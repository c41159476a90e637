//! `cmdop session …`: create, list, show, attach, detach, send, save, restore, migrate,
//! destroy. This module holds the arguments; each group of commands has its own file:
//! [`list`], [`show`] (show, attach, detach), [`lifecycle`] (create, send, destroy),
//! [`snapshot`] (save, restore) and [`migrate`].

mod lifecycle;
mod list;
mod migrate;
mod show;
mod snapshot;

use crate::context::{Context, LOCAL_HOST};
use anyhow::anyhow;
use clap::Subcommand;
use cmdop_client::dial::ClientError;
use cmdop_proto::units::HumanDuration;
use std::path::PathBuf;
use std::process::ExitCode;

/// The `cmdop session` subcommands.
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
        /// Print what is on the session's screen now, as text (instead of the metadata).
        #[arg(long, conflicts_with = "tail")]
        screen: bool,
        /// With --screen: keep colours and attributes (ANSI escape sequences).
        #[arg(long, requires = "screen")]
        ansi: bool,
        /// Look only on this host.
        #[arg(long)]
        host: Option<String>,
        /// Machine-readable output (with --screen: rows, cursor and the alternate-screen flag).
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

/// Runs a `cmdop session` subcommand.
pub async fn run(command: Command, context: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create { host, name } => lifecycle::create(context, &host, name).await,
        Command::List { host, json } => list::list(context, host, json).await,
        Command::Show {
            session,
            tail,
            screen,
            ansi,
            host,
            json,
        } => {
            let view = show::View {
                tail,
                screen,
                ansi,
                json,
            };
            show::show(context, &session, view, host).await
        }
        Command::Attach {
            session,
            interactive,
            takeover,
            read_only,
            host,
        } => {
            let mode = if read_only {
                cmdop_proto::AttachMode::ReadOnly
            } else {
                cmdop_proto::AttachMode::Interactive
            };
            let predict = context.config.client.predict;
            let options = interactive.then_some(crate::terminal::AttachOptions {
                mode,
                takeover,
                predict,
            });
            show::attach(context, &session, host, options).await
        }
        Command::Detach { session, host } => show::detach(context, &session, host).await,
        Command::Send {
            session,
            text,
            host,
        } => lifecycle::send(context, &session, &text, host).await,
        Command::Save {
            session,
            to,
            lines,
            host,
        } => snapshot::save(context, &session, &to, lines, host).await,
        Command::Restore { from, host, name } => {
            snapshot::restore(context, &from, host, name).await
        }
        Command::Migrate {
            session,
            to,
            name,
            host,
        } => migrate::migrate(context, &session, &to, name, host).await,
        Command::Destroy {
            session: Some(session),
            host,
            ..
        } => lifecycle::destroy(context, &session, host).await,
        Command::Destroy {
            session: None,
            idle,
            host,
        } => {
            let idle = idle.ok_or_else(|| anyhow!("give a session or --idle DURATION"))?;
            lifecycle::destroy_idle(context, idle, host).await
        }
    }
}

/// The hosts a command covers: `host` if given, else every known host.
fn targets(
    context: &Context,
    host: Option<&str>,
) -> anyhow::Result<Vec<cmdop_client::dial::Target>> {
    Ok(match host {
        Some(name) => vec![context.target(name)?],
        None => context.targets(),
    })
}

/// Whether `error` only says that no local node runs (its port is free), which is not worth
/// a warning unless the user asked for that host.
fn no_local_node(error: &ClientError, target_name: &str, host_asked: bool) -> bool {
    matches!(error, ClientError::Offline { timeout, .. } if timeout.is_zero())
        && !host_asked
        && target_name == LOCAL_HOST
}
