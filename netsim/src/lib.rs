//! The network simulator (filled in by the roaming work).
