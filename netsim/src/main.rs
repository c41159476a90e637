//! `cmdop-netsim`: run the impairing UDP relay, or a simulated NAT, from the command line.
//!
//! Starts a [`Netsim`] between `--listen` and `--upstream`, prints the listen
//! address, then takes control commands from stdin and from `--schedule`
//! (both go through the same parser) until `quit`, SIGINT or SIGTERM. End of
//! stdin only stops reading commands; the relay keeps running.
//!
//! With `--nat KIND` it runs a [`NatBox`] instead: `--listen` is the inside address that
//! inside hosts send framed datagrams to (see [`cmdop_netsim::nat_box`]), and stdin takes the
//! NAT box commands ([`NAT_HELP`]).

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use cmdop_netsim::command::{parse_duration, parse_probability, parse_rate, HELP};
use cmdop_netsim::impair::DEFAULT_QUEUE_BYTES;
use cmdop_netsim::nat_box::control::{parse_nat_command, NatCommand, NAT_HELP};
use cmdop_netsim::{
    parse_command, parse_schedule, Command, Impairments, NatBox, NatBoxConfig, NatKind, Netsim,
    NetsimConfig, ParseError, ScheduledCommand, DEFAULT_MAPPING_TIMEOUT,
};
use tokio::sync::mpsc;

/// Print a line; a closed stdout must not crash the relay.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// A parsed `--schedule`.
#[derive(Clone, Debug)]
struct Schedule(Vec<ScheduledCommand>);

fn schedule_arg(s: &str) -> Result<Schedule, ParseError> {
    parse_schedule(s).map(Schedule)
}

fn rate_arg(s: &str) -> Result<u64, ParseError> {
    parse_rate(s)?.ok_or_else(|| ParseError("use a positive number of bytes per second".into()))
}

/// Options that only the relay uses; they conflict with --nat.
const RELAY_ONLY: [&str; 9] = [
    "upstream",
    "seed",
    "loss",
    "duplicate",
    "delay",
    "jitter",
    "rate",
    "queue",
    "schedule",
];

/// A seeded userspace UDP relay that impairs traffic between a QUIC client
/// and a cmdop node, or (with --nat) a simulated NAT.
///
/// Clients send to --listen; the relay forwards to --upstream from one socket
/// per client address (like a NAT) and relays the replies back. Impairments
/// given as options apply to both directions. While it runs, type commands on
/// stdin (see below); --schedule runs the same commands at offsets from start.
/// The relay stops on `quit`, Ctrl+C or SIGTERM; end of stdin only stops
/// reading commands.
///
/// With --nat KIND (none, full-cone, address-restricted, port-restricted or
/// symmetric) it runs a NAT box instead of the relay: inside hosts send to
/// --listen, each datagram prefixed with its destination (one family byte 4
/// or 6, the IP, the port big endian; replies come back prefixed with their
/// source), and every external mapping is a real UDP socket on --outside-ip,
/// filtered as KIND does. Mappings lapse after --nat-timeout without outbound
/// traffic. The impairment options and --upstream do not apply.
#[derive(Debug, Parser)]
#[command(name = "cmdop-netsim", version, after_help = format!("{HELP}\n\n{NAT_HELP}"))]
struct Args {
    /// Address clients send to (port 0 picks a free port; the actual address
    /// is printed as `listening on ADDR`). With --nat, the inside address.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,

    /// The node's address (required unless --nat is given).
    #[arg(long, value_name = "ADDR", required_unless_present = "nat")]
    upstream: Option<SocketAddr>,

    /// Run a simulated NAT of this kind instead of the relay: none, full-cone,
    /// address-restricted, port-restricted or symmetric.
    #[arg(long, value_name = "KIND", conflicts_with_all = RELAY_ONLY)]
    nat: Option<NatKind>,

    /// With --nat: idle time without outbound traffic after which a mapping
    /// lapses, e.g. 30s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "nat", conflicts_with = "upstream")]
    nat_timeout: Option<Duration>,

    /// With --nat: the IP the outside sockets bind to. Give each NAT its own
    /// loopback IP (127.0.0.11, 127.0.0.12, ...) so address-restricted
    /// filtering can tell peers apart.
    #[arg(long, value_name = "IP", requires = "nat", conflicts_with = "upstream")]
    outside_ip: Option<IpAddr>,

    /// Seed for every random decision; same seed and traffic, same drops.
    /// Default: taken from the clock and printed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Probability (0..1) of dropping each packet.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability, value_name = "P")]
    loss: f64,

    /// Probability (0..1) of sending a packet twice.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability, value_name = "P")]
    duplicate: f64,

    /// Fixed one-way delay, e.g. 20ms.
    #[arg(long, default_value = "0ms", value_parser = parse_duration, value_name = "DURATION")]
    delay: Duration,

    /// Extra random delay, uniform in 0..DURATION per packet (reorders).
    #[arg(long, default_value = "0ms", value_parser = parse_duration, value_name = "DURATION")]
    jitter: Duration,

    /// Bandwidth limit in bytes per second (default: unlimited).
    #[arg(long, value_parser = rate_arg, value_name = "BYTES_PER_SEC")]
    rate: Option<u64>,

    /// Bytes that may queue behind the bandwidth limit before tail drop.
    #[arg(long, default_value_t = DEFAULT_QUEUE_BYTES, value_name = "BYTES")]
    queue: usize,

    /// Commands to run at offsets from start, separated by `;`, e.g.
    /// "5s rebind; 10s blackout 3s; 20s loss 0.2".
    #[arg(long, value_parser = schedule_arg, value_name = "PLAN")]
    schedule: Option<Schedule>,

    /// Print the counters at this interval, e.g. 1s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    stats_every: Option<Duration>,
}

/// Where a command came from.
enum Input {
    Line(String),
    Scheduled(Command),
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn execute(sim: &Netsim, command: Command) -> Flow {
    match command {
        Command::Rebind => match sim.try_rebind() {
            Ok(()) => say!(
                "ok: rebind ({} association(s))",
                sim.counters().associations
            ),
            Err(e) => say!("error: rebind failed: {e}"),
        },
        Command::Ip(ip) => match sim.try_change_upstream_ip(ip) {
            Ok(()) => say!("ok: upstream sockets now on {ip}"),
            Err(e) => say!("error: cannot move upstream sockets to {ip}: {e}"),
        },
        Command::Blackout(d) => {
            sim.blackout(d);
            say!("ok: {command}");
        }
        Command::BlackoutHold(on) => {
            sim.set_blackout(on);
            say!("ok: {command}");
        }
        Command::Set { setting, target } => {
            sim.update_impairments(target, |imp| setting.apply(imp));
            say!("ok: {command}");
        }
        Command::Stats => say!("{}", sim.counters()),
        Command::Help => say!("{HELP}"),
        Command::Quit => return Flow::Quit,
    }
    Flow::Continue
}

/// Read stdin lines on a plain thread (a blocked read must not hold up exit).
fn spawn_stdin_reader(tx: mpsc::UnboundedSender<Input>) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("cmdop-netsim: cannot read stdin commands: {e}");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Run one NAT box command.
fn execute_nat(nat: &NatBox, command: NatCommand) -> Flow {
    match command {
        NatCommand::Expire => say!("ok: expired {} mapping(s)", nat.expire_all()),
        NatCommand::Mappings => {
            let addrs: Vec<String> = nat.external_addrs().iter().map(|a| a.to_string()).collect();
            let listed = if addrs.is_empty() {
                "none".to_string()
            } else {
                addrs.join(" ")
            };
            say!("mappings: {listed}");
        }
        NatCommand::Stats => say!("{}", nat.counters()),
        NatCommand::Help => say!("{NAT_HELP}"),
        NatCommand::Quit => return Flow::Quit,
    }
    Flow::Continue
}

/// What the binary runs.
enum Running {
    Relay(Netsim),
    Nat(NatBox),
}

impl Running {
    fn stats(&self) -> String {
        match self {
            Running::Relay(sim) => sim.counters().to_string(),
            Running::Nat(nat) => nat.counters().to_string(),
        }
    }

    /// Act on one stdin line or scheduled command.
    fn handle(&self, input: Input) -> Flow {
        match (self, input) {
            (_, Input::Line(line)) if line.trim().is_empty() => Flow::Continue,
            (Running::Relay(sim), Input::Line(line)) => match parse_command(&line) {
                Ok(command) => execute(sim, command),
                Err(e) => bad_command(&e, HELP),
            },
            (Running::Relay(sim), Input::Scheduled(command)) => {
                say!("schedule: {command}");
                execute(sim, command)
            }
            (Running::Nat(nat), Input::Line(line)) => match parse_nat_command(&line) {
                Ok(command) => execute_nat(nat, command),
                Err(e) => bad_command(&e, NAT_HELP),
            },
            // --schedule conflicts with --nat, so nothing is scheduled for a NAT box.
            (Running::Nat(_), Input::Scheduled(_)) => Flow::Continue,
        }
    }

    async fn shutdown(self) {
        match self {
            Running::Relay(sim) => sim.shutdown().await,
            Running::Nat(nat) => nat.shutdown().await,
        }
    }
}

fn bad_command(error: &ParseError, help: &str) -> Flow {
    say!("error: {error}");
    say!("{help}");
    Flow::Continue
}

async fn start_relay(args: &Args) -> anyhow::Result<Running> {
    let upstream = args
        .upstream
        .context("--upstream is required unless --nat is given")?;
    let seed = args.seed.unwrap_or_else(clock_seed);
    let impairments = Impairments {
        loss: args.loss,
        duplicate: args.duplicate,
        delay: args.delay,
        jitter: args.jitter,
        rate_bytes_per_sec: args.rate,
        queue_bytes: args.queue,
    };
    let config = NetsimConfig {
        seed,
        ..NetsimConfig::new(args.listen, upstream).with_impairments(impairments)
    };
    let sim = Netsim::start(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say!("listening on {}", sim.listen_addr());
    say!(
        "relaying to {} with seed {seed}; type `help` for commands",
        sim.upstream_addr()
    );
    Ok(Running::Relay(sim))
}

/// The NAT box configuration the options ask for.
fn nat_config(args: &Args, kind: NatKind) -> NatBoxConfig {
    let defaults = NatBoxConfig::new(kind);
    NatBoxConfig {
        inside: args.listen,
        mapping_timeout: args.nat_timeout.unwrap_or(DEFAULT_MAPPING_TIMEOUT),
        outside_ip: args.outside_ip.unwrap_or(defaults.outside_ip),
        ..defaults
    }
}

async fn start_nat(args: &Args, kind: NatKind) -> anyhow::Result<Running> {
    let config = nat_config(args, kind);
    let nat = NatBox::start(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say!("listening on {}", nat.inside_addr());
    say!(
        "{kind} NAT on {}, mappings lapse after {} idle; type `help` for commands",
        config.outside_ip,
        humantime::format_duration(config.mapping_timeout)
    );
    Ok(Running::Nat(nat))
}

/// Send each scheduled command into `tx` at its offset from now.
fn spawn_schedule(entries: Vec<ScheduledCommand>, tx: mpsc::UnboundedSender<Input>) {
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        for entry in entries {
            tokio::time::sleep_until(start + entry.at).await;
            if tx.send(Input::Scheduled(entry.command)).is_err() {
                return;
            }
        }
    });
}

/// Resolves at each --stats-every tick, or never.
async fn next_tick(ticker: Option<&mut tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let running = match args.nat {
        Some(kind) => start_nat(&args, kind).await?,
        None => start_relay(&args).await?,
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_stdin_reader(tx.clone());
    if let Some(Schedule(entries)) = args.schedule {
        spawn_schedule(entries, tx.clone());
    }
    let mut ticker = args.stats_every.filter(|d| !d.is_zero()).map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let input = tokio::select! {
            () = &mut stop => break,
            () = next_tick(ticker.as_mut()) => {
                say!("{}", running.stats());
                continue;
            }
            // `tx` is still held here, so the channel never closes.
            input = rx.recv() => input,
        };
        let flow = input.map_or(Flow::Continue, |input| running.handle(input));
        if flow == Flow::Quit {
            break;
        }
    }
    drop(tx);
    say!("final: {}", running.stats());
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("cmdop-netsim").chain(args.iter().copied()))
    }

    #[test]
    fn nat_mode_needs_no_upstream() {
        let args = parse(&["--nat", "symmetric", "--nat-timeout", "5s"]).unwrap();
        assert_eq!(args.nat, Some(NatKind::Symmetric));
        let config = nat_config(&args, NatKind::Symmetric);
        assert_eq!(config.mapping_timeout, Duration::from_secs(5));
        assert_eq!(config.inside, args.listen);
    }

    #[test]
    fn nat_defaults() {
        let args = parse(&["--nat", "full-cone", "--outside-ip", "127.0.0.11"]).unwrap();
        let config = nat_config(&args, NatKind::FullCone);
        assert_eq!(config.mapping_timeout, DEFAULT_MAPPING_TIMEOUT);
        assert_eq!(config.outside_ip, "127.0.0.11".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn relay_mode_still_needs_an_upstream() {
        assert!(parse(&[]).is_err());
        let args = parse(&["--upstream", "127.0.0.1:4433"]).unwrap();
        assert_eq!(args.nat, None);
    }

    #[test]
    fn bad_nat_options_are_refused() {
        let unknown = parse(&["--nat", "cone"]).unwrap_err().to_string();
        assert!(unknown.contains("unknown NAT kind"), "{unknown}");
        for bad in [
            &["--nat", "symmetric", "--upstream", "127.0.0.1:1"][..],
            &["--nat", "symmetric", "--loss", "0.1"],
            &["--upstream", "127.0.0.1:1", "--nat-timeout", "5s"],
            &["--upstream", "127.0.0.1:1", "--outside-ip", "127.0.0.2"],
            &["--nat-timeout", "5s"],
            &["--nat", "symmetric", "--nat-timeout", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn help_lists_the_nat_option_and_commands() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("--nat <KIND>") && help.contains("port-restricted"));
        assert!(help.contains("expire"));
    }
}
