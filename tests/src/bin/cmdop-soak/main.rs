//! `cmdop-soak`: drives many sessions on one node, each attached through its own netsim relay
//! with random loss, jitter, duplication, NAT rebindings and blackouts, for a fixed time; then
//! prints what moved and what (if anything) was lost or repeated.
//!
//! Each session runs `cmdop-soak emit`, which prints numbered, checksummed lines at a steady
//! rate and echoes every line typed into it as `IN <line>`. The soak client (the same
//! `Attachment` code `cmdop connect` runs) checks that output lines arrive in order, each once,
//! with valid checksums (a jump is allowed only where a screen frame stood for the skipped
//! output, as after a ringbuffer overflow), and that every line it typed comes back exactly
//! once, in order.
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/cmdop-soak --sessions 50 --duration 10m
//! ```
//!
//! Exits 1 if any line was lost or repeated without a screen frame standing for it.

#![allow(clippy::unwrap_used)]

mod emit;
mod run;

use clap::Parser;

/// Soak test: many sessions through impaired networks; nothing may be lost or repeated.
#[derive(Debug, Parser)]
#[command(name = "cmdop-soak", about, long_about)]
struct Cli {
    /// Sessions to run at once, each through its own netsim relay.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// How long to run (e.g. 30s, 10m).
    #[arg(long, default_value = "10m")]
    duration: humantime::Duration,
    /// Output lines per second per session.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Seed for the impairments and event schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// (Runs inside each session.) Print checksummed lines and echo typed lines.
    Emit {
        /// Lines per second.
        #[arg(long, default_value_t = 20)]
        rate: u32,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Emit { rate }) => emit::run(rate),
        None => run::run(run::Options {
            sessions: cli.sessions,
            duration: cli.duration.into(),
            rate: cli.rate,
            seed: cli.seed,
        }),
    }
}
