//! `cmdop-node`: the daemon that owns this host's sessions, plus its trust commands.

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use cmdop_certs::{AuthorizedClients, Fingerprint, Identity, Invites};
use cmdop_client::home::{cmdop_home, NODE_IDENTITY};
use cmdop_node::os::NativePty;
use cmdop_node::server::{Node, NodeOptions};
use cmdop_proto::units::HumanDuration;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The cmdop node daemon: owns this host's terminal sessions and serves them over QUIC.
///
/// Without a subcommand it runs in the foreground, logging to stderr (level from RUST_LOG,
/// default info). State lives in $CMDOP_HOME (default ~/.cmdop); settings in
/// $CMDOP_HOME/config.yaml. SIGINT or SIGTERM shut it down cleanly.
#[derive(Debug, Parser)]
#[command(name = "cmdop-node", version, about, long_about)]
struct Cli {
    /// UDP address to listen on [default: node.listen in config.yaml, else 0.0.0.0:7443].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node in the foreground (the default).
    Run,
    /// Print this node's key fingerprint (clients pin it on first connect).
    Id,
    /// Authorize a client key, effective at once for new connections.
    Authorize {
        /// The fingerprint the client's 'cmdop id' prints (SHA256:...).
        fingerprint: String,
        /// A note to remember the client by.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Revoke a client key: refused from now on.
    Revoke {
        /// The fingerprint to revoke.
        fingerprint: String,
    },
    /// Print a one-time invite token for 'cmdop host add NAME ADDR --token TOKEN'.
    Invite {
        /// How long the token stays valid.
        #[arg(long, default_value = "24h")]
        valid: HumanDuration,
    },
    /// List the authorized client keys.
    Clients,
    /// Print a shell completion script.
    Completions(cmdop_dist::CompletionsArgs),
    /// Print the man page, or write one page per command with --dir.
    Man(cmdop_dist::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cmdop-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_fingerprint(text: &str) -> anyhow::Result<Fingerprint> {
    Ok(text.parse::<Fingerprint>()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cmdop_home();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(home, cli.listen),
        Command::Id => {
            let identity = Identity::load_or_create(&home, NODE_IDENTITY)?;
            println!("{}", identity.fingerprint());
            Ok(())
        }
        Command::Authorize {
            fingerprint,
            comment,
        } => {
            let fingerprint = parse_fingerprint(&fingerprint)?;
            cmdop_certs::files::ensure_private_dir(&home)?;
            let added = AuthorizedClients::new(&home).authorize(&fingerprint, &comment)?;
            if added {
                println!("authorized {fingerprint}");
            } else {
                println!("{fingerprint} was already authorized");
            }
            Ok(())
        }
        Command::Revoke { fingerprint } => {
            let fingerprint = parse_fingerprint(&fingerprint)?;
            cmdop_certs::files::ensure_private_dir(&home)?;
            AuthorizedClients::new(&home).revoke(&fingerprint)?;
            match close_revoked_connections(&home, &fingerprint) {
                Ok(closed) => println!("revoked {fingerprint}; new connections are refused and {closed} live connections were closed"),
                Err(e) => println!("revoked {fingerprint}; new connections are refused (no running node was told to close live ones: {e})"),
            }
            Ok(())
        }
        Command::Invite { valid } => {
            cmdop_certs::files::ensure_private_dir(&home)?;
            let now = cmdop_node::session::now_ms() / 1000;
            let token = Invites::new(&home).issue(now, now + valid.0.as_secs())?;
            println!("{token}");
            eprintln!("one-time token, valid for {valid}: on the client run 'cmdop host add NAME ADDR --token {token}'");
            Ok(())
        }
        Command::Completions(args) => cmdop_dist::run_completions(Cli::command(), &args),
        Command::Man(args) => cmdop_dist::run_man(Cli::command(), &args),
        Command::Clients => {
            for fingerprint in AuthorizedClients::new(&home).list()? {
                println!("{fingerprint}");
            }
            Ok(())
        }
    }
}

/// Secrets live in `home`: create it 0700, and take group and other access away if an existing
/// one has it.
fn tighten_home(home: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    cmdop_certs::files::ensure_private_dir(home)?;
    let mode = std::fs::metadata(home)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(home = %home.display(), "state directory was open to other users; setting it to 0700");
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "cannot make {} private (chmod 700 it and start again)",
                    home.display()
                )
            },
        )?;
    }
    Ok(())
}

/// Asks the node running from `home` to close the live connections of a revoked key.
fn close_revoked_connections(
    home: &std::path::Path,
    fingerprint: &Fingerprint,
) -> anyhow::Result<u32> {
    use cmdop_client::dial::{Dialer, Target};
    let config = cmdop_client::home::load_config(home)?;
    let port = config.node.listen.port();
    let identity = Arc::new(Identity::load_or_create(
        home,
        cmdop_client::home::CLIENT_IDENTITY,
    )?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dialer = Dialer::new(
            identity,
            home.join("known_nodes"),
            std::time::Duration::from_secs(2),
        )?;
        let target = Target {
            name: "this node".into(),
            addr: format!("127.0.0.1:{port}"),
        };
        let mut client = dialer.connect(&target, None).await?;
        let reply = client
            .call(cmdop_proto::Revoke {
                fingerprint: fingerprint.clone(),
            })
            .await;
        client.close().await;
        Ok(reply?)
    })
}

fn serve(home: std::path::PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cmdop_client::home::load_config(&home)?;
    tighten_home(&home)?;
    let listen = match listen {
        Some(listen) => listen,
        // Config::parse accepts only an IP address for node.listen.
        None => config.node.listen.socket_addr().with_context(|| {
            format!(
                "node.listen '{}' in config.yaml is not an IP address",
                config.node.listen
            )
        })?,
    };
    // One thread serves every session, as tmux's server does: a keystroke wakes one thread,
    // not one per hop. A screen caught up from a long backlog goes to tokio's blocking pool;
    // what stays on this thread must stay short (a fork for a new session, a bounded parse).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node = Node::bind(NodeOptions { home: home.clone(), listen, config }, Arc::new(NativePty))?;
        let addr = node.local_addr()?;
        tracing::info!(%addr, fingerprint = %node.identity.fingerprint(), home = %home.display(), "cmdop-node listening");
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut usr2)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::user_defined2()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    // nginx's upgrade signal: without a handler it would end every session.
                    _ = usr2.recv() => tracing::warn!("SIGUSR2 asks for an upgrade in place, which this node cannot do yet; ignored (restarting the node ends its sessions)"),
                }
            }
            signals.cancel();
        });
        node.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })
}
