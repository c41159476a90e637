//! End-to-end tests: real `cmdop` and `cmdop-node` binaries on loopback, each test with its
//! own `$CMDOP_HOME`s and ports.

#![allow(clippy::unwrap_used)]

mod hardening;
mod nat;
mod packaging;
mod predict;
mod relay;
mod roaming;
mod sessions;
mod slowlink;
mod snapshot;
mod soak;
mod terminal;
mod trigger;
mod trust;
mod upgrade;
