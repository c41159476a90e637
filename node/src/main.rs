//! `cmdop-node`: the daemon that owns this host's sessions, plus its trust commands.

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use cmdop_certs::{AuthorizedClients, Fingerprint, Identity, Invites};
use cmdop_client::error::ClientError;
use cmdop_client::home::{cmdop_home, NODE_IDENTITY};
use cmdop_node::os::NativePty;
use cmdop_node::server::{Node, NodeOptions, PROTOCOL_VERSION_ENV};
use cmdop_node::upgrade::reexec::{Handed, NativeReexec};
use cmdop_proto::units::HumanDuration;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The cmdop node daemon: owns this host's terminal sessions and serves them over QUIC.
///
/// Without a subcommand it runs in the foreground, logging to stderr (level from RUST_LOG,
/// default info; release builds log down to debug, not trace). State lives in $CMDOP_HOME
/// (default ~/.cmdop); settings in $CMDOP_HOME/config.yaml. SIGINT or SIGTERM shut it down
/// cleanly; SIGUSR2 upgrades it in place (see 'cmdop-node upgrade').
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
    ///
    /// With --relay, authorize a node key instead (what 'cmdop-node id' prints on a node behind
    /// NAT): that node may register here, and clients then reach it through this node with
    /// 'cmdop host add NAME --via THIS'. Relay node keys are kept in relay_nodes, apart from
    /// the client keys, and may do nothing else.
    Authorize {
        /// The fingerprint the client's 'cmdop id' prints (SHA256:...).
        fingerprint: String,
        /// A note to remember the client by.
        #[arg(long, default_value = "")]
        comment: String,
        /// The key is a node behind NAT that registers here to be relayed to.
        #[arg(long)]
        relay: bool,
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
        /// A token for a node behind NAT to register here (its node.rendezvous 'token:'),
        /// in place of 'authorize --relay'.
        #[arg(long)]
        relay: bool,
    },
    /// List the authorized client keys, then the relay node keys (marked as such).
    Clients,
    /// Print a shell completion script.
    Completions(cmdop_dist::CompletionsArgs),
    /// Print the man page, or write one page per command with --dir.
    Man(cmdop_dist::ManArgs),
    /// Upgrade the running node in place, keeping every session.
    ///
    /// Asks the node running from this CMDOP_HOME to execute the binary now found at the path
    /// it was started from, in the same process: every session keeps its shell, scrollback and
    /// screen, and attached clients reconnect by themselves after a short pause. The new binary
    /// first runs dry; if it fails that, or cannot take the state over, the running version
    /// goes on. Prints the old and new versions and how long the node paused. SIGUSR2 to the
    /// node does the same (the outcome is then only logged). A running node of another
    /// protocol version (it refuses this binary as a client) is sent SIGUSR2 by this command.
    ///
    /// Trigger runs going would not survive the switch, so the upgrade is refused while they
    /// go, unless --wait-for-runs lets the node hold new runs back and wait for them to end.
    Upgrade {
        /// Wait up to this long (e.g. 10m) for trigger runs going to end, holding new runs
        /// back meanwhile, instead of refusing at once. Fires due meanwhile start once the
        /// wait ends; held over a minute, they count as missed, as when the node is down.
        #[arg(long, value_name = "DURATION")]
        wait_for_runs: Option<HumanDuration>,
    },
    /// Dry run of an upgrade in place: read a handed-down state on stdin, print the version.
    #[command(name = "__upgrade-check", hide = true)]
    UpgradeCheck,
}

fn main() -> ExitCode {
    // First, while this is the only thread: what an upgrade in place handed down, if anything.
    let handed = Handed::take();
    let (cli, handed) = match (Cli::try_parse(), handed) {
        (Ok(cli), handed) => (cli, handed),
        (Err(e), Some(handed)) => {
            give_back(
                handed,
                &format!("cannot read the command line it was given: {e}"),
            );
            return ExitCode::FAILURE;
        }
        (Err(e), None) => e.exit(),
    };
    match run(cli, handed) {
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

fn run(cli: Cli, handed: Option<Handed>) -> anyhow::Result<()> {
    let home = cmdop_home();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => match handed {
            Some(handed) => take_over(home, cli.listen, handed),
            None => serve(home, cli.listen, None),
        },
        Command::Upgrade { wait_for_runs } => upgrade(
            &home,
            wait_for_runs.map_or(std::time::Duration::ZERO, |w| w.0),
        ),
        Command::UpgradeCheck => {
            // What a real take-over reads first: the settings, the keys, then the state.
            cmdop_client::home::load_config(&home)?;
            Identity::load_or_create(&home, NODE_IDENTITY)?;
            cmdop_node::upgrade::state::read(std::io::stdin().lock())?;
            println!("cmdop-node {}", cmdop_node::upgrade::VERSION);
            Ok(())
        }
        Command::Id => {
            let identity = Identity::load_or_create(&home, NODE_IDENTITY)?;
            println!("{}", identity.fingerprint());
            Ok(())
        }
        Command::Authorize {
            fingerprint,
            comment,
            relay,
        } => {
            let fingerprint = parse_fingerprint(&fingerprint)?;
            cmdop_certs::files::ensure_private_dir(&home)?;
            let (list, what) = match relay {
                true => (AuthorizedClients::relay_nodes(&home), "relay node "),
                false => (AuthorizedClients::new(&home), ""),
            };
            if list.authorize(&fingerprint, &comment)? {
                println!("authorized {what}{fingerprint}");
            } else {
                println!("{what}{fingerprint} was already authorized");
            }
            Ok(())
        }
        Command::Revoke { fingerprint } => {
            let fingerprint = parse_fingerprint(&fingerprint)?;
            cmdop_certs::files::ensure_private_dir(&home)?;
            AuthorizedClients::new(&home).revoke(&fingerprint)?;
            AuthorizedClients::relay_nodes(&home).revoke(&fingerprint)?;
            match close_revoked_connections(&home, &fingerprint) {
                Ok(closed) => println!("revoked {fingerprint}; new connections are refused and {closed} live connections were closed"),
                Err(e) => println!("revoked {fingerprint}; new connections are refused (no running node was told to close live ones: {e})"),
            }
            Ok(())
        }
        Command::Invite { valid, relay } => {
            cmdop_certs::files::ensure_private_dir(&home)?;
            let now = cmdop_node::session::now_ms() / 1000;
            let invites = match relay {
                true => Invites::relay(&home),
                false => Invites::new(&home),
            };
            let token = invites.issue(now, now + valid.0.as_secs())?;
            println!("{token}");
            match relay {
                true => eprintln!("one-time token, valid for {valid}: on the node behind NAT add 'token: {token}' to this node's entry in node.rendezvous"),
                false => eprintln!("one-time token, valid for {valid}: on the client run 'cmdop host add NAME ADDR --token {token}'"),
            }
            Ok(())
        }
        Command::Completions(args) => cmdop_dist::run_completions(Cli::command(), &args),
        Command::Man(args) => cmdop_dist::run_man(Cli::command(), &args),
        Command::Clients => {
            for fingerprint in AuthorizedClients::new(&home).list()? {
                println!("{fingerprint}");
            }
            for fingerprint in AuthorizedClients::relay_nodes(&home).list()? {
                println!("{fingerprint} (relay node)");
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
    let request = cmdop_proto::Revoke {
        fingerprint: fingerprint.clone(),
    };
    on_local_node(home, |mut client| async move {
        let reply = client.call(request).await;
        client.close().await;
        Ok(reply?)
    })
}

/// Runs `work` on a connection to the node running from `home`, as its own client.
fn on_local_node<T, F>(
    home: &std::path::Path,
    work: impl FnOnce(cmdop_client::dial::NodeClient) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = dial_local_node(home).await?;
        work(client).await
    })
}

/// A connection to the node running from `home`, as its own client.
async fn dial_local_node(home: &std::path::Path) -> anyhow::Result<cmdop_client::dial::NodeClient> {
    dial_local_node_within(home, std::time::Duration::from_secs(2)).await
}

/// As [`dial_local_node`], giving up after `timeout`.
async fn dial_local_node_within(
    home: &std::path::Path,
    timeout: std::time::Duration,
) -> anyhow::Result<cmdop_client::dial::NodeClient> {
    use cmdop_client::dial::{Dialer, Target};
    let config = cmdop_client::home::load_config(home)?;
    let port = config.node.listen.port();
    let identity = Arc::new(Identity::load_or_create(
        home,
        cmdop_client::home::CLIENT_IDENTITY,
    )?);
    let dialer = Dialer::new(identity, home.join("known_nodes"), timeout)?;
    let target = Target {
        name: "this node".into(),
        addr: format!("127.0.0.1:{port}"),
        via: None,
    };
    Ok(dialer.connect(&target, None).await?)
}

/// Threads of tokio's blocking pool the serving node may use (forks for new sessions, long
/// screen catch-ups, name lookups; they queue behind one another beyond it): a bound, so the
/// node's threads never follow the number of sessions.
const BLOCKING_THREADS: usize = 4;

/// How long `upgrade` waits for the node to serve again.
const UPGRADE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long each attempt to reach the upgraded node may take.
const UPGRADE_POLL: std::time::Duration = std::time::Duration::from_millis(300);

/// `cmdop-node upgrade`: asks the running node to upgrade in place and reports the outcome.
fn upgrade(home: &std::path::Path, wait_for_runs: std::time::Duration) -> anyhow::Result<()> {
    let started = on_local_node(home, |mut client| async move {
        let request = cmdop_proto::Upgrade {
            wait_for_runs_ms: u64::try_from(wait_for_runs.as_millis()).unwrap_or(u64::MAX),
        };
        let plan = say_while_waiting(client.call(request), wait_for_runs)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "upgrading cmdop-node {} to {} ({})...",
            plan.from_version, plan.to_version, plan.exe
        );
        let early = outcome_before_close(&mut client, plan.generation).await;
        Ok((plan, early))
    });
    if let Err(e) = &started {
        if let Some(ClientError::VersionMismatch(why)) = e.downcast_ref::<ClientError>() {
            if !wait_for_runs.is_zero() {
                eprintln!("--wait-for-runs cannot go by signal: a node of another version refuses the upgrade while trigger runs go");
            }
            return upgrade_by_signal(home, why);
        }
    }
    let (plan, early) = started.context("the upgrade did not start")?;
    let outcome = match early {
        Some(outcome) => outcome,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(await_outcome(home, plan.generation))?,
    };
    report_outcome(outcome)
}

/// Awaits `call`, saying what it waits for if that takes a while and runs may be waited for.
async fn say_while_waiting<T>(
    call: impl std::future::Future<Output = T>,
    wait_for_runs: std::time::Duration,
) -> T {
    tokio::pin!(call);
    if wait_for_runs.is_zero() {
        return call.await;
    }
    tokio::select! {
        done = &mut call => return done,
        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    }
    eprintln!(
        "still preparing: waiting up to {} for any trigger runs going to end (new runs are held back)...",
        HumanDuration(wait_for_runs)
    );
    call.await
}

/// Asks a node that speaks another protocol version (it refused this client with `why`) to
/// upgrade by SIGUSR2, and waits until it speaks this version and reports the upgrade.
fn upgrade_by_signal(home: &std::path::Path, why: &str) -> anyhow::Result<()> {
    let port = cmdop_client::home::load_config(home)?.node.listen.port();
    let pid = cmdop_node::upgrade::by_signal::node_on_port(port)
        .with_context(|| format!("cannot look for the node on UDP port {port}"))?
        .with_context(|| format!("{why}; no cmdop-node process of yours holds UDP port {port}: send SIGUSR2 to the node yourself to upgrade it"))?;
    eprintln!("{why}");
    eprintln!("asking cmdop-node (pid {pid}) to upgrade in place by signal...");
    cmdop_node::upgrade::by_signal::ask_to_upgrade(pid).with_context(|| {
        format!("cannot signal cmdop-node (pid {pid}); run 'kill -USR2 {pid}' as its user")
    })?;
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(await_this_version(home, pid))?;
    report_outcome(outcome)
}

/// Asks the node for its last upgrade until it speaks this version (it ran the new binary).
async fn await_this_version(
    home: &std::path::Path,
    pid: i32,
) -> anyhow::Result<cmdop_proto::UpgradeOutcome> {
    let deadline = tokio::time::Instant::now() + UPGRADE_PATIENCE;
    loop {
        if let Ok(mut client) = dial_local_node_within(home, UPGRADE_POLL).await {
            let last = client.call(cmdop_proto::LastUpgrade).await;
            client.close().await;
            if let Ok(Some(outcome)) = last {
                return Ok(outcome);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "cmdop-node (pid {pid}) did not come back speaking protocol {} within {UPGRADE_PATIENCE:?}: it refused the upgrade or the new binary could not take over; its log says why",
                cmdop_proto::PROTOCOL_VERSION
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Prints how an upgrade went; an error if it failed.
fn report_outcome(outcome: cmdop_proto::UpgradeOutcome) -> anyhow::Result<()> {
    match (outcome.error, outcome.paused_ms) {
        (None, _) => {
            let plural = if outcome.sessions == 1 { "" } else { "s" };
            println!(
                "upgraded cmdop-node {} to {}: paused {} ms, {} session{plural} kept",
                outcome.from_version, outcome.to_version, outcome.paused_ms, outcome.sessions
            );
            Ok(())
        }
        (Some(error), 0) => anyhow::bail!(
            "{error}; cmdop-node {} keeps running, nothing was paused",
            outcome.to_version
        ),
        (Some(error), paused_ms) => anyhow::bail!(
            "{error}; cmdop-node {} resumed after {paused_ms} ms with {} sessions",
            outcome.to_version,
            outcome.sessions
        ),
    }
}

/// Waits for the node to close `client`'s connection as it stops serving (None), or to report
/// upgrade `generation` over it (refused before anything stopped).
async fn outcome_before_close(
    client: &mut cmdop_client::dial::NodeClient,
    generation: u64,
) -> Option<cmdop_proto::UpgradeOutcome> {
    let deadline = tokio::time::Instant::now() + UPGRADE_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        match client.call(cmdop_proto::LastUpgrade).await {
            Ok(Some(outcome)) if outcome.generation >= generation => return Some(outcome),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Asks the node for its last upgrade until it reports upgrade `generation`.
async fn await_outcome(
    home: &std::path::Path,
    generation: u64,
) -> anyhow::Result<cmdop_proto::UpgradeOutcome> {
    let deadline = tokio::time::Instant::now() + UPGRADE_PATIENCE;
    // The node closed the connection a few milliseconds before it executes the new binary.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    loop {
        // A dial that reached the old process just before it executed the new binary is lost
        // with it: try again soon rather than wait for QUIC to resend.
        if let Ok(mut client) = dial_local_node_within(home, UPGRADE_POLL).await {
            let last = client.call(cmdop_proto::LastUpgrade).await;
            client.close().await;
            if let Ok(Some(outcome)) = last {
                if outcome.generation >= generation {
                    return Ok(outcome);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the node did not report the upgrade within {UPGRADE_PATIENCE:?}; look at its log"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The message version to serve: [`cmdop_proto::PROTOCOL_VERSION`] unless a test stands this
/// node in for an older binary ([`PROTOCOL_VERSION_ENV`]).
fn protocol_version() -> anyhow::Result<u32> {
    match std::env::var(PROTOCOL_VERSION_ENV) {
        Err(_) => Ok(cmdop_proto::PROTOCOL_VERSION),
        Ok(text) => text.trim().parse().with_context(|| {
            format!("{PROTOCOL_VERSION_ENV}='{text}' is not a protocol version; unset it")
        }),
    }
}

fn serve(
    home: std::path::PathBuf,
    listen: Option<SocketAddr>,
    handed: Option<TakeOver>,
) -> anyhow::Result<()> {
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
    let exe = handed.as_ref().and_then(|h| h.exe.clone());
    let options = NodeOptions {
        home: home.clone(),
        listen,
        config,
        reexec: Arc::new(NativeReexec::from_process(exe)),
        protocol_version: protocol_version()?,
    };
    // One thread serves every session, as tmux's server does: a keystroke wakes one thread,
    // not one per hop. A new session's fork and a screen caught up from a long backlog go to
    // tokio's blocking pool (a few threads at most, whatever the number of sessions); what
    // stays on this thread must stay short (a bounded parse).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node = match handed {
            Some(handed) => {
                let node =
                    Node::resume(options, Arc::new(NativePty), handed.state, handed.failure)?;
                // Serving: from here on a failure is a crash like any other.
                drop(TAKING_OVER.lock().unwrap_or_else(|p| p.into_inner()).take());
                node
            }
            None => Node::bind(options, Arc::new(NativePty))?,
        };
        let addr = node.local_addr()?;
        tracing::info!(%addr, fingerprint = %node.identity.fingerprint(), home = %home.display(), "cmdop-node listening");
        let shutdown = CancellationToken::new();
        tokio::spawn(handle_signals(node.clone(), shutdown.clone()));
        node.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })
}

/// What a binary started by an upgrade in place read, ready to rebuild the node from.
struct TakeOver {
    state: cmdop_node::upgrade::state::NodeState,
    failure: Option<String>,
    exe: Option<std::path::PathBuf>,
}

/// The way back to the binary that handed the state down, until the node serves again.
static TAKING_OVER: std::sync::Mutex<Option<Handed>> = std::sync::Mutex::new(None);

/// Rebuilds the node from what an upgrade in place handed down. Until it serves, any failure
/// (an error, a panic) gives the state back to the binary that wrote it, which resumes.
fn take_over(
    home: std::path::PathBuf,
    listen: Option<SocketAddr>,
    mut handed: Handed,
) -> anyhow::Result<()> {
    // A binary executed through a descriptor is named after its number: name it again.
    let _ = rustix::thread::set_name(c"cmdop-node");
    let state = match handed.read() {
        Ok(state) => state,
        Err(e) => {
            give_back(handed, &format!("cannot take the node over: {e}"));
            anyhow::bail!("the sessions are lost")
        }
    };
    let take_over = TakeOver {
        state,
        failure: handed.failure.take(),
        exe: handed.exe.clone(),
    };
    *TAKING_OVER.lock().unwrap_or_else(|p| p.into_inner()) = Some(handed);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        let handed = TAKING_OVER.lock().ok().and_then(|mut h| h.take());
        if let Some(handed) = handed {
            give_back(
                handed,
                &format!("panicked while taking the node over: {panic}"),
            );
        }
        default_hook(panic);
    }));
    let served = serve(home, listen, Some(take_over));
    let handed = TAKING_OVER.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (served, handed) {
        (Err(e), Some(handed)) => {
            give_back(handed, &format!("cannot take the node over: {e:#}"));
            anyhow::bail!("the sessions are lost")
        }
        (served, _) => served,
    }
}

/// Hands the state back to the binary that wrote it, with why; returns only if that failed
/// (the sessions are then lost), having said so.
fn give_back(handed: Handed, why: &str) {
    let reason = format!("cmdop-node {} {why}", cmdop_node::upgrade::VERSION);
    eprintln!("cmdop-node: {reason}; returning to the previous binary");
    let error = handed.give_back(&reason);
    eprintln!("cmdop-node: cannot return to the previous binary ({error}): the sessions are lost");
}

/// SIGUSR2: an upgrade in place, its outcome logged.
async fn upgrade_on_signal(node: Arc<Node>) {
    match cmdop_node::upgrade::prepare(&node, std::time::Duration::ZERO).await {
        Ok(prepared) => cmdop_node::upgrade::start(&node, prepared),
        Err(e) => tracing::error!("SIGUSR2: not upgrading: {}", e.message),
    }
}

/// SIGTERM and SIGINT shut the node down; SIGUSR2 upgrades it in place.
async fn handle_signals(node: Arc<Node>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot handle signals; stop the node with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // Prepared aside: a dry run must not hold SIGTERM up.
            _ = usr2.recv() => drop(tokio::spawn(upgrade_on_signal(node.clone()))),
        }
    }
    shutdown.cancel();
}
