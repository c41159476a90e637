//! `cmdop-netsim` (filled in by the roaming work).

fn main() {}
