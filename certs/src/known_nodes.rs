//! The client's pinned node keys, one `ADDRESS FINGERPRINT` line each in
//! `$CMDOP_HOME/known_nodes`, like OpenSSH's `known_hosts`.

use crate::files::write_atomic;
use crate::Fingerprint;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The key a pin is filed under: the address in its one normal form (`h:07443` and `h:7443`
/// are one node, and a pin written under either must be found under both, or a differently
/// spelt address would be trusted anew). Text that is no address stays as it is.
fn key(addr: &str) -> String {
    addr.parse::<cmdop_proto::config::HostPort>()
        .map_or_else(|_| addr.to_string(), |addr| addr.to_string())
}

/// The pins, keyed by node address (`host:port`).
#[derive(Debug, Default)]
pub struct KnownNodes {
    path: PathBuf,
    pins: BTreeMap<String, Fingerprint>,
}

/// What a presented key means against the pins.
#[derive(Debug, PartialEq, Eq)]
pub enum PinCheck {
    /// The key matches the pin.
    Match,
    /// No pin yet: trust on first use.
    Unknown,
    /// The key differs from the pin.
    Changed {
        /// The pinned fingerprint.
        pinned: Fingerprint,
    },
}

impl KnownNodes {
    /// Loads the pins from `path`; a missing file means no pins. Lines that do not parse are
    /// skipped (they are kept out of the trust decision, never trusted).
    pub fn load(path: &Path) -> io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let pins = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = parts.next()?;
                let fingerprint = parts.next()?.parse().ok()?;
                Some((key(addr), fingerprint))
            })
            .collect();
        Ok(KnownNodes {
            path: path.to_path_buf(),
            pins,
        })
    }

    /// The pin for `addr`.
    pub fn pin(&self, addr: &str) -> Option<&Fingerprint> {
        self.pins.get(&key(addr))
    }

    /// Compares a presented key with the pin for `addr`.
    pub fn check(&self, addr: &str, presented: &Fingerprint) -> PinCheck {
        match self.pins.get(&key(addr)) {
            None => PinCheck::Unknown,
            Some(pin) if pin == presented => PinCheck::Match,
            Some(pin) => PinCheck::Changed {
                pinned: pin.clone(),
            },
        }
    }

    /// Pins `addr` to `fingerprint` and saves the file.
    pub fn insert(&mut self, addr: &str, fingerprint: Fingerprint) -> io::Result<()> {
        self.pins.insert(key(addr), fingerprint);
        self.save()
    }

    /// Removes the pin for `addr` and saves the file; returns whether there was one.
    pub fn remove(&mut self, addr: &str) -> io::Result<bool> {
        let had = self.pins.remove(&key(addr)).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    fn save(&self) -> io::Result<()> {
        let mut text = String::from("# cmdop pinned node keys: ADDRESS FINGERPRINT\n");
        for (addr, fingerprint) in &self.pins {
            text.push_str(&format!("{addr} {fingerprint}\n"));
        }
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_persist_and_detect_changes() {
        let path = std::env::temp_dir().join(format!("cmdop-known-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = Fingerprint::of_spki(b"a");
        let b = Fingerprint::of_spki(b"b");
        let mut known = KnownNodes::load(&path).unwrap();
        assert_eq!(known.check("h:1", &a), PinCheck::Unknown);
        known.insert("h:1", a.clone()).unwrap();
        let known = KnownNodes::load(&path).unwrap();
        assert_eq!(known.check("h:1", &a), PinCheck::Match);
        assert_eq!(
            known.check("h:1", &b),
            PinCheck::Changed { pinned: a.clone() }
        );
        let mut known = known;
        assert!(known.remove("h:1").unwrap());
        assert_eq!(
            KnownNodes::load(&path).unwrap().check("h:1", &b),
            PinCheck::Unknown
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_pin_is_found_however_its_address_is_spelt() {
        let path = std::env::temp_dir().join(format!("cmdop-known-spelt-{}", std::process::id()));
        // Written by an older client, with a leading zero in the port.
        std::fs::write(&path, format!("h:07443 {}\n", Fingerprint::of_spki(b"a"))).unwrap();
        let known = KnownNodes::load(&path).unwrap();
        let other = Fingerprint::of_spki(b"b");
        assert!(matches!(
            known.check("h:7443", &other),
            PinCheck::Changed { .. }
        ));
        assert!(known.pin("h").is_some(), "the default port is implied");
        std::fs::remove_file(&path).unwrap();
    }
}
