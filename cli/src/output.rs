//! Everything `cmdop` prints as data: aligned tables, a session's metadata (human and the
//! stable JSON form documented in README.md), relative and RFC 3339 times, byte sizes, short
//! ids, and error chains.

use cmdop_certs::Fingerprint;
use cmdop_client::dial::{ClientError, Target};
use cmdop_proto::{SessionInfo, SessionState, WinSize};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prints rows as a left-aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(unix_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let secs = now.saturating_sub(unix_ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// RFC 3339 time (UTC, seconds).
pub fn rfc3339(unix_ms: u64) -> String {
    cmdop_proto::units::rfc3339_seconds(unix_ms)
}

/// A byte count for people: `512 bytes`, `12.3 MiB`.
pub fn bytes(count: u64) -> String {
    cmdop_proto::units::format_bytes(count)
}

/// The shortest prefix of each id (at least 13 characters: through the millisecond timestamp)
/// that tells it apart from the others.
pub fn short_ids(ids: &[uuid::Uuid]) -> Vec<String> {
    let texts: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
    texts
        .iter()
        .map(|text| {
            let mut len = 13;
            while len < text.len()
                && texts
                    .iter()
                    .filter(|other| other.starts_with(&text[..len]))
                    .count()
                    > 1
            {
                len += 1;
            }
            text[..len].to_string()
        })
        .collect()
}

/// An error and its causes, joined by ": " as anyhow's `{:#}` joins them, but stopping after
/// a [`ClientError`]: its sentence already says what its source says.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        if cause.downcast_ref::<ClientError>().is_some() {
            break;
        }
    }
    text
}

/// ` (name)` for a named session, nothing for an unnamed one.
pub fn label(session: &SessionInfo) -> String {
    session
        .name
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}

fn state_text(state: SessionState) -> String {
    match state {
        SessionState::Running => "running".into(),
        SessionState::Exited { code } => format!("exited ({code})"),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

/// Prints a session's metadata, one `key: value` line each.
pub fn print_metadata(host: &str, info: &SessionInfo) {
    let pid = info.pid.map_or_else(|| "-".into(), |p| p.to_string());
    let when = |ms| format!("{} ({})", rfc3339(ms), ago(ms));
    let rows = [
        ("id", info.id.to_string()),
        ("name", info.name.clone().unwrap_or_else(|| "-".into())),
        ("host", format!("{host} ({})", info.host)),
        ("state", state_text(info.state)),
        ("attached", yes_no(info.attached)),
        ("shell", info.shell.clone()),
        ("cwd", info.cwd.clone()),
        ("pid", pid),
        ("size", format!("{}x{}", info.size.cols, info.size.rows)),
        ("created", when(info.created_ms)),
        ("last active", when(info.last_active_ms)),
        ("output", bytes(info.output_bytes)),
    ];
    for (key, value) in rows {
        println!("{:<12} {value}", format!("{key}:"));
    }
}

/// Prints the last `lines` lines of scrollback under a rule, ending on a new line.
pub fn print_tail(lines: u32, scrollback: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "--- last {lines} lines ---")?;
    out.write_all(scrollback)?;
    if !scrollback.ends_with(b"\n") && !scrollback.is_empty() {
        writeln!(out)?;
    }
    Ok(())
}

/// The stable JSON form of a session (documented in README.md).
pub fn session_json(host: &str, info: &SessionInfo) -> serde_json::Value {
    let (state, exit_code) = match info.state {
        SessionState::Running => ("running", None),
        SessionState::Exited { code } => ("exited", Some(code)),
    };
    let WinSize { rows, cols } = info.size;
    serde_json::json!({
        "id": info.id.to_string(),
        "name": info.name,
        "host": host,
        "node_hostname": info.host,
        "state": state,
        "exit_code": exit_code,
        "attached": info.attached,
        "shell": info.shell,
        "cwd": info.cwd,
        "pid": info.pid,
        "rows": rows,
        "cols": cols,
        "created": rfc3339(info.created_ms),
        "last_active": rfc3339(info.last_active_ms),
        "output_bytes": info.output_bytes,
    })
}

/// Sessions on several hosts, with the hosts that could not be listed.
pub struct SessionList {
    /// Each session with the name of its host.
    pub sessions: Vec<(String, SessionInfo)>,
    /// Each unreachable host with why.
    pub unreachable: Vec<(String, String)>,
}

/// Prints a session list as JSON (format documented in README.md).
pub fn print_session_list_json(list: &SessionList) -> anyhow::Result<()> {
    let sessions: Vec<_> = list
        .sessions
        .iter()
        .map(|(host, s)| session_json(host, s))
        .collect();
    let unreachable: Vec<_> = list
        .unreachable
        .iter()
        .map(|(host, error)| serde_json::json!({"host": host, "error": error}))
        .collect();
    print_json(&serde_json::json!({
        "sessions": sessions,
        "unreachable": unreachable,
    }))
}

/// Prints a session list as a table, and the unreachable hosts on stderr.
pub fn print_session_list(list: &SessionList) {
    if list.sessions.is_empty() {
        println!(
            "no sessions (create one with 'cmdop session create HOST' or 'cmdop connect HOST')"
        );
    } else {
        let ids = short_ids(&list.sessions.iter().map(|(_, s)| s.id).collect::<Vec<_>>());
        let rows: Vec<Vec<String>> = list
            .sessions
            .iter()
            .zip(ids)
            .map(|((host, s), id)| {
                vec![
                    host.clone(),
                    id,
                    s.name.clone().unwrap_or_else(|| "-".into()),
                    state_text(s.state),
                    yes_no(s.attached),
                    ago(s.last_active_ms),
                    s.cwd.clone(),
                ]
            })
            .collect();
        let header = ["HOST", "ID", "NAME", "STATE", "ATTACHED", "ACTIVE", "CWD"];
        print_table(&header, &rows);
    }
    for (host, error) in &list.unreachable {
        eprintln!("cmdop: {host} unreachable: {error}");
    }
}

/// Prints the known hosts with their pinned keys.
pub fn print_host_pins(hosts: Vec<(Target, Option<Fingerprint>)>) {
    let rows: Vec<Vec<String>> = hosts
        .into_iter()
        .map(|(t, pin)| {
            let pin = pin.map_or_else(|| "(not pinned yet)".into(), |f| f.to_string());
            let route = t.route();
            vec![t.name, route, pin]
        })
        .collect();
    print_table(&["NAME", "ADDRESS", "NODE KEY"], &rows);
}

/// How a host answered a probe: its round-trip time and host name, or why not.
pub type HostStatus = Result<(Duration, String), ClientError>;

/// Prints the known hosts with online/offline and round-trip time.
pub fn print_host_status(hosts: Vec<(Target, HostStatus)>) {
    let rows: Vec<Vec<String>> = hosts
        .into_iter()
        .map(|(target, status)| {
            let (status, rtt, note) = match status {
                Ok((rtt, host)) => (
                    "online".to_string(),
                    format!("{:.1} ms", rtt.as_secs_f64() * 1000.0),
                    host,
                ),
                Err(ClientError::Offline { .. }) => {
                    ("offline".into(), "-".into(), "no answer".into())
                }
                Err(e) => ("error".into(), "-".into(), e.to_string()),
            };
            let route = target.route();
            vec![target.name, route, status, rtt, note]
        })
        .collect();
    print_table(&["NAME", "ADDRESS", "STATUS", "RTT", "NODE"], &rows);
}
