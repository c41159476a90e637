//! End-to-end tests: real `cmdop` and `cmdop-node` binaries on loopback, each test with its
//! own `$CMDOP_HOME`s and ports.

#![allow(clippy::unwrap_used)]

mod roaming;
mod sessions;
mod terminal;
mod trust;
