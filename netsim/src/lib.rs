//! `cmdop-netsim`: a seeded userspace UDP relay that impairs traffic.
//!
//! The relay sits between a QUIC client and a cmdop node on loopback. Clients
//! send datagrams to the relay's listen address; the relay forwards them to
//! the node from an upstream socket of its own (one per client address, like
//! a NAT), and forwards the node's replies back. On the way it can lose,
//! duplicate, delay, jitter (and so reorder) and rate-limit packets, black
//! out all traffic, rebind its upstream sockets to new ports (NAT rebinding),
//! or move them to another local IP (a Wi-Fi to LTE handover). All random
//! decisions come from one seed, so a run can be replayed.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use cmdop_netsim::{Impairments, Netsim, NetsimConfig};
//! use std::time::Duration;
//!
//! let mut config = NetsimConfig::new(
//!     "127.0.0.1:0".parse().expect("literal address"),
//!     "127.0.0.1:4433".parse().expect("literal address"),
//! );
//! config.seed = 7;
//! config.to_node.loss = 0.05;
//! let sim = Netsim::start(config).await?;
//! // Point the client at sim.listen_addr() ...
//! sim.rebind();
//! sim.blackout(Duration::from_secs(2));
//! sim.set_impairments(Impairments::default(), Impairments::default());
//! println!("{}", sim.counters());
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`impair`] holds the sans-IO decision logic (loss, duplication,
//! delay, jitter, bandwidth queue), [`command`] the control language used by
//! the binary's stdin and `--schedule`, and the relay itself is [`Netsim`].

mod blackout;
pub mod command;
mod counters;
pub mod impair;
pub mod nat;
mod relay;

pub use command::{
    parse_command, parse_schedule, Command, ParseError, ScheduledCommand, Setting, Target,
};
pub use counters::{CountersSnapshot, DirectionSnapshot};
pub use impair::Impairments;
pub use relay::{Netsim, NetsimConfig};
