//! The cmdop peer library: everything a node runs and everything a client needs to talk to one.
//!
//! Layout:
//! - sans-IO core, shared by node and client: [`proto`] (messages), [`frame`] (length-prefixed
//!   CBOR), [`ringbuf`] (scrollback addressed by absolute offsets), [`units`], [`config`];
//! - the node: [`pty`] (the PTY seam), [`session`], [`registry`] (sessions and idle expiry),
//!   [`server`] (QUIC, authentication, control requests), [`attach`] (live terminals);
//! - both ends: [`tls`] (QUIC/TLS set-up), [`wire`] (frames over QUIC streams), [`client`]
//!   (dialing a node, pinning its key, requests), [`home`] (where state lives);
//! - the client's live terminal: [`resync`] (sans-IO: offsets shown, input not yet
//!   acknowledged) and [`attachment`] (the driver that reconnects and resyncs).

pub mod attach;
pub mod attachment;
pub mod client;
pub mod config;
pub mod frame;
pub mod home;
pub mod migrate;
pub mod proto;
pub mod pty;
pub mod registry;
pub mod resync;
pub mod ringbuf;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod tls;
pub mod units;
pub mod wire;
