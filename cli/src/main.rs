//! `cmdop`: the command-line client. Manages sessions on cmdop nodes and opens live terminals.
//!
//! Layout: [`context`] (config, identity, hosts), [`resolve`] (finding sessions across hosts),
//! one module per command under `cmd/` (arguments and calls), [`output`] (everything printed as
//! data: tables, JSON, metadata, sizes, times), [`localnode`] (starting a node on this
//! machine), [`terminal`] (the interactive terminal).

mod cmd;
mod context;
mod escapes;
mod localnode;
mod output;
mod resolve;
mod terminal;

use clap::{CommandFactory as _, Parser, Subcommand};
use std::process::ExitCode;

/// cmdop: remote terminals that survive network changes, with sessions that outlive the client.
///
/// Hosts run cmdop-node; this client reaches them over QUIC. The built-in host 'local' is the
/// node on this machine, started on demand. State lives in $CMDOP_HOME (default ~/.cmdop).
#[derive(Debug, Parser)]
#[command(name = "cmdop", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open a live terminal on a host (reuses its most recently detached session), or list hosts.
    Connect(cmd::connect::Args),
    /// Manage sessions: create, list, show, attach, detach, send, save, restore, destroy.
    #[command(subcommand)]
    Session(cmd::session::Command),
    /// Scheduled commands on a host: add, list, show, enable, disable, run, health, history, logs, remove, validate.
    #[command(subcommand)]
    Trigger(cmd::trigger::Command),
    /// Manage known hosts.
    #[command(subcommand)]
    Host(cmd::host::Command),
    /// Print this client's key fingerprint (give it to 'cmdop-node authorize' on a host).
    Id,
    /// Print a shell completion script (host and session names too in bash, zsh and fish).
    Completions(cmdop_dist::CompletionsArgs),
    /// Print the man page, or write one page per command with --dir.
    Man(cmdop_dist::ManArgs),
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`cmdop session list | head`).
    // SAFETY: signal() with SIG_DFL installs no handler; it runs before any other thread
    // starts, so nothing races with it. (rustix has no safe call for this.)
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|arg| arg == cmd::complete::SUBCOMMAND)
    {
        return cmd::complete::run(Cli::command(), &args[2..]);
    }
    let cli = Cli::parse();
    if let Some(code) = run_offline(&cli.command) {
        return code;
    }
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cmdop: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let context = context::Context::load()?;
        let result = match cli.command {
            Command::Connect(args) => cmd::connect::run(args, &context).await,
            Command::Session(command) => cmd::session::run(command, &context).await,
            Command::Trigger(command) => cmd::trigger::run(command, &context).await,
            Command::Host(command) => cmd::host::run(command, &context).await,
            Command::Id => {
                println!("{}", context.identity()?.fingerprint());
                Ok(ExitCode::SUCCESS)
            }
            // Handled before the runtime starts.
            Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS),
        };
        context.finish().await;
        result
    });
    // Do not wait for background tasks (e.g. a stdin reader) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit_code(result)
}

/// The live terminal runs on one thread: a keystroke read on the runtime (stdin can be polled
/// almost always) then never waits for another thread to wake, and its output goes through the
/// runtime, so a terminal that stops reading stalls nothing else. Other commands print with
/// blocking writes (a pager may hold them up for minutes), so their connection's keep-alives
/// run on a worker thread of their own.
fn runtime_for(command: &Command) -> tokio::runtime::Builder {
    match command {
        Command::Connect(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    }
}

/// Runs the commands that need neither the config nor the runtime.
fn run_offline(command: &Command) -> Option<ExitCode> {
    let result = match command {
        Command::Completions(args) => cmd::completions::run(Cli::command(), args),
        Command::Man(args) => cmdop_dist::run_man(Cli::command(), args),
        _ => return None,
    };
    Some(exit_code(result.map(|()| ExitCode::SUCCESS)))
}

/// The exit code of a command's `result`, after printing its error if any.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cmdop: {}", output::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_starts_with_a_dash_is_a_value() {
        let cli = Cli::try_parse_from(["cmdop", "host", "add", "box", "h:1", "--token", "-Xy_z"])
            .expect("parses");
        let Command::Host(cmd::host::Command::Add { token, .. }) = cli.command else {
            panic!("not host add: {cli:?}");
        };
        assert_eq!(token.as_deref(), Some("-Xy_z"));
    }
}
