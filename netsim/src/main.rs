//! `cmdop-netsim`: run the impairing UDP relay from the command line.
//!
//! Starts a [`Netsim`] between `--listen` and `--upstream`, prints the listen
//! address, then takes control commands from stdin and from `--schedule`
//! (both go through the same parser) until `quit`, SIGINT or SIGTERM. End of
//! stdin only stops reading commands; the relay keeps running.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use cmdop_netsim::command::{parse_duration, parse_probability, parse_rate, HELP};
use cmdop_netsim::impair::DEFAULT_QUEUE_BYTES;
use cmdop_netsim::{
    parse_command, parse_schedule, Command, Impairments, Netsim, NetsimConfig, ParseError,
    ScheduledCommand,
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

/// A seeded userspace UDP relay that impairs traffic between a QUIC client
/// and a cmdop node.
///
/// Clients send to --listen; the relay forwards to --upstream from one socket
/// per client address (like a NAT) and relays the replies back. Impairments
/// given as options apply to both directions. While it runs, type commands on
/// stdin (see below); --schedule runs the same commands at offsets from start.
/// The relay stops on `quit`, Ctrl+C or SIGTERM; end of stdin only stops
/// reading commands.
#[derive(Debug, Parser)]
#[command(name = "cmdop-netsim", version, after_help = HELP)]
struct Args {
    /// Address clients send to (port 0 picks a free port; the actual address
    /// is printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,

    /// The node's address.
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        ..NetsimConfig::new(args.listen, args.upstream).with_impairments(impairments)
    };
    let sim = Netsim::start(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say!("listening on {}", sim.listen_addr());
    say!(
        "relaying to {} with seed {seed}; type `help` for commands",
        sim.upstream_addr()
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_stdin_reader(tx.clone());
    if let Some(Schedule(entries)) = args.schedule {
        let tx = tx.clone();
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
    let mut ticker = args.stats_every.filter(|d| !d.is_zero()).map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            () = &mut stop => break,
            () = tick => {
                say!("{}", sim.counters());
                continue;
            }
            // `tx` is still held here, so the channel never closes.
            input = rx.recv() => input,
        };
        let flow = match input {
            Some(Input::Line(line)) if line.trim().is_empty() => Flow::Continue,
            Some(Input::Line(line)) => match parse_command(&line) {
                Ok(command) => execute(&sim, command),
                Err(e) => {
                    say!("error: {e}");
                    say!("{HELP}");
                    Flow::Continue
                }
            },
            Some(Input::Scheduled(command)) => {
                say!("schedule: {command}");
                execute(&sim, command)
            }
            None => Flow::Continue,
        };
        if flow == Flow::Quit {
            break;
        }
    }
    drop(tx);
    say!("final: {}", sim.counters());
    sim.shutdown().await;
    Ok(())
}
