//! The cmdop node daemon: sessions on PTYs, served over QUIC.
//!
//! Crate graph: `cmdop-proto` (sans-IO wire protocol) <- `cmdop-client` (dialing, TLS, the live
//! terminal) <- this crate. Inside, each module depends only on those above it:
//! - [`os`]: the operating-system seam (spawn a program on a PTY, wait for it, hang it up, kill
//!   it, ask its cwd), with the native implementation and a fake for tests;
//! - [`session`]: one session (PTY, ringbuffer, lifecycle), admission of attachments, the
//!   registry of sessions and their idle expiry;
//! - [`migrate`]: snapshots in, snapshots out, and moving a session to another node;
//! - [`trigger`]: scheduled commands run with no client attached (cron schedule, bounded
//!   history and output, stored under `$CMDOP_HOME/triggers/`);
//! - [`server`]: the QUIC endpoint, handshake admission, control requests, live connections
//!   and attachments (over any framed stream);
//! - [`upgrade`]: upgrading in place: the state handed to the next binary across `execve`,
//!   with the PTYs and the UDP socket kept open.
//!
//! In-process tests of the whole (fake PTYs, in-memory streams) are in `src/tests/`.

pub mod migrate;
pub mod os;
pub mod server;
pub mod session;
pub mod trigger;
pub mod upgrade;

#[cfg(test)]
mod tests;
