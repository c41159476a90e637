//! Session snapshots: what `cmdop session save` writes, `session restore` reads, and
//! `session migrate` carries from node to node. Sans-IO.
//!
//! - [`Snapshot`] is the in-memory and wire form (inside [`crate::Request::Restore`],
//!   scrollback as a CBOR byte string);
//! - [`Snapshot::to_json`] and [`Snapshot::from_json`] are the file form: readable JSON with a
//!   `format_version`, RFC 3339 times, and the scrollback as an array of text lines (or one
//!   base64 string when it is not UTF-8). Reading checks every field and names the one at fault;
//! - [`fit_scrollback`] trims a scrollback to a ringbuffer, keeping the newest bytes, and
//!   [`restored_marker`] is the line a restored session shows after the old scrollback.
//!
//! A snapshot holds what can move: scrollback, name, working directory, environment, window
//! size. Running processes cannot move: a restored session runs a new shell.

use crate::WinSize;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

/// The version of the JSON file form this code writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// How far into kept scrollback [`fit_scrollback`] looks for a line start.
const LINE_START_SEARCH: usize = 4096;

/// A session's movable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The session's name, if it had one.
    pub name: Option<String>,
    /// Host name of the node it was taken on.
    pub host: String,
    /// Key fingerprint of that node (`SHA256:…`).
    pub node_fingerprint: String,
    /// The shell the session ran (informational: a restoring node runs its own shell).
    pub shell: String,
    /// The working directory of the session's foreground process when it was taken.
    pub cwd: String,
    /// The environment the session was started with (beyond the node's), `TERM` included.
    pub env: Vec<(String, String)>,
    /// Window size.
    pub size: WinSize,
    /// When the session was created, Unix milliseconds.
    pub created_ms: u64,
    /// When the snapshot was taken, Unix milliseconds.
    pub saved_at_ms: u64,
    /// The scrollback, oldest byte first.
    #[serde(with = "serde_bytes")]
    pub scrollback: Vec<u8>,
}

/// Why a snapshot file was not accepted. Each message is one sentence naming the problem (and
/// the field) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The file has no content.
    #[error("the snapshot is empty; save the session again with 'cmdop session save'")]
    Empty,
    /// The JSON stops before it is complete.
    #[error("the snapshot is truncated (its JSON ends early, at line {line} column {column}); save the session again with 'cmdop session save'")]
    Truncated {
        /// Line where the text ends.
        line: usize,
        /// Column where the text ends.
        column: usize,
    },
    /// Not JSON at all.
    #[error("the snapshot is not JSON ({reason}); pass a file written by 'cmdop session save'")]
    NotJson {
        /// The parser's words, with the position.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("the snapshot is not a JSON object; pass a file written by 'cmdop session save'")]
    NotAnObject,
    /// Written by a newer (or unknown) format.
    #[error("the snapshot has format_version {found}, but this cmdop reads only version {FORMAT_VERSION}; restore it with the cmdop that saved it")]
    UnknownVersion {
        /// The version found, as written.
        found: String,
    },
    /// A required field is absent.
    #[error("the snapshot is missing the field '{field}'; save the session again with 'cmdop session save'")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field holds the wrong kind of value.
    #[error("the snapshot's field '{field}' must be {expected}; fix it or save the session again")]
    BadField {
        /// The field.
        field: &'static str,
        /// What it must hold.
        expected: &'static str,
    },
}

/// The file form as written, in the order of its fields.
#[derive(Serialize)]
struct FileOut<'a> {
    format_version: u64,
    name: &'a Option<String>,
    host: &'a str,
    node_fingerprint: &'a str,
    shell: &'a str,
    cwd: &'a str,
    env: BTreeMap<&'a str, &'a str>,
    rows: u16,
    cols: u16,
    created: String,
    saved_at: String,
    #[serde(flatten)]
    scrollback: Scrollback<'a>,
}

/// The scrollback in the file: `scrollback_encoding` tags what `scrollback` holds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "scrollback_encoding", content = "scrollback")]
enum Scrollback<'a> {
    /// UTF-8 text as lines without their '\n', so joining them with '\n' gives the exact bytes.
    #[serde(rename = "utf-8-lines")]
    Lines(Vec<Cow<'a, str>>),
    /// Anything else, as one base64 string.
    #[serde(rename = "base64")]
    Base64(String),
}

/// The first read of a file: only its version, since a newer format may change any other field.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: Option<serde_json::Number>,
}

/// The file form as read, but for the scrollback (read as [`Scrollback`] once both fields are
/// known to be there). Every field is optional so that a missing one is named; a value of the
/// wrong type is named by its path. Unknown fields are ignored.
#[derive(Deserialize)]
struct FileIn {
    name: Option<String>,
    host: Option<String>,
    node_fingerprint: Option<String>,
    shell: Option<String>,
    cwd: Option<String>,
    env: Option<BTreeMap<String, String>>,
    rows: Option<u16>,
    cols: Option<u16>,
    created: Option<String>,
    saved_at: Option<String>,
    scrollback_encoding: Option<IgnoredAny>,
    scrollback: Option<IgnoredAny>,
}

/// Every field of the file form and what it must hold.
const FIELDS: [(&str, &str); 13] = [
    ("format_version", "a number"),
    ("name", "a string or null"),
    ("host", "a string"),
    ("node_fingerprint", "a key fingerprint (SHA256:…)"),
    ("shell", "a string"),
    ("cwd", "an absolute path"),
    ("env", "an object of string values"),
    ("rows", "a whole number from 1 to 65535"),
    ("cols", "a whole number from 1 to 65535"),
    (
        "created",
        "an RFC 3339 time such as 2026-01-31T12:00:00.000Z",
    ),
    (
        "saved_at",
        "an RFC 3339 time such as 2026-01-31T12:00:00.000Z",
    ),
    ("scrollback_encoding", "\"utf-8-lines\" or \"base64\""),
    (
        "scrollback",
        "an array of strings (one per line) for utf-8-lines, or base64 text for base64",
    ),
];

/// RFC 3339 text for Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    crate::units::rfc3339_millis(ms)
}

impl Snapshot {
    /// The file form: pretty JSON, scrollback as lines when it is UTF-8.
    pub fn to_json(&self) -> String {
        let scrollback = match std::str::from_utf8(&self.scrollback) {
            Ok(text) => Scrollback::Lines(text.split('\n').map(Cow::Borrowed).collect()),
            Err(_) => Scrollback::Base64(STANDARD.encode(&self.scrollback)),
        };
        let form = FileOut {
            format_version: FORMAT_VERSION,
            name: &self.name,
            host: &self.host,
            node_fingerprint: &self.node_fingerprint,
            shell: &self.shell,
            cwd: &self.cwd,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            rows: self.size.rows,
            cols: self.size.cols,
            created: rfc3339_ms(self.created_ms),
            saved_at: rfc3339_ms(self.saved_at_ms),
            scrollback,
        };
        let mut text = serde_json::to_string_pretty(&form)
            // Serializing strings, numbers and maps of strings cannot fail.
            .unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads the file form, checking the version first and then every field.
    pub fn from_json(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(SnapshotError::Empty),
            Some(b'{') => {}
            Some(_) => {
                return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                    Ok(_) => SnapshotError::NotAnObject,
                    Err(e) => json_error(&e, None),
                })
            }
        }
        let probe: VersionProbe = read(bytes, None)?;
        let version = required(probe.format_version, "format_version")?;
        if version.as_u64() != Some(FORMAT_VERSION) {
            return Err(SnapshotError::UnknownVersion {
                found: version.to_string(),
            });
        }
        let file: FileIn = read(bytes, None)?;
        required(file.scrollback_encoding, "scrollback_encoding")?;
        required(file.scrollback, "scrollback")?;
        // When `scrollback` comes before its tag, serde holds it and reads it after the tag,
        // where no path is known: an unplaced error here is the scrollback's.
        let scrollback = match read(bytes, Some("scrollback"))? {
            Scrollback::Lines(lines) => lines.join("\n").into_bytes(),
            Scrollback::Base64(text) => STANDARD
                .decode(text.trim())
                .map_err(|_| bad_field("scrollback"))?,
        };
        let node_fingerprint = required(file.node_fingerprint, "node_fingerprint")?;
        if node_fingerprint.parse::<crate::Fingerprint>().is_err() {
            return Err(bad_field("node_fingerprint"));
        }
        let cwd = required(file.cwd, "cwd")?;
        if !cwd.starts_with('/') {
            return Err(bad_field("cwd"));
        }
        Ok(Snapshot {
            name: file.name,
            host: required(file.host, "host")?,
            node_fingerprint,
            shell: required(file.shell, "shell")?,
            cwd,
            env: required(file.env, "env")?.into_iter().collect(),
            size: WinSize {
                rows: dimension(file.rows, "rows")?,
                cols: dimension(file.cols, "cols")?,
            },
            created_ms: unix_ms(file.created, "created")?,
            saved_at_ms: unix_ms(file.saved_at, "saved_at")?,
            scrollback,
        })
    }
}

/// Deserializes `T` from the file, naming the field of a value that does not fit; a value
/// whose place serde does not report is blamed on `unplaced`, if given.
fn read<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    unplaced: Option<&str>,
) -> Result<T, SnapshotError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let field = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.as_str()),
            _ => unplaced,
        };
        json_error(e.inner(), field)
    })?;
    deserializer.end().map_err(|e| json_error(&e, None))?;
    Ok(value)
}

/// The error for a JSON error found in `field` (if known).
fn json_error(e: &serde_json::Error, field: Option<&str>) -> SnapshotError {
    match e.classify() {
        serde_json::error::Category::Eof => SnapshotError::Truncated {
            line: e.line(),
            column: e.column(),
        },
        serde_json::error::Category::Data => match field {
            Some(field) if FIELDS.iter().any(|(f, _)| *f == field) => bad_field(field),
            _ => SnapshotError::NotJson {
                reason: e.to_string(),
            },
        },
        _ => SnapshotError::NotJson {
            reason: e.to_string(),
        },
    }
}

/// [`SnapshotError::BadField`] for `field`, saying what it must hold.
fn bad_field(field: &str) -> SnapshotError {
    let (field, expected) = FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .copied()
        .unwrap_or(("?", "a valid value"));
    SnapshotError::BadField { field, expected }
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, SnapshotError> {
    value.ok_or(SnapshotError::MissingField { field })
}

fn dimension(value: Option<u16>, field: &'static str) -> Result<u16, SnapshotError> {
    match required(value, field)? {
        0 => Err(bad_field(field)),
        n => Ok(n),
    }
}

fn unix_ms(value: Option<String>, field: &'static str) -> Result<u64, SnapshotError> {
    let text = required(value, field)?;
    let time = humantime::parse_rfc3339(&text).map_err(|_| bad_field(field))?;
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad_field(field))?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The newest part of `scrollback` that fits in `room` bytes, and how many bytes were dropped.
/// When bytes are dropped, the kept part starts after a line break if one is near, so the
/// replay does not begin in the middle of a line or an escape sequence.
pub fn fit_scrollback(scrollback: &[u8], room: usize) -> (&[u8], usize) {
    if scrollback.len() <= room {
        return (scrollback, 0);
    }
    let mut kept = &scrollback[scrollback.len() - room..];
    let search = &kept[..kept.len().min(LINE_START_SEARCH)];
    if let Some(at) = search.iter().position(|&b| b == b'\n') {
        kept = &kept[at + 1..];
    }
    (kept, scrollback.len() - kept.len())
}

/// The line a restored session shows between the old scrollback and the new shell.
pub fn restored_marker(host: &str, saved_at_ms: u64) -> Vec<u8> {
    let at = crate::units::rfc3339_seconds(saved_at_ms);
    format!("\r\n[restored from {host} at {at}]\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    fn sample(scrollback: &[u8]) -> Snapshot {
        Snapshot {
            name: Some("deploy".into()),
            host: "vm".into(),
            node_fingerprint: crate::Fingerprint::of_spki(b"node").to_string(),
            shell: "/bin/bash".into(),
            cwd: "/tmp".into(),
            env: vec![("TERM".into(), "xterm".into()), ("A".into(), "b c".into())],
            size: WinSize {
                rows: 30,
                cols: 100,
            },
            created_ms: 1_700_000_000_123,
            saved_at_ms: 1_700_000_100_456,
            scrollback: scrollback.to_vec(),
        }
    }

    fn without(field: &str) -> Vec<u8> {
        let mut value: Value = serde_json::from_str(&sample(b"x").to_json()).unwrap();
        value.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&value).unwrap()
    }

    fn with(field: &str, replacement: Value) -> Vec<u8> {
        let mut value: Value = serde_json::from_str(&sample(b"x").to_json()).unwrap();
        value[field] = replacement;
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn text_scrollback_round_trips_as_readable_lines() {
        let snapshot = sample(b"$ echo hi\r\nhi\r\n$ \x1b[1mbold\x1b[0m\n");
        let json = snapshot.to_json();
        assert!(json.contains("\"format_version\": 1"), "{json}");
        assert!(json.contains("\"utf-8-lines\""), "{json}");
        assert!(json.contains("\"hi\\r\","), "{json}");
        assert!(
            json.contains("\"saved_at\": \"2023-11-14T22:15:00.456Z\""),
            "{json}"
        );
        let mut env = snapshot.env.clone();
        env.sort();
        let back = Snapshot::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, Snapshot { env, ..snapshot });
    }

    #[test]
    fn binary_scrollback_round_trips_as_base64() {
        let snapshot = sample(&[0xff, 0xfe, b'\n', 0, 1]);
        let json = snapshot.to_json();
        assert!(json.contains("\"base64\""), "{json}");
        let back = Snapshot::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.scrollback, snapshot.scrollback);
    }

    #[test]
    fn truncated_snapshot_says_so() {
        let json = sample(b"line\r\n").to_json();
        let cut = &json.as_bytes()[..json.len() / 2];
        let err = Snapshot::from_json(cut).unwrap_err();
        assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(Snapshot::from_json(b"  \n"), Err(SnapshotError::Empty));
    }

    #[test]
    fn unknown_version_is_named_before_other_fields() {
        let err = Snapshot::from_json(br#"{"format_version": 7}"#).unwrap_err();
        assert_eq!(err, SnapshotError::UnknownVersion { found: "7".into() });
        assert!(err.to_string().contains("format_version 7"), "{err}");
        let err = Snapshot::from_json(&with("format_version", Value::from("1"))).unwrap_err();
        assert!(matches!(
            err,
            SnapshotError::BadField {
                field: "format_version",
                ..
            }
        ));
    }

    #[test]
    fn not_json_says_so() {
        let err = Snapshot::from_json(b"hello, world").unwrap_err();
        assert!(matches!(err, SnapshotError::NotJson { .. }), "{err}");
        assert!(err.to_string().contains("line 1 column 1"), "{err}");
        assert_eq!(
            Snapshot::from_json(b"[1, 2]"),
            Err(SnapshotError::NotAnObject)
        );
    }

    #[test]
    fn every_missing_field_is_named() {
        for field in [
            "format_version",
            "host",
            "node_fingerprint",
            "shell",
            "cwd",
            "env",
            "rows",
            "cols",
            "created",
            "saved_at",
            "scrollback_encoding",
            "scrollback",
        ] {
            let err = Snapshot::from_json(&without(field)).unwrap_err();
            assert_eq!(err, SnapshotError::MissingField { field }, "{field}");
            assert!(err.to_string().contains(&format!("'{field}'")), "{err}");
        }
        // The name is optional: an unnamed session.
        assert_eq!(Snapshot::from_json(&without("name")).unwrap().name, None);
    }

    #[test]
    fn bad_field_values_are_named() {
        for (field, value) in [
            ("rows", Value::from(0)),
            ("cols", Value::from(70_000)),
            ("cwd", Value::from("relative/dir")),
            ("created", Value::from("yesterday")),
            ("env", Value::from(vec![1, 2])),
            ("node_fingerprint", Value::from("md5:abc")),
            ("scrollback_encoding", Value::from("rot13")),
            ("scrollback", Value::from(3)),
            ("name", Value::from(5)),
        ] {
            let err = Snapshot::from_json(&with(field, value)).unwrap_err();
            assert!(
                matches!(&err, SnapshotError::BadField { field: f, .. } if *f == field),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn scrollback_must_match_its_encoding_in_either_field_order() {
        let is_bad = |json: &[u8], field: &str| {
            matches!(
                Snapshot::from_json(json),
                Err(SnapshotError::BadField { field: f, .. }) if f == field
            )
        };
        // Written order: the encoding before the scrollback.
        let written = sample(b"x").to_json();
        let rot13 = written.replace("\"utf-8-lines\"", "\"rot13\"");
        assert!(is_bad(rot13.as_bytes(), "scrollback_encoding"), "{rot13}");
        let lines_as_base64 = written.replace("\"utf-8-lines\"", "\"base64\"");
        assert!(is_bad(lines_as_base64.as_bytes(), "scrollback"));
        // Sorted order (as `with` writes): the scrollback before its encoding.
        assert!(is_bad(&with("scrollback", Value::from("%%")), "scrollback"));
        let mut value: Value = serde_json::from_str(&written).unwrap();
        value["scrollback_encoding"] = Value::from("base64");
        value["scrollback"] = Value::from("%%");
        assert!(is_bad(&serde_json::to_vec(&value).unwrap(), "scrollback"));
        value["scrollback"] = Value::from("eA==");
        let snapshot = Snapshot::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(snapshot.scrollback, b"x");
    }

    #[test]
    fn unknown_fields_are_ignored_and_trailing_text_is_not() {
        let mut value: Value = serde_json::from_str(&sample(b"x").to_json()).unwrap();
        value["comment"] = Value::from("from the future");
        assert!(Snapshot::from_json(&serde_json::to_vec(&value).unwrap()).is_ok());
        let mut json = sample(b"x").to_json();
        json.push_str("{}");
        let err = Snapshot::from_json(json.as_bytes()).unwrap_err();
        assert!(matches!(err, SnapshotError::NotJson { .. }), "{err}");
    }

    #[test]
    fn fit_keeps_the_newest_bytes_from_a_line_start() {
        assert_eq!(fit_scrollback(b"short", 10), (&b"short"[..], 0));
        let (kept, dropped) = fit_scrollback(b"one\ntwo\nthree\n", 9);
        assert_eq!(kept, b"three\n");
        assert_eq!(dropped, 8);
        let long = vec![b'x'; 10_000];
        let (kept, dropped) = fit_scrollback(&long, 100);
        assert_eq!((kept.len(), dropped), (100, 9_900));
    }

    #[test]
    fn marker_names_host_and_time() {
        let marker = restored_marker("vm", 1_700_000_100_456);
        assert_eq!(
            marker,
            b"\r\n[restored from vm at 2023-11-14T22:15:00Z]\r\n"
        );
    }
}
