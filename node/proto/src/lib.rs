//! The cmdop wire protocol, sans-IO: no tokio, no QUIC, no TLS and no clock reads (time is a
//! parameter), so the node and the client share it and tests drive it with simulated time.
//!
//! A connection (QUIC, ALPN [`ALPN`]) carries one **control stream** ([`control`]) and one
//! **attach stream** per live terminal ([`attach`]). Every message travels in a length-prefixed
//! CBOR frame ([`frame`]).
//!
//! Also here, because both ends need them: the snapshot format ([`snapshot`]), the config
//! schema ([`config`]), key fingerprints ([`fingerprint`]), human units ([`units`]), the
//! resync bookkeeping of a live terminal ([`resync`]) and the cron schedules of triggers
//! ([`schedule`]; their messages are in [`trigger`]).

pub mod attach;
pub mod config;
pub mod control;
pub mod error;
pub mod fingerprint;
pub mod frame;
pub mod resync;
pub mod schedule;
pub mod session;
pub mod snapshot;
pub mod trigger;
pub mod units;

#[cfg(test)]
mod message_tests;

pub use attach::*;
pub use control::*;
pub use error::*;
pub use fingerprint::{Fingerprint, FingerprintError};
pub use session::*;
pub use snapshot::Snapshot;
pub use trigger::*;
