//! One module per top-level command.

pub mod complete;
pub mod completions;
pub mod connect;
pub mod host;
pub mod session;
pub mod trigger;
