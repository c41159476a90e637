//! Triggers on disk: one JSON file per trigger in `$CMDOP_HOME/triggers/`, holding its record
//! (spec, state, history) and the kept output of each run in its history, written atomically
//! (temporary file, fsync, rename) with mode 0600. So a trigger costs at most about
//! keep-runs x keep-output bytes, and a torn write cannot lose it.
//!
//! Reading checks `format_version` first. A file that cannot be read is renamed aside
//! (`NAME.json.bad-UNIXMS`) and reported, never a panic, and the other triggers load.

use crate::trigger::output::OutputRing;
use crate::trigger::record::Record;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The version of the file format.
pub const FORMAT_VERSION: u32 = 1;

/// One trigger's file.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    format_version: u32,
    record: Record,
    /// Run id to its output.
    outputs: BTreeMap<u64, StoredOutput>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredOutput {
    /// Bytes the run printed.
    total: u64,
    /// The last ones, base64.
    kept: String,
}

/// A trigger read back: its record and the outputs of its runs.
#[derive(Debug)]
pub struct Loaded {
    /// The record.
    pub record: Record,
    /// Run id to output.
    pub outputs: BTreeMap<u64, OutputRing>,
}

/// The `triggers/` directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `home` (created 0700 on first write).
    pub fn new(home: &Path) -> Store {
        Store {
            dir: home.join("triggers"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Encodes a trigger's file (cheap enough to do under the scheduler's lock; the write is
    /// done outside it).
    pub fn encode(record: &Record, outputs: &BTreeMap<u64, OutputRing>) -> Vec<u8> {
        let engine = base64::engine::general_purpose::STANDARD;
        let outputs = record
            .history
            .iter()
            .filter_map(|run| outputs.get(&run.id).map(|o| (run.id, o)))
            .map(|(id, o)| {
                let kept = engine.encode(o.kept());
                (
                    id,
                    StoredOutput {
                        total: o.total(),
                        kept,
                    },
                )
            })
            .collect();
        let stored = Stored {
            format_version: FORMAT_VERSION,
            record: record.clone(),
            outputs,
        };
        serde_json::to_vec_pretty(&stored).unwrap_or_default()
    }

    /// Writes a trigger's file atomically, mode 0600.
    pub fn write(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        cmdop_certs::files::ensure_private_dir(&self.dir)?;
        cmdop_certs::files::write_atomic(&self.path(name), contents, 0o600)
    }

    /// Deletes a trigger's file.
    pub fn delete(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads every trigger. Files that cannot be read are renamed aside and returned as
    /// sentences for the log.
    pub fn load_all(&self, now_ms: u64) -> (Vec<Loaded>, Vec<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (Vec::new(), Vec::new());
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let (mut loaded, mut errors) = (Vec::new(), Vec::new());
        for path in paths {
            match read(&path) {
                Ok(trigger) => loaded.push(trigger),
                Err(reason) => errors.push(set_aside(&path, &reason, now_ms)),
            }
        }
        (loaded, errors)
    }
}

/// Reads and checks one file.
fn read(path: &Path) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => return Err(format!("format_version {v} is not {FORMAT_VERSION}")),
        None => return Err("no format_version".into()),
    }
    let stored: Stored = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let expected = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if expected.as_deref() != Some(stored.record.spec.name.as_str()) {
        return Err(format!(
            "it holds trigger '{}', not the one its file name says",
            stored.record.spec.name
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let mut outputs = BTreeMap::new();
    for (id, output) in stored.outputs {
        let kept = engine
            .decode(output.kept.as_bytes())
            .map_err(|e| format!("run {id}'s output: {e}"))?;
        let capacity = stored.record.spec.keep_output;
        outputs.insert(id, OutputRing::restored(capacity, output.total, &kept));
    }
    Ok(Loaded {
        record: stored.record,
        outputs,
    })
}

/// Renames a bad file aside and says so.
fn set_aside(path: &Path, reason: &str, now_ms: u64) -> String {
    let aside = path.with_extension(format!("json.bad-{now_ms}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => format!(
            "cannot read trigger file {} ({reason}); moved it to {} and went on without it",
            path.display(),
            aside.display()
        ),
        Err(e) => format!(
            "cannot read trigger file {} ({reason}), nor move it aside ({e}); went on without it",
            path.display()
        ),
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
