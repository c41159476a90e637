//! Arbitrary bytes into [`Snapshot::from_json`], the snapshot file form (`session restore`).
//!
//! Nothing may panic, and a snapshot it accepts must write back (`to_json`) to a file that
//! reads to the same snapshot.

#![no_main]

use cmdop_proto::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::from_json(data) {
        let again = Snapshot::from_json(snapshot.to_json().as_bytes());
        assert_eq!(again.as_ref(), Ok(&snapshot));
    }
});
