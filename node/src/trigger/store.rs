//! Triggers on disk, under `$CMDOP_HOME/triggers/`, every file written atomically (temporary
//! file, fsync, rename, fsync of the directory) with mode 0600:
//!
//! - `NAME.json`: the trigger's record (spec, state, history), small, rewritten on each change;
//! - `NAME.out/RUN`: the kept output of one finished run, written once when the run ends and
//!   deleted when the run leaves the history (8 bytes of the total printed, big-endian, then
//!   the kept bytes).
//!
//! So a trigger costs at most about keep-runs x keep-output bytes (capped at add time), a save
//! never re-encodes outputs, and a torn write cannot lose anything.
//!
//! Reading checks `format_version` first (version 1 files, with the outputs inside, are still
//! read; their outputs move to their own files at the first start). A file that cannot be read
//! is renamed aside (`NAME.json.bad-UNIXMS`) and reported, never a panic, and the other
//! triggers load. A missing or torn output file only loses that run's output.

use crate::trigger::output::OutputRing;
use crate::trigger::record::Record;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The version of the file format.
pub const FORMAT_VERSION: u32 = 2;

/// A record file (version 2).
#[derive(Debug, Serialize)]
struct StoredRef<'a> {
    format_version: u32,
    record: &'a Record,
}

/// A record file as read (version 1 had the outputs inside).
#[derive(Debug, Deserialize)]
struct Stored {
    record: Record,
    /// Run id to its output (version 1 only).
    #[serde(default)]
    outputs: BTreeMap<u64, StoredOutput>,
}

#[derive(Debug, Deserialize)]
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
    /// Read from a version 1 file: its outputs must be written to their own files.
    pub migrate: bool,
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

    fn output_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.out"))
    }

    /// Encodes a trigger's record file (small: spec, state, history).
    pub fn encode(record: &Record) -> io::Result<Vec<u8>> {
        let stored = StoredRef {
            format_version: FORMAT_VERSION,
            record,
        };
        serde_json::to_vec_pretty(&stored).map_err(io::Error::other)
    }

    /// Encodes one run's output file.
    pub fn encode_output(output: &OutputRing) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + output.kept_len() as usize);
        bytes.extend_from_slice(&output.total().to_be_bytes());
        bytes.extend(output.kept());
        bytes
    }

    /// Writes a trigger's record file atomically, mode 0600.
    pub fn write(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        cmdop_certs::files::ensure_private_dir(&self.dir)?;
        cmdop_certs::files::write_atomic(&self.path(name), contents, 0o600)
    }

    /// Writes run `run`'s output file atomically, mode 0600.
    pub fn write_output(&self, name: &str, run: u64, contents: &[u8]) -> io::Result<()> {
        let dir = self.output_dir(name);
        cmdop_certs::files::ensure_private_dir(&dir)?;
        cmdop_certs::files::write_atomic(&dir.join(run.to_string()), contents, 0o600)
    }

    /// Deletes the output files of `runs`.
    pub fn delete_outputs(&self, name: &str, runs: &[u64]) -> io::Result<()> {
        let dir = self.output_dir(name);
        for run in runs {
            remove_if_there(&dir.join(run.to_string()))?;
        }
        Ok(())
    }

    /// Deletes a trigger's files.
    pub fn delete(&self, name: &str) -> io::Result<()> {
        remove_if_there(&self.path(name))?;
        match std::fs::remove_dir_all(self.output_dir(name)) {
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
                Ok(mut trigger) => {
                    if !trigger.migrate {
                        let name = trigger.record.spec.name.clone();
                        trigger.outputs = self.read_outputs(&name, &trigger.record);
                    }
                    loaded.push(trigger)
                }
                Err(reason) => errors.push(set_aside(&path, &reason, now_ms)),
            }
        }
        (loaded, errors)
    }

    /// Reads the output files of the finished runs in `record`'s history; deletes the others
    /// (left by a crash between writing an output and the record that drops it).
    fn read_outputs(&self, name: &str, record: &Record) -> BTreeMap<u64, OutputRing> {
        let dir = self.output_dir(name);
        let mut outputs = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return outputs;
        };
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let run = file.parse::<u64>().ok().filter(|&id| {
                record
                    .run(id)
                    .is_some_and(|r| r.outcome != cmdop_proto::Outcome::Running)
            });
            let Some(run) = run else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            match std::fs::read(entry.path()) {
                Ok(bytes) if bytes.len() >= 8 => {
                    let mut total = [0u8; 8];
                    total.copy_from_slice(&bytes[..8]);
                    let ring = OutputRing::restored(
                        record.spec.keep_output,
                        u64::from_be_bytes(total),
                        &bytes[8..],
                    );
                    outputs.insert(run, ring);
                }
                _ => tracing::warn!(
                    trigger = name,
                    run,
                    "cannot read a run's output file; its output is lost"
                ),
            }
        }
        outputs
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads and checks one record file.
fn read(path: &Path) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let version = match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == 1 || v == u64::from(FORMAT_VERSION) => v,
        Some(v) => return Err(format!("format_version {v} is not {FORMAT_VERSION}")),
        None => return Err("no format_version".into()),
    };
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
        migrate: version == 1,
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
