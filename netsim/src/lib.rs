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
//!
//! Simulated NATs: [`nat`] is a sans-IO NAT table ([`NatKind`]: none, full-cone,
//! address-restricted, port-restricted, symmetric; idle mapping timeouts; expiry), and
//! [`nat_box`] runs it on loopback as a [`NatBox`]: inside hosts talk through it with a
//! [`NatSocket`] (a small header names the far end), and each external mapping is a real
//! UDP socket, so outside peers see and dial an ordinary observed address. The binary runs
//! one with `cmdop-netsim --nat KIND [--nat-timeout 30s] [--outside-ip 127.0.0.11]` (stdin
//! commands `expire`, `mappings`, `stats`, `quit`; see [`nat_box::control`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use cmdop_netsim::{NatBox, NatBoxConfig, NatKind, NatSocket};
//!
//! let nat = NatBox::start(NatBoxConfig::new(NatKind::PortRestricted)).await?;
//! let host = NatSocket::bind("127.0.0.1:0".parse().expect("literal"), nat.inside_addr()).await?;
//! host.send_to(b"hello", "127.0.0.1:3478".parse().expect("literal")).await?;
//! // The peer at 127.0.0.1:3478 sees the datagram come from one of nat.external_addrs().
//! # Ok(())
//! # }
//! ```

mod blackout;
pub mod command;
mod counters;
pub mod impair;
pub mod nat;
pub mod nat_box;
mod relay;

pub use command::{
    parse_command, parse_schedule, Command, ParseError, ScheduledCommand, Setting, Target,
};
pub use counters::{CountersSnapshot, DirectionSnapshot};
pub use impair::Impairments;
pub use nat::{Nat, NatConfig, NatKind, Outbound, DEFAULT_MAPPING_TIMEOUT};
pub use nat_box::{NatBox, NatBoxConfig, NatBoxCounters, NatSocket};
pub use relay::{Netsim, NetsimConfig};
