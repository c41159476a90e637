//! The cmdop peer library: everything a node runs and everything a client needs to talk to one.
//!
//! Layout:
//! - sans-IO core, shared by node and client: [`proto`] (messages), [`frame`] (length-prefixed
//!   CBOR), [`ringbuf`] (scrollback addressed by absolute offsets), [`units`], [`config`];
//! - the node: [`pty`] (the PTY seam), [`session`], [`registry`] (sessions and idle expiry),
//!   [`server`] (QUIC, authentication, control requests), [`attach`] (live terminals);
//! - both ends: [`tls`] (QUIC/TLS set-up), [`wire`] (frames over QUIC streams), [`client`]
//!   (dialing a node, pinning its key, requests), [`home`] (where state lives).

pub mod attach;
pub mod client;
pub mod config;
pub mod frame;
pub mod home;
pub mod proto;
pub mod pty;
pub mod registry;
pub mod ringbuf;
pub mod server;
pub mod session;
pub mod tls;
pub mod units;
pub mod wire;
