//! The client side of cmdop: dial a node and pin its key ([`dial`]), typed calls on an
//! admitted connection ([`NodeClient`](dial::NodeClient)), why that failed ([`error`]), QUIC
//! and TLS set-up shared with the node ([`tls`]), frames over QUIC streams ([`wire`]), virtual UDP sockets over relayed streams
//! ([`vsock`]), where
//! state lives ([`home`]), and the reconnecting live terminal ([`live`]).
//!
//! The `cmdop` CLI, the benchmarks, the soak and a node migrating a session all use it.

pub mod dial;
pub mod error;
pub mod home;
pub mod live;
mod node_client;
pub mod predict;
pub mod punch;
pub mod tls;
pub mod udp;
pub mod vsock;
pub mod wire;
