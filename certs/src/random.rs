//! Secure randomness for invite tokens and unpredictable file names: the operating system's
//! generator through ring, the one rustls and quinn already use (the client's stream names
//! come from the same place). Seeded, reproducible randomness for simulations is `rand`'s job,
//! in netsim and the test tools, and never guards anything.

use ring::rand::{SecureRandom, SystemRandom};
use std::io;

/// Fills `bytes` from the operating system's secure random generator.
pub fn fill(bytes: &mut [u8]) -> io::Result<()> {
    SystemRandom::new()
        .fill(bytes)
        .map_err(|_| io::Error::other("the system's random number generator failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_different_bytes_each_time() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        fill(&mut a).unwrap();
        fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
